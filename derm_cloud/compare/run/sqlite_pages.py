"""Read a damaged SQLite file page by page: its header, and the records on its b-tree leaf pages.

SQL reaches a row through the file header and every interior page above it; when one of those is lost, rows that
are intact on their leaf pages become unreachable. This module reads the file format directly
(https://www.sqlite.org/fileformat2.html): it infers the page size of a file whose 100-byte header is gone and
writes a new header, and it decodes every cell of every table-leaf (`0x0D`) and index-leaf (`0x0A`) page,
following overflow chains, so `derm_cloud.compare.run.store_repair` can salvage rows, and count the ones that
are really gone, whatever page above them was lost.

Example:
    >>> header = rebuild_header(bytes(8192), page_size=4096)
    >>> header[:16], int.from_bytes(header[16:18], "big")
    (b'SQLite format 3\\x00', 4096)
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

__all__ = [
    "MAGIC",
    "PAGE_SIZES",
    "LeafRecord",
    "free_pages",
    "header_page_size",
    "infer_page_size",
    "leaf_records",
    "rebuild_header",
]

MAGIC = b"SQLite format 3\x00"
#: The page sizes SQLite allows, the default first.
PAGE_SIZES = (4096, 1024, 2048, 8192, 16384, 32768, 65536, 512)
_TABLE_LEAF, _INDEX_LEAF, _TABLE_INTERIOR, _INDEX_INTERIOR = 0x0D, 0x0A, 0x05, 0x02


@dataclass(frozen=True)
class LeafRecord:
    """One cell of a leaf page, decoded.

    Attributes:
        page: the page number it was on.
        index: True for an index-leaf cell (its values end with the rowid of the row it indexes).
        rowid: the rowid of a table-leaf cell (`None` for an index cell).
        values: the record's column values (TEXT as str, BLOB as bytes, INTEGER, REAL, NULL).
    """

    page: int
    index: bool
    rowid: int | None
    values: tuple[Any, ...]


def header_page_size(data: bytes) -> int | None:
    """The page size an intact header states, or `None` when the header is missing or implausible."""
    if len(data) < 100 or not data.startswith(MAGIC):
        return None
    size = int.from_bytes(data[16:18], "big")
    size = 65536 if size == 1 else size
    if size not in PAGE_SIZES or data[21:24] != b"\x40\x20\x20" or data[20] != 0:
        return None
    return size


def infer_page_size(data: bytes) -> list[int]:
    """Plausible page sizes of a file whose header is gone, the most likely first.

    A size is scored by the share of its pages that read as b-tree pages (a page type byte, a cell count, a cell
    content area and cell pointers that all fit inside the page). A size too small cuts real pages in pieces whose
    content area and pointers point past the piece; a size too large still finds valid pages but skips the ones in
    between, so among the sizes that score (nearly) best the smallest wins.
    """
    scores = {size: _valid_share(data, size) for size in PAGE_SIZES}
    best = max(scores.values())
    return sorted(PAGE_SIZES, key=lambda size: (scores[size] < best - 0.05, size))


def _valid_share(data: bytes, size: int) -> float:
    pages = len(data) // size
    if pages < 2:
        return 0.0
    good = 0
    for page in range(2, pages + 1):
        base = (page - 1) * size
        kind = data[base]
        if kind not in (_TABLE_LEAF, _INDEX_LEAF, _TABLE_INTERIOR, _INDEX_INTERIOR):
            continue
        head = 8 if kind in (_TABLE_LEAF, _INDEX_LEAF) else 12
        cells = int.from_bytes(data[base + 3 : base + 5], "big")
        content = int.from_bytes(data[base + 5 : base + 7], "big") or 65536
        if not 0 < cells < size // 4 or not head + 2 * cells <= content <= size:
            continue
        pointers = (int.from_bytes(data[base + head + 2 * i : base + head + 2 * i + 2], "big") for i in range(cells))
        if all(content <= at < size for at in pointers):
            good += 1
    return good / (pages - 1)


def rebuild_header(data: bytes, page_size: int, *, wal: bool = False) -> bytes:
    """A fresh 100-byte header for `data` (UTF-8, no reserved bytes, no free list, schema format 4).

    The free-page list is lost with the old header: SQLite reads past it (the pages are simply not reused), and
    `leaf_records` cannot tell a freed leaf from a live one, which the caller must allow for.

    Args:
        data: the whole file.
        page_size: from `infer_page_size`.
        wal: mark the file as WAL mode (read and write versions 2), so a `-wal` file beside it is replayed.
    """
    version = 2 if wal else 1
    out = bytearray(100)
    out[0:16] = MAGIC
    out[16:18] = (1 if page_size == 65536 else page_size).to_bytes(2, "big")
    out[18], out[19], out[20] = version, version, 0
    out[21:24] = b"\x40\x20\x20"  # payload fractions, fixed by the format
    out[24:28] = (1).to_bytes(4, "big")  # change counter ...
    out[28:32] = (len(data) // page_size).to_bytes(4, "big")  # ... which makes this page count valid
    out[40:44] = (1).to_bytes(4, "big")  # schema cookie
    out[44:48] = (4).to_bytes(4, "big")  # schema format
    out[56:60] = (1).to_bytes(4, "big")  # UTF-8
    out[92:96] = (1).to_bytes(4, "big")  # version-valid-for = change counter
    out[96:100] = (3_040_000).to_bytes(4, "big")
    return bytes(out)


def free_pages(data: bytes, page_size: int) -> set[int]:
    """Pages on the free list of an intact header (their old cells are deleted rows, not live ones)."""
    pages = len(data) // page_size
    free: set[int] = set()
    trunk = int.from_bytes(data[32:36], "big")
    while 0 < trunk <= pages and trunk not in free:
        free.add(trunk)
        base = (trunk - 1) * page_size
        count = min(int.from_bytes(data[base + 4 : base + 8], "big"), page_size // 4 - 2)
        for i in range(count):
            leaf = int.from_bytes(data[base + 8 + 4 * i : base + 12 + 4 * i], "big")
            if 0 < leaf <= pages:
                free.add(leaf)
        trunk = int.from_bytes(data[base : base + 4], "big")
    return free


def leaf_records(data: bytes, page_size: int, skip: set[int] | None = None) -> Iterator[LeafRecord]:
    """Every decodable cell of every leaf page of `data` (pages in `skip` left out).

    A cell that does not decode (a damaged page, an overflow chain that leaves the file) is skipped: only what is
    intact is returned.
    """
    skip = skip or set()
    for page in range(1, len(data) // page_size + 1):
        if page in skip:
            continue
        base = (page - 1) * page_size
        head = base + (100 if page == 1 else 0)
        kind = data[head]
        if kind not in (_TABLE_LEAF, _INDEX_LEAF):
            continue
        cells = int.from_bytes(data[head + 3 : head + 5], "big")
        if cells > page_size // 4:
            continue  # not a b-tree page after all
        for i in range(cells):
            pointer = int.from_bytes(data[head + 8 + 2 * i : head + 10 + 2 * i], "big")
            if not 8 <= pointer < page_size:
                continue
            try:
                yield _cell(data, page_size, page, base + pointer, kind == _INDEX_LEAF)
            except (IndexError, ValueError, UnicodeDecodeError, struct.error):
                continue


def _cell(data: bytes, page_size: int, page: int, at: int, index: bool) -> LeafRecord:
    size, at = _varint(data, at)
    rowid = None
    if not index:
        rowid, at = _varint(data, at)
    usable = page_size
    most = usable - 35 if not index else (usable - 12) * 64 // 255 - 23
    least = (usable - 12) * 32 // 255 - 23
    local = size if size <= most else (k if (k := least + (size - least) % (usable - 4)) <= most else least)
    payload = bytearray(data[at : at + local])
    if len(payload) != local:
        raise ValueError("cell runs past the end of the file")
    overflow = int.from_bytes(data[at + local : at + local + 4], "big") if local < size else 0
    seen: set[int] = set()
    while len(payload) < size:
        if not 0 < overflow <= len(data) // page_size or overflow in seen:
            raise ValueError("broken overflow chain")
        seen.add(overflow)
        start = (overflow - 1) * page_size
        payload += data[start + 4 : start + 4 + min(usable - 4, size - len(payload))]
        overflow = int.from_bytes(data[start : start + 4], "big")
    return LeafRecord(page, index, rowid, _record(bytes(payload)))


def _varint(data: bytes, at: int) -> tuple[int, int]:
    value = 0
    for k in range(8):
        byte = data[at + k]
        value = (value << 7) | (byte & 0x7F)
        if byte < 0x80:
            return value, at + k + 1
    return (value << 8) | data[at + 8], at + 9


_INT_SIZES = {1: 1, 2: 2, 3: 3, 4: 4, 5: 6, 6: 8}


def _record(payload: bytes) -> tuple[Any, ...]:
    """Decode the record format: a header of serial types, then the values."""
    header_size, at = _varint(payload, 0)
    if not 0 < header_size <= len(payload):
        raise ValueError("record header out of range")
    types = []
    while at < header_size:
        serial, at = _varint(payload, at)
        types.append(serial)
    pos = header_size
    values: list[Any] = []
    for serial in types:
        if serial == 0:
            values.append(None)
        elif serial in _INT_SIZES:
            n = _INT_SIZES[serial]
            values.append(int.from_bytes(payload[pos : pos + n], "big", signed=True))
            pos += n
        elif serial == 7:
            values.append(struct.unpack(">d", payload[pos : pos + 8])[0])
            pos += 8
        elif serial in (8, 9):
            values.append(serial - 8)
        elif serial >= 12:
            n = (serial - 12) // 2
            chunk = payload[pos : pos + n]
            values.append(chunk.decode("utf-8") if serial % 2 else bytes(chunk))
            pos += n
        else:
            raise ValueError(f"reserved serial type {serial}")
        if pos > len(payload):
            raise ValueError("record runs past its payload")
    return tuple(values)
