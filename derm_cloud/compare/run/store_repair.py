"""Salvage a damaged run store: keep every intact row, drop the rest, and count what was dropped truthfully.

A run store can be damaged by a full disk, a copy cut short, a file system that lost a page, or a tool that
overwrote its start. SQLite then refuses the file (`file is not a database`, `database disk image is
malformed`) or, when only the tail of a page was lost, reads zero bytes into a row whose JSON no longer parses.

`repair_store` works on a copy, in three steps:

1. **The header.** When the 100-byte file header is gone (zeroed, overwritten), a new one is written with the page
   size inferred from the pages themselves (`derm_cloud.compare.run.sqlite_pages`), so SQLite can read the
   file again. A file cut short is zero-filled to the length its header records.
2. **The rows.** Each table is read through SQL, forwards and backwards by rowid, so a broken page costs only the
   rows stored on it; when SQL cannot reach every row (a lost interior page, a lost schema page), every leaf page
   of the file is decoded directly and the rows found there are added. Each row is checked the way
   `RunStore` checks it when it opens a store.
3. **The count.** Every table has a primary-key index listing the key and rowid of every row it holds. A row
   the index lists that could not be salvaged is reported by its key; rows on leaf pages that the index does not
   list (deleted rows left on freed pages) are not resurrected. When the index is damaged too, the rows lost
   with it cannot be counted, and the report says "at least".

The intact rows go into a fresh store at the same path; the damaged file is kept beside it as
`runs.sqlite.damaged-<time>`. A run that lost results is marked unfinished, so rerunning the same comparison
requests exactly the units that were dropped.

Example:
    >>> report = repair_store("derm-cloud-report/runs.sqlite")  # doctest: +SKIP
    >>> print("\n".join(report.summary()))  # doctest: +SKIP
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from derm_cloud.compare.run.repair_report import DroppedRow, RepairReport
from derm_cloud.compare.run.sqlite_pages import (
    PAGE_SIZES,
    LeafRecord,
    free_pages,
    header_page_size,
    infer_page_size,
    leaf_records,
    rebuild_header,
)
from derm_cloud.compare.run.store import _SCHEMA, ROW_CHECKS, RunStore
from derm_cloud.errors import ConfigError

__all__ = ["repair_store"]

_TABLES = ("runs", "sessions", "results", "facts")


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
        page_size = _readable_header(source, report)
        _pad_to_header_size(source)
        rebuilt = Path(tmp) / "rebuilt.sqlite"
        _rebuild(source, rebuilt, report, page_size)
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


def _readable_header(copy: Path, report: RepairReport) -> int:
    """The copy's page size; a header that is gone is rebuilt first (the page size inferred from the pages)."""
    data = copy.read_bytes()
    stated = header_page_size(data)
    if stated is not None:
        return stated
    wal = Path(f"{copy}-wal")
    hint = int.from_bytes(wal.read_bytes()[8:12], "big") if wal.is_file() and wal.stat().st_size >= 32 else None
    candidates = list(dict.fromkeys([*([hint] if hint in PAGE_SIZES else []), *infer_page_size(data)]))
    for size in candidates:
        _write_header(copy, rebuild_header(data, size, wal=hint is not None))
        if _schema_readable(copy):
            report.notes.append(f"rebuilt the file header (page size {size}, inferred from the pages)")
            return size
    _write_header(copy, rebuild_header(data, candidates[0], wal=hint is not None))
    report.notes.append(
        f"rebuilt the file header (page size {candidates[0]}, inferred); the schema page is damaged too, so the "
        "rows come from a scan of every page"
    )
    return candidates[0]


def _write_header(copy: Path, header: bytes) -> None:
    with copy.open("r+b") as fh:
        fh.write(header)


def _schema_readable(path: Path) -> bool:
    db = sqlite3.connect(path)
    try:
        names = {str(r[0]) for r in db.execute("SELECT name FROM sqlite_schema")}
    except sqlite3.DatabaseError:
        return False
    finally:
        db.close()
    return set(_TABLES) <= names


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


