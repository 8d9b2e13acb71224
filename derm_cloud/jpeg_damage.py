"""JPEG damage that libjpeg decodes without a warning, found from the bytes and from the 1/8-scale image.

A JPEG has no checksum. libjpeg-turbo's strict decode (`image_bytes.verify_jpeg_entropy`) refuses damage that
breaks a Huffman code or the block count, but a file with a 512-byte block of its image data zeroed, a sector
from elsewhere copied over it, or one bit flipped often decodes without a single warning: the decoder loses sync
for a few blocks, finds it again, and from there on every block's DC level (its mean colour) is off by a
constant, because DC values are coded as differences from the previous block. The picture looks right with the
wrong colours below some point, and a classifier's answer flips (issue 18: bcc at 0.993 became akiec at 0.558).
Two cheap checks look for the marks this damage leaves; what each catches, misses and costs is measured on a
fuzz corpus of real images by `benchmarks/jpeg_damage.py` (docs/payloads.md has the figures):

* **zero fill** (bytes, microseconds): a run of zero bytes inside an entropy-coded segment whose Huffman tables
  cannot code flat blocks as zero bits. There a run of 32 zero bytes would be dozens of AC coefficients of
  exactly -1 in a row, which no encoder writes; it is what a failed copy or download leaves. (Where the tables
  do code a flat block as zeros, as in progressive files of flat pictures, long zero runs are ordinary.)
* **colour step** (the DC image): the coder walks MCUs in raster order, so damage shifts every block from a
  point *part-way along an MCU row* on. The vertical differences across that MCU-row boundary are shifted right
  of the point and those across the next boundary left of it: in raster order one window of exactly one row's
  length, shifted the same way, between windows one row above and below that are not. A straight horizontal
  edge in the picture shifts a whole boundary instead, so windows whose boundaries are shifted outside them too
  are not judged, nor windows starting within three blocks of a row's ends (too few columns to tell).

The DC image comes free with the entropy check: at 1/8 scale libjpeg computes only the DC coefficient of each
block. A local backend that verifies by decoding in full passes the mean of each 8x8 block instead
(`block_means`), which is the same to within rounding and chroma upsampling.
"""

from __future__ import annotations

import math
import re
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

__all__ = ["DcScores", "block_means", "dc_damage", "dc_scores", "frame_mcu", "zero_fill"]

#: Shortest zero run refused in a scan whose tables cannot code flat blocks as zeros. Clean HAM10000 scans
#: hold at most 4 zero bytes in a row; a lost disk sector or network packet leaves 512 or more.
ZERO_FILL_BYTES = 32
_ZEROS = bytes(ZERO_FILL_BYTES)
# A marker inside entropy-coded data: 0xFF followed by anything but a stuffed zero or a restart marker.
_SCAN_END = re.compile(rb"\xff[^\x00\xd0-\xd7]")
_SOF_MARKERS = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})

#: A vertical difference counts towards a colour step when it exceeds this many levels (YCbCr, 0-255).
STEP_LEVELS = 6.0
#: Refuse when the share of a row-long window of differences shifted the same way exceeds the larger share of
#: the windows one row above and below by more than STEP_NOISE / sqrt(blocks across), and at least STEP_FLOOR.
#: A share averages one row, so its noise falls with the root of the width; on the fuzz corpus the largest
#: clean score is 4.0 / sqrt(width) at 28 blocks across and 3.4 / sqrt(width) at 75 (the benchmark prints
#: them). Over 1.0 the check cannot fire: images under 22 blocks (176 px) across are left to the other checks.
STEP_NOISE = 4.6
STEP_FLOOR = 0.45
#: Wider DC images are averaged over cells of adjacent blocks to at most this many columns.
STEP_COLUMNS = 128
#: A step starting this close (in blocks) to either end of a row is not judged: too few columns on one side to
#: tell it from a straight horizontal edge ...
STEP_MARGIN = 3
#: ... nor one where at least this share of the rest of either boundary is shifted the same way (an edge).
STEP_VETO = 0.5
_YCC = (
    (0.299, 0.587, 0.114),
    (-0.168736, -0.331264, 0.5),
    (0.5, -0.418688, -0.081312),
)


