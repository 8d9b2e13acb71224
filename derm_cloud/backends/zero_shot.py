"""`zero-shot`: classify from text prompts with a model that embeds images and text in one space. No labels.

Each class's prompts (`derm_cloud.backends.zero_shot_prompts`) are embedded once, when the classifier is created;
each class vector is the normalised mean of its normalised prompt vectors (a prompt ensemble, as CLIP and SigLIP
zero-shot classification do). Per image: one image embedding, its cosine similarity with the seven class vectors,
multiplied by the model's temperature, then a softmax over the seven classes.

The temperature (a multiplier on cosine similarities) is the model's own where the endpoint sends it:

- MedSigLIP on Vertex AI: `model_temperature` of each prediction, the model's logit scale as its serving container
  returns it (`python/serving/predictor.py` of https://github.com/Google-Health/medsiglip), used as the multiplier
  in SigLIP's `logits = scale * cosine + bias` (https://arxiv.org/abs/2303.15343). The bias (`model_bias`) adds the
  same constant to every class, so a softmax over the classes ignores it, as the model card's zero-shot example
  (a softmax over `logits_per_image`, https://huggingface.co/google/medsiglip-448) does.
- MedImageInsight on Azure: `exp(scaling_factor)`, as Microsoft's zero-shot example computes it
  (`agentic/medimageinsight/mcp-server/zero_shot.py` of https://github.com/microsoft/healthcareai-examples).
- Otherwise `DEFAULT_TEMPERATURE` (100, CLIP's logit scale after training, https://arxiv.org/abs/2103.00020), or
  the `temperature` option.

The scores are uncalibrated: a softmax of scaled similarities, not probabilities fitted to any labelled data; a
probe (`derm-cloud probe fit`) trained on your labels is calibrated, this is not. As every backend's, the result
supports triage and research, never a diagnosis; a clinician reviews every result.

A zero-shot folder (`derm-cloud probe zero-shot` writes it) records the embedder, the prompts, the temperature
and the prompt embeddings (`text_embeddings.npz`) with their SHA-256 fingerprint; the classifier created from it
embeds one prompt again and refuses to run if the endpoint's text embeddings have changed. A folder written through
an emulator records `"emulated": true` and no address (as a probe's, `derm_cloud.backends.recorded_embedder`):
compare it with `emulate = true`, which starts the emulator again and passes its address here.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from derm_cloud.backends.recorded_embedder import check_recorded_endpoint
from derm_cloud.backends.zero_shot_prompts import PromptSet, load_prompts
from derm_cloud.base import BackendInfo, Classifier, RawResult
from derm_cloud.embedders.base import Embedder, Embedding
from derm_cloud.embedders.registry import create_embedder
from derm_cloud.errors import CapabilityError, ConfigError, ModelSpecError
from derm_cloud.images import DEFAULT_LIMITS, ImageLimits, PreparedImage
from derm_cloud.retry import RetryPolicy
from derm_cloud.taxonomy import CLASS_CODES, LabelMap
from derm_cloud.types import PatientMetadata

__all__ = [
    "DEFAULT_TEMPERATURE",
    "UNCALIBRATED_NOTE",
    "ZERO_SHOT_FORMAT",
    "PromptEmbeddings",
    "ZeroShotClassifier",
    "embed_prompts",
    "read_zero_shot_folder",
    "zero_shot_probabilities",
]

ZERO_SHOT_FORMAT = "derm-cloud-zero-shot/1"
SPEC_FILE = "zero_shot.json"
VECTORS_FILE = "text_embeddings.npz"
#: Temperature when the endpoint sends none and no `temperature` option is given: CLIP's trained logit scale.
DEFAULT_TEMPERATURE = 100.0
UNCALIBRATED_NOTE = (
    "zero-shot scores are uncalibrated: a softmax of the model's scaled image-text similarities over the seven "
    "classes, not probabilities fitted to labelled data (a probe trained on your labels is calibrated)"
)


@dataclass(frozen=True)
class PromptEmbeddings:
    """The prompt embeddings of one prompt set, and the temperature to score with.

    Attributes:
        prompt_vectors: `(prompts, d)` as the embedder returned them, in `PromptSet.flat` order.
        class_vectors: `(7, d)` unit vectors, `CLASS_CODES` order.
        temperature: multiplier on cosine similarities before the softmax.
        temperature_source: where the temperature came from, in words.
    """

    prompt_vectors: np.ndarray
    class_vectors: np.ndarray
    temperature: float
    temperature_source: str

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the class vectors rounded to 5 decimals (stable across float noise, changes with the model)."""
        return hashlib.sha256(np.round(self.class_vectors, 5).astype(np.float32).tobytes()).hexdigest()


