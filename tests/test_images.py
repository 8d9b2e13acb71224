"""Image input: decoding, orientation, metadata stripping, and a corpus of bad inputs with their messages."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from derm_cloud.errors import InvalidImageError, PayloadTooLargeError
from derm_cloud.images import ImageLimits, load_image, metadata_markers, strip_jpeg_metadata


def _jpeg_with_exif(img: Image.Image, orientation: int | None = None, gps: bool = True) -> bytes:
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    if gps:
        exif[0x8825] = {1: "N", 2: (48.0, 12.0, 30.0), 3: "E", 4: (16.0, 22.0, 5.0)}
    exif[0x010F] = "PhoneMaker"
    buf = io.BytesIO()
    img.save(buf, "JPEG", exif=exif.tobytes(), quality=90, comment=b"patient 1234")
    return buf.getvalue()


def _gradient(w: int = 64, h: int = 48) -> Image.Image:
    arr = np.zeros((h, w, 3), np.uint8)
    arr[..., 0] = np.linspace(0, 255, w)[None, :]
    arr[..., 1] = np.linspace(0, 255, h)[:, None]
    arr[..., 2] = 128
    return Image.fromarray(arr)


def test_real_dev_image_loads_and_is_forwarded_losslessly(dev_images: list[Path]) -> None:
    prepared = load_image(dev_images[0])
    assert prepared.size == (600, 450)
    assert prepared.source_format == "JPEG"
    data, mime = prepared.upload_bytes()
    assert mime == "image/jpeg"
    # Pixel-identical: segments stripped, entropy-coded data untouched.
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")), prepared.array())


@pytest.mark.parametrize("kind", ["path", "str", "bytes", "file", "pil", "array"])
def test_every_input_kind_gives_the_same_pixels(dev_images: list[Path], kind: str) -> None:
    path = dev_images[1]
    reference = load_image(path).array()
    source: object = {
        "path": path,
        "str": str(path),
        "bytes": path.read_bytes(),
        "file": io.BytesIO(path.read_bytes()),
        "pil": Image.open(path),
        "array": reference,
    }[kind]
    assert np.array_equal(load_image(source).array(), reference)  # type: ignore[arg-type]


def test_exif_orientation_applied_and_metadata_stripped() -> None:
    img = _gradient(64, 48)
    data = _jpeg_with_exif(img, orientation=6)  # rotate 90 degrees clockwise to display
    assert {"exif", "gps", "comment"} <= metadata_markers(data)
    prepared = load_image(data)
    assert prepared.size == (48, 64)  # rotated
    assert "gps" in prepared.had_metadata
    out, _ = prepared.upload_bytes()
    assert metadata_markers(out) == frozenset()
    assert Image.open(io.BytesIO(out)).getexif().get(0x0112) is None


def test_upright_jpeg_with_gps_is_stripped_without_reencoding() -> None:
    data = _jpeg_with_exif(_gradient(), orientation=None, gps=True)
    prepared = load_image(data)
    out, _ = prepared.upload_bytes()
    assert metadata_markers(out) == frozenset()
    assert b"PhoneMaker" not in out and b"patient 1234" not in out
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(out))), np.asarray(Image.open(io.BytesIO(data))))


def test_png_text_chunks_and_alpha() -> None:
    from PIL import PngImagePlugin

    rgba = Image.new("RGBA", (32, 32), (255, 0, 0, 0))
    info = PngImagePlugin.PngInfo()
    info.add_text("Author", "Dr Example")
    buf = io.BytesIO()
    rgba.save(buf, "PNG", pnginfo=info)
    prepared = load_image(buf.getvalue())
    # Fully transparent pixels are composited on white, not black.
    assert prepared.array()[0, 0].tolist() == [255, 255, 255]
    out, mime = prepared.upload_bytes(formats=("PNG", "JPEG"))
    assert mime == "image/png" and b"Dr Example" not in out


def test_oversize_upload_is_reencoded_to_fit() -> None:
    rng = np.random.default_rng(0)
    noisy = Image.fromarray(rng.integers(0, 255, (1500, 1500, 3), dtype=np.uint8))
    buf = io.BytesIO()
    noisy.save(buf, "PNG")
    assert len(buf.getvalue()) > 4_000_000
    out, mime = load_image(buf.getvalue()).upload_bytes(max_bytes=1_000_000)
    assert len(out) <= 1_000_000 and mime == "image/jpeg"
    with pytest.raises(PayloadTooLargeError, match="only accepts PNG"):
        load_image(buf.getvalue()).upload_bytes(max_bytes=1_000_000, formats=("PNG",))


def test_strip_jpeg_metadata_rejects_non_jpeg() -> None:
    with pytest.raises(InvalidImageError, match="not a JPEG"):
        strip_jpeg_metadata(b"\x89PNG\r\n\x1a\n")


# --- the bad-input corpus: each entry is (id, input, expected message fragment) --------------------------------


def _png_header_only(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    end = struct.pack(">I", 0) + b"IEND" + struct.pack(">I", zlib.crc32(b"IEND"))
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk)) + end


def _encoded(img: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _animated_gif() -> bytes:
    frames = [Image.new("RGB", (32, 32), (80 * i, 0, 0)) for i in range(3)]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:])
    return buf.getvalue()


def _bad_corpus(tmp_path: Path) -> list[tuple[str, object, str]]:
    good_jpeg = _encoded(_gradient(), "JPEG")
    (tmp_path / "folder").mkdir()
    return [
        ("empty bytes", b"", "empty (0 bytes)"),
        ("empty file", _write(tmp_path / "empty.jpg", b""), "empty (0 bytes)"),
        ("missing file", tmp_path / "nope.jpg", "does not exist"),
        ("empty path string", "   ", "empty string"),
        ("directory", tmp_path / "folder", "is a directory"),
        ("plain text", b"hello, this is not an image", "plain text"),
        ("html page", b"<html><body>error</body></html>", "text, HTML or JSON"),
        ("pdf", b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj", "PDF document"),
        ("zip archive", b"PK\x03\x04" + b"\x00" * 40, "ZIP archive"),
        ("truncated jpeg", good_jpeg[: len(good_jpeg) // 2], "truncated or corrupt"),
        ("truncated png", _encoded(_gradient(), "PNG")[:80], "truncated or corrupt"),
        ("16-bit mode", Image.new("I;16", (64, 64)), "mode 'I;16' is not supported"),
        ("float mode", Image.new("F", (64, 64)), "mode 'F' is not supported"),
        ("decompression bomb", _png_header_only(30_000, 30_000), "decompression bomb"),
        ("over byte limit", b"\xff\xd8" + b"\x00" * 2048, "over the limit of 1,024"),
        ("tiny image", _encoded(Image.new("RGB", (4, 4)), "PNG"), "at least 16 px"),
        ("animated gif", _animated_gif(), "3 frames"),
        ("float array", np.zeros((32, 32, 3), np.float32), "dtype float32"),
        ("wrong array shape", np.zeros((32, 32, 2), np.uint8), "shape (32, 32, 2)"),
        ("unsupported type", 12345, "cannot read an image from int"),
        ("text-mode file", io.StringIO("abc"), "text mode"),
        ("ico format", _encoded(Image.new("RGB", (32, 32)), "ICO"), "format ICO is not supported"),
    ]


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_bad_input_corpus(tmp_path: Path) -> None:
    corpus = _bad_corpus(tmp_path)
    assert len(corpus) >= 15
    for name, source, fragment in corpus:
        limits = ImageLimits(max_bytes=1024) if name == "over byte limit" else ImageLimits()
        with pytest.raises(InvalidImageError) as info:
            load_image(source, limits=limits)  # type: ignore[arg-type]
        assert fragment in str(info.value), f"{name}: {info.value}"
        # Every message is also a ValueError, so generic callers handle it.
        assert isinstance(info.value, ValueError)


def test_upload_bytes_encodes_once_per_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    import derm_cloud.payload as payload_module

    calls: list[str] = []
    real = payload_module._encode

    def counting(img: Image.Image, fmt: str, quality: int) -> bytes:
        calls.append(fmt)
        return real(img, fmt, quality)

    monkeypatch.setattr(payload_module, "_encode", counting)
    prepared = load_image(_jpeg_with_exif(_gradient(), orientation=6))  # rotated: must re-encode
    first = prepared.upload_bytes(max_bytes=1_000_000)
    assert prepared.upload_bytes(max_bytes=1_000_000) == first  # a retry reuses the bytes
    assert prepared.upload_bytes() == first  # another backend gets the same shared payload
    assert calls == ["JPEG"]
    prepared.upload_bytes(formats=("PNG",))  # a provider without JPEG: encoded separately, once
    prepared.upload_bytes(formats=("PNG",))
    assert calls == ["JPEG", "PNG"]


@pytest.mark.parametrize("orientation", [0, 9])
def test_an_orientation_tag_outside_1_to_8_is_upright_and_costs_no_reencode(orientation: int) -> None:
    # Cameras and editors write 0 (seen in Microsoft's Custom Vision sample images); EXIF defines only 1-8, and
    # Pillow's exif_transpose leaves other values alone, so the JPEG's own pixels must travel untouched.
    data = _jpeg_with_exif(_gradient(), orientation=orientation)
    prepared = load_image(data)
    assert not any("orientation" in c for c in prepared.conversions)
    assert prepared.source_format == "JPEG" and prepared.format == "JPEG"
    with Image.open(io.BytesIO(data)) as original:
        assert np.array_equal(prepared.array(), np.asarray(original.convert("RGB")))
