"""Byte-level JPEG and PNG work: parse headers, check structure, strip metadata, never decode pixels.

A clean JPEG or PNG going to a cloud needs no pixel work: the header says its size and colour layout, the
metadata segments/chunks can be dropped from the byte stream, and the pixels travel exactly as they came. What
this module cannot see from the bytes alone (a JPEG cut short and closed with a forged end marker, a bit flip
that turns into a bad Huffman code) is checked by `verify_jpeg_entropy`, which lets libjpeg-turbo walk the
entropy-coded data at 1/8 scale (Huffman decoding only, no full-size inverse DCT or colour conversion) and
treats its warnings as errors; damage libjpeg does not warn about is looked for by `derm_cloud.jpeg_damage`
(`verify_jpeg_bytes` on the bytes, and the DC image that 1/8-scale decode gives).
"""

from __future__ import annotations

import re
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

from derm_cloud.errors import InvalidImageError
from derm_cloud.jpeg_damage import dc_damage, frame_mcu, zero_fill

__all__ = [
    "JpegInfo",
    "PngInfo",
    "parse_jpeg",
    "parse_png",
    "strip_jpeg_metadata",
    "verify_jpeg_bytes",
    "verify_jpeg_entropy",
]

# JPEG markers that carry metadata rather than pixels: APP1 (EXIF/XMP), APP2 (ICC, FlashPix, MPF), APP3-APP15
# (maker data, IPTC in APP13, Adobe in APP14), COM (comments). APP0 (JFIF) is kept: decoders use it.
_STRIP_MARKERS = frozenset(range(0xE1, 0xF0)) | {0xFE}
_APP14 = 0xEE  # Adobe APP14 says how to interpret colour in CMYK/YCCK JPEGs; kept
_SOF_MARKERS = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
# Segments that may sit between the scans of a progressive JPEG.
_BETWEEN_SCANS = frozenset({0xC4, 0xCC, 0xDA, 0xDB, 0xDD, 0xFE}) | frozenset(range(0xE0, 0xF0))
# In entropy-coded data every 0xFF is followed by 0x00 (stuffing); anything else is a marker. Found at C speed.
# (A pattern with a repeated 0xFF prefix is 60x slower: the engine loses its literal-prefix scan.)
_ENTROPY_MARKER = re.compile(rb"\xff[^\x00]")


def corrupt_jpeg_error(what: str) -> InvalidImageError:
    """The error for a damaged JPEG, quoting what the parser or libjpeg found."""
    return InvalidImageError(f"the JPEG is truncated or corrupt ({what}); re-export or re-upload the complete file")


@dataclass(frozen=True)
class JpegInfo:
    """What the markers of a JPEG say, read without decoding a pixel.

    Attributes:
        width: width from the frame header.
        height: height from the frame header.
        components: 1 (grayscale), 3 (YCbCr or RGB) or 4 (CMYK/YCCK).
        precision: bits per sample (8, or 12 for rare medical JPEGs).
        adobe_transform: the Adobe APP14 colour transform flag, `None` without that segment.
        end: offset just past the first image's end-of-image marker (an MPO's next image starts later).
        exif: the EXIF block (after `Exif\\0\\0`) or `None`.
        is_mpo: the file carries a Multi-Picture (MPF) index: a phone's MPO.
        markers: metadata kinds present (`exif`, `xmp`, `icc`, `comment`); names only.
        scan_start: offset of the first entropy-coded byte (after the first scan header).
    """

    width: int
    height: int
    components: int
    precision: int
    adobe_transform: int | None
    end: int
    exif: bytes | None = None
    is_mpo: bool = False
    markers: frozenset[str] = field(default_factory=frozenset)
    scan_start: int = 0

    @property
    def plain_colour(self) -> bool:
        """Whether every decoder agrees on its RGB: 8-bit grayscale or YCbCr (not CMYK, YCCK or Adobe RGB)."""
        if self.precision != 8:
            return False
        if self.components == 1:
            return True
        return self.components == 3 and self.adobe_transform in (None, 1)


SizeCheck = Callable[[tuple[int, int]], None]


