"""Image corpora built at test time from one real image: every accepted input kind, and damaged JPEGs.

Nothing is stored: the corpora are derived from an image the caller reads (a HAM10000 file, which stays in the
shared data folder), with a seeded generator, so a failing case can be rebuilt exactly.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Iterator

import numpy as np
from PIL import Image

__all__ = ["accepted_inputs", "damaged_jpegs", "png_16bit_rgb"]


def _save(img: Image.Image, fmt: str, **options: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **options)
    return buf.getvalue()


def png_16bit_rgb(rgb: np.ndarray) -> bytes:
    """A 16-bit-per-channel RGB PNG (Pillow cannot write one): each 8-bit value v becomes v * 257."""
    wide = rgb.astype(">u2") * 257
    height, width = rgb.shape[:2]
    rows = b"".join(b"\x00" + wide[y].tobytes() for y in range(height))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def accepted_inputs(jpeg: bytes) -> dict[str, bytes]:
    """Every input kind derm-cloud accepts, made from one RGB JPEG: name -> encoded bytes.

    Covers the upright JPEG as given, one with EXIF GPS and a comment, an EXIF-rotated one, grayscale and CMYK
    JPEGs, a two-image MPO, PNG (RGB, RGBA, palette, gray, 16-bit), BMP, TIFF, WebP (lossy and lossless) and GIF.
    """
    rgb = Image.open(io.BytesIO(jpeg)).convert("RGB")
    gps = Image.Exif()
    gps[0x8825] = {1: "N", 2: (48.0, 12.0, 30.0), 3: "E", 4: (16.0, 22.0, 5.0)}
    rotated = Image.Exif()
    rotated[0x0112] = 6
    arr = np.asarray(rgb)
    rgba = np.dstack([arr, np.full(arr.shape[:2], 255, np.uint8)])
    rgba[: arr.shape[0] // 4, : arr.shape[1] // 4, 3] = 0  # a transparent corner: composited on white
    return {
        "jpeg": jpeg,
        "jpeg-gps-comment": _save(rgb, "JPEG", quality=92, exif=gps.tobytes(), comment=b"patient 1234"),
        "jpeg-exif-rotated": _save(rgb, "JPEG", quality=92, exif=rotated.tobytes()),
        "jpeg-gray": _save(rgb.convert("L"), "JPEG", quality=92),
        "jpeg-cmyk": _save(rgb.convert("CMYK"), "JPEG", quality=92),
        "mpo": _save(rgb, "MPO", quality=92, save_all=True, append_images=[rgb.resize((320, 240))]),
        "png-rgb": _save(rgb, "PNG"),
        "png-rgba": _save(Image.fromarray(rgba, "RGBA"), "PNG"),
        "png-palette": _save(rgb.quantize(64), "PNG"),
        "png-gray": _save(rgb.convert("L"), "PNG"),
        "png-16bit": png_16bit_rgb(arr),
        "bmp": _save(rgb, "BMP"),
        "tiff": _save(rgb, "TIFF"),
        "webp-lossy": _save(rgb, "WEBP", quality=90),
        "webp-lossless": _save(rgb, "WEBP", lossless=True),
        "gif": _save(rgb, "GIF"),
    }


def _scan_start(data: bytes) -> int:
    """Offset of the first entropy-coded byte (after the first SOS header)."""
    sos = data.index(b"\xff\xda")
    length: int = struct.unpack_from(">H", data, sos + 2)[0]
    return sos + 2 + length


def damaged_jpegs(jpeg: bytes, seed: int, flips: int = 20) -> Iterator[tuple[str, bytes]]:
    """Damaged variants of a JPEG, seeded: ``(kind, bytes)`` with kind one of

    ``cut`` (cut at 25/50/75/90%), ``cut+eoi`` (the same, closed with a forged FF D9), ``flip-entropy`` (one
    bit flipped in the entropy-coded data), ``flip-header`` (one bit flipped in the header segments) and
    ``patch-sof`` (the frame header's height, width or component count rewritten).
    """
    rng = np.random.default_rng(seed)
    start = _scan_start(jpeg)
    end = len(jpeg) - 2  # the EOI marker
    for fraction in (0.25, 0.5, 0.75, 0.9):
        cut = int(len(jpeg) * fraction)
        yield "cut", jpeg[:cut]
        yield "cut+eoi", jpeg[:cut] + b"\xff\xd9"
    for _ in range(flips):
        pos = int(rng.integers(start, end))
        yield "flip-entropy", _flip(jpeg, pos, int(rng.integers(0, 8)))
    for _ in range(flips):
        pos = int(rng.integers(2, start))
        yield "flip-header", _flip(jpeg, pos, int(rng.integers(0, 8)))
    sof = next(jpeg.index(m) for m in (b"\xff\xc0", b"\xff\xc1", b"\xff\xc2") if m in jpeg[:start])
    height, width = struct.unpack_from(">HH", jpeg, sof + 5)
    for new_height, new_width in ((height * 2, width), (height, width * 2), (height // 2, width), (1, width)):
        yield "patch-sof", jpeg[: sof + 5] + struct.pack(">HH", new_height, new_width) + jpeg[sof + 9 :]
    yield "patch-sof", jpeg[: sof + 9] + b"\x04" + jpeg[sof + 10 :]


def _flip(data: bytes, pos: int, bit: int) -> bytes:
    out = bytearray(data)
    out[pos] ^= 1 << bit
    return bytes(out)
