"""What a store repair did: the rows it kept and dropped, the runs it reopened, where the damaged file went.

`repair_store` (`derm_cloud.compare.run.store_repair`) returns a `RepairReport`; `derm-cloud compare --repair`
prints its `summary()`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["DroppedRow", "RepairReport"]

#: Dropped rows listed one per line in the summary; the rest are counted (all are in `RepairReport.dropped`).
_LISTED = 50


@dataclass(frozen=True)
class DroppedRow:
    """A row that could not be salvaged.

    Attributes:
        table: the table it was in.
        rowid: its SQLite rowid (-1 when unknown).
        key: what identifies it (for results: run, backend, image id, scenario, repeat).
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
        dropped: every row known to be lost, with the reason.
        reopened_runs: runs marked unfinished because they lost results (a rerun requests those again).
        exact: False when a primary-key index was damaged too, so rows lost with it cannot be counted
            (`dropped` is then a floor).
        notes: what else was done (a rebuilt header, rows read from leaf pages SQL could not reach).
    """

    path: Path
    damaged_copy: Path | None
    kept: dict[str, int] = field(default_factory=dict)
    dropped: list[DroppedRow] = field(default_factory=list)
    reopened_runs: list[str] = field(default_factory=list)
    exact: bool = True
    notes: list[str] = field(default_factory=list)

    def summary(self) -> list[str]:
        """Human-readable lines: what was kept, the dropped rows, where the damaged file is."""
        if self.damaged_copy is None:
            return [f"run store {self.path} is intact; nothing to repair"]
        kept = ", ".join(f"{n} {t}" for t, n in self.kept.items())
        count = f"dropped {len(self.dropped)} row(s)"
        if not self.exact:
            count = (
                f"dropped at least {len(self.dropped)} row(s) (the pages that list every row's key are damaged too: "
                "rows lost with them cannot be counted)"
            )
        lines = [f"repaired {self.path}: kept {kept}; {count}"]
        lines += [f"  {note}" for note in self.notes]
        lines += [f"  dropped {d.table} row {d.rowid} ({d.key}): {d.reason}" for d in self.dropped[:_LISTED]]
        if len(self.dropped) > _LISTED:
            lines.append(f"  ... and {len(self.dropped) - _LISTED} more dropped row(s)")
        if self.reopened_runs:
            reopened = ", ".join(self.reopened_runs)
            lines.append(f"  runs marked unfinished (rerun to request the dropped units): {reopened}")
        lines.append(f"  the damaged file is kept as {self.damaged_copy}")
        return lines
