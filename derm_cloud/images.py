"""Image input: read, validate and prepare one `Payload` per image.

Every backend goes through `prepare_payload` (alias `load_image`) before anything else happens, so
bad input fails fast with an `InvalidImageError` that says what is wrong and how to fix it, and nothing
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
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Union

from derm_cloud.errors import InvalidImageError
from derm_cloud.image_bytes import (
    parse_jpeg,
    parse_png,
    strip_jpeg_metadata,
    verify_jpeg_bytes,
    verify_jpeg_entropy,
)
from derm_cloud.image_convert import decode_with_pillow, from_array, from_pil
from derm_cloud.image_limits import DEFAULT_LIMITS, ImageLimits, check_dimensions, sniff
from derm_cloud.image_metadata import metadata_markers, orientation_of_exif, with_gps
from derm_cloud.payload import Payload

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image as PILImage

__all__ = [
    "DEFAULT_LIMITS",
    "ImageInput",
    "ImageLimits",
    "Payload",
    "PreparedImage",
    "check_input",
    "load_image",
    "metadata_markers",
    "prepare_for_model",
    "prepare_payload",
    "strip_jpeg_metadata",
]

ImageInput = Union[
    str, "os.PathLike[str]", bytes, bytearray, memoryview, IO[bytes], "PILImage.Image", "np.ndarray", Payload
]
#: The name this class had before payloads were shared between backends.
PreparedImage = Payload


def prepare_payload(
    source: ImageInput, *, limits: ImageLimits = DEFAULT_LIMITS, verify_by_decoding: bool = False
) -> Payload:
    """Prepare one image for every backend: validate, orient, strip metadata, choose the bytes to send.

    Accepts a path (`str` or `PathLike`), `bytes`, a binary file object, a `PIL.Image`, a numpy
    `uint8` array (HxW, HxWx3 or HxWx4, RGB order) or an existing `Payload` (checked against
    `limits` and returned as is). Pass the result to any backend's `predict`/`predict_batch`: every
    backend then receives the same bytes and a local backend classifies the pixels those bytes decode to.

    Args:
        source: the image.
        limits: size limits and whether JPEG entropy data is verified.
        verify_by_decoding: for a caller that decodes every pixel anyway (a local model): leave the JPEG
            entropy check to that full decode (`Payload.image` then refuses a damaged JPEG), instead of
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
        return from_pil(source, "pil", limits, lossy_source=False)  # type: ignore[arg-type]
    if _is_ndarray(source):
        return from_array(source, limits)
    data = _read_bytes(source, limits)
    return _from_bytes(data, limits, verify_by_decoding)


#: The name :func:`prepare_payload` had before payloads were shared between backends.
load_image = prepare_payload


def prepare_for_model(source: ImageInput, *, limits: ImageLimits = DEFAULT_LIMITS) -> Payload:
    """`prepare_payload` for a caller about to classify every pixel: one full decode, which also verifies a JPEG.

    A local model and a model server (the emulators, the serving adapters) decode every pixel anyway, so the
    separate entropy check `prepare_payload` runs for bytes that go to a cloud undecoded would walk the same
    Huffman data a second time. Here that check is the full decode itself (`verify_by_decoding`), run now, so
    a damaged JPEG is refused by this call as `prepare_payload` would refuse it, and the pixels are kept.

    Raises:
        InvalidImageError: as `prepare_payload`.
    """
    payload = prepare_payload(source, limits=limits, verify_by_decoding=True)
    if payload.verify_on_decode:
        payload.array()
    return payload


def check_input(source: ImageInput, *, limits: ImageLimits = DEFAULT_LIMITS) -> ImageInput:
    """Cheap first pass of a batch: refuse an unusable input without decoding or keeping its pixels.

    Paths are read and their structure checked (JPEG markers, PNG chunks and CRCs, other formats' headers), then
    their bytes are dropped; `prepare_payload` reads them again when their chunk is classified, so a batch
    of paths never holds every image's bytes. A file object can only be read once: its bytes are returned and
    held until its chunk. In-memory images (`PIL.Image`, arrays, payloads) are checked on their size only.
    Damage that only a decode sees (a corrupt JPEG entropy stream) is found when the chunk is prepared.

    Returns:
        What to pass to `prepare_payload` later: `source` itself, or the bytes read from a file object.

    Raises:
        InvalidImageError: as `prepare_payload` would for the same header problem.
    """
    if isinstance(source, Payload):
        check_payload(source, limits)
        return source
    in_memory: Any = source
    if _is_pil(in_memory):
        check_dimensions(in_memory.size, limits)
        return source
    if _is_ndarray(in_memory):
        if in_memory.ndim >= 2:
            check_dimensions((in_memory.shape[1], in_memory.shape[0]), limits)
        return source
    data = _read_bytes(source, limits)
    if data.startswith(b"\xff\xd8"):
        verify_jpeg_bytes(data, parse_jpeg(data, lambda size: check_dimensions(size, limits)))
    elif data.startswith(b"\x89PNG\r\n\x1a\n"):
        parse_png(data, lambda size: check_dimensions(size, limits))
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
            f"not a readable image ({sniff(data)}); supported formats are JPEG, PNG, BMP, GIF, TIFF and WebP"
        ) from None
    except (OSError, SyntaxError, ValueError, struct.error, EOFError) as exc:
        raise InvalidImageError(
            f"the image is truncated or corrupt ({type(exc).__name__}: {exc}); re-export or re-upload the complete file"
        ) from None
    check_dimensions(size, limits)


def check_payload(payload: Payload, limits: ImageLimits) -> None:
    """Check an already prepared payload against one backend's limits (cheap: no pixel is touched).

    Raises:
        InvalidImageError: the payload is over the byte limit or outside the size limits.
    """
    check_dimensions(payload.size, limits)
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
        png = parse_png(data, lambda size: check_dimensions(size, limits))
        if png.animated:
            raise InvalidImageError("the PNG is animated (APNG); send a single still image")
        orientation = orientation_of_exif(png.exif)
        if png.plain_colour and orientation in (None, 1):
            return Payload(
                format="PNG",
                size=(png.width, png.height),
                source_format="PNG",
                data=png.stripped,
                had_metadata=with_gps(png.markers, png.exif),
            )
        payload = decode_with_pillow(data, limits, lossy_source=False)
        if png.bit_depth == 16:
            payload.conversions = ("16-bit samples reduced to 8-bit (Pillow keeps the high byte)", *payload.conversions)
        return payload
    return decode_with_pillow(data, limits, lossy_source=False)


def _from_jpeg(data: bytes, limits: ImageLimits, verify_by_decoding: bool = False) -> Payload:
    info = parse_jpeg(data, lambda size: check_dimensions(size, limits))
    verify_jpeg_bytes(data, info)
    orientation = orientation_of_exif(info.exif)
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
    markers = with_gps(info.markers | ({"mpf"} if info.is_mpo else set()), info.exif)
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
    payload = decode_with_pillow(data[: info.end], limits, lossy_source=True, jpeg=info)
    payload.warnings = warnings
    payload.had_metadata = markers
    return payload
