"""What metadata an image carries: EXIF orientation, GPS, and the kinds of metadata present (names only).

The payload never sends any of it: `derm_cloud.images` uses these to decide whether pixels must be rotated and to
record what was stripped; the emulators use `metadata_markers` to check that nothing identifying reached them.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from PIL import Image as PILImage

__all__ = ["markers_of", "metadata_markers", "orientation_of_exif", "orientation_of_image", "with_gps"]


def orientation_of_exif(exif: bytes | None) -> int | None:
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


def orientation_of_image(img: PILImage.Image) -> int | None:
    try:
        value = img.getexif().get(0x0112)
    except Exception:  # a broken EXIF block must not stop classification; we strip it anyway
        return None
    return _valid_orientation(value)


def _valid_orientation(value: object) -> int | None:
    # EXIF defines 1-8; writers also put 0 there (Microsoft's Custom Vision sample photos have it). Pillow's
    # exif_transpose leaves such values alone, so they mean upright: no decode, no lossy re-encode.
    return int(value) if isinstance(value, int) and 1 <= value <= 8 else None


def with_gps(markers: frozenset[str] | set[str], exif: bytes | None) -> frozenset[str]:
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


def metadata_markers(data: bytes) -> frozenset[str]:
    """Kinds of metadata present in encoded image bytes: `exif`, `gps`, `xmp`, `icc`, `comment`.

    Used by the emulators to assert that nothing identifying reached a provider; returns names only.
    """
    try:
        from PIL import Image

        with Image.open(io.BytesIO(data)) as img:
            return markers_of(img, data)
    except Exception:  # metadata_markers is best effort on arbitrary bytes
        return markers_of(None, data)


def markers_of(img: PILImage.Image | None, data: bytes) -> frozenset[str]:
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
