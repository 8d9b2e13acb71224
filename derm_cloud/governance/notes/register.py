"""`risk_register`: read a finished comparator run and gather every rule's entries, most severe first."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from datetime import date
from pathlib import Path
from typing import Any

from derm_cloud.errors import ConfigError
from derm_cloud.governance.notes.context import Context, load_referral
from derm_cloud.governance.notes.deployment_rules import DEPLOYMENT_RULES
from derm_cloud.governance.notes.entries import RiskEntry, RiskRegister
from derm_cloud.governance.notes.model_rules import MODEL_RULES

__all__ = ["RUN_FORMAT", "load_run", "risk_register"]

RUN_FORMAT = "derm-cloud-comparison/1"
_SEVERITY_ORDER = {"high": 0, "medium": 1, "low": 2, "info": 3}


def load_run(path: str | os.PathLike[str]) -> tuple[dict[str, Any], Path]:
    """Read a run's `report.json` from a run folder or the file itself.

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
        run: the run folder, its `report.json`, or the report dict.
        min_sensitivity: the level melanoma / malignant sensitivity must reach, overall and per group.
        max_ece: the highest acceptable expected calibration error.
        max_gap: the largest acceptable sensitivity gap between groups.
        min_group_positives: groups with fewer melanomas are "too small to judge".
        budget: monthly budget in the price catalogue's currency (`None`: costs reported, not judged).
        referrals: referral evaluations (`ReferralEvaluation`, their
            dicts, or paths to `referral.json`); `referral*.json` and `*/referral.json` in the run folder are
            read too.
        today: the date written on entries (default: today).
    """
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
    ctx = Context(
        report=report,
        run_id=run_id,
        source=source,
        day=day,
        min_sensitivity=min_sensitivity,
        max_ece=max_ece,
        max_gap=max_gap,
        min_group_positives=min_group_positives,
        budget=budget,
        referrals=[load_referral(r) for r in found],
    )
    entries = [entry for rule in (*MODEL_RULES, *DEPLOYMENT_RULES) for entry in rule(ctx)]
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
