"""Damaged JPEGs that libjpeg decodes without a warning are refused; clean pictures, however flat, are not.

Issue 18 item 10: one 512-byte block of entropy-coded data zeroed, and the file was accepted with its top class
flipped (bcc 0.993 -> akiec 0.558). Every damaged file here is made at test time from a real HAM10000 dev image
(Tschandl et al. 2018, CC BY-NC 4.0; read in place, never copied), and each test first checks that libjpeg's
strict decode really accepts it, so it shows what the new checks add. Rates on the whole seeded corpus are
measured by ``benchmarks/jpeg_damage.py``.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import simplejpeg
from PIL import Image
from tests_helpers import dev_image, dev_rows

import derm_cloud
from derm_cloud.errors import InvalidImageError
from derm_cloud.images import check_input
from derm_cloud.jpeg_damage import block_means, frame_mcu
from derm_cloud.testing.image_corpus import (
    copy_block,
    flip_bit,
    reencodings,
    scan_span,
    synthetic_photos,
    zero_block,
)

# (dev.csv row, what was done): found by scanning offsets; libjpeg's strict decode accepts every one.
ZERO_FILLED = {
    "bcc 600x450, 512 zero bytes mid-scan": (25, lambda d: zero_block(d, 0.466)),
    "nv 600x450, 512 zero bytes": (2, lambda d: zero_block(d, 0.4)),
    "nv 224x224, 512 zero bytes": (112, lambda d: zero_block(d, 0.564)),
}
SHIFTED = {
    "bcc 600x450, a sector copied over another": (25, lambda d: copy_block(d, 0.4, 0.6)),
    "nv 600x450, a sector copied over another": (3, lambda d: copy_block(d, 0.6, 0.4)),
    "nv 224x224, a sector copied over another": (112, lambda d: copy_block(d, 0.221, 0.779)),
    "nv 600x450, one bit flipped": (1, lambda d: flip_bit(d, 0.421, 5)),
}


def damaged(row: int, damage: Callable[[bytes], bytes]) -> bytes:
    data = damage(dev_image(dev_rows(row + 1)[row]).read_bytes())
    simplejpeg.decode_jpeg(data, colorspace="RGB", strict=True)  # libjpeg sees nothing wrong
    return data


@pytest.mark.parametrize("case", sorted(ZERO_FILLED))
def test_zero_filled_block_is_refused_on_every_path(case: str) -> None:
    data = damaged(*ZERO_FILLED[case])
    for prepare in (
        lambda: derm_cloud.prepare_payload(data),
        lambda: derm_cloud.prepare_payload(data, verify_by_decoding=True),
        lambda: check_input(data),  # a batch's first pass: bytes only, before anything is decoded
    ):
        with pytest.raises(InvalidImageError) as info:
            prepare()
        message = str(info.value)
        assert re.search(r"\d+ zero bytes inside the image data", message) and "re-upload the complete file" in message


@pytest.mark.parametrize("case", sorted(SHIFTED))
def test_colour_shift_after_lost_sync_is_refused_on_both_paths(case: str) -> None:
    data = damaged(*SHIFTED[case])
    with pytest.raises(InvalidImageError, match="colours shift abruptly part-way along a row"):
        derm_cloud.prepare_payload(data)
    # A local backend leaves the check to its full decode: the same file is refused there, with the same words.
    payload = derm_cloud.prepare_payload(data, verify_by_decoding=True)
    with pytest.raises(InvalidImageError, match="colours shift abruptly part-way along a row"):
        payload.array()


@pytest.mark.parametrize("row", [0, 1, 2, 25, 112, 125])
def test_clean_dev_images_and_their_reencodings_pass_on_both_paths(row: int) -> None:
    original = dev_image(dev_rows(row + 1)[row]).read_bytes()
    for name, data in {"as stored": original, **reencodings(original)}.items():
        cloud = derm_cloud.prepare_payload(data)
        local = derm_cloud.prepare_payload(data, verify_by_decoding=True)
        assert cloud.data[:2] == b"\xff\xd8" and local.array().shape[2] == 3, name


def test_flat_and_sharply_split_pictures_pass() -> None:
    """Flat areas give long zero runs in progressive/optimised files; a straight edge shifts a whole row."""
    for size in ((600, 450), (224, 224)):
        for name, data in synthetic_photos(*size).items():
            derm_cloud.prepare_payload(data)
            derm_cloud.prepare_payload(data, verify_by_decoding=True).array()
            assert name  # every picture was accepted on both paths


def test_entropy_check_decodes_at_one_eighth_scale(monkeypatch: pytest.MonkeyPatch, dev_images: list[Path]) -> None:
    """simplejpeg ignores min_factor without a minimum size: the check used to decode every pixel."""
    shapes: list[tuple[int, ...]] = []
    real = simplejpeg.decode_jpeg

    def decode(*args: object, **kwargs: object) -> np.ndarray:
        out: np.ndarray = real(*args, **kwargs)
        shapes.append(out.shape)
        return out

    monkeypatch.setattr(simplejpeg, "decode_jpeg", decode)
    derm_cloud.prepare_payload(dev_images[0])
    assert shapes == [(57, 75, 3)]  # one value per 8x8 block of the 600x450 image, in colour


def test_mcu_of_a_subsampled_jpeg_and_block_means() -> None:
    rgb = Image.new("RGB", (64, 48), (120, 80, 60))
    for subsampling, mcu in ((0, (1, 1)), (1, (2, 1)), (2, (2, 2))):
        buf = io.BytesIO()
        rgb.save(buf, "JPEG", subsampling=subsampling)
        assert frame_mcu(buf.getvalue()) == mcu
    buf = io.BytesIO()
    rgb.convert("L").save(buf, "JPEG")
    assert frame_mcu(buf.getvalue()) == (1, 1)  # one component: its scan walks single blocks
    pixels = np.zeros((12, 20), np.uint8)
    pixels[8:, 16:] = 200  # the partial corner block is averaged over the pixels it has
    assert block_means(pixels)[:, :, 0].tolist() == [[0, 0, 0], [0, 0, 200]]


def test_damage_offsets_are_inside_the_scan() -> None:
    data = dev_image(dev_rows(1)[0]).read_bytes()
    start, end = scan_span(data)
    changed = np.flatnonzero(np.frombuffer(zero_block(data, 0.0), np.uint8) != np.frombuffer(data, np.uint8))
    assert start <= changed.min() and changed.max() < end
    changed = np.flatnonzero(np.frombuffer(zero_block(data, 1.0), np.uint8) != np.frombuffer(data, np.uint8))
    assert start <= changed.min() and changed.max() < end
