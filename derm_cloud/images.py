"""Image input: decode, orient, validate, strip metadata and encode for a provider.

Every backend goes through :func:`load_image` before anything else happens, so bad input fails fast with an
:class:`InvalidImageError` that says what is wrong and how to fix it, and nothing malformed ever reaches a
provider. Every byte string the library sends anywhere comes from :meth:`PreparedImage.upload_bytes`, which
carries no EXIF (GPS, camera serials, timestamps), XMP, IPTC, ICC or comment data.

Why JPEG is stripped losslessly when it can be: re-encoding changes pixels, so a cloud model would see a
slightly different image from the local one and parity tests between backends would measure our encoder, not
the providers. Segments are dropped from the byte stream instead; only when the EXIF orientation has to be
applied (the pixels must rotate anyway) or the image is too large is it re-encoded.
"""

from __future__ import annotations

import io
import os
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Union

from derm_cloud.errors import InvalidImageError, PayloadTooLargeError

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image as PILImage

__all__ = [
    "ImageInput",
    "ImageLimits",
    "PreparedImage",
    "load_image",
    "metadata_markers",
    "strip_jpeg_metadata",
]

ImageInput = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview, IO[bytes], "PILImage.Image", "np.ndarray"]

# Pillow modes we can turn into RGB without guessing a transfer function. 16-bit, 32-bit int and float modes
# ("I", "I;16", "F") need a windowing choice that only the user can make, so they are refused.
_CONVERTIBLE_MODES = frozenset({"1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr"})
_FORMATS = frozenset({"JPEG", "PNG", "BMP", "GIF", "TIFF", "WEBP", "MPO"})


@dataclass(frozen=True)
class ImageLimits:
    """Input limits applied before decoding and after.

    Attributes:
        max_bytes: largest encoded input accepted (default 40 MiB).
        max_pixels: largest decoded size; larger inputs are refused as decompression bombs.
        min_side: smallest width or height; dermoscopy below this carries no usable detail.
        max_side: largest width or height.
    """

    max_bytes: int = 40 * 1024 * 1024
    max_pixels: int = 50_000_000
    min_side: int = 16
    max_side: int = 20_000


DEFAULT_LIMITS = ImageLimits()


