"""Decode and convert images that cannot travel as they came: Pillow decodes, EXIF rotation, transparency,
other modes and arrays become one RGB payload, re-encoded once (JPEG q95 for a lossy source, PNG otherwise).
"""

from __future__ import annotations

import io
import struct
from typing import TYPE_CHECKING, Any

from derm_cloud.errors import InvalidImageError
from derm_cloud.image_bytes import JpegInfo
from derm_cloud.image_limits import ImageLimits, check_dimensions, sniff
from derm_cloud.image_metadata import markers_of, orientation_of_image
from derm_cloud.payload import Payload

if TYPE_CHECKING:
    from PIL import Image as PILImage

__all__ = ["decode_with_pillow", "from_array", "from_pil"]

# Pillow modes we can turn into RGB without guessing a transfer function. 16-bit, 32-bit int and float modes
# ("I", "I;16", "F") need a windowing choice that only the user can make, so they are refused.
_CONVERTIBLE_MODES = frozenset({"1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr"})
_FORMATS = frozenset({"JPEG", "PNG", "BMP", "GIF", "TIFF", "WEBP", "MPO"})


def decode_with_pillow(
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
            kind = sniff(data)
            raise InvalidImageError(
                f"not a readable image ({kind}); supported formats are JPEG, PNG, BMP, GIF, TIFF and WebP"
            ) from None
        fmt = "MPO" if jpeg is not None and jpeg.is_mpo else (img.format or "").upper()
        if fmt not in _FORMATS:
            raise InvalidImageError(f"image format {fmt or 'unknown'} is not supported; convert it to JPEG or PNG")
        check_dimensions(img.size, limits)
        frames = int(getattr(img, "n_frames", 1))
        if frames > 1 and fmt != "MPO":
            raise InvalidImageError(
                f"the {fmt} has {frames} frames (animated or multi-page); send a single still image"
            )
        markers = markers_of(img, data)
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
    return from_pil(img, fmt, limits, lossy_source=lossy_source or fmt in ("JPEG", "MPO"), markers=markers)


def from_pil(
    img: PILImage.Image,
    fmt: str,
    limits: ImageLimits,
    *,
    lossy_source: bool,
    markers: frozenset[str] = frozenset(),
) -> Payload:
    from PIL import Image, ImageOps

    check_dimensions(img.size, limits)
    if img.mode not in _CONVERTIBLE_MODES:
        raise InvalidImageError(
            f"image mode {img.mode!r} is not supported (16-bit, 32-bit or float pixels); convert it to 8-bit "
            "RGB first, e.g. image.convert('RGB') after choosing a display window"
        )
    conversions: list[str] = []
    orientation = orientation_of_image(img)
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


def from_array(arr: Any, limits: ImageLimits) -> Payload:
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
    check_dimensions((arr.shape[1], arr.shape[0]), limits)
    return from_pil(Image.fromarray(np.ascontiguousarray(arr), mode=mode), "array", limits, lossy_source=False)
