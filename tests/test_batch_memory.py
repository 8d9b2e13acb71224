"""predict_batch keeps memory flat (header pass, then per-chunk preparation) and a local backend's JPEG check.

Real images: HAM10000, Tschandl et al. 2018, CC BY-NC 4.0 (read from the shared data folder, never copied).
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

import derm_cloud
import derm_cloud.images as images
import derm_cloud.payload as payload_module
from derm_cloud.errors import InvalidImageError
from derm_cloud.testing.image_corpus import damaged_jpegs
from derm_cloud.types import PatientMetadata


class LiveDecodes:
    """Weak references to every decoded image and every payload: counts how many are alive at a moment."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.decoded: list[weakref.ref[Any]] = []
        self.payloads: list[weakref.ref[Any]] = []
        for name in ("_decode_rgb", "_decode_strict_rgb"):
            monkeypatch.setattr(payload_module, name, self._recording(getattr(payload_module, name)))
        real_init = payload_module.Payload.__init__

        def init(payload: Any, **kwargs: Any) -> None:
            real_init(payload, **kwargs)
            self.payloads.append(weakref.ref(payload))

        monkeypatch.setattr(payload_module.Payload, "__init__", init)

    def _recording(self, real: Any) -> Any:
        def decode(data: bytes) -> Any:
            image = real(data)
            self.decoded.append(weakref.ref(image))
            return image

        return decode

    def alive(self) -> tuple[int, int]:
        return sum(r() is not None for r in self.decoded), sum(r() is not None for r in self.payloads)


def test_a_batch_never_holds_more_than_two_chunks_of_images(
    monkeypatch: pytest.MonkeyPatch, tiny_model_dir: Path, dev_images: list[Path]
) -> None:
    live = LiveDecodes(monkeypatch)
    paths = [dev_images[i % len(dev_images)] for i in range(40)]
    peaks: list[tuple[int, int]] = []
    with derm_cloud.create("local-onnx", model_dir=tiny_model_dir) as clf:
        real_many = clf._predict_many

        def many(chunk: Sequence[Any], metadata: Sequence[PatientMetadata]) -> Any:
            peaks.append(live.alive())
            return real_many(chunk, metadata)

        monkeypatch.setattr(clf, "_predict_many", many)
        batch = clf.predict_batch(paths, batch_size=4)
        monkeypatch.undo()
        singles = [clf.predict(p) for p in paths[:8]]
    assert len(batch) == 40 and len(peaks) == 10
    # Every image decoded once; at no chunk more than two chunks' images or payloads (bytes) alive.
    assert len(live.decoded) == 40
    assert max(d for d, _ in peaks) <= 8 and max(p for _, p in peaks) <= 8
    for got, want in zip(batch[:8], singles, strict=True):
        assert got.vector() == pytest.approx(want.vector(), abs=1e-6)


def test_a_bad_image_late_in_a_batch_is_refused_before_any_chunk_runs(
    monkeypatch: pytest.MonkeyPatch, tiny_model_dir: Path, dev_images: list[Path], tmp_path: Path
) -> None:
    bad = tmp_path / "cut.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    inputs: list[Any] = [dev_images[i % len(dev_images)] for i in range(30)] + [bad]
    calls: list[int] = []
    with derm_cloud.create("local-onnx", model_dir=tiny_model_dir) as clf:
        monkeypatch.setattr(clf, "_predict_many", lambda chunk, meta: calls.append(len(chunk)))
        with pytest.raises(InvalidImageError, match="image 30 of 31"):
            clf.predict_batch(inputs, batch_size=4)
    assert calls == []


def test_file_objects_are_read_once_in_the_header_pass(tiny_model_dir: Path, dev_images: list[Path]) -> None:
    with derm_cloud.create("local-onnx", model_dir=tiny_model_dir) as clf:
        with dev_images[0].open("rb") as fh, dev_images[1].open("rb") as fh2:
            from_files = clf.predict_batch([fh, fh2], batch_size=1)
        from_paths = clf.predict_batch(dev_images[:2], batch_size=1)
    for got, want in zip(from_files, from_paths, strict=True):
        assert got.vector() == pytest.approx(want.vector(), abs=1e-9)


def test_local_backend_skips_the_separate_entropy_check_and_decodes_once(
    monkeypatch: pytest.MonkeyPatch, tiny_model_dir: Path, dev_images: list[Path]
) -> None:
    checks: list[int] = []
    real = images.verify_jpeg_entropy
    monkeypatch.setattr(images, "verify_jpeg_entropy", lambda data, comps: checks.append(1) or real(data, comps))
    live = LiveDecodes(monkeypatch)
    with derm_cloud.create("local-onnx", model_dir=tiny_model_dir) as clf:
        clf.predict(dev_images[0])
        clf.predict_batch(dev_images[:3])
        assert checks == [] and len(live.decoded) == 4
        # A payload for the clouds is still checked without a decode.
        derm_cloud.prepare_payload(dev_images[0])
    assert checks == [1]
    # The strict decode gives Pillow's pixels.
    strict = derm_cloud.prepare_payload(dev_images[2], verify_by_decoding=True)
    assert strict.verify_on_decode
    with Image.open(dev_images[2]) as im:
        assert np.array_equal(strict.array(), np.asarray(im.convert("RGB")))


def test_local_backend_refuses_exactly_the_damaged_jpegs_the_cloud_path_refuses(
    tiny_model_dir: Path, dev_images: list[Path]
) -> None:
    refused_by_both = 0
    with derm_cloud.create("local-onnx", model_dir=tiny_model_dir) as clf:
        for kind, data in damaged_jpegs(dev_images[3].read_bytes(), seed=12, flips=12):
            cloud_error = local_error = ""
            try:
                derm_cloud.prepare_payload(data)
            except InvalidImageError as exc:
                cloud_error = str(exc)
            try:
                clf.predict(data)
            except InvalidImageError as exc:
                local_error = str(exc)
            # Same verdict and the same libjpeg complaint, from the full decode instead of the 1/8-scale one.
            assert local_error == cloud_error, kind
            cloud_refuses = bool(cloud_error)
            refused_by_both += cloud_refuses
    assert refused_by_both >= 8  # the cuts at least
