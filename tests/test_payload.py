"""The payload: prepared once, no pixel work on the remote path, damaged JPEGs refused, re-encodes visible.

Real images: HAM10000, Tschandl et al. 2018, CC BY-NC 4.0 (read from the shared data folder, never copied).
"""

from __future__ import annotations

import collections
import io
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageFile

import derm_cloud
from derm_cloud.errors import InvalidImageError
from derm_cloud.images import ImageLimits, metadata_markers
from derm_cloud.payload import collect_reencodes as payload_reencodes
from derm_cloud.testing.image_corpus import accepted_inputs, damaged_jpegs


@pytest.fixture(scope="module")
def sagemaker(tiny_meta_model_dir: Path) -> Iterator[Any]:
    from derm_cloud.testing.emulators.sagemaker import SageMakerRuntimeEmulator

    with SageMakerRuntimeEmulator() as emu:
        emu.add_endpoint("derm", tiny_meta_model_dir, response_format="adapter")
        yield emu


@pytest.fixture(scope="module")
def custom_vision(tiny_meta_model_dir: Path) -> Iterator[Any]:
    from derm_cloud.testing.emulators.azure_custom_vision import CustomVisionEmulator

    with CustomVisionEmulator(tiny_meta_model_dir) as emu:
        yield emu


class DecodeCounter:
    """Counts full pixel decodes (Pillow loads) and libjpeg entropy checks made in the calling thread only.

    The emulators decode what they receive in their own server threads; those are the provider's work.
    """

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        import simplejpeg

        self.thread = threading.get_ident()
        self.pillow_loads = 0
        self.entropy_checks: list[int] = []
        real_load = ImageFile.ImageFile.load
        real_sj = simplejpeg.decode_jpeg

        depth = [0]

        def load(image: ImageFile.ImageFile) -> Any:
            # Count loads that decode (tiles still pending), outermost call only: format plugins call
            # ImageFile.load through super(), and numpy's array conversion calls load() on loaded images.
            if threading.get_ident() == self.thread and depth[0] == 0 and image.tile:
                self.pillow_loads += 1
            depth[0] += 1
            try:
                return real_load(image)
            finally:
                depth[0] -= 1

        def decode_jpeg(data: bytes, *args: Any, **kwargs: Any) -> Any:
            if threading.get_ident() == self.thread:
                self.entropy_checks.append(int(kwargs.get("min_factor", 1)))
            return real_sj(data, *args, **kwargs)

        monkeypatch.setattr(ImageFile.ImageFile, "load", load)
        monkeypatch.setattr(simplejpeg, "decode_jpeg", decode_jpeg)


def test_clean_jpeg_to_a_cloud_is_never_decoded(
    monkeypatch: pytest.MonkeyPatch, sagemaker: Any, dev_images: list[Path]
) -> None:
    from derm_cloud.testing.emulators.sagemaker import sagemaker_backend_for

    counter = DecodeCounter(monkeypatch)
    with sagemaker_backend_for(sagemaker, "derm") as clf:
        clf.predict(dev_images[0])
        assert counter.pillow_loads == 0  # no full decode on the client
        assert counter.entropy_checks == [8]  # one Huffman walk at 1/8 scale: the damage check
        assert sagemaker.last_image_bytes == derm_cloud.prepare_payload(dev_images[0]).data
        counter.entropy_checks.clear()
        # A payload prepared once costs nothing more per backend call.
        payload = derm_cloud.prepare_payload(dev_images[1])
        counter.entropy_checks.clear()
        clf.predict(payload)
        clf.predict(payload)
        assert counter.pillow_loads == 0 and counter.entropy_checks == []


def test_structure_only_check_does_no_pixel_work(monkeypatch: pytest.MonkeyPatch, dev_images: list[Path]) -> None:
    counter = DecodeCounter(monkeypatch)
    payload = derm_cloud.prepare_payload(dev_images[0], limits=ImageLimits(jpeg_entropy_check=False))
    assert payload.data.startswith(b"\xff\xd8") and counter.pillow_loads == 0 and counter.entropy_checks == []
    # A local backend decodes it, once, from the payload bytes.
    assert payload.array().shape == (450, 600, 3) and counter.pillow_loads == 1
    payload.array()
    assert counter.pillow_loads == 1


