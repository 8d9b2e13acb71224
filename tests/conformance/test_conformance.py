"""The contract every backend must honour, run over every backend (and its emulator) in conftest.FACTORIES."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from derm_cloud.base import BackendInfo
from derm_cloud.errors import InvalidImageError
from derm_cloud.images import metadata_markers
from derm_cloud.registry import available_backends
from derm_cloud.taxonomy import CLASS_CODES
from derm_cloud.testing.conformance import Subject
from derm_cloud.types import Prediction

META = {"age": 55, "sex": "female", "site": "back"}


def _check(pred: Prediction, subject: Subject) -> None:
    clf = subject.classifier
    assert pred.backend == clf.backend_name
    assert pred.model_id
    assert pred.latency_ms > 0
    assert pred.attempts >= 1
    if not pred.mapped:
        assert pred.probabilities == {} and pred.provider_scores
        return
    assert list(pred.probabilities) == list(CLASS_CODES)
    assert all(0.0 <= p <= 1.0 for p in pred.probabilities.values())
    if subject.sums_to_one:
        assert sum(pred.vector()) == pytest.approx(1.0, abs=1e-4)
    scores = [s.score for s in pred.top_k]
    assert scores == sorted(scores, reverse=True)
    assert pred.provider_scores, "the provider's own labels and scores must be kept"


def test_registered_under_its_name(subject: Subject) -> None:
    names = {e.name for e in available_backends()}
    assert subject.classifier.backend_name in names


def test_predict(subject: Subject, dev_images: list[Path]) -> None:
    _check(subject.classifier.predict(dev_images[0], META), subject)


def test_batch_matches_single_calls_in_order(subject: Subject, dev_images: list[Path]) -> None:
    clf = subject.classifier
    batch = clf.predict_batch(dev_images[:3], [META] * 3, batch_size=2)
    assert len(batch) == 3
    for path, pred in zip(dev_images[:3], batch, strict=True):
        _check(pred, subject)
        single = clf.predict(path, META)
        if pred.mapped:
            assert np.allclose(pred.vector(), single.vector(), atol=1e-5)


def test_async_predict(subject: Subject, dev_images: list[Path]) -> None:
    async def run() -> list[Prediction]:
        return list(await asyncio.gather(*(subject.classifier.apredict(p) for p in dev_images[:2])))

    preds = asyncio.run(run())
    for p in preds:
        _check(p, subject)


def test_invalid_image_fails_before_any_request(subject: Subject) -> None:
    before = len(subject.emulator.requests) if subject.emulator else 0
    with pytest.raises(InvalidImageError):
        subject.classifier.predict(b"not an image")
    if subject.emulator:
        assert len(subject.emulator.requests) == before


GPS = {1: "N", 2: (48.0, 12.0, 30.0), 3: "E", 4: (11.0, 34.0, 0.0)}
SECRET_TEXT = "patient Jane Doe, 48.2N 11.6E"


def _exif(orientation: int | None = None) -> Image.Exif:
    exif = Image.Exif()
    exif[0x010F] = "PhoneMaker"
    exif[0x8825] = GPS
    if orientation is not None:
        exif[0x0112] = orientation
    return exif


def _upright_jpeg_with_gps(path: Path) -> bytes:
    buf = io.BytesIO()
    Image.open(path).convert("RGB").save(buf, "JPEG", quality=90, exif=_exif().tobytes())
    return buf.getvalue()


def _rotated_jpeg_with_gps(path: Path) -> bytes:
    # Orientation 6 makes the client rotate the pixels, so the bytes are re-encoded rather than copied.
    buf = io.BytesIO()
    Image.open(path).convert("RGB").save(buf, "JPEG", quality=90, exif=_exif(orientation=6).tobytes())
    return buf.getvalue()


def _png_with_exif_and_text(path: Path) -> bytes:
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("comment", SECRET_TEXT)
    info.add_itxt("XML:com.adobe.xmp", f"<x:xmpmeta xmlns:x='adobe:ns:meta/'>{SECRET_TEXT}</x:xmpmeta>")
    buf = io.BytesIO()
    Image.open(path).convert("RGB").save(buf, "PNG", exif=_exif().tobytes(), pnginfo=info)
    return buf.getvalue()


@pytest.mark.parametrize(
    "make", [_upright_jpeg_with_gps, _rotated_jpeg_with_gps, _png_with_exif_and_text], ids=lambda f: f.__name__[1:]
)
def test_no_exif_reaches_the_provider(subject: Subject, dev_images: list[Path], make: Callable[[Path], bytes]) -> None:
    data = make(dev_images[0])
    assert {"exif", "gps"} <= metadata_markers(data)  # the input really carries what must not leave
    subject.classifier.predict(data)
    if subject.emulator is None:
        return  # nothing leaves the machine for local backends
    last = subject.emulator.requests[-1]
    assert b"Exif" not in last.body and SECRET_TEXT.encode() not in last.body
    # Part of the emulator contract: every cloud emulator exposes the image bytes it received, decoded.
    received = getattr(subject.emulator, "last_image_bytes", None)
    assert received is not None, f"{type(subject.emulator).__name__} must expose last_image_bytes"
    assert metadata_markers(received) == frozenset()
    assert SECRET_TEXT.encode() not in received


def test_describe(subject: Subject) -> None:
    info = subject.classifier.describe()
    assert isinstance(info, BackendInfo)
    assert info.backend == subject.classifier.backend_name
    assert info.provider and info.service and info.model_id
    if subject.emulator is not None:
        assert info.emulated and info.data_leaves_machine
    else:
        assert not info.data_leaves_machine
