"""`probe`: an embedder plus a small head trained on embeddings of labelled images, as one `Classifier`.

The folder (`derm-cloud probe fit` writes it) holds `probe.json` and `head.npz`:

```text
{
  "format": "derm-cloud-probe/1",
  "model_id": "probe-sklesion-0.2.2-penultimate-3f2a91c0",
  "embedder": {"name": "local-onnx", "options": {"model_dir": "..."}, "model_id": "...", "dimension": 32},
  "labels": ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"],
  "head": {"file": "head.npz", "kind": "...", "C": 0.1, "trained_with": "scikit-learn 1.9.1"},
  "data": {"source": "...dev.csv", "sha256": "...", "images": 1321, "lesions": 985, "class_counts": {...}},
  "out_of_fold": {"balanced_accuracy": 0.71, "balanced_accuracy_ci": [0.68, 0.74], ...},
  "learning_curve": [{"n": 50, "balanced_accuracy": 0.52, "ci": [0.49, 0.55]}, ...],
  "facts": {"training_data": "...", "intended_use": "..."}
}
```

The embedder is created from the recorded registry name and options (options given here override them). A
probe fitted through an emulator records `"emulated": true` and its options without the emulator's address
(127.0.0.1 and a port that changes from run to run): it is compared with `emulate = true`, which starts the
emulator again and passes its address here; its model id and dimension must be the recorded ones, since a
head trained on one embedding space means nothing in another. Image preparation (EXIF stripped) happens once,
in this classifier; the embedder's retry policy retries the embedding calls; the head runs here on numpy.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from derm_cloud.backends.probe_head import LinearHead
from derm_cloud.backends.recorded_embedder import check_recorded_endpoint, recordable_options
from derm_cloud.base import BackendInfo, Classifier, RawResult
from derm_cloud.embedders.base import Embedder, Embedding
from derm_cloud.embedders.registry import create_embedder
from derm_cloud.errors import ModelSpecError
from derm_cloud.images import DEFAULT_LIMITS, ImageLimits, PreparedImage
from derm_cloud.taxonomy import LabelMap
from derm_cloud.types import PatientMetadata

__all__ = ["PROBE_FORMAT", "ProbeClassifier", "read_probe_spec", "recordable_options"]

PROBE_FORMAT = "derm-cloud-probe/1"


def read_probe_spec(model_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """`probe.json` of a probe folder, checked for the keys a `ProbeClassifier` needs.

    Raises:
        ModelSpecError: the folder or its spec is missing or invalid, naming what to fix.
    """
    folder = Path(model_dir).expanduser()
    path = folder / "probe.json"
    if not path.is_file():
        raise ModelSpecError(f"{str(folder)!r} has no probe.json; write a probe folder with `derm-cloud probe fit`")
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ModelSpecError(f"{path}: invalid JSON at line {exc.lineno}: {exc.msg}") from None
    if not isinstance(spec, dict) or spec.get("format") != PROBE_FORMAT:
        raise ModelSpecError(f"{path}: 'format' must be {PROBE_FORMAT!r}")
    embedder = spec.get("embedder")
    if not (isinstance(embedder, dict) and isinstance(embedder.get("name"), str) and "dimension" in embedder):
        raise ModelSpecError(f"{path}: 'embedder' must name the embedder ('name') and its 'dimension'")
    for key in ("model_id", "labels", "head"):
        if key not in spec:
            raise ModelSpecError(f"{path}: missing required key {key!r}")
    return spec


class ProbeClassifier(Classifier):
    """Embed with an `Embedder`, classify the embedding with a trained linear head.

    Args:
        model_dir: a probe folder written by `derm-cloud probe fit`.
        embedder: an embedder to use instead of creating the recorded one (tests, a shared client).
        embedder_options: options merged over the recorded ones when the embedder is created here.

    Example:
        >>> with ProbeClassifier("runs/probe-sklesion") as clf:  # doctest: +SKIP
        ...     print(clf.predict("lesion.jpg").top(3))
    """

    backend_name = "probe"

    def __init__(
        self,
        model_dir: str | os.PathLike[str],
        *,
        embedder: Embedder | None = None,
        embedder_options: Mapping[str, Any] | None = None,
        image_limits: ImageLimits = DEFAULT_LIMITS,
    ) -> None:
        self.directory = Path(model_dir).expanduser()
        self.spec = read_probe_spec(self.directory)
        recorded = self.spec["embedder"]
        self.head = LinearHead.load(self.directory / str(self.spec["head"].get("file", "head.npz")))
        if self.head.dimension != int(recorded["dimension"]):
            raise ModelSpecError(
                f"{self.directory}: head.npz takes {self.head.dimension} values, probe.json says dimension "
                f"{recorded['dimension']}"
            )
        self._owns_embedder = embedder is None
        if embedder is None:
            options = dict(recorded.get("options") or {}) | dict(embedder_options or {})
            check_recorded_endpoint(f"the probe in {self.directory} was fitted", "probe.json", recorded, options)
            embedder = create_embedder(recorded["name"], **options)
        self.embedder = embedder
        try:
            self._check_embedder(recorded)
        except ModelSpecError:
            if self._owns_embedder:
                embedder.close()
            raise
        super().__init__(
            label_map=LabelMap.for_labels(self.head.classes),
            model_id=str(self.spec["model_id"]),
            image_limits=image_limits,
        )

    def _check_embedder(self, recorded: Mapping[str, Any]) -> None:
        wanted = recorded.get("model_id")
        if wanted is not None and self.embedder.model_id != wanted:
            raise ModelSpecError(
                f"the probe in {self.directory} was trained on embeddings of {wanted!r}, but the embedder given is "
                f"{self.embedder.model_id!r}: a head means nothing in another embedding space; refit with "
                "`derm-cloud probe fit` for this embedder"
            )
        if self.embedder.dimension is not None and self.embedder.dimension != self.head.dimension:
            raise ModelSpecError(
                f"the embedder gives {self.embedder.dimension} values, the head takes {self.head.dimension}"
            )

    def _predict_one(self, image: PreparedImage, metadata: PatientMetadata, timeout: float | None) -> RawResult:
        (embedding,) = self.embedder.embed_prepared([image])
        return self._classify([embedding])[0][0]

    def _predict_many(
        self, images: Sequence[PreparedImage], metadata: Sequence[PatientMetadata]
    ) -> list[tuple[RawResult, int, float]]:
        embeddings = self.embedder.embed_prepared(images)
        return [
            (raw, e.attempts, e.latency_ms / e.batch_size + head_ms)
            for e, (raw, head_ms) in zip(embeddings, self._classify(embeddings), strict=True)
        ]

    def _classify(self, embeddings: Sequence[Embedding]) -> list[tuple[RawResult, float]]:
        import numpy as np

        start = time.perf_counter()
        probs = self.head.predict_proba(np.stack([e.vector for e in embeddings]))
        head_ms = (time.perf_counter() - start) * 1000 / len(embeddings)
        return [
            (
                RawResult(
                    scores=list(zip(self.head.classes, row.tolist(), strict=True)),
                    request_id=e.request_id,
                    extra={"embedding_ms": e.latency_ms / e.batch_size, "head_ms": head_ms, "embedder": e.model_id},
                ),
                head_ms,
            )
            for e, row in zip(embeddings, probs, strict=True)
        ]

    def describe(self) -> BackendInfo:
        inner = self.embedder.describe()
        billing = dict(inner.billing) | {
            # The head is a matrix product on this machine: its cost is counted as nil beside the embedding.
            "head": "linear head on this machine (numpy), cost counted as nil",
        }
        replicas = billing.get("nodes") or billing.get("instance_count")
        if replicas and "instances" not in billing:  # the endpoint's always-on replicas, as the cost model counts
            billing["instances"] = int(replicas)
        facts = dict(self.spec.get("facts") or {}) | {
            "architecture": f"linear probe ({self.spec['head'].get('kind', 'logistic regression')}) on "
            f"{inner.model_id} embeddings ({self.head.dimension} values)",
            "embedder": {"backend": inner.backend, "model_id": inner.model_id, "service": inner.service},
            "probe_data": self.spec.get("data"),
            "out_of_fold": self.spec.get("out_of_fold"),
            "learning_curve": self.spec.get("learning_curve"),
            "model_dir": str(self.directory),
        }
        if "stand_in" in inner.model_facts:  # an emulated endpoint's encoder is not the provider's: say so here too
            facts["stand_in"] = inner.model_facts["stand_in"]
        return BackendInfo(
            backend=self.backend_name,
            provider=inner.provider,
            service=f"{inner.service} + linear probe on this machine",
            model_id=self.model_id,
            region=inner.region,
            endpoint=inner.endpoint,
            data_leaves_machine=inner.data_leaves_machine,
            stores_images=inner.stores_images,
            emulated=inner.emulated,
            labels_mapped=self.label_map.mapped,
            billing=billing,
            model_facts=facts,
        )

    def _close(self) -> None:
        if self._owns_embedder:
            self.embedder.close()
