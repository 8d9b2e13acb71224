"""The payload: one image prepared once, sent to every backend, classified locally from the same pixels.

A `Payload` holds the metadata-free bytes every provider receives (a JPEG or a PNG) and, on demand, the
RGB pixels those bytes decode to. Local backends classify `Payload.image`, which is either the decode of
`Payload.data` or the very pixels a lossless PNG was written from, so a local model and a cloud model see
identical pixels. Nothing is decoded or encoded until something needs it: a clean JPEG sent to a cloud is never
decoded at all.

Only a provider's size or format limit can make one backend get different bytes; that re-encode is recorded
(`collect_reencodes`) and the base class puts it in the `Prediction` (`extra["payload_reencoded"]`).
"""

from __future__ import annotations

import io
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING

from derm_cloud.errors import PayloadTooLargeError

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image as PILImage

__all__ = ["Payload", "collect_reencodes"]

_MIME = {"JPEG": "image/jpeg", "PNG": "image/png"}
#: JPEG quality of the one shared re-encode of a lossy source whose pixels had to change (rotation, CMYK).
SHARED_JPEG_QUALITY = 95

# Re-encodes made for one backend during one call, as (payload id, note): see collect_reencodes.
_REENCODES: ContextVar[list[tuple[int, str]] | None] = ContextVar("derm_cloud_reencodes", default=None)


@contextmanager
def collect_reencodes() -> Iterator[list[tuple[int, str]]]:
    """Record every per-backend re-encode made in this context (thread) as `(id(payload), note)`."""
    notes: list[tuple[int, str]] = []
    token = _REENCODES.set(notes)
    try:
        yield notes
    finally:
        _REENCODES.reset(token)