def _unit(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    out: np.ndarray = x / np.maximum(norms, 1e-12)
    return out


def _temperature(extra: Mapping[str, Any], override: float | None) -> tuple[float, str]:
    if override is not None:
        if isinstance(override, bool) or not isinstance(override, (int, float)) or not 0 < override < 1e4:
            raise ConfigError(f"temperature must be a positive number (a multiplier on similarities), got {override!r}")
        return float(override), "the temperature option"
    if isinstance(extra.get("model_temperature"), float):
        return float(extra["model_temperature"]), "the endpoint's model_temperature (MedSigLIP's logit scale)"
    if isinstance(extra.get("scaling_factor"), float):
        return math.exp(extra["scaling_factor"]), "exp(scaling_factor) of the endpoint (MedImageInsight)"
    return DEFAULT_TEMPERATURE, f"default {DEFAULT_TEMPERATURE:g} (the embedder sends no temperature)"


def embed_prompts(embedder: Embedder, prompts: PromptSet, *, temperature: float | None = None) -> PromptEmbeddings:
    """Embed every prompt once and build the seven class vectors (the normalised mean of normalised prompts).

    Raises:
        CapabilityError: the embedder embeds images only.
    """
    if not embedder.embeds_text:
        raise _no_text(embedder)
    flat = prompts.flat
    embeddings = embedder.embed_texts([text for _, text in flat])
    vectors = np.stack([e.vector for e in embeddings]).astype(np.float64)
    units = _unit(vectors)
    codes = np.asarray([code for code, _ in flat])
    classes = _unit(np.stack([units[codes == code].mean(axis=0) for code in CLASS_CODES]))
    value, source = _temperature(embeddings[0].extra, temperature)
    return PromptEmbeddings(vectors, classes, value, source)


def zero_shot_probabilities(images: np.ndarray, texts: PromptEmbeddings) -> tuple[np.ndarray, np.ndarray]:
    """`(probabilities (n, 7), cosine similarities (n, 7))` for image embeddings `(n, d)`."""
    cosine = _unit(np.asarray(images, dtype=np.float64)) @ texts.class_vectors.T
    logits = texts.temperature * cosine
    logits -= logits.max(axis=1, keepdims=True)
    e = np.exp(logits)
    probs: np.ndarray = e / e.sum(axis=1, keepdims=True)
    return probs, cosine


def read_zero_shot_folder(model_dir: str | os.PathLike[str]) -> tuple[dict[str, Any], np.ndarray]:
    """`zero_shot.json` of a folder and its recorded prompt vectors, checked.

    Raises:
        ModelSpecError: the folder, spec or vectors are missing or do not fit together, naming what to fix.
    """
    folder = Path(model_dir).expanduser()
    path = folder / SPEC_FILE
    if not path.is_file():
        raise ModelSpecError(
            f"{str(folder)!r} has no {SPEC_FILE}; write a zero-shot folder with `derm-cloud probe zero-shot`"
        )
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ModelSpecError(f"{path}: invalid JSON at line {exc.lineno}: {exc.msg}") from None
    if not isinstance(spec, dict) or spec.get("format") != ZERO_SHOT_FORMAT:
        raise ModelSpecError(f"{path}: 'format' must be {ZERO_SHOT_FORMAT!r}")
    for key in ("embedder", "prompts", "temperature", "text_embeddings"):
        if key not in spec:
            raise ModelSpecError(f"{path}: missing required key {key!r}")
    try:
        with np.load(folder / VECTORS_FILE, allow_pickle=False) as data:
            vectors = np.asarray(data["prompt_vectors"], dtype=np.float64)
    except (OSError, KeyError, ValueError) as exc:
        raise ModelSpecError(f"cannot read {folder / VECTORS_FILE}: {exc}") from None
    prompts = load_prompts(spec["prompts"])
    if vectors.ndim != 2 or vectors.shape[0] != len(prompts.flat):
        raise ModelSpecError(f"{folder}: {VECTORS_FILE} holds {vectors.shape} for {len(prompts.flat)} prompts")
    return spec, vectors


def _no_text(embedder: Embedder) -> CapabilityError:
    return CapabilityError(
        f"zero-shot needs an embedder that embeds text; {embedder.backend_name!r} ({embedder.model_id}) embeds "
        "images only. Use embedder='vertex-medsiglip' or 'azure-medimageinsight', or train a probe on labelled "
        "images with this embedder (`derm-cloud probe fit`)"
    )


class ZeroShotClassifier(Classifier):
    """Zero-shot classification from text prompts: an image embedding against the seven classes' prompt vectors.

    Args:
        model_dir: a zero-shot folder written by `derm-cloud probe zero-shot` (embedder, prompts, temperature and
            prompt embeddings recorded); or give `embedder` (and `prompts`) instead.
        embedder: an embedder's registry name (`vertex-medsiglip`, `azure-medimageinsight`) or an `Embedder`.
        embedder_options: options of the embedder created here (merged over the folder's recorded ones).
        prompts: a TOML prompt file, a `{class code: [prompt, ...]}` mapping, or `None` for the versioned defaults.
        temperature: multiplier on cosine similarities; default: the model's own (see the module docstring).

    Raises:
        CapabilityError: the embedder embeds images only.
        ConfigError: no embedder, a prompt set missing a class, prompts given with a folder.
        ModelSpecError: the folder's embedder or its text embeddings are not the ones recorded.

    Example:
        >>> clf = ZeroShotClassifier(embedder="vertex-medsiglip", embedder_options={...})  # doctest: +SKIP
        >>> clf.predict("lesion.jpg").top(3)  # doctest: +SKIP
    """

    backend_name = "zero-shot"

    def __init__(
        self,
        model_dir: str | os.PathLike[str] | None = None,
        *,
        embedder: str | Embedder | None = None,
        embedder_options: Mapping[str, Any] | None = None,
        prompts: str | os.PathLike[str] | Mapping[str, Sequence[str]] | None = None,
        temperature: float | None = None,
        image_limits: ImageLimits = DEFAULT_LIMITS,
    ) -> None:
        self.directory = Path(model_dir).expanduser() if model_dir is not None else None
        spec, stored = read_zero_shot_folder(self.directory) if self.directory is not None else ({}, None)
        if spec and prompts is not None:
            raise ConfigError("prompts are recorded in the zero-shot folder; give model_dir or prompts, not both")
        self.prompts = load_prompts(spec.get("prompts") if spec else prompts)
        if spec:
            self.prompts = PromptSet(self.prompts.prompts, str(spec.get("prompts_version", "custom")), str(model_dir))
        recorded = spec.get("embedder") or {}
        if embedder is None and not recorded:
            raise ConfigError(
                "zero-shot needs an embedder that embeds text: embedder='vertex-medsiglip' (or "
                "'azure-medimageinsight') with embedder_options, or model_dir= a folder from "
                "`derm-cloud probe zero-shot`"
            )
        self._owns_embedder = not isinstance(embedder, Embedder)
        if isinstance(embedder, Embedder):
            self.embedder = embedder
        else:
            options = dict(recorded.get("options") or {}) | dict(embedder_options or {})
            if recorded:
                check_recorded_endpoint(
                    f"the zero-shot folder {self.directory} was written", SPEC_FILE, recorded, options
                )
            self.embedder = create_embedder(str(embedder or recorded["name"]), **options)
        try:
            self.texts = self._prompt_embeddings(spec, stored, temperature)
        except Exception:
            if self._owns_embedder:
                self.embedder.close()
            raise
        self.embedder_name = (
            str(embedder) if isinstance(embedder, str) else recorded.get("name", self.embedder.backend_name)
        )
        super().__init__(
            label_map=LabelMap.for_labels(CLASS_CODES),
            model_id=f"zero-shot:{self.embedder.model_id}:{self.texts.fingerprint[:8]}",
            retry=self.embedder.retry,
            image_limits=image_limits,
        )

    def _prompt_embeddings(
        self, spec: Mapping[str, Any], stored: np.ndarray | None, temperature: float | None
    ) -> PromptEmbeddings:
        if not self.embedder.embeds_text:
            raise _no_text(self.embedder)
        if stored is None:
            return embed_prompts(self.embedder, self.prompts, temperature=temperature)
        wanted = spec["embedder"].get("model_id")
        if wanted is not None and self.embedder.model_id != wanted:
            raise ModelSpecError(
                f"the zero-shot folder {self.directory} holds text embeddings of {wanted!r}, but the embedder is "
                f"{self.embedder.model_id!r}: write a folder for this embedder with `derm-cloud probe zero-shot`"
            )
        # One prompt embedded again: an endpoint redeployed with another model would score against stale vectors.
        fresh = self.embedder.embed_texts([self.prompts.flat[0][1]])[0].vector
        if fresh.shape != stored[0].shape or not np.allclose(fresh, stored[0], rtol=1e-3, atol=1e-4):
            raise ModelSpecError(
                f"the embedder's text embedding of {self.prompts.flat[0][1]!r} differs from the one recorded in "
                f"{self.directory}: the model behind it changed; write the folder again with "
                "`derm-cloud probe zero-shot`"
            )
        units = _unit(stored)
        codes = np.asarray([code for code, _ in self.prompts.flat])
        classes = _unit(np.stack([units[codes == code].mean(axis=0) for code in CLASS_CODES]))
        recorded_t = spec["temperature"]
        value, source = (
            _temperature({}, temperature)
            if temperature is not None
            else (float(recorded_t["value"]), str(recorded_t.get("source", "recorded")))
        )
        texts = PromptEmbeddings(stored, classes, value, source)
        if texts.fingerprint != spec["text_embeddings"].get("fingerprint"):
            raise ModelSpecError(f"{self.directory}: {VECTORS_FILE} does not match the fingerprint in {SPEC_FILE}")
        return texts

    # The embedder's retry policy is this classifier's: one policy, one place that retries (never nested).
    @property  # type: ignore[override]
    def retry(self) -> RetryPolicy | None:
        return self.embedder.retry

    @retry.setter
    def retry(self, policy: RetryPolicy | None) -> None:
        self.embedder.retry = policy

    def _call(self, image: PreparedImage, meta: PatientMetadata) -> tuple[RawResult, int]:
        (embedding,) = self.embedder.embed_prepared([image])
        return self._score([embedding])[0][0], embedding.attempts

    def _predict_one(self, image: PreparedImage, metadata: PatientMetadata, timeout: float | None) -> RawResult:
        return self._call(image, metadata)[0]

    def _predict_many(
        self, images: Sequence[PreparedImage], metadata: Sequence[PatientMetadata]
    ) -> list[tuple[RawResult, int, float]]:
        embeddings = self.embedder.embed_prepared(images)
        return [
            (raw, e.attempts, e.latency_ms / e.batch_size + scoring_ms)
            for e, (raw, scoring_ms) in zip(embeddings, self._score(embeddings), strict=True)
        ]

    def _score(self, embeddings: Sequence[Embedding]) -> list[tuple[RawResult, float]]:
        start = time.perf_counter()
        probs, cosine = zero_shot_probabilities(np.stack([e.vector for e in embeddings]), self.texts)
        scoring_ms = (time.perf_counter() - start) * 1000 / len(embeddings)
        return [
            (
                RawResult(
                    scores=list(zip(CLASS_CODES, row.tolist(), strict=True)),
                    request_id=e.request_id,
                    extra={
                        "embedding_ms": e.latency_ms / e.batch_size,
                        "scoring_ms": scoring_ms,
                        "embedder": e.model_id,
                        "cosine": dict(zip(CLASS_CODES, [round(float(c), 5) for c in cos], strict=True)),
                    },
                ),
                scoring_ms,
            )
            for e, row, cos in zip(embeddings, probs, cosine, strict=True)
        ]

    def describe(self) -> BackendInfo:
        inner = self.embedder.describe()
        facts: dict[str, Any] = {
            "architecture": f"zero-shot from text prompts: cosine similarity of {inner.model_id} image embeddings "
            f"with {len(self.prompts.flat)} prompt embeddings (7 class ensembles), times a temperature, softmax",
            "embedder": {"backend": inner.backend, "model_id": inner.model_id, "service": inner.service},
            "zero_shot": {
                "labelled_images": 0,
                "prompts_version": self.prompts.version,
                "prompts_source": self.prompts.source,
                "prompts": self.prompts.to_dict(),
                "prompts_sha256": self.prompts.fingerprint,
                "text_embeddings_sha256": self.texts.fingerprint,
                "temperature": round(self.texts.temperature, 4),
                "temperature_source": self.texts.temperature_source,
                "calibration": UNCALIBRATED_NOTE,
            },
            "training_data": "none for the classes (zero-shot from text prompts)"
            + (f"; embedder: {inner.model_facts['training_data']}" if inner.model_facts.get("training_data") else ""),
            "intended_use": "Research comparison of skin-lesion classifiers (triage support, never a diagnosis; a "
            "clinician reviews every result).",
        }
        if self.directory is not None:
            facts["model_dir"] = str(self.directory)
        for key in ("stand_in", "text_embeddings"):  # an emulated endpoint's encoders are not the provider's
            if key in inner.model_facts:
                facts["stand_in" if key == "stand_in" else "stand_in_text"] = inner.model_facts[key]
        billing = dict(inner.billing) | {
            "prompts": f"{len(self.prompts.flat)} text embeddings, once per classifier (not per image)",
            "scoring": "cosine similarities and a softmax on this machine, cost counted as nil",
        }
        return BackendInfo(
            backend=self.backend_name,
            provider=inner.provider,
            service=f"{inner.service}, zero-shot from text prompts",
            model_id=self.model_id,
            region=inner.region,
            endpoint=inner.endpoint,
            data_leaves_machine=inner.data_leaves_machine,
            stores_images=inner.stores_images,
            emulated=inner.emulated,
            labels_mapped=True,
            billing=billing,
            model_facts=facts,
        )

    def _close(self) -> None:
        if self._owns_embedder:
            self.embedder.close()
