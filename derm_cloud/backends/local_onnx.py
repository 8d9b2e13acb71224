"""`local-onnx`: an ONNX model directory run by onnxruntime on this machine.

Serves the sklesion export (NHWC, 0..255, metadata input, softmax inside), Azure AutoML for Images exports
(`model.onnx` + `labels.json`: NCHW, ImageNet normalisation, logits) and models exported with
`derm-cloud models export-hf`. Nothing leaves the machine.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from derm_cloud.backends._runner import ModelRunner
from derm_cloud.base import BackendInfo, Classifier, RawResult
from derm_cloud.errors import MissingDependencyError, ModelSpecError
from derm_cloud.images import DEFAULT_LIMITS, ImageLimits, PreparedImage
from derm_cloud.models.cache import resolve_model_dir
from derm_cloud.models.spec import ModelSpec
from derm_cloud.taxonomy import LabelMap
from derm_cloud.types import PatientMetadata

__all__ = ["LocalOnnxClassifier", "OnnxModel"]


class OnnxModel(ModelRunner):
    """A loaded model directory: spec + onnxruntime session; turns prepared images into probabilities.

    Shared by the `local-onnx` backend and by `derm_cloud.serving` (the core of every cloud adapter), so a
    model answers the same wherever it is hosted.
    """

    def __init__(
        self,
        model_dir: str | os.PathLike[str],
        *,
        intra_op_threads: int | None = None,
        inter_op_threads: int | None = None,
        providers: Sequence[str] = ("CPUExecutionProvider",),
    ) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise MissingDependencyError(
                "the local-onnx backend needs onnxruntime; run: pip install 'derm-cloud[onnx]'"
            ) from exc
        self.directory: Path = resolve_model_dir(model_dir)
        self.spec: ModelSpec = ModelSpec.load(self.directory)
        options = ort.SessionOptions()
        if intra_op_threads:
            options.intra_op_num_threads = intra_op_threads
        if inter_op_threads:
            options.inter_op_num_threads = inter_op_threads
        try:
            self.session = ort.InferenceSession(
                str(self.directory / self.spec.model_file), sess_options=options, providers=list(providers)
            )
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
            raise ModelSpecError(f"onnxruntime cannot load {self.directory / self.spec.model_file}: {exc}") from exc
        inputs = self.session.get_inputs()
        needed = 1 + (self.spec.metadata_encoding is not None)
        if len(inputs) != needed:
            raise ModelSpecError(
                f"{self.directory}: the ONNX graph has {len(inputs)} input(s) "
                f"({', '.join(i.name for i in inputs)}) but spec.json describes {needed}; fix metadata_input"
            )
        # Bound by position (spec indices) because export routes name inputs differently.
        self.image_input = inputs[self.spec.image_input_index].name
        self.metadata_input = (
            inputs[self.spec.metadata_input_index].name if self.spec.metadata_input_index is not None else None
        )
        n_out = self.session.get_outputs()[0].shape[-1]
        if isinstance(n_out, int) and n_out != len(self.spec.labels):
            raise ModelSpecError(
                f"{self.directory}: the model has {n_out} outputs but spec lists {len(self.spec.labels)} labels"
            )
        batch_dim = inputs[self.spec.image_input_index].shape[0]
        # A fixed batch axis of 1 (Keras-on-torch exports) means we must loop; spec.max_batch can say so too.
        self.max_batch = 1 if batch_dim == 1 else self.spec.max_batch

    def _run_batch(self, pixels: np.ndarray, meta: np.ndarray | None) -> np.ndarray:
        feeds: dict[str, np.ndarray] = {self.image_input: pixels}
        if self.metadata_input is not None and meta is not None:
            feeds[self.metadata_input] = meta
        out: np.ndarray = self.session.run(None, feeds)[0]
        return out

    def close(self) -> None:
        del self.session


class LocalOnnxClassifier(Classifier):
    """Run an ONNX model directory with onnxruntime.

    Args:
        model_dir: a model directory (`spec.json` + `model.onnx`, or an Azure AutoML `labels.json`
            export), or `"sklesion"` for the fetched sklesion model.
        use_metadata: pass patient metadata to models that take it; `False` sends the model's
            "unknown" encoding, to measure what metadata adds.
        intra_op_threads, inter_op_threads: onnxruntime thread pools (default: onnxruntime's choice).
        label_overrides: `{model_label: canonical_code}` for models whose labels use other names.
        allow_unmapped: accept a generic model (ImageNet) as a latency baseline.

    Example:
        >>> with LocalOnnxClassifier("sklesion") as clf:  # doctest: +SKIP
        ...     print(clf.predict("lesion.jpg").top(3))
    """

    backend_name = "local-onnx"
    decodes_every_pixel = True

    def __init__(
        self,
        model_dir: str | os.PathLike[str] = "sklesion",
        *,
        use_metadata: bool = True,
        intra_op_threads: int | None = None,
        inter_op_threads: int | None = None,
        label_overrides: Mapping[str, str] | None = None,
        allow_unmapped: bool = False,
        image_limits: ImageLimits = DEFAULT_LIMITS,
    ) -> None:
        self.model = self._load_model(model_dir, intra_op_threads=intra_op_threads, inter_op_threads=inter_op_threads)
        spec = self.model.spec
        label_map = LabelMap.for_labels(spec.labels, overrides=label_overrides, allow_unmapped=allow_unmapped)
        super().__init__(label_map=label_map, model_id=spec.model_id, image_limits=image_limits)
        self.use_metadata = use_metadata

    def _load_model(
        self, model_dir: str | os.PathLike[str], *, intra_op_threads: int | None, inter_op_threads: int | None
    ) -> ModelRunner:
        """The runtime this backend runs the directory with (subclasses swap it; the rest is shared)."""
        return OnnxModel(model_dir, intra_op_threads=intra_op_threads, inter_op_threads=inter_op_threads)

    @property
    def spec(self) -> ModelSpec:
        return self.model.spec

    def _predict_one(self, image: PreparedImage, metadata: PatientMetadata, timeout: float | None) -> RawResult:
        return self._raw(self.model.run([image], [self._meta(metadata)])[0])

    def _predict_many(
        self, images: Sequence[PreparedImage], metadata: Sequence[PatientMetadata]
    ) -> list[tuple[RawResult, int, float]]:
        import time

        start = time.perf_counter()
        probs = self.model.run(images, [self._meta(m) for m in metadata])
        per_image_ms = (time.perf_counter() - start) * 1000 / max(1, len(images))
        return [(self._raw(p, batch=len(images)), 1, per_image_ms) for p in probs]

    def _meta(self, metadata: PatientMetadata) -> PatientMetadata:
        return metadata if self.use_metadata else PatientMetadata()

    def _raw(self, probs: np.ndarray, batch: int = 1) -> RawResult:
        extra: dict[str, Any] = {"used_metadata": self.use_metadata and self.spec.metadata_encoding is not None}
        if batch > 1:
            extra["batch_size"] = batch
        return RawResult(scores=list(zip(self.spec.labels, probs.tolist(), strict=True)), extra=extra)

    @property
    def uses_metadata(self) -> bool:
        """Whether the model takes a metadata input and `use_metadata` is on."""
        return self.use_metadata and self.spec.metadata_encoding is not None

    def describe(self) -> BackendInfo:
        return BackendInfo(
            backend=self.backend_name,
            provider="local",
            service="onnxruntime on this machine",
            model_id=self.model_id,
            endpoint=None,
            data_leaves_machine=False,
            stores_images=False,
            labels_mapped=self.label_map.mapped,
            billing={"sku": "local.cpu"},
            model_facts=dict(self.spec.facts, model_dir=str(Path(self.model.directory))),
        )

    def _close(self) -> None:
        self.model.close()
