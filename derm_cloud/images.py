"""Image input: read, validate and prepare one :class:`~derm_cloud.payload.Payload` per image.

Every backend goes through :func:`prepare_payload` (alias :func:`load_image`) before anything else happens, so
bad input fails fast with an :class:`InvalidImageError` that says what is wrong and how to fix it, and nothing
malformed ever reaches a provider. Every byte string the library sends anywhere comes from the payload, which
carries no EXIF (GPS, camera serials, timestamps), XMP, IPTC, ICC, MPF or comment data.

What is and is not re-encoded, and why:

* A clean JPEG (8-bit YCbCr or gray, upright) or an MPO's primary JPEG, and a clean PNG (8-bit RGB or gray, no
  transparency, upright): the header is parsed, the structure checked, metadata segments/chunks dropped from the
  byte stream. No pixel is decoded; the pixels travel exactly as they came.
* A JPEG whose pixels must change (EXIF rotation, CMYK/YCCK, 12-bit): decoded, converted once, re-encoded once
  as JPEG q95; every backend, local ones included, gets the pixels that JPEG decodes to.
* Anything else (BMP, TIFF, WebP, GIF, palette, RGBA, 16-bit, in-memory images): decoded and converted once, sent
  as a lossless PNG.
"""

from __future__ import annotations

import io
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Union

from derm_cloud.errors import InvalidImageError
from derm_cloud.image_bytes import (
    JpegInfo,
    parse_jpeg,
    parse_png,
    strip_jpeg_metadata,
    verify_jpeg_bytes,
    verify_jpeg_entropy,
)
from derm_cloud.payload import Payload

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image as PILImage

__all__ = [
    "ImageInput",
    "ImageLimits",
    "Payload",
    "PreparedImage",
    "check_input",
    "load_image",
    "metadata_markers",
    "prepare_payload",
    "strip_jpeg_metadata",
]

