"""The run store: every result is written to SQLite the moment it arrives, so a killed run resumes.

One database file per output folder (`<output>/runs.sqlite`) holds any number of runs. A result is keyed by
`(run_id, backend, image_id, scenario, repeat)` and inserted in its own transaction (WAL journal), so killing
the process at any instant leaves either the whole row or nothing: resuming skips the keys already present and
never loses or duplicates one. Errors are results too (typed error class + a redacted message); image bytes and
secrets are never stored.

Example:
    >>> with RunStore("report/runs.sqlite") as store:  # doctest: +SKIP
    ...     run_id = store.create_run(fingerprint="ab12", config={}, dataset_fingerprint="cd34")
    ...     store.done_keys(run_id, "local")
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from derm_cloud.errors import ConfigError, RunStoreDamagedError
from derm_cloud.redaction import redact, redact_url

__all__ = ["RETRYABLE_ERROR_TYPES", "ResultRow", "RunInfo", "RunStore", "damaged_store_error", "redact", "redact_url"]

# Stored error classes that a later attempt may well not hit (rate limits, cold models, deadlines, 5xx, open
# breakers, client-side timeouts): a resumed run deletes and re-runs these rows. Other failures (invalid image,
# bad credentials, not found, ...) would fail the same way again, so they stay as results.
RETRYABLE_ERROR_TYPES = frozenset(
    {
        "ThrottledError",
        "ModelNotReadyError",
        "DeadlineExceededError",
        "ServiceError",
        "CircuitOpenError",
        "ClientTimeout",
        # A Ray worker died on the shard as many times as it may be retried (a killed node, out of memory).
        "WorkerLost",
    }
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    dataset_fingerprint TEXT NOT NULL,
    config_json TEXT NOT NULL,
    created REAL NOT NULL,
    finished REAL,
    status TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_fingerprint ON runs (fingerprint);
CREATE TABLE IF NOT EXISTS sessions (
    run_id TEXT NOT NULL,
    session INTEGER NOT NULL,
    started REAL NOT NULL,
    pid INTEGER NOT NULL,
    PRIMARY KEY (run_id, session)
);
CREATE TABLE IF NOT EXISTS results (
    run_id TEXT NOT NULL,
    backend TEXT NOT NULL,
    image_id TEXT NOT NULL,
    scenario TEXT NOT NULL,
    repeat INTEGER NOT NULL,
    session INTEGER NOT NULL,
    ok INTEGER NOT NULL,
    latency_ms REAL,
    t_start REAL,
    t_end REAL,
    probs_json TEXT,
    label TEXT,
    attempts INTEGER,
    request_id TEXT,
    error_type TEXT,
    error_message TEXT,
    extra_json TEXT,
    PRIMARY KEY (run_id, backend, image_id, scenario, repeat)
);
CREATE TABLE IF NOT EXISTS facts (
    run_id TEXT NOT NULL,
    backend TEXT NOT NULL,
    key TEXT NOT NULL,
    value_json TEXT NOT NULL,
    PRIMARY KEY (run_id, backend, key)
);
"""

# Rows whose columns no longer have their types or whose JSON no longer parses: what a cut or overwritten page
# leaves behind even when SQLite's own structure check passes (a short last page reads as zero bytes).
ROW_CHECKS = {
    "runs": "typeof(run_id) != 'text' OR typeof(fingerprint) != 'text' OR NOT json_valid(config_json)",
    "sessions": "typeof(run_id) != 'text' OR typeof(session) != 'integer'",
    "results": (
        "typeof(run_id) != 'text' OR typeof(backend) != 'text' OR typeof(image_id) != 'text' "
        "OR typeof(scenario) != 'text' OR typeof(repeat) != 'integer' OR typeof(ok) != 'integer' "
        "OR typeof(session) != 'integer' "
        "OR (probs_json IS NOT NULL AND NOT json_valid(probs_json)) "
        "OR (extra_json IS NOT NULL AND NOT json_valid(extra_json))"
    ),
    "facts": "typeof(run_id) != 'text' OR typeof(key) != 'text' OR NOT json_valid(value_json)",
}


def damaged_store_error(path: Path, problem: str) -> RunStoreDamagedError:
    """The one-line error for a damaged store, naming the way out."""
    return RunStoreDamagedError(
        f"run store {path} is damaged ({problem}); run `derm-cloud compare --repair` with the same config to "
        "salvage every intact row (the damaged file is kept beside it), or move the file away to start over"
    )


def _first_problem(db: sqlite3.Connection) -> str | None:
    """None if the store is sound, else what is wrong with it (structure first, then rows)."""
    check = db.execute("PRAGMA quick_check(1)").fetchone()
    if check is None or check[0] != "ok":
        return f"integrity check: {check[0] if check else 'no answer'}"
    for table, bad in ROW_CHECKS.items():
        row = db.execute(f"SELECT rowid FROM {table} WHERE {bad} LIMIT 1").fetchone()
        if row is not None:
            return f"row {row[0]} of table {table} does not decode"
    return None


