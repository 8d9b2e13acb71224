"""The limits every image input is held to, and the checks on a size or a byte string that apply them.

Kept apart from `derm_cloud.images` so that the decoding helpers can use them without importing the module that
calls them.
"""

from __future__ import annotations

from dataclasses import dataclass

from derm_cloud.errors import InvalidImageError

__all__ = ["DEFAULT_LIMITS", "ImageLimits", "check_dimensions", "sniff"]


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
            (costs a fraction of a decode, once per image); `False` keeps only the byte-level checks (marker
            structure, zero-filled runs), for inputs already verified upstream.
    """

    max_bytes: int = 40 * 1024 * 1024
    max_pixels: int = 50_000_000
    min_side: int = 16
    max_side: int = 20_000
    jpeg_entropy_check: bool = True


DEFAULT_LIMITS = ImageLimits()


def check_dimensions(size: tuple[int, int], limits: ImageLimits) -> None:
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


def sniff(data: bytes) -> str:
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