ImageInput = Union[
    str, "os.PathLike[str]", bytes, bytearray, memoryview, IO[bytes], "PILImage.Image", "np.ndarray", Payload
]
#: The name this class had before payloads were shared between backends.
PreparedImage = Payload

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
        jpeg_entropy_check: let libjpeg Huffman-decode every JPEG at 1/8 scale to refuse files cut short or
            with corrupt entropy data, and judge the DC image that gives for the colour shift such damage leaves
            (costs a fraction of a decode, once per image); ``False`` keeps only the byte-level checks (marker
            structure, zero-filled runs), for inputs already verified upstream.
    """

    max_bytes: int = 40 * 1024 * 1024
    max_pixels: int = 50_000_000
    min_side: int = 16
    max_side: int = 20_000
    jpeg_entropy_check: bool = True


DEFAULT_LIMITS = ImageLimits()


def prepare_payload(
    source: ImageInput, *, limits: ImageLimits = DEFAULT_LIMITS, verify_by_decoding: bool = False
) -> Payload:
    """Prepare one image for every backend: validate, orient, strip metadata, choose the bytes to send.

    Accepts a path (``str`` or ``PathLike``), ``bytes``, a binary file object, a ``PIL.Image``, a numpy
    ``uint8`` array (HxW, HxWx3 or HxWx4, RGB order) or an existing :class:`Payload` (checked against
    ``limits`` and returned as is). Pass the result to any backend's ``predict``/``predict_batch``: every
    backend then receives the same bytes and a local backend classifies the pixels those bytes decode to.

    Args:
        source: the image.
        limits: size limits and whether JPEG entropy data is verified.
        verify_by_decoding: for a caller that decodes every pixel anyway (a local model): leave the JPEG
            entropy check to that full decode (``Payload.image`` then refuses a damaged JPEG), instead of
            Huffman-decoding the file twice. Never for a payload that goes to a cloud undecoded.

    Raises:
        InvalidImageError: empty, truncated or corrupt, not an image, unsupported mode or format, too large, a
            decompression bomb, or too small; the message says which and what to do.

    Example:
        >>> payload = prepare_payload("lesion.jpg")  # doctest: +SKIP
        >>> payload.size, payload.format, payload.conversions
        ((600, 450), 'JPEG', ())
    """
    if isinstance(source, Payload):
        check_payload(source, limits)
        return source
    if _is_pil(source):
        return _from_pil(source, "pil", limits, lossy_source=False)  # type: ignore[arg-type]
    if _is_ndarray(source):
        return _from_array(source, limits)
    data = _read_bytes(source, limits)
    return _from_bytes(data, limits, verify_by_decoding)


#: The name :func:`prepare_payload` had before payloads were shared between backends.
load_image = prepare_payload


def check_input(source: ImageInput, *, limits: ImageLimits = DEFAULT_LIMITS) -> ImageInput:
    """Cheap first pass of a batch: refuse an unusable input without decoding or keeping its pixels.

    Paths are read and their structure checked (JPEG markers, PNG chunks and CRCs, other formats' headers), then
    their bytes are dropped; :func:`prepare_payload` reads them again when their chunk is classified, so a batch
    of paths never holds every image's bytes. A file object can only be read once: its bytes are returned and
    held until its chunk. In-memory images (``PIL.Image``, arrays, payloads) are checked on their size only.
    Damage that only a decode sees (a corrupt JPEG entropy stream) is found when the chunk is prepared.

    Returns:
        What to pass to :func:`prepare_payload` later: ``source`` itself, or the bytes read from a file object.

    Raises:
        InvalidImageError: as :func:`prepare_payload` would for the same header problem.
    """
    if isinstance(source, Payload):
        check_payload(source, limits)
        return source
    in_memory: Any = source
    if _is_pil(in_memory):
        _check_dimensions(in_memory.size, limits)
        return source
    if _is_ndarray(in_memory):
        if in_memory.ndim >= 2:
            _check_dimensions((in_memory.shape[1], in_memory.shape[0]), limits)
        return source
    data = _read_bytes(source, limits)
    if data.startswith(b"\xff\xd8"):
        verify_jpeg_bytes(data, parse_jpeg(data, lambda size: _check_dimensions(size, limits)))
    elif data.startswith(b"\x89PNG\r\n\x1a\n"):
        parse_png(data, lambda size: _check_dimensions(size, limits))
    else:
        _check_other_header(data, limits)
    keep = isinstance(source, (str, os.PathLike, bytes, bytearray, memoryview))
    return source if keep else data


def _check_other_header(data: bytes, limits: ImageLimits) -> None:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:  # reads the header only
            size = img.size
    except UnidentifiedImageError:
        raise InvalidImageError(
            f"not a readable image ({_sniff(data)}); supported formats are JPEG, PNG, BMP, GIF, TIFF and WebP"
        ) from None
    except (OSError, SyntaxError, ValueError, struct.error, EOFError) as exc:
        raise InvalidImageError(
            f"the image is truncated or corrupt ({type(exc).__name__}: {exc}); re-export or re-upload the complete file"
        ) from None
    _check_dimensions(size, limits)


def check_payload(payload: Payload, limits: ImageLimits) -> None:
    """Check an already prepared payload against one backend's limits (cheap: no pixel is touched).

    Raises:
        InvalidImageError: the payload is over the byte limit or outside the size limits.
    """
    _check_dimensions(payload.size, limits)
    if payload.lossless and payload._data is not None and len(payload._data) > limits.max_bytes:
        raise InvalidImageError(
            f"the payload is {len(payload._data):,} bytes, over the limit of {limits.max_bytes:,}; downscale "
            "it or raise ImageLimits.max_bytes"
        )


def _is_pil(obj: object) -> bool:
    # Without importing Pillow: an in-memory PIL image is the rare input, paths and bytes the common ones.
    return any(c.__module__ == "PIL.Image" and c.__name__ == "Image" for c in type(obj).__mro__)


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


def _from_bytes(data: bytes, limits: ImageLimits, verify_by_decoding: bool = False) -> Payload:
    if data.startswith(b"\xff\xd8"):
        return _from_jpeg(data, limits, verify_by_decoding)
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        png = parse_png(data, lambda size: _check_dimensions(size, limits))
        if png.animated:
            raise InvalidImageError("the PNG is animated (APNG); send a single still image")
        orientation = _orientation(png.exif)
        if png.plain_colour and orientation in (None, 1):
            return Payload(
                format="PNG",
                size=(png.width, png.height),
                source_format="PNG",
                data=png.stripped,
                had_metadata=_with_gps(png.markers, png.exif),
            )
        payload = _decode_with_pillow(data, limits, lossy_source=False)
        if png.bit_depth == 16:
            payload.conversions = ("16-bit samples reduced to 8-bit (Pillow keeps the high byte)", *payload.conversions)
        return payload
    return _decode_with_pillow(data, limits, lossy_source=False)


def _from_jpeg(data: bytes, limits: ImageLimits, verify_by_decoding: bool = False) -> Payload:
    info = parse_jpeg(data, lambda size: _check_dimensions(size, limits))
    verify_jpeg_bytes(data, info)
    orientation = _orientation(info.exif)
    # Only the clean path keeps the input's entropy data for the decode to verify; every other path decodes
    # with Pillow (which tolerates damage) and re-encodes, so it is checked here.
    deferred = verify_by_decoding and info.plain_colour and orientation in (None, 1)
    if limits.jpeg_entropy_check and not deferred:
        verify_jpeg_entropy(data[: info.end], info.components)
    warnings: tuple[str, ...] = ()
    trailer = data[info.end :].rstrip(b"\x00\r\n ")
    if trailer and not info.is_mpo:
        # Some cameras and editors append data after the image; the pixels are complete, the trailer is dropped.
        warnings = (f"{len(trailer):,} bytes after the JPEG's end-of-image marker were dropped",)
    source_format = "MPO" if info.is_mpo else "JPEG"
    markers = _with_gps(info.markers | ({"mpf"} if info.is_mpo else set()), info.exif)
    if info.plain_colour and orientation in (None, 1):
        stripped = strip_jpeg_metadata(data, info.end)
        conversions = ("primary image of the MPO kept, other images dropped",) if info.is_mpo else ()
        payload = Payload(
            format="JPEG",
            size=(info.width, info.height),
            source_format=source_format,
            data=stripped,
            had_metadata=markers,
            conversions=conversions,
            warnings=warnings,
        )
        payload.verify_on_decode = deferred and limits.jpeg_entropy_check
        return payload
    payload = _decode_with_pillow(data[: info.end], limits, lossy_source=True, jpeg=info)
    payload.warnings = warnings
    payload.had_metadata = markers
    return payload


def _decode_with_pillow(
    data: bytes, limits: ImageLimits, *, lossy_source: bool, jpeg: JpegInfo | None = None
) -> Payload:
    from PIL import Image, UnidentifiedImageError

    # No change to Pillow's process-wide MAX_IMAGE_PIXELS or warning filters: payloads are prepared in many
    # threads at once. Pillow's own bomb check still applies at open(); our stricter limit is checked on the
    # header size before any pixel decodes.
    try:
        try:
            img = Image.open(io.BytesIO(data))
        except UnidentifiedImageError:
            kind = _sniff(data)
            raise InvalidImageError(
                f"not a readable image ({kind}); supported formats are JPEG, PNG, BMP, GIF, TIFF and WebP"
            ) from None
        fmt = "MPO" if jpeg is not None and jpeg.is_mpo else (img.format or "").upper()
        if fmt not in _FORMATS:
            raise InvalidImageError(f"image format {fmt or 'unknown'} is not supported; convert it to JPEG or PNG")
        _check_dimensions(img.size, limits)
        frames = int(getattr(img, "n_frames", 1))
        if frames > 1 and fmt != "MPO":
            raise InvalidImageError(
                f"the {fmt} has {frames} frames (animated or multi-page); send a single still image"
            )
        markers = _markers(img, data)
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
    return _from_pil(img, fmt, limits, lossy_source=lossy_source or fmt in ("JPEG", "MPO"), markers=markers)


def _from_pil(
    img: PILImage.Image,
    fmt: str,
    limits: ImageLimits,
    *,
    lossy_source: bool,
    markers: frozenset[str] = frozenset(),
) -> Payload:
    from PIL import Image, ImageOps

    _check_dimensions(img.size, limits)
    if img.mode not in _CONVERTIBLE_MODES:
        raise InvalidImageError(
            f"image mode {img.mode!r} is not supported (16-bit, 32-bit or float pixels); convert it to 8-bit "
            "RGB first, e.g. image.convert('RGB') after choosing a display window"
        )
    conversions: list[str] = []
    orientation = _orientation_of(img)
    oriented = ImageOps.exif_transpose(img) or img
    if orientation not in (None, 1):
        conversions.append(f"EXIF orientation {orientation} applied")
    if oriented.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        oriented.mode == "P" and "transparency" in oriented.info
    ):
        # Transparent pixels composited on white: models never saw alpha, and black would look like a lesion.
        rgba = oriented.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        rgb = Image.alpha_composite(background, rgba).convert("RGB")
        conversions.append(f"{oriented.mode} composited on white")
    else:
        rgb = oriented.convert("RGB")
        if oriented.mode != "RGB":
            conversions.append(f"{oriented.mode} converted to RGB")
    rgb.info.clear()  # drop exif/icc/xmp so no later save can carry them along
    target = "JPEG" if lossy_source else "PNG"
    conversions.append(
        f"re-encoded once as JPEG q95 (the {fmt} was lossy already)" if lossy_source else f"{fmt} sent as lossless PNG"
    )
    return Payload(
        format=target,
        size=rgb.size,
        source_format=fmt,
        pixels=rgb,
        had_metadata=markers,
        conversions=tuple(conversions),
    )


def _from_array(arr: Any, limits: ImageLimits) -> Payload:
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
    return _from_pil(Image.fromarray(np.ascontiguousarray(arr), mode=mode), "array", limits, lossy_source=False)


def _orientation(exif: bytes | None) -> int | None:
    """The EXIF orientation tag of a raw EXIF block, without opening the image."""
    if not exif:
        return None
    from PIL import Image

    try:
        parsed = Image.Exif()
        parsed.load(exif)
        value = parsed.get(0x0112)
    except Exception:  # a broken EXIF block must not stop classification; it is stripped anyway
        return None
    return _valid_orientation(value)


def _orientation_of(img: PILImage.Image) -> int | None:
    try:
        value = img.getexif().get(0x0112)
    except Exception:  # a broken EXIF block must not stop classification; we strip it anyway
        return None
    return _valid_orientation(value)


def _valid_orientation(value: object) -> int | None:
    # EXIF defines 1-8; writers also put 0 there (Microsoft's Custom Vision sample photos have it). Pillow's
    # exif_transpose leaves such values alone, so they mean upright: no decode, no lossy re-encode.
    return int(value) if isinstance(value, int) and 1 <= value <= 8 else None


def _with_gps(markers: frozenset[str] | set[str], exif: bytes | None) -> frozenset[str]:
    found = set(markers)
    if exif:
        from PIL import Image

        try:
            parsed = Image.Exif()
            parsed.load(exif)
            if parsed.get_ifd(0x8825):
                found.add("gps")
        except Exception:  # a broken EXIF block still counts as EXIF; it is stripped either way
            found.add("exif")
    return frozenset(found)


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


# --- metadata: find (the emulators check that nothing identifying reached them) ------------------------------


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
