"""The `Embedder` interface: what the base class guarantees for every embedder backend (with a fake backend)."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Sequence

import numpy as np
import pytest
from PIL import Image

import derm_cloud
from derm_cloud import (
    BackendInfo,
    BackendNotFoundError,
    CapabilityError,
    ConfigError,
    Embedder,
    InvalidImageError,
    InvalidResponseError,
    PreparedImage,
    RawEmbedding,
    RetryPolicy,
    ThrottledError,
)
from derm_cloud.embedders import registry


class FakeEmbedder(Embedder):
    """Embeds an image as (mean R, mean G, mean B, byte count); records every request it receives."""

    backend_name = "fake-embedder"
    default_max_batch = 2

    def __init__(
        self, *, dimension: int | None = 4, fail_first: int = 0, answer: str = "ok", retry: RetryPolicy | None = None
    ) -> None:
        super().__init__(model_id="fake-1", dimension=dimension, retry=retry)
        self.requests: list[list[bytes]] = []
        self.fail_first = fail_first
        self.answer = answer

    def _embed_many(self, images: Sequence[PreparedImage], timeout: float | None) -> list[RawEmbedding]:
        self.requests.append([p.data for p in images])
        if self.fail_first > 0:
            self.fail_first -= 1
            raise ThrottledError("slow down", backend=self.backend_name, status=429)
        if self.answer == "short":
            return [RawEmbedding([1.0, 2.0]) for _ in images]
        if self.answer == "nan":
            return [RawEmbedding([float("nan")] * 4) for _ in images]
        if self.answer == "missing":
            return [RawEmbedding([1.0] * 4)]
        out = []
        for p in images:
            mean = np.asarray(p.image, dtype=np.float64).reshape(-1, 3).mean(axis=0)
            out.append(RawEmbedding([*mean.tolist(), float(len(p.data))], request_id=f"r{len(self.requests)}"))
        return out

    def describe(self) -> BackendInfo:
        return BackendInfo(backend=self.backend_name, provider="local", service="test", model_id=self.model_id)


class FakeTextEmbedder(FakeEmbedder):
    embeds_text = True

    def _embed_text_many(self, texts: Sequence[str], timeout: float | None) -> list[RawEmbedding]:
        return [RawEmbedding([float(len(t)), 0.0, 0.0, 1.0]) for t in texts]


def _jpeg(colour: tuple[int, int, int], gps: bool = False) -> bytes:
    img = Image.new("RGB", (32, 24), colour)
    exif = Image.Exif()
    if gps:
        exif[0x8825] = {1: "N", 2: (51.0, 30.0, 0.0)}  # GPSInfo: latitude of somewhere
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=95, exif=exif.tobytes())
    return buf.getvalue()


def _no_retry_sleep() -> RetryPolicy:
    return RetryPolicy(max_attempts=3, base_delay=0.0, sleep=lambda s: None)


def test_embed_batch_micro_batches_in_order_and_returns_read_only_float32() -> None:
    images = [_jpeg((10 * i, 0, 0)) for i in range(5)]
    with FakeEmbedder() as emb:
        out = emb.embed_batch(images)
        assert [len(r) for r in emb.requests] == [2, 2, 1]  # max_batch 2: five images in three requests
    assert [e.batch_size for e in out] == [2, 2, 2, 2, 1]
    reds = [e.vector[0] for e in out]
    assert reds == sorted(reds) and reds[0] < 5 < reds[-1]  # input order kept
    first = out[0]
    assert first.vector.dtype == np.float32 and first.dimension == 4
    assert first.backend == "fake-embedder" and first.model_id == "fake-1" and first.latency_ms >= 0
    with pytest.raises(ValueError, match="read-only"):
        first.vector[0] = 1.0


def test_gps_exif_never_reaches_the_backend() -> None:
    source = _jpeg((200, 100, 50), gps=True)
    assert b"Exif" in source
    emb = FakeEmbedder()
    emb.embed(source)
    (sent,) = emb.requests[0]
    assert b"Exif" not in sent and b"GPS" not in sent


def test_retryable_failures_are_retried_and_counted() -> None:
    emb = FakeEmbedder(fail_first=1, retry=_no_retry_sleep())
    e = emb.embed(_jpeg((1, 2, 3)))
    assert e.attempts == 2 and len(emb.requests) == 2


@pytest.mark.parametrize(
    ("answer", "message"),
    [("short", "length 2, expected 4"), ("nan", "NaN"), ("missing", "sent 2 input")],
)
def test_malformed_answers_are_typed_errors(answer: str, message: str) -> None:
    emb = FakeEmbedder(answer=answer)
    with pytest.raises(InvalidResponseError, match=message):
        emb.embed_batch([_jpeg((1, 2, 3)), _jpeg((3, 2, 1))])


def test_bad_image_is_refused_by_index_before_anything_is_sent() -> None:
    emb = FakeEmbedder()
    with pytest.raises(InvalidImageError, match="image 1 of 2"):
        emb.embed_batch([_jpeg((1, 2, 3)), b"not an image"])
    assert emb.requests == []


def test_text_needs_a_text_embedder() -> None:
    with pytest.raises(CapabilityError, match="images only"):
        FakeEmbedder().embed_texts(["a photo of a melanoma"])
    texts = FakeTextEmbedder().embed_texts(["melanoma", "naevus"])
    assert [t.vector[0] for t in texts] == [8.0, 6.0]
    with pytest.raises(ConfigError, match="text 1 of 2"):
        FakeTextEmbedder().embed_texts(["melanoma", "  "])


def test_async_close_and_context_manager() -> None:
    emb = FakeEmbedder()
    e = asyncio.run(emb.aembed(_jpeg((5, 5, 5))))
    assert e.dimension == 4
    batch = asyncio.run(emb.aembed_batch([_jpeg((5, 5, 5))] * 3))
    assert len(batch) == 3
    emb.close()
    emb.close()
    with pytest.raises(RuntimeError, match=r"^FakeEmbedder\(model_id='fake-1'\) is closed; create a new embedder$"):
        emb.embed(_jpeg((5, 5, 5)))
    with FakeEmbedder() as entered:
        assert isinstance(entered, FakeEmbedder) and not entered._closed
    assert entered._closed


def test_registry_names_and_errors() -> None:
    names = [e.name for e in derm_cloud.available_embedders()]
    assert "local-onnx" in names
    with pytest.raises(BackendNotFoundError, match="no embedder named 'nope'"):
        derm_cloud.create_embedder("nope")
    derm_cloud.register_embedder("fake-embedder", f"{__name__}:FakeEmbedder")
    derm_cloud.register_embedder("not-an-embedder", "derm_cloud.base:BackendInfo")
    try:
        assert isinstance(derm_cloud.create_embedder("fake-embedder", dimension=4), FakeEmbedder)
        with pytest.raises(ConfigError, match="dimension takes int"):
            derm_cloud.create_embedder("fake-embedder", dimension="4")
        with pytest.raises(ConfigError, match="unexpected keyword"):
            derm_cloud.create_embedder("fake-embedder", dimensoin=4)
        with pytest.raises(BackendNotFoundError, match="not an Embedder subclass"):
            derm_cloud.get_embedder_class("not-an-embedder")
        # The same wording as for a classifier backend: the message names what is wrong with the target.
        derm_cloud.register_embedder("no-such-class", f"{__name__}:Nope")
        with pytest.raises(BackendNotFoundError, match=r"has no attribute 'Nope'.*\(or register_embedder\)"):
            derm_cloud.get_embedder_class("no-such-class")
    finally:
        registry._EXTRA.pop("fake-embedder")
        registry._EXTRA.pop("not-an-embedder")
        registry._EXTRA.pop("no-such-class", None)
