"""The report's latency section: one table per scenario (single stream, server, offline sweep, cold start)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from derm_cloud.compare.report.cells import Section, Table, fmt, fmt_ci

__all__ = ["latency_section"]

_HEADERS = {
    "single_stream": ["single-stream", "ok", "errors", "timeouts", "p50 ms", "p90 ms", "p99 ms", "mean ms"],
    "server": ["server", "target QPS", "achieved QPS", "ok", "errors", "p99 ms", "bound ms", "p99 bound"],
    "offline": ["offline", "in flight", "ok", "errors", "throughput QPS", "p50 ms"],
    "cold_start": ["cold start", "trials", "create ms", "first request ms", "warm ms", "penalty ms"],
}


def latency_section(summary: Mapping[str, Any], table: Table) -> Section:
    """Every scenario any backend ran, with the method and what the timer covers as its intro."""
    rows: dict[str, list[list[Any]]] = {scenario: [] for scenario in _HEADERS}
    for name, lat in summary["latency"].items():
        if "single_stream" in lat:
            rows["single_stream"].append(_single_stream(name, lat["single_stream"]))
        if "server" in lat:
            rows["server"].append(_server(name, lat["server"]))
        for c, lv in (lat.get("offline") or {}).get("levels", {}).items():
            rows["offline"].append(
                [name, c, lv["ok"], lv["error_count"], fmt(lv["throughput_qps"]), fmt(lv["p50_ms"], "ms")]
            )
        if lat.get("cold_start"):
            rows["cold_start"].append(_cold_start(name, lat["cold_start"]))
    tables = [table(_HEADERS[scenario], found) for scenario, found in rows.items() if found]
    return ("Latency", summary["methods"]["latency"] + " " + summary["methods"].get("timer", ""), tables)


def _single_stream(name: str, s: Mapping[str, Any]) -> list[Any]:
    return [
        name,
        s["ok"],
        s["error_count"],
        s["timeouts"],
        fmt_ci(s["p50_ms"], s["p50_ci_ms"], "ms"),
        fmt_ci(s["p90_ms"], s["p90_ci_ms"], "ms"),
        fmt_ci(s["p99_ms"], s["p99_ci_ms"], "ms"),
        fmt(s["mean_ms"], "ms"),
    ]


def _server(name: str, s: Mapping[str, Any]) -> list[Any]:
    return [
        name,
        fmt(s["target_qps"]),
        fmt(s["achieved_qps"]),
        s["ok"],
        s["error_count"],
        fmt_ci(s["p99_ms"], s["p99_ci_ms"], "ms"),
        fmt(s["latency_bound_ms"], "ms"),
        "met" if s["meets_bound"] else "MISSED",
    ]


def _cold_start(name: str, cold: Mapping[str, Any]) -> list[Any]:
    return [
        name,
        len(cold["trials"]),
        fmt(cold["create_median_ms"], "ms"),
        fmt(cold["first_median_ms"], "ms"),
        fmt(cold["warm_median_ms"], "ms"),
        fmt(cold["cold_penalty_ms"], "ms"),
    ]