def zero_fill(data: bytes, scan_start: int, end: int) -> str | None:
    """What is wrong when a scan holds a zero run its Huffman tables cannot produce, else `None`.

    Args:
        data: the JPEG.
        scan_start: offset of the first entropy-coded byte (after the first scan header).
        end: offset just past the end-of-image marker.
    """
    if data.find(_ZEROS, scan_start, end) < 0:  # the common case: one C-speed search, nothing else
        return None
    for start, stop, zeros_are_flat in _scans(data, end):
        at = data.find(_ZEROS, start, stop)
        if at >= 0 and not zeros_are_flat:
            run = stop - at - len(data[at:stop].lstrip(b"\x00"))
            return (
                f"{run:,} zero bytes inside the image data at byte {at:,}: part of the file was lost and "
                "zero-filled, as a failed copy or download leaves it"
            )
    return None


def _scans(data: bytes, end: int) -> list[tuple[int, int, bool]]:
    """Each scan's entropy-coded span and whether zero bits decode to flat blocks under its tables."""
    first_symbol: dict[int, int] = {}  # (class << 4 | id) -> the symbol whose code is all zero bits
    scans: list[tuple[int, int, bool]] = []
    i = 2
    while i + 4 <= end:
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0xD9:
            break
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        length = struct.unpack_from(">H", data, i + 2)[0]
        body = data[i + 4 : i + 2 + length]
        i += 2 + length
        if marker == 0xC4:
            _read_tables(body, first_symbol)
        elif marker == 0xDA:
            match = _SCAN_END.search(data, i, end)
            stop = match.start() if match else end
            scans.append((i, stop, _zeros_are_flat(body, first_symbol)))
            i = stop
    return scans


def _read_tables(body: bytes, first_symbol: dict[int, int]) -> None:
    pos = 0
    while pos + 17 <= len(body):
        count = sum(body[pos + 1 : pos + 17])
        if count and pos + 17 < len(body):
            # Canonical Huffman codes: the first symbol listed with the shortest length gets the all-zero code.
            first_symbol[body[pos]] = body[pos + 17]
        pos += 17 + count


def _zeros_are_flat(header: bytes, first_symbol: dict[int, int]) -> bool:
    """Whether a run of zero bits is legitimate in this scan: under its tables it codes unchanged blocks."""
    if not header or len(header) < 1 + 2 * header[0] + 3:
        return True  # a malformed header is the structure check's business
    count = header[0]
    spectral_start, spectral_end = header[1 + 2 * count], header[2 + 2 * count]
    if spectral_start == 0 and header[3 + 2 * count] >> 4:
        return True  # DC refinement: one raw bit per block, zeros are ordinary data
    for k in range(count):
        tables = header[2 + 2 * k]
        dc, ac = first_symbol.get(tables >> 4), first_symbol.get(0x10 | (tables & 0x0F))
        if spectral_start == 0 and dc not in (None, 0):
            return False  # the zero code is a DC difference, not "unchanged"
        codes_ac = spectral_start > 0 or spectral_end > 0
        if codes_ac and ac is not None and (ac & 0x0F or ac == 0xF0):
            return False  # the zero code is a coefficient (or a run of 16 zeros), not an end of block
    return True


