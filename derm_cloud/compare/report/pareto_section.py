"""The report's cost, latency and quality section: every backend in its Pareto band, none dropped.

A backend with an unknown price sits in a band of its own (ranked on latency and quality only), and an emulated
backend's latency is shown as the 127.0.0.1 emulator's and never used to rank it
(`derm_cloud.compare.analysis.pareto`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from derm_cloud.compare.report.cells import Section, Table, fmt

__all__ = ["pareto_section"]

_HEADERS = [
    "backend",
    "latency timed on",
    "USD / 1k at volume",
    "p90 ms",
    "balanced acc.",
    "band",
    "ranked on",
    "Pareto",
]
_INTRO = (
    "Each backend is a point: cost per 1,000 predictions at the configured volume, single-stream p90 latency and "
    "balanced accuracy. A backend is ranked only against backends with the same axes on a comparable basis (its "
    "band): an unknown price is its own band, not zero, and an emulated backend's latency is the 127.0.0.1 "
    "emulator's on this machine, shown but never used to rank it. 'optimal' means no backend of its band is at "
    "least as good on every axis it is ranked on and better on one."
)


def pareto_section(summary: Mapping[str, Any], table: Table) -> Section:
    """One row per backend: its three axes, its band, what it is ranked on and whether it is Pareto-optimal."""
    rows = []
    for p in summary["pareto"]["points"]:
        ranked_on = p.get("ranked_on") or []
        rows.append(
            [
                p["name"] + (" [EMULATED]" if p.get("emulated") else ""),
                p.get("latency_basis") or "",
                fmt(p["cost"], "usd") if p["cost"] is not None else "unknown",
                fmt(p["latency"], "ms"),
                fmt(p["quality"], "pct"),
                p.get("band", ""),
                ", ".join(ranked_on) or "nothing",
                _verdict(p, ranked_on),
            ]
        )
    return ("Cost, latency and quality", _INTRO, [table(_HEADERS, rows)])


def _verdict(point: Mapping[str, Any], ranked_on: list[str]) -> str:
    if not ranked_on:
        return "not ranked"
    return "optimal in its band" if point.get("pareto_optimal") else "dominated in its band"
