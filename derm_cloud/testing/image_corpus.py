"""Image corpora built at test time from one real image: every accepted input kind, and damaged JPEGs.

Nothing is stored: the corpora are derived from an image the caller reads (a HAM10000 file, which stays in the
shared data folder), with a seeded generator, so a failing case can be rebuilt exactly. `scan_damage` and
`reencodings` feed `benchmarks/jpeg_damage.py` and its tests; `synthetic_photos` are clean non-dermoscopy
images (flat backgrounds, gradients, a straight horizontal edge) that a damage check must not refuse.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Iterator

import numpy as np
from PIL import Image

__all__ = [
    "SCAN_DAMAGE",
    "accepted_inputs",
    "copy_block",
    "damaged_jpegs",
    "flip_bit",
    "png_16bit_rgb",
    "reencodings",
    "scan_damage",
    "scan_span",
    "synthetic_photos",
    "zero_block",
]


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
    """Damaged variants of a JPEG, seeded: `(kind, bytes)` with kind one of

    `cut` (cut at 25/50/75/90%), `cut+eoi` (the same, closed with a forged FF D9), `flip-entropy` (one
    bit flipped in the entropy-coded data), `flip-header` (one bit flipped in the header segments) and
    `patch-sof` (the frame header's height, width or component count rewritten).
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


# --- damage inside the entropy-coded data, as disks, copies and downloads make it --------------------------

#: Kinds made by :func:`scan_damage`, with how many of each per image.
SCAN_DAMAGE = {"zero512": 2, "zero4096": 1, "sector-copy": 2, "bit-flip": 4, "cut": 1, "cut+eoi": 1}


def scan_span(jpeg: bytes) -> tuple[int, int]:
    """Offsets of the first entropy-coded byte and of the end-of-image marker."""
    return _scan_start(jpeg), len(jpeg) - 2


def _offset(jpeg: bytes, at: float, size: int = 0) -> int:
    start, end = scan_span(jpeg)
    return start + int(at * (end - size - start))


def zero_block(jpeg: bytes, at: float, size: int = 512) -> bytes:
    """`size` bytes of the scan zeroed from `at` (0-1, a fraction of the scan): a lost sector or packet."""
    pos = _offset(jpeg, at, size)
    return jpeg[:pos] + bytes(size) + jpeg[pos + size :]


def copy_block(jpeg: bytes, at: float, source: float, size: int = 512) -> bytes:
    """`size` bytes of the scan at `at` overwritten with the bytes at `source`: a misplaced sector."""
    pos, src = _offset(jpeg, at, size), _offset(jpeg, source, size)
    return jpeg[:pos] + jpeg[src : src + size] + jpeg[pos + size :]


def flip_bit(jpeg: bytes, at: float, bit: int) -> bytes:
    """One bit of the scan flipped at `at`."""
    return _flip(jpeg, _offset(jpeg, at, 1), bit)


def scan_damage(jpeg: bytes, seed: int) -> Iterator[tuple[str, bytes]]:
    """Seeded damage to a JPEG's entropy-coded data: `(kind, bytes)`, as many of each kind as SCAN_DAMAGE says.

    Kinds: `zero512`/`zero4096` (a block zeroed), `sector-copy` (512 bytes from elsewhere in the scan),
    `bit-flip`, `cut` (the file ends early) and `cut+eoi` (the same, closed with a forged FF D9).
    """
    rng = np.random.default_rng(seed)
    start, end = scan_span(jpeg)
    for kind, count in SCAN_DAMAGE.items():
        for _ in range(count):
            at = float(rng.uniform(0.02, 0.98))
            if kind == "zero512":
                yield kind, zero_block(jpeg, at)
            elif kind == "zero4096":
                yield kind, zero_block(jpeg, at, min(4096, (end - start) // 4))
            elif kind == "sector-copy":
                yield kind, copy_block(jpeg, at, float(rng.uniform(0.02, 0.98)))
            elif kind == "bit-flip":
                yield kind, flip_bit(jpeg, at, int(rng.integers(0, 8)))
            else:
                cut = jpeg[: _offset(jpeg, at)]
                yield kind, cut + b"\xff\xd9" if kind == "cut+eoi" else cut


def _encode(rgb: Image.Image, **options: object) -> bytes:
    return _save(rgb, "JPEG", **options)


def reencodings(jpeg: bytes) -> dict[str, bytes]:
    """The image re-encoded as other encoders write JPEGs: progressive, optimised tables, restart markers, 4:2:0.

    The original is not included. Progressive and optimised files use image-specific Huffman tables;
    `restart` puts a restart marker after every MCU row (as many cameras do).
    """
    rgb = Image.open(io.BytesIO(jpeg)).convert("RGB")
    return {
        "progressive": _encode(rgb, quality=90, progressive=True),
        "optimized": _encode(rgb, quality=90, optimize=True),
        "restart": _encode(rgb, quality=90, restart_marker_rows=1),
        "q75-420": _encode(rgb, quality=75, subsampling=2),
    }


def _grey(levels: np.ndarray) -> np.ndarray:
    return np.dstack([np.clip(levels, 0, 255).astype(np.uint8)] * 3)


def synthetic_photos(width: int = 600, height: int = 450) -> dict[str, bytes]:
    """Clean non-dermoscopy JPEGs that a damage check must accept: flat, smooth and sharply split pictures.

    Flat areas make long zero runs in progressive and optimised files (their tables code a flat block as zero
    bits); a straight horizontal edge and steep gradients shift whole rows of DC levels at once.
    """
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    rng = np.random.default_rng(0)
    split = np.where((y < height * 0.53)[..., None], [200, 150, 120], [40, 60, 90]).astype(np.uint8)
    vignette = np.clip(255 - 1.3 * np.hypot(x - width / 2, y - height / 2), 0, 255)
    pictures = {
        "flat-grey": np.full((height, width, 3), 128, np.uint8),
        "vertical-gradient": _grey(y * 255 / height),
        "steep-stripes": _grey((y // 24 % 2) * 200 + 20),
        "horizontal-gradient": _grey(x * 255 / width),
        "vignette": _grey(vignette),
        "two-tone-split": split,
        "sky-and-sea": np.clip(split.astype(np.float32) + rng.normal(0, 3, split.shape), 0, 255).astype(np.uint8),
    }
    out: dict[str, bytes] = {}
    for name, pixels in pictures.items():
        rgb = Image.fromarray(pixels)
        out[name] = _encode(rgb, quality=90)
        out[f"{name}-progressive"] = _encode(rgb, quality=90, progressive=True)
        out[f"{name}-optimized"] = _encode(rgb, quality=90, optimize=True)
    return out