def parse_jpeg(data: bytes, check_size: SizeCheck | None = None) -> JpegInfo:
    """Walk a JPEG's markers to the end of its first image, checking the structure of every segment.

    The entropy-coded data is scanned for markers only (restart markers in sequence, nothing but scan headers
    and tables between scans, an end-of-image marker at the end), which catches cut files and most bit flips
    that hit a 0xFF byte; it does not decode Huffman codes (see `verify_jpeg_entropy`).

    Args:
        data: the file's bytes.
        check_size: called with (width, height) as soon as the frame header is read, so a decompression bomb
            is refused before its data is scanned.

    Raises:
        InvalidImageError: the bytes are not a well-formed JPEG.
    """
    if not data.startswith(b"\xff\xd8"):
        raise InvalidImageError("not a JPEG: it does not start with the SOI marker")
    n = len(data)
    i = 2
    frame: tuple[int, int, int, int] | None = None
    adobe: int | None = None
    exif: bytes | None = None
    markers: set[str] = set()
    is_mpo = False
    restart_interval = 0
    while True:
        if i >= n:
            raise corrupt_jpeg_error("it ends inside the header")
        if data[i] != 0xFF:
            raise corrupt_jpeg_error(f"expected a marker at byte {i}")
        while i < n and data[i] == 0xFF:  # fill bytes
            i += 1
        if i >= n:
            raise corrupt_jpeg_error("it ends inside the header")
        marker = data[i]
        i += 1
        if marker in (0xD8, 0xD9) or 0xD0 <= marker <= 0xD7:
            raise corrupt_jpeg_error(f"unexpected marker 0xFF{marker:02X} before the image data")
        if marker == 0x01:
            continue
        if i + 2 > n:
            raise corrupt_jpeg_error("a segment length is missing")
        length = struct.unpack_from(">H", data, i)[0]
        if length < 2 or i + length > n:
            raise corrupt_jpeg_error(f"segment 0xFF{marker:02X} claims {length} bytes past the end of the file")
        body = data[i + 2 : i + length]
        i += length
        if marker in _SOF_MARKERS:
            if len(body) < 6:
                raise corrupt_jpeg_error("the frame header is too short")
            precision, height, width, ncomp = struct.unpack_from(">BHHB", body)
            if width == 0 or height == 0 or ncomp not in (1, 3, 4) or len(body) != 6 + 3 * ncomp:
                raise corrupt_jpeg_error(f"the frame header is invalid ({width}x{height}, {ncomp} components)")
            if frame is not None:
                raise corrupt_jpeg_error("it has two frame headers")
            frame = (width, height, ncomp, precision)
            if check_size is not None:
                check_size((width, height))
        elif marker == 0xDD and len(body) >= 2:
            restart_interval = struct.unpack_from(">H", body)[0]
        elif marker == 0xE1 and body.startswith(b"Exif\x00\x00"):
            exif = body[6:]
            markers.add("exif")
        elif marker == 0xE1 and body.startswith(b"http://ns.adobe.com/xap/1.0/"):
            markers.add("xmp")
        elif marker == 0xE2 and body.startswith(b"ICC_PROFILE"):
            markers.add("icc")
        elif marker == 0xE2 and body.startswith(b"MPF\x00"):
            is_mpo = True
        elif marker == _APP14 and body.startswith(b"Adobe") and len(body) >= 12:
            adobe = body[11]
        elif marker == 0xFE:
            markers.add("comment")
        elif marker == 0xDA:
            if frame is None:
                raise corrupt_jpeg_error("image data starts before the frame header")
            _check_scan_header(body, frame[2])
            end = _scan_entropy(data, i, restart_interval)
            width, height, ncomp, precision = frame
            return JpegInfo(width, height, ncomp, precision, adobe, end, exif, is_mpo, frozenset(markers), i)


def _check_scan_header(body: bytes, frame_components: int) -> None:
    if not body or body[0] < 1 or body[0] > frame_components or len(body) != 1 + 2 * body[0] + 3:
        raise corrupt_jpeg_error("a scan header is invalid")


