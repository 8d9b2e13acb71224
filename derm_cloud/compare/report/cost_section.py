"""The report's cost section: each backend's price (class, region, SKU, as of) and cost with its assumptions,
break-even volumes, and the prices used with their source and age."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from derm_cloud.compare.report.cells import Section, Table, fmt

__all__ = ["cost_section"]

_HEADERS = [
    "backend",
    "price entry",
    "class",
    "region",
    "SKU",
    "as of",
    "instances",
    "USD/1k at throughput",
    "USD/1k at volume",
    "USD/month",
    "idle USD/month",
    "USD per correctly triaged melanoma",
]
_FIGURES = ("per_1k_at_throughput", "per_1k_at_volume", "monthly", "idle_monthly", "per_correct_mel")


def _age(used: Mapping[str, Any]) -> str:
    days = used.get("age_days")
    text = "undated" if days is None else f"{days} d"
    return f"{text} STALE" if used.get("stale") else text


def cost_section(summary: Mapping[str, Any], table: Table) -> Section:
    """Costs per backend ("unknown" where no price is known, never 0), assumptions, crossings, prices and age."""
    cost = summary["cost"]
    rows, assumed = [], []
    for name, c in cost["backends"].items():
        e = c.get("entry", {})
        figures = [fmt(c.get(key), "usd") if c["known"] else "unknown" for key in _FIGURES]
        sku = " / ".join(x for x in (e.get("sku"), e.get("sku_id")) if x)
        place = [e.get("price_class", ""), e.get("region", ""), sku, e.get("as_of", "")]
        rows.append([name, c.get("sku") or "none", *place, c.get("instances") or "", *figures])
        if c.get("assumptions"):
            alternatives = "; ".join(c.get("like_for_like") or []) or ""
            assumed.append([name, c["assumptions"], alternatives])
    be = [[b["a"], b["b"], fmt(b["volume"], "int"), b["cheaper_below"], b["cheaper_above"]] for b in cost["break_even"]]
    prices = [
        [k, v.get("as_of"), _age(v), v.get("source_kind") or "", v.get("status"), v.get("region"), v.get("source")]
        for k, v in cost["prices_used"].items()
    ]
    catalogue = cost.get("catalogue") or {}
    layers = "; ".join(
        f"{x['origin']} ({x['date']}, {x.get('age_days')} days old)" if x.get("date") else f"{x['origin']} (undated)"
        for x in catalogue.get("layers", [])
    )
    intro = (
        f"Monthly volume {cost['volume']:,} predictions; melanoma prevalence "
        f"{fmt(cost['melanoma_prevalence'], 'pct')}. " + summary["methods"]["cost"]
    )
    if layers:
        intro += (
            f" Price catalogue: {layers}; prices older than {catalogue.get('max_age_days')} days (or undated) are "
            "marked STALE."
        )
    tables = [table(_HEADERS, rows)]
    if assumed:
        tables.append(table(["backend", "what the figures assume", "like-for-like alternative"], assumed))
    if be:
        tables.append(
            table(["backend A", "backend B", "break-even volume / month", "cheaper below", "cheaper above"], be)
        )
    tables.append(table(["price used", "as of", "age", "from", "status", "region", "source"], prices))
    return ("Cost", intro, tables)
