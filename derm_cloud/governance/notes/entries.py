"""What a risk register holds: entries, each citing the figures it rests on, and the register as Markdown."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["HUMAN_REVIEW", "Evidence", "RiskEntry", "RiskRegister"]

HUMAN_REVIEW = "Human review remains mandatory: a clinician reviews every result; no output here is a diagnosis."


@dataclass(frozen=True)
class Evidence:
    """One figure an entry rests on: where it is, its value, and the run it came from."""

    figure: str
    value: Any
    source: str
    run_id: str

    def cite(self) -> str:
        value = f"{self.value:.4g}" if isinstance(self.value, float) else json.dumps(self.value, default=str)
        return f"`{self.figure}` = {value} (run {self.run_id}, {self.source})"


@dataclass(frozen=True)
class RiskEntry:
    """One register entry.

    Attributes:
        id: stable within a run (`R01`...), prefixed by the run id in the Markdown.
        date: the day the entry was generated (ISO).
        category: clinical performance, calibration, fairness, evidence gap, training data, data protection,
            cost or human oversight.
        backend: the backend it concerns (`None` for the whole comparison).
        severity: `high`, `medium`, `low` or `info`.
        title, finding, action: what was found and what to do.
        evidence: the figures it rests on.
        dpia: also belongs in the DPIA notes.
    """

    id: str
    date: str
    category: str
    backend: str | None
    severity: str
    title: str
    finding: str
    action: str
    evidence: tuple[Evidence, ...]
    dpia: bool = False


@dataclass
class RiskRegister:
    """Entries generated from one run, with the thresholds used."""

    run_id: str
    source: str
    date: str
    thresholds: dict[str, Any]
    entries: list[RiskEntry] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"human_review": HUMAN_REVIEW}

    def to_markdown(self) -> str:
        """The register as Markdown: a summary table, each entry with its evidence, then the DPIA notes."""
        t = self.thresholds
        lines = [
            f"# Risk register and DPIA notes: run {self.run_id}",
            "",
            f"Generated {self.date} by `derm-cloud governance notes` from `{self.source}`. Levels: sensitivity "
            f">= {t['min_sensitivity']}, ECE <= {t['max_ece']}, group gap <= {t['max_gap']}, groups of at least "
            f"{t['min_group_positives']} melanomas"
            + (
                f", budget {t['budget']:,g} {t.get('currency') or ''}".rstrip() + "/month"
                if t.get("budget") is not None
                else ""
            )
            + ".",
            "",
            f"> **{HUMAN_REVIEW}** These entries are computed from measurements; review them before filing.",
            "",
            "| ID | Date | Category | Backend | Severity | Finding |",
            "|---|---|---|---|---|---|",
        ]
        for e in self.entries:
            lines.append(
                f"| {self._id(e)} | {e.date} | {e.category} | {e.backend or 'all'} | {e.severity} | "
                f"{e.title.replace('|', '/')} |"
            )
        lines += ["", "## Entries", ""]
        for e in self.entries:
            lines += [
                f"### {self._id(e)}: {e.title}",
                "",
                f"- **Date**: {e.date}; **category**: {e.category}; **severity**: {e.severity}"
                + (f"; **backend**: {e.backend}" if e.backend else ""),
                f"- **Finding**: {e.finding}",
                f"- **Action**: {e.action}",
                "- **Evidence**: " + "; ".join(ev.cite() for ev in e.evidence),
                "",
            ]
        dpia = [e for e in self.entries if e.dpia]
        lines += ["## DPIA notes", ""]
        if dpia:
            lines += [f"- {self._id(e)} ({e.backend or 'all'}): {e.finding}" for e in dpia]
        else:
            lines.append("- No data-protection facts in this run.")
        lines += ["", HUMAN_REVIEW, ""]
        return "\n".join(lines)

    def _id(self, entry: RiskEntry) -> str:
        return f"{self.run_id}-{entry.id}"
