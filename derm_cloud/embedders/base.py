"""The `Embedder` interface: image (and text) embeddings from a local encoder or a foundation-model endpoint.

It mirrors `Classifier`: the base class owns everything that must behave the same for every provider (input
decoding and validation through `prepare_payload`, so EXIF and GPS are stripped before anything leaves the
machine; retries through the backend's `RetryPolicy`; timing; micro-batching; async; closing; `describe()`).
A backend implements one primitive:

```python
def _embed_many(self, images: Sequence[PreparedImage], timeout: float | None) -> list[RawEmbedding]
```

which embeds one provider request's worth of images (at most `max_batch`), and, when the model embeds text
(MedSigLIP, MedImageInsight), sets `embeds_text = True` and implements `_embed_text_many` as well. The base
checks every vector the provider returns (length, finite values) so a malformed answer is an
`InvalidResponseError`, never a silent zero.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from derm_cloud.base import BackendInfo
from derm_cloud.errors import CapabilityError, ConfigError, InvalidImageError, InvalidResponseError
from derm_cloud.images import DEFAULT_LIMITS, ImageInput, ImageLimits, PreparedImage, check_input, prepare_payload
from derm_cloud.lifecycle import Closable
from derm_cloud.retry import RetryPolicy

if TYPE_CHECKING:
    import numpy as np

__all__ = ["Embedder", "Embedding", "RawEmbedding"]

T = TypeVar("T")


@dataclass(frozen=True)
class RawEmbedding:
    """What a backend primitive returns per input: the provider's vector, as the provider sent it.

    Attributes:
        vector: the embedding (a list of floats or a 1-D numpy array).
        request_id: the provider's request id, when it sent one.
        extra: provider facts worth keeping (a zero-shot score, the model version that answered ...).
    """

    vector: Sequence[float] | np.ndarray
    request_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, eq=False)
class Embedding:
    """One image's (or text's) embedding, as every embedder returns it.

    Compared by identity (two equal vectors from two calls are still two results); compare `vector`s with
    `numpy.array_equal` or a tolerance.

    Attributes:
        vector: read-only 1-D `float32` numpy array.
        model_id: the model or endpoint that made it.
        backend: registry name of the embedder.
        latency_ms: wall time of the provider request this vector came from (a micro-batch of `batch_size`
            inputs shares one request: divide by `batch_size` for a per-input cost).
        request_id: the provider's request id, for support tickets.
        attempts: calls made, retries included.
        batch_size: inputs sent in the same provider request.
        extra: provider facts (see `RawEmbedding.extra`).
    """

    vector: np.ndarray
    model_id: str
    backend: str
    latency_ms: float
    request_id: str | None = None
    attempts: int = 1
    batch_size: int = 1
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def dimension(self) -> int:
        """Length of the vector."""
        return int(self.vector.shape[0])


class Embedder(Closable, ABC):
    """Embeddings of skin-lesion images from one encoder; every backend returns the same `Embedding`.

    Use as a context manager so that sessions, sockets and runtimes are released:

    ```python
    with derm_cloud.create_embedder("local-onnx", model_dir="~/.cache/derm-cloud/models/sklesion-embed") as emb:
        vectors = [e.vector for e in emb.embed_batch(["a.jpg", "b.jpg"])]
    ```

    An embedding is an input to a classifier a team trains (a probe), not a finding: a clinician reviews every
    result of a classifier built on it.
    """

    #: registry name, set by each backend class.
    backend_name: ClassVar[str] = ""
    _closed_hint: ClassVar[str] = "embedder"
    #: provider requests in flight at once in `embed_batch`.
    default_concurrency: ClassVar[int] = 1
    #: inputs per provider request (Vertex `instances`, an Azure ML batch of rows, an ONNX batch).
    default_max_batch: ClassVar[int] = 1
    #: whether the model embeds text into the same space (zero-shot from prompts); see `embed_texts`.
    embeds_text: ClassVar[bool] = False
    #: the backend decodes every pixel itself (a local encoder): preparation skips the separate JPEG check.
    decodes_every_pixel: ClassVar[bool] = False
    #: the SDK keeps its per-call timeout as a deadline on the whole call (gRPC); see `Classifier`.
    sdk_deadline: bool = False
    #: seconds one attempt may take, kept by the retry policy's watchdog; `None`: only the policy's deadline.
    attempt_timeout: float | None = None

    def __init__(
        self,
        *,
        model_id: str,
        dimension: int | None = None,
        retry: RetryPolicy | None = None,
        image_limits: ImageLimits = DEFAULT_LIMITS,
        concurrency: int | None = None,
        max_batch: int | None = None,
    ) -> None:
        if dimension is not None and dimension < 1:
            raise ConfigError(f"dimension must be a positive integer, got {dimension}")
        if max_batch is not None and max_batch < 1:
            raise ConfigError(f"max_batch must be at least 1, got {max_batch}")
        self.model_id = model_id
        #: the vector length every answer must have; `None` until the first answer when the backend cannot know.
        self.dimension = dimension
        self.retry = retry
        self.image_limits = image_limits
        self.concurrency = max(1, concurrency or self.default_concurrency)
        self.max_batch = max_batch or self.default_max_batch
        self._closed = False

    # --- what backends implement ------------------------------------------------------------------------

    @abstractmethod
    def _embed_many(self, images: Sequence[PreparedImage], timeout: float | None) -> list[RawEmbedding]:
        """Embed one provider request's images (at most `max_batch`), one `RawEmbedding` each, in order.

        Raise `RemoteError` subclasses for provider failures; the base retries the retryable ones.
        """

    def _embed_text_many(self, texts: Sequence[str], timeout: float | None) -> list[RawEmbedding]:
        """Embed one request's texts; backends with `embeds_text = True` override this."""
        raise self._no_text()

    @abstractmethod
    def describe(self) -> BackendInfo:
        """Facts about this embedder (provider, region, billing keys, data handling); `labels_mapped=False`."""

    # --- the public interface ------------------------------------------------------------------------------

    def embed(self, image: ImageInput) -> Embedding:
        """Embed one image.

        Args:
            image: a `Payload` from `derm_cloud.prepare_payload`, or a path, bytes, binary file object,
                `PIL.Image` or numpy `uint8` array, prepared here (oriented, metadata stripped).

        Raises:
            InvalidImageError: the input is not a usable image (nothing is sent anywhere).
            RemoteError: the provider failed after the retry policy gave up.
        """
        self._check_open()
        return self.embed_prepared([self._prepare(image)])[0]

    def embed_batch(self, images: Iterable[ImageInput], *, batch_size: int = 64) -> list[Embedding]:
        """Embed many images, in input order; each image is checked before any is sent.

        `batch_size` bounds the images prepared (held in memory) at once; each chunk is sent as provider
        requests of at most `max_batch` images, `concurrency` requests at a time.

        Raises:
            InvalidImageError: naming the index of the first bad image.
        """
        self._check_open()
        if batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
        items = list(images)
        checked = [_indexed(i, len(items), self._check, item) for i, item in enumerate(items)]
        out: list[Embedding] = []
        for lo in range(0, len(checked), batch_size):
            window = checked[lo : lo + batch_size]
            chunk = [_indexed(lo + i, len(items), self._prepare, item) for i, item in enumerate(window)]
            out.extend(self.embed_prepared(chunk))
            del chunk
        return out

    def embed_texts(self, texts: Iterable[str]) -> list[Embedding]:
        """Embed text prompts into the image space (zero-shot), in input order.

        Raises:
            CapabilityError: this model embeds images only (`embeds_text` is false).
            ConfigError: a prompt is not a non-empty string.
        """
        self._check_open()
        if not self.embeds_text:
            raise self._no_text()
        prompts = list(texts)
        for i, text in enumerate(prompts):
            if not isinstance(text, str) or not text.strip():
                raise ConfigError(f"text {i} of {len(prompts)} must be a non-empty string, got {text!r}")
        return self._run_requests(prompts, self._embed_text_many)

    async def aembed(self, image: ImageInput) -> Embedding:
        """Async `embed`: runs in a worker thread so many embedders can be awaited concurrently."""
        import asyncio  # imported when used: import derm_cloud stays light

        return await asyncio.to_thread(self.embed, image)

    async def aembed_batch(self, images: Iterable[ImageInput], *, batch_size: int = 64) -> list[Embedding]:
        """Async `embed_batch`."""
        import asyncio

        return await asyncio.to_thread(self.embed_batch, images, batch_size=batch_size)

    # --- shared plumbing -------------------------------------------------------------------------------------

    def embed_prepared(self, payloads: Sequence[PreparedImage]) -> list[Embedding]:
        """Embed prepared payloads (for callers that prepared them once, such as a probe classifier)."""
        self._check_open()
        return self._run_requests(list(payloads), self._embed_many)

    def _check(self, image: ImageInput) -> ImageInput:
        return check_input(image, limits=self.image_limits)

    def _prepare(self, image: ImageInput) -> PreparedImage:
        if not self.decodes_every_pixel:
            return prepare_payload(image, limits=self.image_limits)
        payload = prepare_payload(image, limits=self.image_limits, verify_by_decoding=True)
        if payload.verify_on_decode:
            payload.array()  # a damaged JPEG is refused here, before the timer, as the separate check would
        return payload

    def _run_requests(
        self, inputs: list[T], primitive: Callable[[Sequence[T], float | None], list[RawEmbedding]]
    ) -> list[Embedding]:
        requests = [inputs[lo : lo + self.max_batch] for lo in range(0, len(inputs), self.max_batch)]

        def one(request: list[T]) -> list[Embedding]:
            start = time.perf_counter()
            raws, attempts = self._call(lambda timeout: primitive(request, timeout))
            ms = (time.perf_counter() - start) * 1000
            if len(raws) != len(request):
                raise InvalidResponseError(
                    f"sent {len(request)} input(s), got {len(raws)} embedding(s) back", backend=self.backend_name
                )
            return [self._to_embedding(raw, attempts, ms, len(request)) for raw in raws]

        if self.concurrency == 1 or len(requests) <= 1:
            return [e for request in requests for e in one(request)]
        from concurrent.futures import ThreadPoolExecutor  # imported when used: import derm_cloud stays light

        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(requests))) as pool:
            return [e for answer in pool.map(one, requests) for e in answer]

    def _call(self, fn: Callable[[float | None], list[RawEmbedding]]) -> tuple[list[RawEmbedding], int]:
        if self.retry is None:
            return fn(None), 1
        return self.retry.call(
            fn, backend=self.backend_name, sdk_deadline=self.sdk_deadline, attempt_timeout=self.attempt_timeout
        )

    def _to_embedding(self, raw: RawEmbedding, attempts: int, latency_ms: float, batch_size: int) -> Embedding:
        import numpy as np  # imported when used: import derm_cloud loads no numpy

        try:
            vector = np.asarray(raw.vector, dtype=np.float32).reshape(-1).copy()
        except (TypeError, ValueError) as exc:
            raise InvalidResponseError(
                f"the embedding is not a list of numbers: {exc}", backend=self.backend_name
            ) from exc
        if self.dimension is not None and vector.shape[0] != self.dimension:
            raise InvalidResponseError(
                f"embedding of length {vector.shape[0]}, expected {self.dimension} for {self.model_id}",
                backend=self.backend_name,
                request_id=raw.request_id,
            )
        if vector.shape[0] == 0 or not bool(np.isfinite(vector).all()):
            raise InvalidResponseError(
                "the embedding is empty or holds NaN/inf values", backend=self.backend_name, request_id=raw.request_id
            )
        vector.flags.writeable = False
        return Embedding(
            vector=vector,
            model_id=self.model_id,
            backend=self.backend_name,
            latency_ms=latency_ms,
            request_id=raw.request_id,
            attempts=attempts,
            batch_size=batch_size,
            extra=dict(raw.extra),
        )

    def _no_text(self) -> CapabilityError:
        return CapabilityError(
            f"embedder {self.backend_name!r} ({self.model_id}) embeds images only, not text; zero-shot from text "
            "prompts needs an embedder with embeds_text (MedSigLIP, MedImageInsight); see "
            "`derm_cloud.available_embedders()`"
        )


def _indexed(index: int, total: int, fn: Callable[..., T], *args: Any) -> T:
    """Run `fn(*args)`, naming the input's index in an `InvalidImageError` (the first bad image of a batch)."""
    try:
        return fn(*args)
    except InvalidImageError as exc:
        raise InvalidImageError(f"image {index} of {total}: {exc}") from None
