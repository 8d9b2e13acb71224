"""A downloaded file's own integrity, for the files whose source publishes no digest.

Without a digest, a body that ends early looks complete unless the server stated its length. The archives and
tables carry their own evidence: a zip has a central directory at its end and a CRC-32 per member
(`zipfile.ZipFile.testzip`), a tar stream ends with its last member's data (and gzip with a CRC), and a CSV
cut mid-row has a short last row; where the source publishes how many rows a table has (`rows` in the
catalogue), the count must match too.

Example:
    >>> from derm_cloud.data.fetch import SourceFile
    >>> integrity_check(SourceFile(name="notes.txt")) is None  # nothing to check a text file against
    True
"""

from __future__ import annotations

import csv
import io
import tarfile
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Protocol


class SourceFile(Protocol):
    """What the check needs of a catalogue entry (`derm_cloud.data.fetch.SourceFile`), declared here so that this
    module, which fetch imports, does not import fetch back."""

    @property
    def name(self) -> str: ...

    @property
    def rows(self) -> int | None: ...


__all__ = ["check_csv", "check_tar", "check_zip", "integrity_check"]

Check = Callable[[Path], "str | None"]


def integrity_check(entry: SourceFile, name: str | None = None) -> Check | None:
    """The structural check for a catalogue file, chosen by its name, or `None` when there is none.

    Args:
        entry: the catalogue entry (its `rows`, when set, is the published row count of a CSV).
        name: the file's name when it differs from `entry.name` (a Hugging Face shard's path).
    """
    lower = (name or entry.name).lower()
    if lower.endswith(".zip"):
        return check_zip
    if lower.endswith((".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")):
        return check_tar
    if lower.endswith(".csv"):
        rows = entry.rows
        return lambda path: check_csv(path, rows)
    return None


def check_zip(path: Path) -> str | None:
    """What is wrong with a zip archive (no central directory, a member failing its CRC), or `None`."""
    if not zipfile.is_zipfile(path):
        return "no zip central directory at its end"
    try:
        with zipfile.ZipFile(path) as zf:
            bad = zf.testzip()  # reads every member: CRC-32 and sizes against the central directory
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError) as exc:
        return f"the zip does not read: {exc}"
    return f"member {bad} fails its CRC check" if bad is not None else None


def check_tar(path: Path) -> str | None:
    """What is wrong with a tar archive (cut member, bad gzip CRC), or `None`."""
    try:
        with tarfile.open(path) as tf:
            for member in tf:
                if member.isfile() and (data := tf.extractfile(member)) is not None:
                    while data.read(1 << 20):
                        pass
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        return f"the tar archive does not read to its end: {exc}"
    return None


def check_csv(path: Path, rows: int | None = None) -> str | None:
    """What is wrong with a CSV table (a short last row, too few rows), or `None`.

    Args:
        path: the file.
        rows: the data rows the source publishes (the header excluded); `None` when unknown.
    """
    text = path.read_bytes().decode("utf-8-sig", errors="replace")  # a cut may split a multi-byte character
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, None)
    if not header:
        return "the CSV is empty"
    count = 0
    last: list[str] = header
    try:
        for row in reader:
            count += 1
            last = row
    except csv.Error as exc:  # an open quote at the end of a cut file
        return f"the CSV does not parse after row {count}: {exc}"
    if count and len(last) < len(header) and any(last):
        return f"its last row has {len(last)} of {len(header)} fields (cut mid-row)"
    if rows is not None and count != rows:
        return f"it has {count} rows, expected {rows}"
    return None