def test_damaged_jpeg_is_refused_before_any_request(sagemaker: Any, dev_images: list[Path]) -> None:
    from derm_cloud.testing.emulators.sagemaker import sagemaker_backend_for

    data = dev_images[0].read_bytes()
    quarter = data[: len(data) // 4] + b"\xff\xd9"  # issue 11 fault 10: was classified nv 0.945
    sagemaker.reset()
    with sagemaker_backend_for(sagemaker, "derm") as clf, pytest.raises(InvalidImageError) as info:
        clf.predict(quarter)
    assert "premature end of data segment" in str(info.value) and "re-upload the complete file" in str(info.value)
    assert sagemaker.requests == []


def test_fuzz_corpus_of_real_images_meets_the_stated_expectations(dev_images: list[Path]) -> None:
    """Seeded damage to 4 real HAM10000 JPEGs. Expectations (measured when written):

    * every cut file is refused, whether or not it ends with a forged FF D9 (libjpeg: premature end of data);
    * every rewritten frame header (height/width doubled or halved, 1-row, 4 components) is refused;
    * a single flipped bit is refused when it breaks the marker structure, a Huffman code or the bit count
      (at least 12% of entropy flips and 20% of header flips; measured 17.5% and 31% on 6 images). The others
      decode without any warning from libjpeg: JPEG carries no checksum, so no decoder can tell them from a
      real image (many hit APPn segments that are stripped anyway, or quantisation values);
    * nothing raises anything but InvalidImageError: no traceback from inside a codec.
    """
    outcomes: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for seed, path in enumerate(dev_images[:4]):
        for kind, data in damaged_jpegs(path.read_bytes(), seed=seed):
            try:
                payload = derm_cloud.prepare_payload(data)
            except InvalidImageError:
                outcomes[kind]["refused"] += 1
            else:
                outcomes[kind]["accepted"] += 1
                assert payload.data.startswith(b"\xff\xd8") and metadata_markers(payload.data) <= {"mpf"}
    assert outcomes["cut"] == {"refused": 16}
    assert outcomes["cut+eoi"] == {"refused": 16}
    assert outcomes["patch-sof"] == {"refused": 20}
    assert outcomes["flip-entropy"]["refused"] >= 0.12 * 80, outcomes
    assert outcomes["flip-header"]["refused"] >= 0.20 * 80, outcomes


def test_trailing_data_is_dropped_with_a_warning_in_the_prediction(
    tiny_meta_model_dir: Path, dev_images: list[Path]
) -> None:
    data = dev_images[0].read_bytes() + b"MAKERNOTE" * 20
    payload = derm_cloud.prepare_payload(data)
    assert payload.data == derm_cloud.prepare_payload(dev_images[0]).data
    with derm_cloud.create("local-onnx", model_dir=tiny_meta_model_dir) as clf:
        pred = clf.predict(payload)
    assert pred.extra["input_warnings"] == ["180 bytes after the JPEG's end-of-image marker were dropped"]


def test_every_accepted_kind_prepares_once_into_jpeg_or_png(dev_images: list[Path]) -> None:
    corpus = accepted_inputs(dev_images[0].read_bytes())
    lossless_kinds = {"jpeg", "jpeg-gps-comment", "jpeg-gray", "mpo", "png-rgb", "png-gray"}
    for name, data in corpus.items():
        payload = derm_cloud.prepare_payload(data)
        assert payload.format in ("JPEG", "PNG"), name
        assert metadata_markers(payload.data) == frozenset(), name
        assert Image.open(io.BytesIO(payload.data)).format == payload.format, name
        # Bytes forwarded untouched (minus metadata) exactly where no pixel has to change.
        assert (payload.conversions == ()) == (name in lossless_kinds - {"mpo"}), (name, payload.conversions)
        if name in ("webp-lossy", "bmp", "tiff", "gif", "png-rgba", "png-palette", "png-16bit", "webp-lossless"):
            assert payload.format == "PNG" and payload.lossless, name
        if name in ("jpeg-exif-rotated", "jpeg-cmyk"):
            assert payload.format == "JPEG" and not payload.lossless, name
    mpo = derm_cloud.prepare_payload(corpus["mpo"])
    assert mpo.source_format == "MPO" and "mpf" in mpo.had_metadata
    assert mpo.data.count(b"\xff\xd8") == 1  # the primary image only, its JPEG bytes unchanged
    assert mpo.data == derm_cloud.prepare_payload(corpus["jpeg-gps-comment"]).data  # same encoder settings


def test_size_limit_reencode_is_visible_in_the_prediction(custom_vision: Any, dev_images: list[Path]) -> None:
    from derm_cloud.testing.emulators.azure_custom_vision import custom_vision_backend_for

    payload = derm_cloud.prepare_payload(dev_images[0])
    with custom_vision_backend_for(custom_vision) as roomy:
        assert "payload_reencoded" not in roomy.predict(payload).extra
        assert custom_vision.last_image_bytes == payload.data
    with custom_vision_backend_for(custom_vision, max_image_bytes=40_000) as tight:
        pred = tight.predict(payload)
        batch = tight.predict_batch([payload, dev_images[1]])
    note = pred.extra["payload_reencoded"]
    assert "over this provider's limit of 40,000 bytes" in note and "pixels differ" in note
    assert len(custom_vision.last_image_bytes) <= 40_000
    assert all("payload_reencoded" in p.extra for p in batch)


def test_base64_for_json_apis_is_encoded_once_and_follows_a_reencode(dev_images: list[Path]) -> None:
    import base64

    payload = derm_cloud.prepare_payload(dev_images[0])
    text, mime = payload.upload_base64()
    assert base64.b64decode(text) == payload.data and mime == "image/jpeg"
    assert payload.upload_base64()[0] is text  # kept: the next JSON backend does not encode it again
    notes: list[tuple[int, str]]
    with payload_reencodes() as notes:
        small, _ = payload.upload_base64(max_bytes=40_000)
    assert base64.b64decode(small) == payload.upload_bytes(max_bytes=40_000)[0] != payload.data
    assert len(base64.b64decode(small)) <= 40_000 and len(notes) == 1  # the re-encode is still recorded
    assert payload.upload_base64()[0] is text


def test_the_same_payload_object_reaches_every_backend_as_the_same_bytes(
    sagemaker: Any, custom_vision: Any, dev_images: list[Path]
) -> None:
    from derm_cloud.testing.emulators.azure_custom_vision import custom_vision_backend_for
    from derm_cloud.testing.emulators.sagemaker import sagemaker_backend_for

    rotated = accepted_inputs(dev_images[2].read_bytes())["jpeg-exif-rotated"]
    payload = derm_cloud.prepare_payload(rotated)
    with sagemaker_backend_for(sagemaker, "derm") as sm, custom_vision_backend_for(custom_vision) as cv:
        sm.predict(payload)
        cv.predict(payload)
    assert sagemaker.last_image_bytes == custom_vision.last_image_bytes == payload.data
    assert Image.open(io.BytesIO(payload.data)).size == (450, 600)  # rotated once, for both


def test_a_comparison_prepares_each_image_once_for_all_backends(
    tmp_path: Path, tiny_model_dir: Path, tiny_meta_model_dir: Path
) -> None:
    from tests_helpers import DEV_CSV

    from derm_cloud.compare import run_comparison
    from derm_cloud.compare.run.calls import PAYLOADS

    quality_only = {"warmup": 0, "single_stream": {"enabled": False}, "server": {"enabled": False}}
    quality_only |= {"offline": {"enabled": False}, "cold_start": {"enabled": False}}
    backends = [
        {"name": "a", "type": "local-onnx", "options": {"model_dir": str(tiny_model_dir)}},
        {"name": "b", "type": "local-onnx", "options": {"model_dir": str(tiny_meta_model_dir)}},
        {"name": "c", "type": "sagemaker", "emulate": True, "model_dir": str(tiny_model_dir)},
    ]
    before = PAYLOADS.prepared
    result = run_comparison(
        {
            "title": "payload sharing",
            "output": str(tmp_path / "out"),
            "dataset": {"source": str(DEV_CSV), "limit": 5},
            "scenarios": quality_only,
            "fairness": {"skin_tone": "none"},
            "backends": backends,
        }
    )
    assert PAYLOADS.prepared - before == 5  # five images, three backends: five preparations
    assert result.summary["backends"].keys() >= {"a", "b", "c"}


def test_import_pulls_no_codec_and_no_async_machinery() -> None:
    import subprocess
    import sys

    code = (
        "import sys\nimport derm_cloud\n"
        "print(','.join(m for m in ('asyncio', 'concurrent.futures', 'simplejpeg', 'PIL.Image') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=Path.cwd())
    assert out.stdout.strip() == ""


def test_predict_batch_prepares_its_own_payloads_and_keeps_the_callers(
    monkeypatch: pytest.MonkeyPatch, tiny_model_dir: Path, dev_images: list[Path]
) -> None:
    import derm_cloud.base as base

    made: list[derm_cloud.Payload] = []
    real = base.prepare_payload

    def recording(image: Any, **kwargs: Any) -> derm_cloud.Payload:
        payload = real(image, **kwargs)
        made.append(payload)
        return payload

    monkeypatch.setattr(base, "prepare_payload", recording)
    mine = real(dev_images[0])
    with derm_cloud.create("local-onnx", model_dir=tiny_model_dir) as clf:
        batch = clf.predict_batch([mine, *dev_images[1:6]], batch_size=2)
        of_the_batch = list(made)
        singles = [clf.predict(p) for p in dev_images[1:6]]
    # The batch's own payloads are dropped with their chunk (nothing keeps them); the caller's keeps its pixels.
    assert len(of_the_batch) == 6 and of_the_batch[0] is mine and mine not in of_the_batch[1:]
    assert mine._image is not None
    for got, want in zip(batch[1:], singles, strict=True):
        assert got.vector() == pytest.approx(want.vector(), abs=1e-6)
