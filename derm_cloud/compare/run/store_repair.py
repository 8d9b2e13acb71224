"""Salvage a damaged run store: keep every intact row, drop the rest, say which.

A run store can be damaged by a full disk, a copy cut short or a file system that lost a page. SQLite then either
refuses the file (`database disk image is malformed`) or, when only the tail of a page was lost, reads zero
bytes into a row whose JSON no longer parses. `repair_store` reads the damaged file row by row (by rowid,
so one broken page costs only the rows on it), checks each row the way `RunStore` (`derm_cloud.compare.run.store`)
does when it opens a store, writes the intact rows into a fresh store at the same path and keeps the damaged file
beside it as `runs.sqlite.damaged-<time>`. A run that lost rows is marked unfinished, so rerunning the same
comparison requests exactly the units that were dropped.

Example:
    >>> report = repair_store("derm-cloud-report/runs.sqlite")  # doctest: +SKIP
    >>> print(report.summary())  # doctest: +SKIP
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from derm_cloud.compare.run.store import _SCHEMA, ROW_CHECKS, RunStore
from derm_cloud.errors import ConfigError

__all__ = ["DroppedRow", "RepairReport", "repair_store"]

_TABLES = ("runs", "sessions", "results", "facts")
# How far past the last readable rowid to keep probing: rows after a broken page are still reachable by rowid.
_PROBE_PAST_LAST = 4096


@dataclass(frozen=True)
class DroppedRow:
    """A row that could not be salvaged.

    Attributes:
        table: the table it was in.
        rowid: its SQLite rowid.
        key: what identifies it when that part was readable (for results: backend, image id, scenario, repeat).
        reason: why it was dropped.
    """

    table: str
    rowid: int
    key: str
    reason: str


@dataclass
class RepairReport:
    """What `repair_store` did.

    Attributes:
        path: the repaired store.
        damaged_copy: where the damaged file was moved (`None` when the store was intact and left alone).
        kept: rows salvaged per table.
        dropped: every row that was dropped, with the reason.
        reopened_runs: runs marked unfinished because they lost results (a rerun requests those again).
    """

    path: Path
    damaged_copy: Path | None
    kept: dict[str, int] = field(default_factory=dict)
    dropped: list[DroppedRow] = field(default_factory=list)
    reopened_runs: list[str] = field(default_factory=list)

    def summary(self) -> list[str]:
        """Human-readable lines: what was kept, every dropped row, where the damaged file is."""
        if self.damaged_copy is None:
            return [f"run store {self.path} is intact; nothing to repair"]
        kept = ", ".join(f"{n} {t}" for t, n in self.kept.items())
        lines = [f"repaired {self.path}: kept {kept}; dropped {len(self.dropped)} row(s)"]
        lines += [f"  dropped {d.table} row {d.rowid} ({d.key}): {d.reason}" for d in self.dropped]
        if self.reopened_runs:
            reopened = ", ".join(self.reopened_runs)
            lines.append(f"  runs marked unfinished (rerun to request the dropped units): {reopened}")
        lines.append(f"  the damaged file is kept as {self.damaged_copy}")
        return lines


def repair_store(path: str | os.PathLike[str]) -> RepairReport:
    """Rebuild the run store at `path` from its intact rows.

    Args:
        path: a `runs.sqlite` file.

    Returns:
        A `RepairReport`; when the store opens cleanly nothing is changed.

    Raises:
        ConfigError: there is no store at `path`.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"no run store at {path}; pass the output folder of the comparison to repair")
    if _is_sound(path):
        return RepairReport(path=path, damaged_copy=None)
    report = RepairReport(path=path, damaged_copy=None)
    with tempfile.TemporaryDirectory(prefix="derm-cloud-repair-") as tmp:
        # Read a copy (with its WAL, which holds committed rows): SQLite must not write into the damaged file.
        source = Path(tmp) / "damaged.sqlite"
        shutil.copyfile(path, source)
        if Path(f"{path}-wal").is_file():
            shutil.copyfile(f"{path}-wal", f"{source}-wal")
        _pad_to_header_size(source)
        rebuilt = Path(tmp) / "rebuilt.sqlite"
        _rebuild(source, rebuilt, report)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        damaged = path.with_name(f"{path.name}.damaged-{stamp}")
        path.replace(damaged)
        # A leftover WAL beside the new file would be replayed into it: it belongs to the damaged copy.
        for suffix in ("-wal", "-shm"):
            side = Path(f"{path}{suffix}")
            if side.exists():
                side.replace(Path(f"{damaged}{suffix}"))
        shutil.copyfile(rebuilt, path)
        report.damaged_copy = damaged
    return report


