"""The report's latency section: one table per scenario (single stream, server, offline sweep, cold start).

Every row says what its latency measures (`timed on`: a 127.0.0.1 emulator, not the provider; a local model on
this machine; an endpoint), and the section ends with the machine that timed them: cores, CPU model and the load
average before and after the run and each timed phase.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from derm_cloud.compare.report.cells import Section, Table, fmt, fmt_ci

__all__ = ["latency_section"]

_HEADERS = {
    "single_stream": ["single-stream", "timed on", "ok", "errors", "timeouts", "p50 ms", "p90 ms", "p99 ms", "mean ms"],
    "server": ["server", "timed on", "target QPS", "achieved QPS", "ok", "errors", "p99 ms", "bound ms", "p99 bound"],
    "offline": ["offline", "timed on", "in flight", "ok", "errors", "throughput QPS", "p50 ms"],
    "cold_start": ["cold start", "timed on", "trials", "create ms", "first request ms", "warm ms", "penalty ms"],
}
_SCHEDULE = (
    "Backends that compute on this machine (local models, emulators, endpoints on a loopback address) were timed "
    "one at a time: single-stream queries round-robin across them with one request in flight, then each one's "
    "server, offline and cold-start scenarios alone; remote endpoints were timed apart from them. An emulated "
    "backend's latency is the 127.0.0.1 emulator's on this machine, not the provider's."
)


def latency_section(summary: Mapping[str, Any], table: Table) -> Section:
    """Every scenario any backend ran, with the method and what the timer covers as its intro."""
    rows: dict[str, list[list[Any]]] = {scenario: [] for scenario in _HEADERS}
    for name, lat in summary["latency"].items():
        on = (lat.get("basis") or {}).get("label", "")
        if "single_stream" in lat:
            rows["single_stream"].append(_single_stream(name, on, lat["single_stream"]))
        if "server" in lat:
            rows["server"].append(_server(name, on, lat["server"]))
        for c, lv in (lat.get("offline") or {}).get("levels", {}).items():
            rows["offline"].append(
                [name, on, c, lv["ok"], lv["error_count"], fmt(lv["throughput_qps"]), fmt(lv["p50_ms"], "ms")]
            )
        if lat.get("cold_start"):
            rows["cold_start"].append(_cold_start(name, on, lat["cold_start"]))
    tables = [table(_HEADERS[scenario], found) for scenario, found in rows.items() if found]
    machine = summary["run"].get("machine") or {}
    if machine.get("recorded"):
        tables.append(table(["machine", "value"], machine_rows(machine)))
    intro = " ".join([summary["methods"]["latency"], summary["methods"].get("timer", ""), _SCHEDULE])
    return ("Latency", intro, tables)


def _load(reading: Mapping[str, Any] | None) -> str:
    load = (reading or {}).get("load")
    return " / ".join(f"{v:.2f}" for v in load) if load else "n/a"


def machine_rows(machine: Mapping[str, Any]) -> list[list[Any]]:
    """Cores, CPU model, and the 1/5/15-minute load average at each session's and each timed phase's ends."""
    out: list[list[Any]] = [
        ["cores (usable by this run)", f"{machine.get('cores')} ({machine.get('usable_cores')})"],
        ["CPU model", machine.get("cpu_model") or "unknown"],
        ["highest 1-min load while timing", fmt(machine.get("max_timing_load"))],
    ]
    for session in machine.get("sessions", []):
        tag = f"session {session.get('session')}"
        out.append(
            [f"{tag}: load 1/5/15 min before / after", f"{_load(session.get('before'))}; {_load(session.get('after'))}"]
        )
        for w in session.get("windows", []):
            how = "side by side" if w.get("concurrent") else "one at a time"
            what = f"{tag}: {w['phase']} ({', '.join(w['backends'])}; {how}{'' if w.get('timed') else ', not timed'})"
            out.append([what, f"{_load(w.get('start'))}; {_load(w.get('end'))}"])
    return out


def _single_stream(name: str, on: str, s: Mapping[str, Any]) -> list[Any]:
    return [
        name,
        on,
        s["ok"],
        s["error_count"],
        s["timeouts"],
        fmt_ci(s["p50_ms"], s["p50_ci_ms"], "ms"),
        fmt_ci(s["p90_ms"], s["p90_ci_ms"], "ms"),
        fmt_ci(s["p99_ms"], s["p99_ci_ms"], "ms"),
        fmt(s["mean_ms"], "ms"),
    ]


def _server(name: str, on: str, s: Mapping[str, Any]) -> list[Any]:
    return [
        name,
        on,
        fmt(s["target_qps"]),
        fmt(s["achieved_qps"]),
        s["ok"],
        s["error_count"],
        fmt_ci(s["p99_ms"], s["p99_ci_ms"], "ms"),
        fmt(s["latency_bound_ms"], "ms"),
        "met" if s["meets_bound"] else "MISSED",
    ]


def _cold_start(name: str, on: str, cold: Mapping[str, Any]) -> list[Any]:
    return [
        name,
        on,
        len(cold["trials"]),
        fmt(cold["create_median_ms"], "ms"),
        fmt(cold["first_median_ms"], "ms"),
        fmt(cold["warm_median_ms"], "ms"),
        fmt(cold["cold_penalty_ms"], "ms"),
    ]
