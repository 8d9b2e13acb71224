"""Risk-register and DPIA entries computed from a comparator run, each citing the figure it rests on.

:func:`risk_register` reads a finished run (the folder ``derm-cloud compare`` wrote, or its ``report.json``,
format ``derm-cloud-comparison/1``) and, optionally, referral evaluations (``referral.json`` from
``derm-cloud governance referral --out``), and writes dated entries a team can paste into its register:

* **clinical performance**: a backend whose melanoma or malignant sensitivity is below ``min_sensitivity``;
* **calibration**: expected calibration error above ``max_ece``;
* **fairness**: a group (skin tone, sex, age band, site) below ``min_sensitivity``, a gap between groups above
  ``max_gap``, or a group too small to judge;
* **training data**: the model's declared training data overlaps the evaluation data;
* **data protection (DPIA)**: which backends send images off the machine, to which provider and region, and
  whether the provider stores them; emulated measurements are marked as such;
* **cost**: monthly cost above ``budget``, or a price that is unknown;
* **human oversight**: referral thresholds and what they cost; human review remains mandatory.

Every entry names the figure (a JSON path such as ``quality.backends.local.melanoma.sensitivity``), its value
and the run and file it came from, so a reviewer can check it.

Example:
    >>> register = risk_register("reports/sklesion", min_sensitivity=0.9, budget=500)  # doctest: +SKIP
    >>> print(register.to_markdown())  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from derm_cloud.errors import ConfigError

__all__ = ["Evidence", "RiskEntry", "RiskRegister", "load_run", "risk_register"]

HUMAN_REVIEW = "Human review remains mandatory: a clinician reviews every result; no output here is a diagnosis."
RUN_FORMAT = "derm-cloud-comparison/1"
_SEVERITY_ORDER = {"high": 0, "medium": 1, "low": 2, "info": 3}


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
        id: stable within a run (``R01``...), prefixed by the run id in the Markdown.
        date: the day the entry was generated (ISO).
        category: clinical performance, calibration, fairness, evidence gap, training data, data protection,
            cost or human oversight.
        backend: the backend it concerns (``None`` for the whole comparison).
        severity: ``high``, ``medium``, ``low`` or ``info``.
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


def load_run(path: str | os.PathLike[str]) -> tuple[dict[str, Any], Path]:
    """Read a run's ``report.json`` from a run folder or the file itself.

    Raises:
        ConfigError: no report there, or not the comparator's format.
    """
    p = Path(path).expanduser()
    report = p / "report.json" if p.is_dir() else p
    if not report.is_file():
        raise ConfigError(
            f"no comparator report at {str(report)!r}: pass the output folder of `derm-cloud compare` "
            "(it holds report.json) or the report.json file"
        )
    try:
        data = json.loads(report.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read {report}: {exc}") from exc
    if not isinstance(data, dict) or data.get("format") != RUN_FORMAT:
        raise ConfigError(
            f'{report} is not a comparator report (expected "format": "{RUN_FORMAT}"); run `derm-cloud compare`'
        )
    return data, report


def risk_register(
    run: str | os.PathLike[str] | Mapping[str, Any],
    *,
    min_sensitivity: float = 0.9,
    max_ece: float = 0.1,
    max_gap: float = 0.1,
    min_group_positives: int = 10,
    budget: float | None = None,
    referrals: Sequence[Any] = (),
    today: date | None = None,
) -> RiskRegister:
    """Build the register from a run.

    Args:
        run: the run folder, its ``report.json``, or the report dict.
        min_sensitivity: the level melanoma / malignant sensitivity must reach, overall and per group.
        max_ece: the highest acceptable expected calibration error.
        max_gap: the largest acceptable sensitivity gap between groups.
        min_group_positives: groups with fewer melanomas are "too small to judge".
        budget: monthly budget in the price catalogue's currency (``None``: costs reported, not judged).
        referrals: referral evaluations (:class:`~derm_cloud.governance.referral_eval.ReferralEvaluation`, their
            dicts, or paths to ``referral.json``); ``referral*.json`` and ``*/referral.json`` in the run folder are
            read too.
        today: the date written on entries (default: today).
    """
    from derm_cloud.governance import _note_rules as rules

    if isinstance(run, Mapping):
        report, source = dict(run), "report.json"
        folder = None
    else:
        report, path = load_run(run)
        source, folder = str(path), path.parent
    run_id = str(report.get("run", {}).get("run_id") or "run")
    day = (today or date.today()).isoformat()
    found = list(referrals)
    if folder is not None:
        # `governance referral --out RUN/referral` writes referral.json (and policy.json, which is not figures).
        found += sorted(folder.glob("referral*.json")) + sorted(folder.glob("*/referral.json"))
    ctx = rules.Context(
        report=report,
        run_id=run_id,
        source=source,
        day=day,
        min_sensitivity=min_sensitivity,
        max_ece=max_ece,
        max_gap=max_gap,
        min_group_positives=min_group_positives,
        budget=budget,
        referrals=[rules.load_referral(r) for r in found],
    )
    entries = rules.all_entries(ctx)
    entries.sort(key=lambda e: (_SEVERITY_ORDER.get(e.severity, 9), e.category, e.backend or ""))
    numbered = [RiskEntry(**{**asdict(e), "id": f"R{i:02d}", "evidence": e.evidence}) for i, e in enumerate(entries, 1)]
    thresholds = {
        "min_sensitivity": min_sensitivity,
        "max_ece": max_ece,
        "max_gap": max_gap,
        "min_group_positives": min_group_positives,
        "budget": budget,
        "currency": ctx.currency(),
    }
    return RiskRegister(run_id=run_id, source=source, date=day, thresholds=thresholds, entries=numbered)