def _pad_to_header_size(copy: Path) -> None:
    """Zero-fill a cut file up to the size its header records.

    SQLite refuses to read even the schema of a file shorter than its header says (a root page past the end
    looks like corruption); zero pages instead fail only for the rows that lived on them.
    """
    with copy.open("r+b") as fh:
        header = fh.read(100)
        if len(header) < 100 or not header.startswith(b"SQLite format 3\x00"):
            return
        page_size = int.from_bytes(header[16:18], "big")
        page_size = 65536 if page_size == 1 else page_size
        pages = int.from_bytes(header[28:32], "big")
        size = fh.seek(0, os.SEEK_END)
        wanted = max(pages * page_size, -(-size // page_size) * page_size)
        if wanted > size:
            fh.write(bytes(wanted - size))


def _is_sound(path: Path) -> bool:
    try:
        RunStore(path).close()
    except Exception:  # any failure to open means the store needs the salvage below
        return False
    return True


def _rebuild(source: Path, target: Path, report: RepairReport) -> None:
    src = sqlite3.connect(source)
    dst = sqlite3.connect(target, isolation_level=None)
    try:
        dst.executescript(_SCHEMA)
        salvaged: dict[str, list[tuple[Any, ...]]] = {}
        for table in _TABLES:
            salvaged[table] = list(_salvage_table(src, table, report))
        runs = {str(r[0]) for r in salvaged["runs"]}
        dst.execute("BEGIN")
        for table in _TABLES:
            kept = 0
            for row in salvaged[table]:
                if table != "runs" and row[0] not in runs:
                    report.dropped.append(DroppedRow(table, -1, _key(table, row), "its run's record was lost"))
                    continue
                marks = ", ".join("?" for _ in row)
                dst.execute(f"INSERT OR IGNORE INTO {table} VALUES ({marks})", row)
                kept += 1
            report.kept[table] = kept
        lost_runs = {d.key.split(" ", 1)[0] for d in report.dropped if d.table == "results"}
        if lost_runs - runs:
            # Some lost results no longer say which run they belonged to: any run may miss units.
            lost_runs = runs
        report.reopened_runs = sorted(lost_runs & runs)
        for run_id in report.reopened_runs:
            dst.execute("UPDATE runs SET status = 'running', finished = NULL WHERE run_id = ?", (run_id,))
        dst.execute("COMMIT")
        dst.execute("PRAGMA journal_mode=WAL")
    finally:
        src.close()
        dst.close()


def _salvage_table(db: sqlite3.Connection, table: str, report: RepairReport) -> Iterator[tuple[Any, ...]]:
    """Every intact row of `table`: a straight scan while it works, then a probe of each rowid."""
    try:
        db.execute(f"SELECT * FROM {table} LIMIT 0")
    except sqlite3.DatabaseError as exc:
        report.dropped.append(DroppedRow(table, -1, "whole table", f"table unreadable: {exc}"))
        return
    check = f"SELECT ({ROW_CHECKS[table]}) FROM {table} WHERE rowid = ?"
    seen: set[int] = set()
    last = 0
    try:
        for rowid, *values in db.execute(f"SELECT rowid, * FROM {table} ORDER BY rowid"):
            seen.add(rowid)
            last = max(last, rowid)
            row = _checked(db, check, table, rowid, tuple(values), report)
            if row is not None:
                yield row
        return
    except sqlite3.DatabaseError:
        pass  # a broken page: fall back to one lookup per rowid, so only that page's rows are lost
    misses = 0
    rowid = 0
    while misses < _PROBE_PAST_LAST or rowid < last:
        rowid += 1
        if rowid in seen:
            continue
        try:
            found = db.execute(f"SELECT * FROM {table} WHERE rowid = ?", (rowid,)).fetchone()
        except sqlite3.DatabaseError as exc:
            report.dropped.append(DroppedRow(table, rowid, "unreadable", f"page unreadable: {exc}"))
            misses += 1
            continue
        if found is None:
            misses += 1
            continue
        misses = 0
        last = max(last, rowid)
        row = _checked(db, check, table, rowid, tuple(found), report)
        if row is not None:
            yield row


def _checked(
    db: sqlite3.Connection, check: str, table: str, rowid: int, row: tuple[Any, ...], report: RepairReport
) -> tuple[Any, ...] | None:
    try:
        bad = db.execute(check, (rowid,)).fetchone()
    except sqlite3.DatabaseError as exc:
        bad, reason = (1,), f"row unreadable: {exc}"
    else:
        reason = "a value no longer has its type or its JSON does not parse"
    if bad is None or not bad[0]:
        return row
    report.dropped.append(DroppedRow(table, rowid, _key(table, row), reason))
    return None


def _key(table: str, row: tuple[Any, ...]) -> str:
    """What identifies the row, from whatever of it is still readable (printable characters only)."""
    parts = row[:5] if table == "results" else row[:3] if table == "facts" else row[:1]
    return " ".join("".join(ch if ch.isprintable() else "?" for ch in str(p)) for p in parts)
