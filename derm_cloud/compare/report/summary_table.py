"""The report's headline table: one row per backend (quality, latency, throughput, cost)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from derm_cloud.compare.report.cells import fmt, fmt_ci
from derm_cloud.compare.report.parity import metadata_cell

__all__ = ["summary_table"]


def summary_table(summary: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    """The headline table: one row per backend (quality, latency, throughput, cost)."""
    headers = [
        "backend",
        "service",
        "metadata",
        "balanced acc. [95% CI]",
        "macro AUC",
        "mel. sens.",
        "ECE",
        "p50 / p90 / p99 ms",
        "server p99 vs bound",
        "best QPS",
        "USD / 1k at volume",
        "USD / month",
        "idle USD / month",
    ]
    rows = []
    for name, facts in summary["backends"].items():
        q = summary["quality"].get("backends", {}).get(name, {})
        lat = summary["latency"].get(name, {})
        ss, srv = lat.get("single_stream", {}), lat.get("server", {})
        cost = summary["cost"]["backends"].get(name, {})
        qci = q.get("ci", {})
        verdict = "n/a"
        if srv.get("p99_ms") is not None:
            verdict = f"{fmt(srv['p99_ms'], 'ms')} / {fmt(srv['latency_bound_ms'], 'ms')} " + (
                "met" if srv.get("meets_bound") else "MISSED"
            )
        rows.append(
            [
                name + (" [EMULATED]" if facts.get("emulated") else ""),
                str(facts.get("service", "")),
                metadata_cell(summary, name),
                fmt_ci(q.get("balanced_accuracy"), qci.get("balanced_accuracy"), "pct") if q.get("n") else "n/a",
                fmt(q.get("macro_auc")),
                fmt((q.get("melanoma") or {}).get("sensitivity"), "pct"),
                fmt((q.get("calibration") or {}).get("ece")),
                " / ".join(fmt(ss.get(k), "ms") for k in ("p50_ms", "p90_ms", "p99_ms"))
                + (" (127.0.0.1 emulator)" if facts.get("emulated") and ss else ""),
                verdict,
                fmt((lat.get("offline") or {}).get("best_throughput_qps"), "num"),
                fmt(cost.get("per_1k_at_volume"), "usd") if cost.get("known") else "unknown",
                fmt(cost.get("monthly"), "usd") if cost.get("known") else "unknown",
                fmt(cost.get("idle_monthly"), "usd") if cost.get("known") else "unknown",
            ]
        )
    return headers, rows