def _decode(text: str, path: Path) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise damaged_store_error(path, f"a stored value does not decode: {exc}") from exc


@dataclass(frozen=True)
class RunInfo:
    """One run in the store."""

    run_id: str
    fingerprint: str
    dataset_fingerprint: str
    config: dict[str, Any]
    created: float
    finished: float | None
    status: str


@dataclass(frozen=True)
class ResultRow:
    """One stored result: a prediction (`ok`) or an error, never image bytes."""

    backend: str
    image_id: str
    scenario: str
    repeat: int
    session: int
    ok: bool
    latency_ms: float | None
    t_start: float | None
    t_end: float | None
    probs: tuple[float, ...] | None
    label: str | None
    attempts: int | None
    request_id: str | None
    error_type: str | None
    error_message: str | None
    extra: dict[str, Any]

    @property
    def key(self) -> tuple[str, str, str, int]:
        return (self.backend, self.image_id, self.scenario, self.repeat)


class RunStore:
    """SQLite store of runs and results (WAL journal, one transaction per result).

    Args:
        path: the database file (created with its folder if missing).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: we issue BEGIN/COMMIT ourselves so each result is exactly one transaction.
        self._db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode survives a killed process (only power loss can drop the last commits).
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
            # A damaged file must stop the run here, in one line, not after hours of resumed requests.
            problem = _first_problem(self._db)
        except sqlite3.DatabaseError as exc:
            problem = str(exc)
        if problem is not None:
            self._db.close()
            raise damaged_store_error(self.path, problem)
        self.session = 0

    # --- runs -----------------------------------------------------------------------------------------------

    def create_run(self, *, fingerprint: str, config: dict[str, Any], dataset_fingerprint: str) -> str:
        """Register a new run and return its id (`YYYYmmdd-HHMMSS-<fingerprint[:6]>-<random>`)."""
        run_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{fingerprint[:6]}-{uuid.uuid4().hex[:4]}"
        self._db.execute(
            "INSERT INTO runs VALUES (?, ?, ?, ?, ?, NULL, 'running')",
            (run_id, fingerprint, dataset_fingerprint, json.dumps(config, sort_keys=True), time.time()),
        )
        return run_id

    def run(self, run_id: str) -> RunInfo:
        """The run `run_id`; raises ConfigError listing the runs that exist when it is unknown."""
        row = self._db.execute("SELECT * FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        if row is None:
            known = [r.run_id for r in self.runs()][-5:]
            raise ConfigError(
                f"no run {run_id!r} in {self.path}; recent runs: {', '.join(known) or 'none'} "
                "(pass the same output folder as the run you want to resume)"
            )
        return RunInfo(row[0], row[1], row[2], _decode(row[3], self.path), row[4], row[5], row[6])

    def runs(self) -> list[RunInfo]:
        rows = self._db.execute("SELECT * FROM runs ORDER BY created").fetchall()
        return [RunInfo(r[0], r[1], r[2], _decode(r[3], self.path), r[4], r[5], r[6]) for r in rows]

    def latest_incomplete(self, fingerprint: str) -> str | None:
        """The newest unfinished run with this fingerprint (what an identical rerun resumes)."""
        row = self._db.execute(
            "SELECT run_id FROM runs WHERE fingerprint = ? AND status != 'complete' ORDER BY created DESC LIMIT 1",
            (fingerprint,),
        ).fetchone()
        return str(row[0]) if row else None

    def start_session(self, run_id: str) -> int:
        """Record that a process works on the run now; results carry the session so resumes are visible."""
        row = self._db.execute("SELECT COALESCE(MAX(session), 0) FROM sessions WHERE run_id = ?", (run_id,)).fetchone()
        self.session = int(row[0]) + 1
        self._db.execute("INSERT INTO sessions VALUES (?, ?, ?, ?)", (run_id, self.session, time.time(), os.getpid()))
        self._db.execute("UPDATE runs SET status = 'running' WHERE run_id = ?", (run_id,))
        return self.session

    def sessions(self, run_id: str) -> int:
        row = self._db.execute("SELECT COUNT(*) FROM sessions WHERE run_id = ?", (run_id,)).fetchone()
        return int(row[0])

    def finish_run(self, run_id: str) -> None:
        self._db.execute("UPDATE runs SET status = 'complete', finished = ? WHERE run_id = ?", (time.time(), run_id))

    # --- results --------------------------------------------------------------------------------------------

    def add_result(
        self,
        run_id: str,
        *,
        backend: str,
        image_id: str,
        scenario: str,
        repeat: int,
        ok: bool,
        latency_ms: float | None = None,
        t_start: float | None = None,
        t_end: float | None = None,
        probs: Sequence[float] | None = None,
        label: str | None = None,
        attempts: int | None = None,
        request_id: str | None = None,
        error_type: str | None = None,
        error_message: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> bool:
        """Insert one result in its own transaction; returns False if the key was already stored."""
        cur = self._db.execute(
            "INSERT OR IGNORE INTO results VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                run_id,
                backend,
                image_id,
                scenario,
                repeat,
                self.session,
                int(ok),
                latency_ms,
                t_start,
                t_end,
                json.dumps([float(p) for p in probs]) if probs is not None else None,
                label,
                attempts,
                request_id,
                error_type,
                redact(error_message) if error_message else None,
                json.dumps(extra or {}, default=str),
            ),
        )
        return cur.rowcount == 1

    def done_keys(self, run_id: str, backend: str, scenario: str | None = None) -> set[tuple[str, int]]:
        """`(image_id, repeat)` pairs already stored for a backend (and scenario)."""
        if scenario is None:
            rows = self._db.execute(
                "SELECT image_id, repeat FROM results WHERE run_id = ? AND backend = ?", (run_id, backend)
            )
        else:
            rows = self._db.execute(
                "SELECT image_id, repeat FROM results WHERE run_id = ? AND backend = ? AND scenario = ?",
                (run_id, backend, scenario),
            )
        return {(str(r[0]), int(r[1])) for r in rows}

    def stored_ids(self, run_id: str, backend: str, scenario: str, image_ids: Sequence[str]) -> set[str]:
        """Which of `image_ids` have a result (repeat 0): one query a shard, never every stored key at once."""
        ids, found = list(image_ids), set[str]()
        for i in range(0, len(ids), 500):  # well under SQLite's limit on bound parameters
            marks = ", ".join("?" for _ in ids[i : i + 500])
            sql = "SELECT image_id FROM results WHERE run_id = ? AND backend = ? AND scenario = ? AND repeat = 0"
            sql += f" AND image_id IN ({marks})"
            found.update(str(r[0]) for r in self._db.execute(sql, (run_id, backend, scenario, *ids[i : i + 500])))
        return found

    def drop_retryable_failures(self, run_id: str) -> int:
        """Delete the run's failed rows whose error is retryable, so a resume runs them again.

        Rows whose `error_type` is in `RETRYABLE_ERROR_TYPES` are removed in one transaction; successes
        and non-retryable failures (`InvalidImageError`, `AuthenticationError`, ...) stay done.

        Returns:
            How many rows were deleted.
        """
        kinds = sorted(RETRYABLE_ERROR_TYPES)
        marks = ", ".join("?" for _ in kinds)
        cur = self._db.execute(
            f"DELETE FROM results WHERE run_id = ? AND ok = 0 AND error_type IN ({marks})",
            (run_id, *kinds),
        )
        return int(cur.rowcount)

    def results(self, run_id: str, backend: str | None = None, scenario: str | None = None) -> Iterator[ResultRow]:
        """Stored results in a stable order (backend, scenario, repeat, image)."""
        sql = "SELECT * FROM results WHERE run_id = ?"
        args: list[Any] = [run_id]
        if backend is not None:
            sql += " AND backend = ?"
            args.append(backend)
        if scenario is not None:
            sql += " AND scenario = ?"
            args.append(scenario)
        sql += " ORDER BY backend, scenario, repeat, image_id"
        for r in self._db.execute(sql, args):
            yield ResultRow(
                backend=r[1],
                image_id=r[2],
                scenario=r[3],
                repeat=r[4],
                session=r[5],
                ok=bool(r[6]),
                latency_ms=r[7],
                t_start=r[8],
                t_end=r[9],
                probs=tuple(_decode(r[10], self.path)) if r[10] else None,
                label=r[11],
                attempts=r[12],
                request_id=r[13],
                error_type=r[14],
                error_message=r[15],
                extra=_decode(r[16], self.path) if r[16] else {},
            )

    def count(self, run_id: str) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM results WHERE run_id = ?", (run_id,)).fetchone()[0])

    # --- facts (describe(), scenario notes) -------------------------------------------------------------------

    def set_fact(self, run_id: str, backend: str, key: str, value: Any) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO facts VALUES (?, ?, ?, ?)", (run_id, backend, key, json.dumps(value, default=str))
        )

    def facts(self, run_id: str, backend: str) -> dict[str, Any]:
        rows = self._db.execute("SELECT key, value_json FROM facts WHERE run_id = ? AND backend = ?", (run_id, backend))
        return {str(k): _decode(v, self.path) for k, v in rows}

    # --- lifecycle --------------------------------------------------------------------------------------------

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