def frame_mcu(data: bytes) -> tuple[int, int]:
    """The MCU of a JPEG in 8x8 blocks, (across, down): (2, 2) for 4:2:0, (1, 1) for 4:4:4 and grayscale."""
    i = 2
    while i + 4 <= len(data) and data[i] == 0xFF:
        marker = data[i + 1]
        if marker == 0xFF or marker == 0x01:
            i += 1 if marker == 0xFF else 2
            continue
        length = struct.unpack_from(">H", data, i + 2)[0]
        if marker in _SOF_MARKERS and length >= 8:
            count = data[i + 9]
            factors = data[i + 11 : i + 11 + 3 * count : 3]
            if count < 2 or not factors:
                return (1, 1)  # one component: its scan walks single blocks whatever its sampling factors
            return (max(f >> 4 for f in factors) or 1, max(f & 0x0F for f in factors) or 1)
        if marker == 0xDA:
            break
        i += 2 + length
    return (1, 1)


def block_means(pixels: np.ndarray) -> np.ndarray:
    """The mean of each 8x8 block of a full decode (partial blocks at the edges included), `float32`.

    This is what the 1/8-scale decode gives directly (one DC level per block) to within rounding and chroma
    upsampling, so a full decode can be judged by `dc_damage` too. The 8 rows of a block row are summed along
    contiguous memory, then the 8 columns of each block by one matrix product: about 0.15 ms for 600x450, where
    Pillow's reduce needs a 4-byte-per-pixel copy of the image first and takes twice as long.
    """
    import numpy as np

    height, width = pixels.shape[:2]
    pixels = pixels.reshape(height, width, -1)
    channels = pixels.shape[2]
    full_rows = height // 8 * 8
    strips = [np.add.reduce(pixels[:full_rows].reshape(-1, 8, width * channels), axis=1, dtype=np.uint16)]
    if full_rows < height:
        strips.append(np.add.reduce(pixels[full_rows:], axis=0, dtype=np.uint16).reshape(1, -1))
    rows = np.concatenate(strips)  # (block rows, width * channels): sums of each block row's pixel rows
    columns = -(-width // 8)
    padded = np.zeros((len(rows), columns * 8 * channels), np.float32)  # zero columns pad the last block
    padded[:, : width * channels] = rows
    per_block = np.kron(np.ones((8, 1), np.float32), np.eye(channels, dtype=np.float32))  # (8 * channels, channels)
    sums = (padded.reshape(-1, 8 * channels) @ per_block).reshape(len(rows), columns, channels)
    heights = np.full(len(rows), 8.0, np.float32)
    heights[-1] = height - full_rows or 8.0
    widths = np.full(columns, 8.0, np.float32)
    widths[-1] = width - (columns - 1) * 8
    means: np.ndarray = sums / (heights[:, None, None] * widths[None, :, None])
    return means


@dataclass(frozen=True)
class DcScores:
    """How strongly a DC image shows a colour step (the benchmark reports the largest clean score).

    Attributes:
        step: share of a row-long raster window of vertical differences across MCU-row boundaries shifted the
            same way, minus the larger share of the windows one MCU row above and below (0 when vetoed).
        step_at: (block row, block column) where the strongest step starts.
        width: columns judged: blocks across, or cells of a few blocks in an image over STEP_COLUMNS wide.
    """

    step: float
    step_at: tuple[int, int]
    width: int

    @property
    def step_threshold(self) -> float:
        """The step score over which the image is refused."""
        return max(STEP_FLOOR, STEP_NOISE / math.sqrt(max(self.width, 1)))


def dc_damage(blocks: np.ndarray, mcu_rows: int = 1) -> str | None:
    """What is wrong with a JPEG whose DC image shows a colour step, else `None`.

    Args:
        blocks: one value per 8x8 block, `(rows, columns)` or `(rows, columns, channels)` `uint8`: the
            1/8-scale decode or `block_means` of a full decode. Three channels are judged as YCbCr.
        mcu_rows: block rows per MCU (`frame_mcu(data)[1]`: 2 for 4:2:0).
    """
    scores = dc_scores(blocks, mcu_rows)
    if scores.step > scores.step_threshold:
        row, col = scores.step_at
        return (
            f"its colours shift abruptly part-way along a row of its image data, at 8x8-block row {row}, column "
            f"{col} of {scores.width}, and stay shifted: the mark of corrupt data that decoders show without an "
            "error"
        )
    return None


def dc_scores(blocks: np.ndarray, mcu_rows: int = 1) -> DcScores:
    """Score a DC image for a colour step (see the module docstring)."""
    import numpy as np

    values = blocks.astype(np.float32)
    if values.ndim == 2:
        values = values[:, :, None]
    # Channels first (channel, row, column): every later step then runs along contiguous rows.
    if values.shape[2] == 3:
        planes = np.tensordot(np.asarray(_YCC, dtype=np.float32), values, axes=([1], [2]))
    else:
        planes = np.moveaxis(values, 2, 0)
    # Differences across MCU-row boundaries only: inside an MCU row the blocks above and below a step's start
    # are shifted alike.
    below = planes[:, mcu_rows::mcu_rows]
    diffs = below - planes[:, mcu_rows - 1 :: mcu_rows][:, : below.shape[1]]
    # A wide image is judged on cells of a few blocks (at most STEP_COLUMNS across): its noise is low already,
    # and the check's cost grows with the number of columns (12 MP: 500 blocks, 28 ms; 125 cells, 2 ms).
    cell = -(-diffs.shape[2] // STEP_COLUMNS)
    if cell > 1:
        cells = diffs.shape[2] // cell
        diffs = diffs[:, :, : cells * cell].reshape(diffs.shape[0], diffs.shape[1], cells, cell).mean(axis=3)
    step, (boundary, col) = _colour_step(diffs)
    return DcScores(step, (boundary * mcu_rows, col * cell), diffs.shape[2])


def _colour_step(diffs: np.ndarray) -> tuple[float, tuple[int, int]]:
    """The strongest step in `diffs` (channel, MCU-row boundary, column) and the MCU row and column it starts."""
    import numpy as np

    channels, boundaries, width = diffs.shape
    if boundaries < 2 or width <= 2 * STEP_MARGIN:
        return 0.0, (0, 0)
    # In raster order, with a zero row above and two below: damage from MCU row r, column c on shifts the
    # differences across boundary r-1|r right of c and across r|r+1 left of c, the `width` entries from
    # r * width + c (the window); those across r-1|r left of c and across r|r+1 right of c keep their spread.
    # Counted per channel and sign, in integers; all slices, no gathers.
    rows = boundaries + 3
    shifted = np.zeros((2 * channels, rows, width), np.bool_)
    np.greater(diffs, STEP_LEVELS, out=shifted[:channels, 1 : boundaries + 1])
    np.less(diffs, -STEP_LEVELS, out=shifted[channels:, 1 : boundaries + 1])
    counts = np.zeros((2 * channels, rows * width + 1), np.int32)
    np.cumsum(shifted.reshape(2 * channels, -1), axis=1, out=counts[:, 1:])
    counts = counts[:, :-1].reshape(2 * channels, rows, width)  # [r, c]: shifted entries before (r, c)
    window = counts[:, 1:] - counts[:, :-1]  # window[r, c]: of the `width` entries from (r, c)
    excess = window[:, 1:boundaries] - np.maximum(window[:, : boundaries - 1], window[:, 2 : boundaries + 1])
    columns = np.arange(width)
    before = counts[:, 1:boundaries] - counts[:, 1:boundaries, :1]  # row r, left of c
    after = counts[:, 3 : boundaries + 2, :1] - counts[:, 2 : boundaries + 1]  # row r + 1, right of c
    edge = (before >= STEP_VETO * columns) | (after >= STEP_VETO * (width - columns))
    excess[edge] = 0
    score = excess.max(axis=0)
    score[:, :STEP_MARGIN] = 0
    score[:, width - STEP_MARGIN + 1 :] = 0
    row, column = divmod(int(np.argmax(score)), width)
    return float(score[row, column]) / width, (row + 1, column)
