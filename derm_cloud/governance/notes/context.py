"""What every risk-register rule reads: the run's report, the stated levels, and referral figures."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from derm_cloud.errors import ConfigError
from derm_cloud.governance.notes.entries import Evidence, RiskEntry

__all__ = ["Context", "fmt_ci", "load_referral"]


@dataclass
class Context:
    """One run's report and the levels its figures are judged against; makes cited evidence and entries."""

    report: dict[str, Any]
    run_id: str
    source: str
    day: str
    min_sensitivity: float
    max_ece: float
    max_gap: float
    min_group_positives: int
    budget: float | None
    referrals: list[dict[str, Any]] = field(default_factory=list)

    def ev(self, figure: str, value: Any, source: str | None = None) -> Evidence:
        # File names keep citations short; the register's header gives the full path of the run's report.
        return Evidence(figure, value, Path(source or self.source).name, self.run_id)

    def entry(
        self,
        category: str,
        backend: str | None,
        severity: str,
        title: str,
        finding: str,
        action: str,
        evidence: list[Evidence],
        dpia: bool = False,
    ) -> RiskEntry:
        return RiskEntry("", self.day, category, backend, severity, title, finding, action, tuple(evidence), dpia)

    def currency(self) -> str | None:
        for entry in (self.report.get("cost", {}).get("prices_used") or {}).values():
            if entry.get("currency"):
                return str(entry["currency"])
        return None


def load_referral(item: Any) -> dict[str, Any]:
    """A referral evaluation as a dict with its `_source`: accepts the object, its dict or a JSON path."""
    if hasattr(item, "to_dict"):
        return {**item.to_dict(), "_source": "referral evaluation (in memory)"}
    if isinstance(item, Mapping):
        return {"_source": "referral evaluation (in memory)", **dict(item)}
    path = Path(item)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read referral figures from {path}: {exc}") from exc
    if "points" not in data:
        raise ConfigError(
            f"{path} has no referral operating points; write it with `derm-cloud governance referral --out`"
        )
    return {**data, "_source": str(path)}


def fmt_ci(ci: Any) -> str:
    """` (95% CI 0.812-0.903)` for a two-number interval, else nothing."""
    if isinstance(ci, (list, tuple)) and len(ci) == 2 and None not in ci:
        return f" (95% CI {ci[0]:.3f}-{ci[1]:.3f})"
    return ""
