"""The `Classifier` interface that every backend implements.

The base class owns everything that must behave the same for every provider: input decoding and validation,
metadata normalisation, label mapping into the canonical taxonomy, timing, retries, batching, async, closing
and `describe()`. A backend implements one private primitive:

```python
def _predict_one(self, image: PreparedImage, metadata: PatientMetadata, timeout: float | None) -> RawResult
```

and may override `_predict_many` when the provider batches natively (local models do). Remote backends set
`self.retry` to a `RetryPolicy` and raise `RemoteError`
subclasses; the base retries those.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from derm_cloud.errors import ConfigError, InvalidImageError
from derm_cloud.images import (
    DEFAULT_LIMITS,
    ImageInput,
    ImageLimits,
    PreparedImage,
    check_input,
    prepare_payload,
)
from derm_cloud.lifecycle import Closable
from derm_cloud.payload import Payload, collect_reencodes
from derm_cloud.redaction import redact_url
from derm_cloud.retry import RetryPolicy
from derm_cloud.taxonomy import CLASS_CODES, LabelMap
from derm_cloud.types import LabelScore, PatientMetadata, Prediction

__all__ = ["BackendInfo", "Classifier", "MetadataInput", "RawResult"]

MetadataInput = PatientMetadata | dict[str, Any] | None


@dataclass(frozen=True)
class RawResult:
    """What a backend primitive returns: the provider's labels and scores, in the provider's order."""

    scores: Sequence[tuple[str, float]]
    request_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class BackendInfo:
    """Facts about a backend instance that the comparator and governance notes need.

    Attributes:
        backend: registry name.
        provider: `local`, `aws`, `azure`, `gcp` ...
        service: the managed service (`SageMaker real-time endpoint`, `onnxruntime` ...).
        model_id: model or endpoint id.
        region: cloud region, `None` for local.
        endpoint: URL the backend calls (emulators show 127.0.0.1), `None` for local; its userinfo and query
            values are redacted (`?code=<redacted>`), as these facts go into reports and notes.
        data_leaves_machine: whether images are sent to a provider. For an emulated backend this describes the
            real service it stands for; `emulated` says that this run kept them on 127.0.0.1.
        stores_images: whether the provider keeps the image (`None` if unknown).
        emulated: whether the endpoint is a derm-cloud emulator rather than the real cloud.
        labels_mapped: whether the outputs map to the seven lesion classes.
        billing: price-catalogue keys (`{"sku": "sagemaker.realtime.ml.m5.large", "instances": 1}`).
        model_facts: architecture, licence, training data ... when the backend knows them.
    """

    backend: str
    provider: str
    service: str
    model_id: str
    region: str | None = None
    endpoint: str | None = None
    data_leaves_machine: bool = False
    stores_images: bool | None = False
    emulated: bool = False
    labels_mapped: bool = True
    billing: dict[str, Any] = field(default_factory=dict)
    model_facts: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.endpoint is not None:
            object.__setattr__(self, "endpoint", redact_url(self.endpoint))


class Classifier(Closable, ABC):
    """A skin-lesion classifier behind one provider; every backend returns the same `Prediction`.

    Use as a context manager so that sessions, sockets and runtimes are released:

    ```python
    with derm_cloud.create("local-onnx", model_dir="~/.cache/derm-cloud/models/sklesion-0.2.2") as clf:
        prediction = clf.predict("lesion.jpg", {"age": 45, "sex": "male", "site": "back"})
        print(prediction.top(3))
    ```

    The result supports triage and research, never a diagnosis: a clinician reviews every result.
    """

    #: registry name, set by each backend class.
    backend_name: ClassVar[str] = ""
    _closed_hint: ClassVar[str] = "classifier"
    #: threads used by ``predict_batch`` for backends without native batching.
    default_concurrency: ClassVar[int] = 1
    #: the backend decodes every pixel of every image it prepares itself (a local model): its full decode
    #: verifies a JPEG's entropy data, so preparation skips the separate 1/8-scale check (see prepare_payload).
    decodes_every_pixel: ClassVar[bool] = False
    #: the SDK enforces its per-call timeout as a deadline on the whole call (gRPC), so the retry policy needs
    #: no watchdog thread to keep its deadline (an HTTP client's timeout bounds each socket read only).
    sdk_deadline: bool = False
    #: seconds one attempt may take, kept by the retry policy's watchdog where the SDK cannot keep it (an
    #: injected client with its own timeout, an answer trickling in); ``None``: only the policy's deadline.
    attempt_timeout: float | None = None

    def __init__(
        self,
        *,
        label_map: LabelMap,
        model_id: str,
        retry: RetryPolicy | None = None,
        image_limits: ImageLimits = DEFAULT_LIMITS,
        concurrency: int | None = None,
    ) -> None:
        self.label_map = label_map
        self.model_id = model_id
        self.retry = retry
        self.image_limits = image_limits
        self.concurrency = max(1, concurrency or self.default_concurrency)
        self._closed = False

    # --- what backends implement ------------------------------------------------------------------------

    @abstractmethod
    def _predict_one(self, image: PreparedImage, metadata: PatientMetadata, timeout: float | None) -> RawResult:
        """Classify one prepared image; raise RemoteError subclasses for provider failures."""

    def _predict_many(
        self, images: Sequence[PreparedImage], metadata: Sequence[PatientMetadata]
    ) -> list[tuple[RawResult, int, float]]:
        """Classify a chunk; default: one call per image, `self.concurrency` at a time.

        Returns `(raw, attempts, latency_ms)` per image. Local backends override this to run one batch.
        """

        def one(pair: tuple[PreparedImage, PatientMetadata]) -> tuple[RawResult, int, float]:
            start = time.perf_counter()
            raw, attempts = self._call(pair[0], pair[1])
            return raw, attempts, (time.perf_counter() - start) * 1000

        pairs = list(zip(images, metadata, strict=True))
        if self.concurrency == 1 or len(pairs) == 1:
            return [one(p) for p in pairs]
        from concurrent.futures import ThreadPoolExecutor  # imported when used: import derm_cloud stays light
        from contextvars import copy_context

        # Each task runs in a copy of this thread's context, so re-encodes made in the pool are still recorded
        # for the Prediction (a context cannot be entered by two threads at once: one copy per task).
        tasks = [(copy_context(), pair) for pair in pairs]
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(pairs))) as pool:
            return list(pool.map(lambda task: task[0].run(one, task[1]), tasks))

    @property
    def uses_metadata(self) -> bool:
        """Whether patient metadata passed to `predict` reaches the model (`False`: image only).

        A comparison runs every backend in one metadata mode (metadata-blind unless all of them use it), so a
        difference between backends is never the effect of one of them seeing age, sex and site.
        """
        return False

    @abstractmethod
    def describe(self) -> BackendInfo:
        """Facts about this backend instance (provider, region, billing keys, data handling)."""

    # --- the public interface ------------------------------------------------------------------------------

    def predict(self, image: ImageInput, metadata: MetadataInput = None) -> Prediction:
        """Classify one image.

        Args:
            image: a `Payload` from `derm_cloud.prepare_payload` (prepared
                once, shared by every backend), or a path, bytes, binary file object, `PIL.Image` or numpy
                `uint8` array, prepared here.
            metadata: optional `PatientMetadata` or a dict with `age`, `sex`, `site`.

        Raises:
            InvalidImageError: the input is not a usable image (nothing is sent anywhere).
            RemoteError: the provider failed after the retry policy gave up.
        """
        self._check_open()
        payload = self._prepare(image)
        meta = as_metadata(metadata)
        start = time.perf_counter()
        with collect_reencodes() as reencodes:
            raw, attempts = self._call(payload, meta)
        latency_ms = (time.perf_counter() - start) * 1000
        return self._to_prediction(raw, attempts, latency_ms, payload, [note for _, note in reencodes])

    def predict_batch(
        self,
        images: Iterable[ImageInput],
        metadata: Iterable[MetadataInput] | None = None,
        *,
        batch_size: int = 16,
    ) -> list[Prediction]:
        """Classify many images, in input order; each image is validated before any is sent.

        Raises:
            InvalidImageError: naming the index of the first bad image.
        """
        self._check_open()
        if batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
        items = list(images)
        metas = [as_metadata(m) for m in metadata] if metadata is not None else [PatientMetadata()] * len(items)
        if len(metas) != len(items):
            raise ValueError(f"got {len(items)} images but {len(metas)} metadata entries; pass one per image")
        # Pass 1, cheap: every input's header, so a bad image is refused before anything is sent. Only the
        # inputs are kept (a path stays a path), never pixels, so memory is flat in the number of images.
        checked = [self._checked(i, item, len(items)) for i, item in enumerate(items)]
        out: list[Prediction] = []
        for lo in range(0, len(checked), batch_size):
            # Pass 2, per chunk: prepare (read, verify, decode on demand), classify, then drop the chunk's
            # payloads: at most this chunk's and the next one's images are alive at once.
            payloads = [
                self._prepared(lo + i, item, len(items)) for i, item in enumerate(checked[lo : lo + batch_size])
            ]
            with collect_reencodes() as reencodes:
                chunk = self._predict_many(payloads, metas[lo : lo + batch_size])
            for payload, (raw, attempts, ms) in zip(payloads, chunk, strict=True):
                notes = [note for owner, note in reencodes if owner == id(payload)]
                out.append(self._to_prediction(raw, attempts, ms, payload, notes))
            del payloads, chunk
        return out

    def _checked(self, index: int, item: ImageInput, total: int) -> ImageInput:
        try:
            return check_input(item, limits=self.image_limits)
        except InvalidImageError as exc:
            raise InvalidImageError(f"image {index} of {total}: {exc}") from None

    def _prepared(self, index: int, item: ImageInput, total: int) -> Payload:
        try:
            return self._prepare(item)
        except InvalidImageError as exc:
            raise InvalidImageError(f"image {index} of {total}: {exc}") from None

    def _prepare(self, image: ImageInput) -> Payload:
        """Prepare one input for this backend (a local backend defers the JPEG check to its own decode)."""
        if not self.decodes_every_pixel:
            return prepare_payload(image, limits=self.image_limits)
        payload = prepare_payload(image, limits=self.image_limits, verify_by_decoding=True)
        if payload.verify_on_decode:
            # Decode now, not inside the model call: a damaged JPEG is refused with its index and before the
            # timer, as the separate check would have refused it.
            payload.array()
        return payload

    async def apredict(self, image: ImageInput, metadata: MetadataInput = None) -> Prediction:
        """Async `predict`: runs in a worker thread so many backends can be awaited concurrently."""
        import asyncio  # imported when used: import derm_cloud stays light

        return await asyncio.to_thread(self.predict, image, metadata)

    # --- shared plumbing -------------------------------------------------------------------------------------

    def _call(self, image: PreparedImage, meta: PatientMetadata) -> tuple[RawResult, int]:
        if self.retry is None:
            return self._predict_one(image, meta, None), 1
        return self.retry.call(
            lambda timeout: self._predict_one(image, meta, timeout),
            backend=self.backend_name,
            sdk_deadline=self.sdk_deadline,
            attempt_timeout=self.attempt_timeout,
        )

    def _to_prediction(
        self,
        raw: RawResult,
        attempts: int,
        latency_ms: float,
        payload: Payload | None = None,
        reencodes: Sequence[str] = (),
    ) -> Prediction:
        labels = [label for label, _ in raw.scores]
        scores = [float(score) for _, score in raw.scores]
        provider_scores = tuple(LabelScore(s, lab) for lab, s in zip(labels, scores, strict=True))
        if self.label_map.mapped:
            by_label = dict(zip(labels, scores, strict=True))
            ordered = [by_label.get(lab, 0.0) for lab in self.label_map.provider_labels]
            probs = self.label_map.to_canonical(ordered)
            probabilities = dict(zip(CLASS_CODES, probs, strict=True))
        else:
            probabilities = {}
        return Prediction(
            probabilities=probabilities,
            provider_scores=provider_scores,
            backend=self.backend_name,
            model_id=self.model_id,
            latency_ms=latency_ms,
            request_id=raw.request_id,
            mapped=self.label_map.mapped,
            attempts=attempts,
            extra=_with_payload_facts(dict(raw.extra), payload, reencodes),
        )


def _with_payload_facts(extra: dict[str, Any], payload: Payload | None, reencodes: Sequence[str]) -> dict[str, Any]:
    """Say in the prediction what this backend got that the others did not, and what damage was tolerated."""
    if reencodes:
        # Thread pools inside a backend may send a payload more than once (retries): one note is enough.
        extra["payload_reencoded"] = reencodes[-1]
    if payload is not None and payload.warnings:
        extra["input_warnings"] = list(payload.warnings)
    return extra


def as_metadata(metadata: MetadataInput) -> PatientMetadata:
    """Accept `None`, a `PatientMetadata` or a dict with age/sex/site(/localization)."""
    if metadata is None:
        return PatientMetadata()
    if isinstance(metadata, PatientMetadata):
        return metadata
    if isinstance(metadata, dict):
        known = {"age", "sex", "site", "localization", "fitzpatrick"}
        unknown = sorted(set(metadata) - known)
        if unknown:
            raise ConfigError(f"unknown metadata key(s) {unknown}; use age, sex, site and fitzpatrick")
        return PatientMetadata(
            age=metadata.get("age"),
            sex=metadata.get("sex") or "unknown",
            site=metadata.get("site", metadata.get("localization")),
            fitzpatrick=metadata.get("fitzpatrick"),
        )
    raise TypeError(f"metadata must be PatientMetadata, a dict or None, not {type(metadata).__name__}")