class Payload:
    """One image, prepared once: oriented, 8-bit RGB (or gray), metadata stripped, as JPEG or PNG bytes.

    Build one with `derm_cloud.prepare_payload` and pass it to any backend's `predict` or
    `predict_batch`: every backend receives `data` (unless its own size limit forces a re-encode, which
    the `Prediction` then says) and a local backend classifies the pixels `data` decodes to.

    Attributes:
        format: `"JPEG"` or `"PNG"`: what `data` is.
        size: (width, height) after orientation.
        source_format: the input's format (`"JPEG"`, `"MPO"`, `"PNG"`, `"BMP"`...) or `"array"`/`"pil"`.
        had_metadata: metadata kinds found in the input (`{"exif", "gps"}`...), for audit logs; never values.
        conversions: what was done to the input, in order (empty: the bytes are the input's, minus metadata).
        warnings: damage that did not stop classification (a JPEG with junk before its end marker).
        lossless: whether the payload's pixels are exactly the input's decoded pixels.
    """

    def __init__(
        self,
        *,
        format: str,
        size: tuple[int, int],
        source_format: str,
        data: bytes | None = None,
        pixels: PILImage.Image | None = None,
        had_metadata: frozenset[str] = frozenset(),
        conversions: tuple[str, ...] = (),
        warnings: tuple[str, ...] = (),
    ) -> None:
        if data is None and pixels is None:
            raise ValueError("a payload needs its bytes or its pixels")
        self.format = format
        self.size = size
        self.source_format = source_format
        self.had_metadata = had_metadata
        self.conversions = conversions
        self.warnings = warnings
        self._data = data
        # PNG is lossless, so the pixels it is written from are the pixels it decodes to: keep them. A JPEG
        # re-encode changes pixels, so its source is kept only until it is encoded, then decoded from the bytes.
        self._image = pixels if format == "PNG" or (data is not None and pixels is not None) else None
        self._array: np.ndarray | None = None  # a strict JPEG decode's pixels, as libjpeg returned them
        self._source = pixels if self._image is None else None
        self.lossless = not (format == "JPEG" and data is None)
        #: set by prepare_payload(verify_by_decoding=True): the JPEG's entropy check was left to the full decode.
        self.verify_on_decode = False
        self._lock = threading.Lock()
        self._uploads: dict[tuple[int | None, tuple[str, ...], int], tuple[bytes, str]] = {}
        self._base64: dict[int, tuple[bytes, str]] = {}  # id(sent bytes) -> (those bytes, their base64 text)

    def __repr__(self) -> str:
        w, h = self.size
        done = "; ".join(self.conversions) or "metadata stripped losslessly"
        return f"Payload({self.format} {w}x{h} from {self.source_format}: {done})"

    @property
    def mime(self) -> str:
        """The MIME type of `data`."""
        return _MIME[self.format]

    @property
    def data(self) -> bytes:
        """The metadata-free bytes every backend receives (encoded on first use when built from pixels)."""
        if self._data is None:
            with self._lock:
                if self._data is None:
                    source = self._source if self._source is not None else self._image
                    assert source is not None
                    self._data = _encode(source, self.format, SHARED_JPEG_QUALITY)
                    self._source = None
        return self._data

    @property
    def image(self) -> PILImage.Image:
        """The RGB pixels `data` decodes to (decoded on first use, then kept)."""
        if self._image is None:
            data = self.data
            with self._lock:
                if self._image is None:
                    if self._array is None and self._strict:
                        self._array = _decode_strict_rgb(data)
                    if self._array is not None:
                        from PIL import Image

                        self._image = Image.fromarray(self._array, mode="RGB")
                    else:
                        self._image = _decode_rgb(data)
        return self._image

    def release_pixels(self) -> None:
        """Forget the decoded pixels when the bytes can give them back (a batch keeps memory per chunk)."""
        with self._lock:
            if self._data is not None and self.format == "JPEG":
                self._image = None
                self._array = None

    def array(self) -> np.ndarray:
        """The pixels as a read-only `uint8` array of shape (height, width, 3).

        A JPEG checked by its full decode (a local backend's payload) gives libjpeg's own array, with no trip
        through a `PIL.Image` (two copies of every pixel, about 0.4 ms for a 600x450 image).
        """
        if self._image is None and self._strict:
            data = self.data
            with self._lock:
                if self._array is None and self._image is None:
                    self._array = _decode_strict_rgb(data)
        if self._array is not None:
            return self._array
        import numpy as np

        return np.asarray(self.image, dtype=np.uint8)

    @property
    def _strict(self) -> bool:
        # The entropy check was left to the full decode, which must then refuse what the check would have.
        return self.verify_on_decode and self.format == "JPEG"

    def upload_bytes(
        self,
        *,
        max_bytes: int | None = None,
        formats: Iterable[str] = ("JPEG", "PNG"),
        quality: int = 95,
    ) -> tuple[bytes, str]:
        """The bytes to send to one provider: `data`, unless the provider's limits forbid it.

        Args:
            max_bytes: the provider's limit for the image; a payload over it is re-encoded at falling JPEG
                quality, then downscaled, until it fits, and the re-encode is recorded for the `Prediction`.
            formats: formats the provider accepts, preferred first.
            quality: JPEG quality of a re-encode.

        Returns:
            `(data, mime_type)`.

        Raises:
            PayloadTooLargeError: it cannot be made to fit even at reduced quality and size.
        """
        formats = tuple(f.upper() for f in formats)
        if self.format in formats and (max_bytes is None or len(self.data) <= max_bytes):
            return self.data, self.mime
        key = (max_bytes, formats, quality)
        with self._lock:
            cached = self._uploads.get(key)
        if cached is None:
            cached = self._reencode(max_bytes, formats, quality)
            with self._lock:
                self._uploads[key] = cached
        notes = _REENCODES.get()
        if notes is not None:
            why = (
                f"over this provider's limit of {max_bytes:,} bytes"
                if self.format in formats
                else f"this provider does not accept {self.format}"
            )
            notes.append(
                (
                    id(self),
                    f"the shared {self.format} payload ({len(self.data):,} bytes) was re-encoded for this backend "
                    f"({why}) as {len(cached[0]):,} bytes of {cached[1]}: its pixels differ from the other "
                    "backends'",
                )
            )
        return cached

    def upload_base64(
        self,
        *,
        max_bytes: int | None = None,
        formats: Iterable[str] = ("JPEG", "PNG"),
        quality: int = 95,
    ) -> tuple[str, str]:
        """`upload_bytes` as base64 text, for JSON APIs; encoded once per payload and kept.

        A comparison sends one payload to several JSON APIs (Azure ML, Vertex, Azure OpenAI ...): each would
        otherwise spend about 0.05 ms per 100 kB encoding the same bytes again. `max_bytes` limits the decoded
        image, as in `upload_bytes`.

        Returns:
            `(base64_text, mime_type)`.
        """
        import base64

        data, mime = self.upload_bytes(max_bytes=max_bytes, formats=formats, quality=quality)
        with self._lock:
            cached = self._base64.get(id(data))
        # Keyed by identity: the bytes are held by this payload for its lifetime, so an id is never reused here.
        if cached is None or cached[0] is not data:
            cached = (data, base64.b64encode(data).decode("ascii"))
            with self._lock:
                self._base64[id(data)] = cached
        return cached[1], mime

    def _reencode(self, max_bytes: int | None, formats: tuple[str, ...], quality: int) -> tuple[bytes, str]:
        first = formats[0] if formats else "JPEG"
        if first not in _MIME:
            first = "JPEG"
        img = self.image
        if first != self.format:
            data = _encode(img, first, quality)
            if max_bytes is None or len(data) <= max_bytes:
                return data, _MIME[first]
        if "JPEG" not in formats:
            raise PayloadTooLargeError(
                f"image encodes to {len(self.data):,} bytes, over the provider limit of {max_bytes:,}, and the "
                f"provider only accepts {', '.join(formats)}; downscale it before sending"
            )
        # Too big: JPEG at falling quality, then halve the size, keeping the aspect ratio.
        for _ in range(6):
            for q in (90, 80, 70):
                data = _encode(img, "JPEG", q)
                if max_bytes is None or len(data) <= max_bytes:
                    return data, "image/jpeg"
            img = img.resize((max(1, img.width // 2), max(1, img.height // 2)))
        raise PayloadTooLargeError(
            f"image cannot be encoded under {max_bytes:,} bytes even after downscaling to "
            f"{img.width}x{img.height}; check the limit"
        )


def _encode(img: PILImage.Image, fmt: str, quality: int) -> bytes:
    buf = io.BytesIO()
    # A fresh save from pixels writes no EXIF/XMP/ICC: Pillow only writes them when passed explicitly.
    if fmt == "JPEG":
        img.save(buf, format="JPEG", quality=quality, optimize=True)
    else:
        img.save(buf, format=fmt)
    return buf.getvalue()


def _decode_strict_rgb(data: bytes) -> np.ndarray:
    """Decode a JPEG in full and refuse it on any libjpeg warning (the check prepare_payload skipped).

    libjpeg-turbo's Huffman decode is the same at full scale as at the 1/8 scale of the entropy check, so it sees
    the same damage; Pillow would only warn and fill the rest with grey. The entropy check's colour-step check
    runs on the mean of each 8x8 block of these pixels (the 1/8-scale values to within rounding; the benchmark
    counts files the two paths judge differently). The pixels equal Pillow's (same libjpeg-turbo, accurate
    integer DCT, fancy upsampling). Returned read-only: one payload's pixels are shared.
    """
    import simplejpeg

    from derm_cloud.image_bytes import corrupt_jpeg_error
    from derm_cloud.jpeg_damage import block_means, dc_damage, frame_mcu

    try:
        pixels: np.ndarray = simplejpeg.decode_jpeg(data, colorspace="RGB", strict=True)
    except ValueError as exc:
        raise corrupt_jpeg_error(str(exc)) from None
    problem = dc_damage(block_means(pixels), frame_mcu(data)[1])
    if problem:
        raise corrupt_jpeg_error(problem)
    pixels.flags.writeable = False
    return pixels


def _decode_rgb(data: bytes) -> PILImage.Image:
    from PIL import Image

    img = Image.open(io.BytesIO(data))
    img.load()
    rgb = img if img.mode == "RGB" else img.convert("RGB")
    rgb.info.clear()  # drop jfif/exif keys so no later save can carry them along
    return rgb