def _scan_entropy(data: bytes, pos: int, restart_interval: int) -> int:
    """Check the markers inside the entropy-coded data; return the offset after the end-of-image marker."""
    expected_rst = 0
    n = len(data)
    while True:
        match = _ENTROPY_MARKER.search(data, pos)
        if match is None:
            raise corrupt_jpeg_error("it ends before the end-of-image marker (the file is cut short)")
        pos = match.start() + 1
        while pos < n and data[pos] == 0xFF:  # fill bytes before a marker
            pos += 1
        if pos >= n:
            raise corrupt_jpeg_error("it ends before the end-of-image marker (the file is cut short)")
        marker = data[pos]
        pos += 1
        if marker == 0x00:  # fill bytes before a stuffed zero
            continue
        if 0xD0 <= marker <= 0xD7:
            if not restart_interval or marker - 0xD0 != expected_rst:
                raise corrupt_jpeg_error(f"restart marker 0xFF{marker:02X} out of sequence")
            expected_rst = (expected_rst + 1) % 8
            continue
        if marker == 0xD9:
            return pos
        if marker not in _BETWEEN_SCANS:
            raise corrupt_jpeg_error(f"unexpected marker 0xFF{marker:02X} inside the image data")
        if pos + 2 > n:
            raise corrupt_jpeg_error("it ends inside a segment between scans")
        length = struct.unpack_from(">H", data, pos)[0]
        if length < 2 or pos + length > n:
            raise corrupt_jpeg_error(f"segment 0xFF{marker:02X} between scans runs past the end of the file")
        if marker == 0xDD and length >= 4:
            restart_interval = struct.unpack_from(">H", data, pos + 2)[0]
        if marker == 0xDA:
            _check_scan_header(data[pos + 2 : pos + length], 4)
            expected_rst = 0
        pos += length


def strip_jpeg_metadata(data: bytes, end: int | None = None) -> bytes:
    """Remove EXIF, XMP, ICC, IPTC, MPF and comment segments from a JPEG without touching its pixels.

    Args:
        data: a JPEG (or an MPO: only its first, primary image is kept).
        end: where the first image ends, when `parse_jpeg` already found it; anything after it (an MPO's
            second image, a maker's trailer) is dropped.

    Raises:
        InvalidImageError: the bytes are not a well-formed JPEG header.
    """
    if end is None:
        end = parse_jpeg(data).end
    out = bytearray(b"\xff\xd8")
    i = 2
    while i < end:
        while data[i] == 0xFF and data[i + 1] == 0xFF:  # fill bytes
            i += 1
        marker = data[i + 1]
        if marker == 0x01:
            out += data[i : i + 2]
            i += 2
            continue
        if marker == 0xDA:  # start of scan: the rest of the image is kept byte for byte
            out += data[i:end]
            return bytes(out)
        length = struct.unpack_from(">H", data, i + 2)[0]
        segment = data[i : i + 2 + length]
        i += 2 + length
        keep_adobe = marker == _APP14 and segment[4:9] == b"Adobe"
        if marker in _STRIP_MARKERS and not keep_adobe:
            continue
        out += segment
    raise corrupt_jpeg_error("no image data")


def verify_jpeg_bytes(data: bytes, info: JpegInfo) -> None:
    """Refuse a JPEG whose image data holds a zero-filled run its Huffman tables cannot produce (microseconds).

    Raises:
        InvalidImageError: part of the file was lost and zero-filled (`jpeg_damage.zero_fill`).
    """
    problem = zero_fill(data, info.scan_start, info.end)
    if problem:
        raise corrupt_jpeg_error(problem)


def verify_jpeg_entropy(data: bytes, components: int) -> None:
    """Let libjpeg-turbo Huffman-decode every scan at 1/8 scale, refuse the file on any warning, judge its DC image.

    The cost is measured in `benchmarks/jpeg_damage.py` and `benchmarks/backend_overhead.py`: Huffman
    decoding is most of a JPEG decode, so this is the one check that costs nearly as much as the decode it
    replaces; it runs once per payload, however many backends receive it. It is the only check that sees a file
    cut short and closed with a forged end marker, a bad Huffman code, or data left over when the last block is
    decoded (the stream lost sync after damage, so every later block is wrong): libjpeg only warns about these
    and fills the rest with grey, so each is refused here. The 1/8-scale image it gives (one DC level per 8x8
    block) is then searched for the colour step that damage libjpeg does not warn about leaves
    (`jpeg_damage.dc_damage`).

    Raises:
        InvalidImageError: libjpeg reported damage (the message quotes it), or the DC image shows its mark.
    """
    import simplejpeg

    colourspace = {1: "GRAY", 4: "CMYK"}.get(components, "RGB")
    try:
        # simplejpeg picks a scale only when given a minimum size: min_factor alone decodes every pixel.
        dc = simplejpeg.decode_jpeg(data, colorspace=colourspace, min_factor=8, min_width=1, min_height=1, strict=True)
    except ValueError as exc:
        raise corrupt_jpeg_error(str(exc)) from None
    problem = dc_damage(dc, frame_mcu(data)[1])
    if problem:
        raise corrupt_jpeg_error(problem)