@dataclass(frozen=True)
class PreparedImage:
    """A decoded, oriented RGB image plus what is needed to send it without metadata.

    Attributes:
        image: the RGB ``PIL.Image`` with EXIF orientation applied.
        source_format: the decoded format (``"JPEG"``, ``"PNG"``...) or ``"array"``/``"pil"`` for in-memory input.
        encoded: the original bytes when they can be forwarded after lossless stripping (JPEG, upright).
        had_metadata: metadata kinds found in the input (``{"exif", "gps"}``...), for audit logs; never values.
    """

    image: PILImage.Image
    source_format: str
    encoded: bytes | None = None
    had_metadata: frozenset[str] = frozenset()
    # Encoded uploads by (max_bytes, formats, quality): a retried call, or one image sent to several backends
    # with the same limits, is stripped and re-encoded once, not once per attempt.
    _uploads: dict[tuple[int | None, tuple[str, ...], int], tuple[bytes, str]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) after orientation."""
        return self.image.size

    def array(self) -> np.ndarray:
        """The pixels as a ``uint8`` array of shape (height, width, 3)."""
        import numpy as np

        return np.asarray(self.image, dtype=np.uint8)

    def upload_bytes(
        self,
        *,
        max_bytes: int | None = None,
        formats: Iterable[str] = ("JPEG", "PNG"),
        quality: int = 95,
    ) -> tuple[bytes, str]:
        """Bytes to send to a provider, free of metadata and within ``max_bytes``.

        Args:
            max_bytes: the provider's request limit for the image; the image is re-encoded at lower quality,
                then downscaled, until it fits.
            formats: formats the provider accepts, preferred first.
            quality: JPEG quality of a re-encode.

        Returns:
            ``(data, mime_type)``.

        Raises:
            PayloadTooLargeError: it cannot be made to fit even at reduced quality and size.
        """
        formats = tuple(f.upper() for f in formats)
        key = (max_bytes, formats, quality)
        if key not in self._uploads:
            self._uploads[key] = self._encode_upload(max_bytes, formats, quality)
        return self._uploads[key]

    def _encode_upload(self, max_bytes: int | None, formats: tuple[str, ...], quality: int) -> tuple[bytes, str]:
        if self.encoded is not None and "JPEG" in formats:
            stripped = strip_jpeg_metadata(self.encoded)
            if max_bytes is None or len(stripped) <= max_bytes:
                return stripped, "image/jpeg"
        first = formats[0] if formats else "JPEG"
        if self.source_format == "PNG" and "PNG" in formats:
            first = "PNG"  # keep lossless input lossless when the provider takes PNG
        data = _encode(self.image, first, quality)
        if max_bytes is None or len(data) <= max_bytes:
            return data, _MIME[first]
        # Too big: JPEG at falling quality, then halve the size, keeping the aspect ratio.
        if "JPEG" not in formats:
            raise PayloadTooLargeError(
                f"image encodes to {len(data):,} bytes, over the provider limit of {max_bytes:,}, and the "
                f"provider only accepts {', '.join(formats)}; downscale it before sending"
            )
        img = self.image
        for _ in range(6):
            for q in (90, 80, 70):
                data = _encode(img, "JPEG", q)
                if len(data) <= max_bytes:
                    return data, "image/jpeg"
            img = img.resize((max(1, img.width // 2), max(1, img.height // 2)))
        raise PayloadTooLargeError(
            f"image cannot be encoded under {max_bytes:,} bytes even after downscaling to "
            f"{img.width}x{img.height}; check the limit"
        )


_MIME = {"JPEG": "image/jpeg", "PNG": "image/png", "BMP": "image/bmp", "GIF": "image/gif", "WEBP": "image/webp"}


def _encode(img: PILImage.Image, fmt: str, quality: int) -> bytes:
    buf = io.BytesIO()
    # A fresh save from pixels writes no EXIF/XMP/ICC: Pillow only writes them when passed explicitly.
    if fmt == "JPEG":
        img.save(buf, format="JPEG", quality=quality, optimize=True)
    else:
        img.save(buf, format=fmt)
    return buf.getvalue()


def load_image(source: ImageInput, *, limits: ImageLimits = DEFAULT_LIMITS) -> PreparedImage:
    """Decode any supported input into a :class:`PreparedImage`.

    Accepts a path (``str`` or ``PathLike``), ``bytes``, a binary file object, a ``PIL.Image`` or a numpy
    ``uint8`` array (HxW, HxWx3 or HxWx4, RGB order).

    Raises:
        InvalidImageError: empty, truncated, not an image, unsupported mode or format, too large, a
            decompression bomb, or too small; the message says which and what to do.

    Example:
        >>> prepared = load_image("lesion.jpg")  # doctest: +SKIP
        >>> prepared.size
        (600, 450)
    """
    from PIL import Image

    if isinstance(source, Image.Image):
        return _from_pil(source, "pil", None, limits)
    if _is_ndarray(source):
        return _from_array(source, limits)
    data = _read_bytes(source, limits)
    return _from_bytes(data, limits)


def _is_ndarray(obj: object) -> bool:
    return type(obj).__module__ == "numpy" and type(obj).__name__ == "ndarray"


def _read_bytes(source: object, limits: ImageLimits) -> bytes:
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        what = "the bytes given"
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if isinstance(source, str) and not source.strip():
            raise InvalidImageError("image path is an empty string; pass a file path, bytes or an image")
        if not path.exists():
            raise InvalidImageError(f"image file {str(path)!r} does not exist; check the path")
        if path.is_dir():
            raise InvalidImageError(f"{str(path)!r} is a directory, not an image file")
        size = path.stat().st_size
        if size > limits.max_bytes:
            raise InvalidImageError(
                f"image file {path.name!r} is {size:,} bytes, over the limit of {limits.max_bytes:,}; "
                "downscale it or raise ImageLimits.max_bytes"
            )
        data = path.read_bytes()
        what = f"file {path.name!r}"
    elif hasattr(source, "read"):
        chunk = source.read(limits.max_bytes + 1)
        if isinstance(chunk, str):
            raise InvalidImageError("the file object is in text mode; open the image with mode 'rb'")
        data = bytes(chunk)
        what = "the file object"
    else:
        raise InvalidImageError(
            f"cannot read an image from {type(source).__name__}; pass a path, bytes, a binary file object, "
            "a PIL.Image or a numpy uint8 array"
        )
    if not data:
        raise InvalidImageError(f"{what} is empty (0 bytes); check that the upload or file was written fully")
    if len(data) > limits.max_bytes:
        raise InvalidImageError(
            f"{what} is {len(data):,} bytes, over the limit of {limits.max_bytes:,}; downscale it or raise "
            "ImageLimits.max_bytes"
        )
    return data


def _from_bytes(data: bytes, limits: ImageLimits) -> PreparedImage:
    from PIL import Image, UnidentifiedImageError

    # No change to Pillow's process-wide MAX_IMAGE_PIXELS or warning filters: load_image runs in many threads at
    # once (apredict, backend pools, the serving adapters). Pillow's own bomb check (about 89 MP warning, 179 MP
    # error) still applies at open(); our stricter limit is checked on the header size before any pixel decodes.
    try:
        try:
            img = Image.open(io.BytesIO(data))
        except UnidentifiedImageError:
            kind = _sniff(data)
            raise InvalidImageError(
                f"not a readable image ({kind}); supported formats are JPEG, PNG, BMP, GIF, TIFF and WebP"
            ) from None
        fmt = (img.format or "").upper()
        if fmt not in _FORMATS:
            raise InvalidImageError(f"image format {fmt or 'unknown'} is not supported; convert it to JPEG or PNG")
        _check_dimensions(img.size, limits)
        frames = int(getattr(img, "n_frames", 1))
        if frames > 1 and fmt != "MPO":
            raise InvalidImageError(
                f"the {fmt} has {frames} frames (animated or multi-page); send a single still image"
            )
        try:
            img.load()
        except OSError as exc:
            raise InvalidImageError(
                f"the {fmt} is truncated or corrupt ({exc}); re-export or re-upload the complete file"
            ) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InvalidImageError(
            f"image is too large to decode safely (possible decompression bomb: {exc}); downscale it below "
            f"{limits.max_pixels:,} pixels"
        ) from None
    except InvalidImageError:
        raise
    except (OSError, SyntaxError, ValueError, struct.error, EOFError) as exc:
        # Pillow reports a cut-off header as OSError/SyntaxError from inside open().
        raise InvalidImageError(
            f"the image is truncated or corrupt ({type(exc).__name__}: {exc}); re-export or re-upload the complete file"
        ) from None
    markers = _markers(img, data)
    orientation = _exif_orientation(img)
    encoded = data if fmt == "JPEG" and orientation in (None, 1) and img.mode in ("RGB", "L") else None
    if fmt == "JPEG" and encoded is not None and img.mode == "L":
        encoded = None  # grayscale JPEG: providers expect 3 channels, so re-encode as RGB
    return _from_pil(img, fmt, encoded, limits, markers=markers)


def _from_pil(
    img: PILImage.Image,
    fmt: str,
    encoded: bytes | None,
    limits: ImageLimits,
    *,
    markers: frozenset[str] = frozenset(),
) -> PreparedImage:
    from PIL import Image, ImageOps

    _check_dimensions(img.size, limits)
    if img.mode not in _CONVERTIBLE_MODES:
        raise InvalidImageError(
            f"image mode {img.mode!r} is not supported (16-bit, 32-bit or float pixels); convert it to 8-bit "
            "RGB first, e.g. image.convert('RGB') after choosing a display window"
        )
    oriented = ImageOps.exif_transpose(img) or img
    if oriented.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        oriented.mode == "P" and "transparency" in oriented.info
    ):
        # Transparent pixels composited on white: models never saw alpha, and black would look like a lesion.
        rgba = oriented.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        rgb = Image.alpha_composite(background, rgba).convert("RGB")
    else:
        rgb = oriented.convert("RGB")
    rgb.info.clear()  # drop exif/icc/xmp so no later save can carry them along
    return PreparedImage(image=rgb, source_format=fmt, encoded=encoded, had_metadata=markers)


def _from_array(arr: Any, limits: ImageLimits) -> PreparedImage:
    import numpy as np
    from PIL import Image

    if arr.dtype != np.uint8:
        raise InvalidImageError(
            f"numpy image has dtype {arr.dtype}; pass uint8 RGB values 0-255 (e.g. (x * 255).astype('uint8'))"
        )
    if arr.ndim == 2:
        mode = "L"
    elif arr.ndim == 3 and arr.shape[2] in (3, 4):
        mode = "RGB" if arr.shape[2] == 3 else "RGBA"
    else:
        raise InvalidImageError(
            f"numpy image has shape {arr.shape}; expected (height, width), (height, width, 3) RGB or "
            "(height, width, 4) RGBA"
        )
    _check_dimensions((arr.shape[1], arr.shape[0]), limits)
    return _from_pil(Image.fromarray(np.ascontiguousarray(arr), mode=mode), "array", None, limits)


def _check_dimensions(size: tuple[int, int], limits: ImageLimits) -> None:
    w, h = size
    if w * h > limits.max_pixels:
        raise InvalidImageError(
            f"image is {w}x{h} = {w * h:,} pixels, over the limit of {limits.max_pixels:,} (a possible "
            "decompression bomb); downscale it first"
        )
    if max(w, h) > limits.max_side:
        raise InvalidImageError(f"image side of {max(w, h):,} px exceeds {limits.max_side:,} px; downscale it")
    if min(w, h) < limits.min_side:
        raise InvalidImageError(
            f"image is only {w}x{h} px; at least {limits.min_side} px per side is needed for a lesion image"
        )


def _exif_orientation(img: PILImage.Image) -> int | None:
    try:
        value = img.getexif().get(0x0112)
    except Exception:  # a broken EXIF block must not stop classification; we strip it anyway
        return None
    return int(value) if value is not None else None


def _sniff(data: bytes) -> str:
    head = data[:16]
    if head.startswith(b"%PDF"):
        return "a PDF document"
    if head.lstrip().startswith((b"<", b"{", b"[")):
        return "text, HTML or JSON"
    if head.startswith(b"PK"):
        return "a ZIP archive"
    if head[:4] in (b"\x00\x00\x00\x18", b"\x00\x00\x00\x1c", b"\x00\x00\x00 ") and b"ftyp" in data[:16]:
        return "HEIC/MP4 container: export the photo as JPEG"
    try:
        head.decode("utf-8")
        return "plain text"
    except UnicodeDecodeError:
        return f"unknown binary data starting {head[:4].hex()}"


# --- metadata: find and strip -------------------------------------------------------------------------------

# JPEG markers that carry metadata rather than pixels: APP1 (EXIF/XMP), APP2 (ICC, FlashPix), APP3-APP15
# (maker data, IPTC in APP13, Adobe in APP14), COM (comments). APP0 (JFIF) is kept: decoders use it.
_STRIP_MARKERS = frozenset(range(0xE1, 0xF0)) | {0xFE}
_KEEP_APP14_ADOBE = 0xEE  # Adobe APP14 says how to interpret colour in CMYK/YCCK JPEGs


def strip_jpeg_metadata(data: bytes) -> bytes:
    """Remove EXIF, XMP, ICC, IPTC and comment segments from a JPEG without touching its pixels.

    Raises:
        InvalidImageError: the bytes are not a well-formed JPEG header.
    """
    if not data.startswith(b"\xff\xd8"):
        raise InvalidImageError("not a JPEG: it does not start with the SOI marker")
    out = bytearray(b"\xff\xd8")
    i = 2
    n = len(data)
    while i < n:
        if data[i] != 0xFF:
            raise InvalidImageError("corrupt JPEG header: expected a marker; re-export the file")
        while i < n and data[i] == 0xFF:  # fill bytes
            i += 1
        if i >= n:
            break
        marker = data[i]
        i += 1
        if marker == 0xDA or marker == 0xD9:  # start of scan: the rest is entropy-coded data
            out += bytes([0xFF, marker]) + data[i:]
            return bytes(out)
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:
            out += bytes([0xFF, marker])
            continue
        if i + 2 > n:
            raise InvalidImageError("corrupt JPEG header: segment length missing; the file is truncated")
        length = struct.unpack(">H", data[i : i + 2])[0]
        segment = data[i : i + length]
        i += length
        keep_adobe = marker == _KEEP_APP14_ADOBE and segment[2:7] == b"Adobe"
        if marker in _STRIP_MARKERS and not keep_adobe:
            continue
        out += bytes([0xFF, marker]) + segment
    return bytes(out)


def metadata_markers(data: bytes) -> frozenset[str]:
    """Kinds of metadata present in encoded image bytes: ``exif``, ``gps``, ``xmp``, ``icc``, ``comment``.

    Used by the emulators to assert that nothing identifying reached a provider; returns names only.
    """
    try:
        from PIL import Image

        with Image.open(io.BytesIO(data)) as img:
            return _markers(img, data)
    except Exception:  # metadata_markers is best effort on arbitrary bytes
        return _markers(None, data)


def _markers(img: PILImage.Image | None, data: bytes) -> frozenset[str]:
    # Works on an image that is already open, so load_image does not decode the header twice.
    found: set[str] = set()
    # A PNG eXIf chunk sits before the image data; EXIF/XMP in JPEG live in the first APP segments.
    if b"Exif\x00\x00" in data[:65536] or b"eXIf" in data[:65536]:
        found.add("exif")
    if b"http://ns.adobe.com/xap/1.0/" in data[:65536]:
        found.add("xmp")
    if img is None:
        return frozenset(found)
    try:
        exif = img.getexif()
        if len(exif):
            found.add("exif")
        if exif.get_ifd(0x8825):
            found.add("gps")
    except Exception:  # a broken EXIF block still counts as EXIF; it is stripped either way
        found.add("exif")
    if img.info.get("icc_profile"):
        found.add("icc")
    if "xmp" in img.info or "XML:com.adobe.xmp" in img.info:
        found.add("xmp")
    if img.info.get("comment"):
        found.add("comment")
    return frozenset(found)
