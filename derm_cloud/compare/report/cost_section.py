"""The report's cost section: each backend's price basis and cost, break-even volumes and the prices used."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from derm_cloud.compare.report.cells import Section, Table, fmt

__all__ = ["cost_section"]

_HEADERS = [
    "backend",
    "sku",
    "basis",
    "instances",
    "USD/1k at throughput",
    "USD/1k at volume",
    "USD/month",
    "idle USD/month",
    "USD per correctly triaged melanoma",
]
_FIGURES = ("per_1k_at_throughput", "per_1k_at_volume", "monthly", "idle_monthly", "per_correct_mel")


def cost_section(summary: Mapping[str, Any], table: Table) -> Section:
    """Costs per backend ("unknown" where no price is known, never 0), crossings and each price's source."""
    cost = summary["cost"]
    rows = []
    for name, c in cost["backends"].items():
        e = c.get("entry", {})
        figures = [fmt(c.get(key), "usd") if c["known"] else "unknown" for key in _FIGURES]
        rows.append([name, c.get("sku") or "none", e.get("basis", ""), c.get("instances") or "", *figures])
    be = [[b["a"], b["b"], fmt(b["volume"], "int"), b["cheaper_below"], b["cheaper_above"]] for b in cost["break_even"]]
    prices = [
        [k, v.get("as_of"), v.get("status"), v.get("region"), v.get("source")] for k, v in cost["prices_used"].items()
    ]
    intro = (
        f"Monthly volume {cost['volume']:,} predictions; melanoma prevalence "
        f"{fmt(cost['melanoma_prevalence'], 'pct')}. " + summary["methods"]["cost"]
    )
    tables = [table(_HEADERS, rows)]
    if be:
        tables.append(
            table(["backend A", "backend B", "break-even volume / month", "cheaper below", "cheaper above"], be)
        )
    tables.append(table(["price used", "as of", "status", "region", "source"], prices))
    return ("Cost", intro, tables)