# --- PNG ---------------------------------------------------------------------------------------------------

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_KEEP = frozenset({b"IHDR", b"PLTE", b"IDAT", b"IEND"})


@dataclass(frozen=True)
class PngInfo:
    """What a PNG's chunks say, read with every CRC checked and no pixel inflated.

    Attributes:
        width: image width.
        height: image height.
        bit_depth: bits per sample.
        colour_type: 0 gray, 2 RGB, 3 palette, 4 gray+alpha, 6 RGBA.
        transparent: a tRNS chunk is present.
        animated: an APNG animation control chunk is present.
        exif: the eXIf chunk's data or `None`.
        markers: metadata kinds present; names only.
        stripped: the PNG with only IHDR, PLTE, IDAT and IEND: the same pixels, no metadata.
    """

    width: int
    height: int
    bit_depth: int
    colour_type: int
    transparent: bool
    animated: bool
    exif: bytes | None
    markers: frozenset[str]
    stripped: bytes

    @property
    def plain_colour(self) -> bool:
        """8-bit grayscale or RGB without transparency: every decoder gives the same RGB."""
        return self.bit_depth == 8 and self.colour_type in (0, 2) and not self.transparent


def parse_png(data: bytes, check_size: SizeCheck | None = None) -> PngInfo:
    """Walk a PNG's chunks, checking each CRC, and build its metadata-free copy.

    Args:
        data: the file's bytes.
        check_size: called with (width, height) as soon as IHDR is read.

    Raises:
        InvalidImageError: a chunk is cut short or fails its CRC, or IHDR/IDAT/IEND is missing.
    """
    if not data.startswith(_PNG_SIGNATURE):
        raise InvalidImageError("not a PNG: the signature is missing")
    pos = len(_PNG_SIGNATURE)
    n = len(data)
    out = [_PNG_SIGNATURE]
    ihdr: tuple[int, int, int, int] | None = None
    seen: set[bytes] = set()
    exif: bytes | None = None
    markers: set[str] = set()
    view = memoryview(data)
    while True:
        if pos + 12 > n:
            raise _pngcorrupt_jpeg_error("it ends before the IEND chunk (the file is cut short)")
        length, kind = struct.unpack_from(">I4s", data, pos)
        end = pos + 12 + length
        if end > n:
            raise _pngcorrupt_jpeg_error(f"chunk {kind!r} runs past the end of the file")
        # CRC over a view: the image data is not copied to be checked.
        if zlib.crc32(view[pos + 8 : pos + 8 + length], zlib.crc32(kind)) != struct.unpack_from(">I", data, end - 4)[0]:
            raise _pngcorrupt_jpeg_error(f"chunk {kind.decode('latin-1')!r} fails its CRC check")
        if not seen and kind != b"IHDR":
            raise _pngcorrupt_jpeg_error("the first chunk is not IHDR")
        seen.add(kind)
        if kind == b"IHDR":
            if length != 13:
                raise _pngcorrupt_jpeg_error("the IHDR chunk has the wrong length")
            ihdr = struct.unpack_from(">IIBB", data, pos + 8)
            if check_size is not None:
                check_size((ihdr[0], ihdr[1]))
        elif kind == b"eXIf":
            exif = data[pos + 8 : pos + 8 + length]
            markers.add("exif")
        elif kind == b"iCCP":
            markers.add("icc")
        elif kind == b"iTXt" and data.startswith(b"XML:com.adobe.xmp", pos + 8, end - 4):
            markers.add("xmp")
        elif kind in (b"tEXt", b"zTXt", b"iTXt"):
            markers.add("comment")
        if kind in _PNG_KEEP:
            out.append(data[pos:end])
        pos = end
        if kind == b"IEND":
            break
    if ihdr is None or b"IDAT" not in seen:
        raise _pngcorrupt_jpeg_error("it has no image data")
    width, height, bit_depth, colour_type = ihdr
    return PngInfo(
        width,
        height,
        bit_depth,
        colour_type,
        b"tRNS" in seen,
        b"acTL" in seen,
        exif,
        frozenset(markers),
        b"".join(out),
    )


def _pngcorrupt_jpeg_error(what: str) -> InvalidImageError:
    return InvalidImageError(f"the PNG is truncated or corrupt ({what}); re-export or re-upload the complete file")