@dataclass
class _Table:
    """One table's columns (from the schema) and what was found of it."""

    name: str
    columns: tuple[str, ...]
    types: tuple[str, ...]
    not_null: tuple[bool, ...]
    key: tuple[int, ...]  # positions of the primary-key columns
    rows: dict[tuple[Any, ...], tuple[int, tuple[Any, ...]]] = field(default_factory=dict)  # key -> (rowid, row)
    listed: dict[tuple[Any, ...], int] = field(default_factory=dict)  # key -> rowid, from the primary-key index
    index_complete: bool = True
    reachable: bool = True  # every row reached through SQL

    def key_of(self, row: tuple[Any, ...]) -> tuple[Any, ...]:
        return tuple(row[i] for i in self.key)

    def fits(self, values: tuple[Any, ...]) -> bool:
        """Whether a record decoded from a page has this table's shape (column count and storage classes)."""
        if len(values) != len(self.columns):
            return False
        for value, kind, required in zip(values, self.types, self.not_null, strict=True):
            if value is None:
                if required:
                    return False
            elif not isinstance(value, _STORAGE[kind]):
                return False
        return True

    def fits_index(self, values: tuple[Any, ...]) -> bool:
        """Whether an index record is (this table's primary key, rowid)."""
        if len(values) != len(self.key) + 1 or not isinstance(values[-1], int):
            return False
        return all(isinstance(v, _STORAGE[self.types[i]]) for v, i in zip(values, self.key, strict=False))


_STORAGE: dict[str, type | tuple[type, ...]] = {"TEXT": str, "INTEGER": int, "REAL": (float, int)}


def _tables() -> dict[str, _Table]:
    """The store's tables as its schema declares them."""
    db = sqlite3.connect(":memory:")
    try:
        db.executescript(_SCHEMA)
        out = {}
        for name in _TABLES:
            info = db.execute(f"PRAGMA table_info({name})").fetchall()  # cid, name, type, notnull, default, pk
            key = tuple(i for _, i in sorted((row[5], row[0]) for row in info if row[5]))
            out[name] = _Table(
                name,
                tuple(r[1] for r in info),
                tuple(str(r[2]).upper() for r in info),
                tuple(bool(r[3]) or bool(r[5]) for r in info),
                key,
            )
        return out
    finally:
        db.close()


def _rebuild(source: Path, target: Path, report: RepairReport, page_size: int) -> None:
    tables = _tables()
    src = sqlite3.connect(source)
    try:
        for table in tables.values():
            _read_sql(src, table)
    finally:
        src.close()
    if not all(t.reachable and t.index_complete for t in tables.values()):
        _read_pages(source, page_size, tables, report)
    kept_rows = _checked_rows(tables, report)
    _write(target, tables, kept_rows, report)


def _read_sql(db: sqlite3.Connection, table: _Table) -> None:
    """The rows and index entries SQL can reach: forwards until a broken page, then backwards to it."""
    cols = ", ".join(table.columns)
    key_cols = ", ".join(table.columns[i] for i in table.key)
    for order in ("ASC", "DESC"):
        try:
            for rowid, *values in db.execute(f"SELECT rowid, {cols} FROM {table.name} ORDER BY rowid {order}"):
                table.rows.setdefault(table.key_of(tuple(values)), (rowid, tuple(values)))
            break  # the whole table was read
        except sqlite3.DatabaseError:
            table.reachable = False
    index = f"sqlite_autoindex_{table.name}_1"
    for order in ("ASC", "DESC"):
        try:
            # A covering scan: key columns and rowid come from the index alone, whatever the table pages hold.
            by = ", ".join(f"{table.columns[i]} {order}" for i in table.key)
            sql = f"SELECT {key_cols}, rowid FROM {table.name} INDEXED BY {index} ORDER BY {by}"
            for *key, rowid in db.execute(sql):
                table.listed.setdefault(tuple(key), rowid)
            break
        except sqlite3.DatabaseError:
            table.index_complete = False


def _read_pages(source: Path, page_size: int, tables: dict[str, _Table], report: RepairReport) -> None:
    """Add what the leaf pages hold beyond SQL's reach: rows under a lost interior page, index entries likewise."""
    data = source.read_bytes()
    skip = free_pages(data, page_size) if header_page_size(data) is not None else set()
    records = list(leaf_records(data, page_size, skip))
    for record in records:
        if record.index:
            _add_index_entry(record, tables)
    found = 0
    # Newest first: when a key appears on several pages (a replaced row left on a freed page), the last write wins.
    for record in sorted((r for r in records if not r.index), key=lambda r: -(r.rowid or 0)):
        for table in tables.values():
            if not table.fits(record.values):
                continue
            row = tuple(float(v) if k == "REAL" and isinstance(v, int) else v
                        for v, k in zip(record.values, table.types, strict=True))  # fmt: skip
            key = table.key_of(row)
            listed = table.listed.get(key)
            if key in table.rows or (listed is not None and listed != record.rowid):
                break
            if listed is None and table.index_complete:
                break  # on a leaf page but in no index: a deleted row on a freed page, not a live one
            table.rows[key] = (record.rowid or -1, row)
            found += 1
            break
    if found:
        report.notes.append(f"read {found} row(s) from leaf pages that SQL could not reach")


