"""The report's closing tables: the run's facts, each backend's facts and the versions of every package."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from derm_cloud.compare.report.cells import Table

__all__ = ["facts_tables"]

_BACKEND_HEADERS = [
    "backend",
    "type",
    "emulated",
    "provider",
    "region",
    "endpoint",
    "data leaves machine",
    "stores images",
    "model",
]


def facts_tables(summary: Mapping[str, Any], table: Table) -> list[str]:
    """Run facts (ids, dates, dataset, timings, exports), backend facts and package versions, as tables."""
    rows = []
    for name, f in summary["backends"].items():
        hosted = f.get("hosted_model", {}).get("model_id", "")
        rows.append(
            [
                name,
                f.get("type"),
                "yes" if f.get("emulated") else "no",
                f.get("provider"),
                f.get("region") or "",
                f.get("endpoint") or "",
                "yes" if f.get("data_leaves_machine") else "no",
                {True: "yes", False: "no"}.get(f.get("stores_images"), "unknown"),
                hosted or f.get("model_id"),
            ]
        )
    versions = [[k, v or "not installed"] for k, v in summary["run"]["versions"].items()]
    return [
        table(["fact", "value"], _run_facts(summary)),
        table(_BACKEND_HEADERS, rows),
        table(["package", "version"], versions),
    ]


def _run_facts(summary: Mapping[str, Any]) -> list[list[Any]]:
    ds = summary["dataset"]
    run = summary["run"]
    facts = [
        ["run id", run["run_id"]],
        ["created", run["created"]],
        ["report written", run["report_written"]],
        ["process sessions", run["sessions"]],
        ["executor", run["executor"]],
        ["dataset", f"{ds['name']} ({ds['kind']}, {ds['n']} images)"],
        ["dataset fingerprint", ds["fingerprint"]],
        ["config + dataset fingerprint", run["fingerprint"]],
        *[[f"time: {k}", f"{v:.1f} s"] for k, v in run.get("timings_s", {}).items()],
    ]
    exports = summary.get("exports") or {}
    if exports:
        subs = ", ".join(exports.get("isic_submissions", {}).values())
        facts.append(["per-image exports", f"predictions.csv, predictions.jsonl; ISIC 2018 Task 3: {subs}"])
    return facts