def _add_index_entry(record: LeafRecord, tables: dict[str, _Table]) -> None:
    for table in tables.values():
        # runs has a second index (fingerprint, rowid) of the same shape as its primary key's: its entries would
        # read as run ids, so runs are counted from SQL alone.
        if table.name != "runs" and not table.index_complete and table.fits_index(record.values):
            table.listed.setdefault(tuple(record.values[:-1]), int(record.values[-1]))
            return


def _checked_rows(tables: dict[str, _Table], report: RepairReport) -> dict[str, list[tuple[Any, ...]]]:
    """The rows that pass the store's own checks; every other known row becomes a `DroppedRow`."""
    stage = sqlite3.connect(":memory:")
    kept: dict[str, list[tuple[Any, ...]]] = {}
    try:
        for table in tables.values():
            # Untyped columns: each value keeps the storage class it had on disk, as the checks expect.
            stage.execute(f"CREATE TABLE {table.name} ({', '.join(table.columns)})")
            marks = ", ".join("?" for _ in table.columns)
            kept[table.name] = []
            for key, (rowid, row) in table.rows.items():
                try:
                    cur = stage.execute(f"INSERT INTO {table.name} VALUES ({marks})", row)
                    bad = stage.execute(
                        f"SELECT ({ROW_CHECKS[table.name]}) FROM {table.name} WHERE rowid = ?", (cur.lastrowid,)
                    ).fetchone()
                except sqlite3.Error as exc:
                    bad, reason = (1,), f"row unreadable: {exc}"
                else:
                    reason = "a value no longer has its type or its JSON does not parse"
                if bad is not None and bad[0]:
                    report.dropped.append(DroppedRow(table.name, rowid, _key(key), reason))
                else:
                    kept[table.name].append(row)
            for key, rowid in table.listed.items():
                if key not in table.rows:
                    report.dropped.append(
                        DroppedRow(table.name, rowid, _key(key), "its page is unreadable (listed by the key index)")
                    )
            if not table.index_complete and not table.reachable:
                report.exact = False
    finally:
        stage.close()
    return kept


def _write(
    target: Path, tables: dict[str, _Table], kept: dict[str, list[tuple[Any, ...]]], report: RepairReport
) -> None:
    dst = sqlite3.connect(target, isolation_level=None)
    try:
        dst.executescript(_SCHEMA)
        runs = {str(r[0]) for r in kept["runs"]}
        dst.execute("BEGIN")
        for name in _TABLES:
            count = 0
            for row in kept[name]:
                if name != "runs" and row[0] not in runs:
                    report.dropped.append(
                        DroppedRow(name, -1, _key(tables[name].key_of(row)), "its run's record was lost")
                    )
                    continue
                marks = ", ".join("?" for _ in row)
                dst.execute(f"INSERT OR IGNORE INTO {name} VALUES ({marks})", row)
                count += 1
            report.kept[name] = count
        lost_runs = {d.key.split(" ", 1)[0] for d in report.dropped if d.table == "results"}
        if lost_runs - runs or not report.exact:
            # Some lost results no longer say which run they belonged to: any run may miss units.
            lost_runs = runs
        report.reopened_runs = sorted(lost_runs & runs)
        for run_id in report.reopened_runs:
            dst.execute("UPDATE runs SET status = 'running', finished = NULL WHERE run_id = ?", (run_id,))
        dst.execute("COMMIT")
        dst.execute("PRAGMA journal_mode=WAL")
    finally:
        dst.close()


def _key(key: tuple[Any, ...]) -> str:
    """What identifies a row, from its primary key (printable characters only)."""
    return " ".join("".join(ch if ch.isprintable() else "?" for ch in str(p)) for p in key)
