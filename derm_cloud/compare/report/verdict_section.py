"""The report's opening: the verdict's recommendation and why, then the constraint table and the pairwise tests.

The data is the summary's `verdict` (`derm_cloud.compare.analysis.verdict`); this module only writes it, the
same way in HTML and Markdown (through the page's table writer).
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping
from typing import Any

from derm_cloud.compare.report.cells import Table, fmt

__all__ = ["verdict_parts"]

_STATUS = {"meets": "MEETS", "misses": "MISSES", "cannot tell": "CANNOT TELL"}


def verdict_parts(summary: Mapping[str, Any], table: Table) -> tuple[str, str, str, list[str]]:
    """`(recommendation, how sure, how ranked, [constraint table, pairwise table])`; empty when no verdict."""
    v = summary.get("verdict") or {}
    if not v.get("ranking"):
        return "", "", "", []
    constraints = v["constraints"]
    emulated = set(summary.get("emulated") or [])
    headers = ["rank", "backend", *(c["label"] for c in constraints), "quality group", "USD / month", "p50 ms"]
    rows = []
    for r in v["ranking"]:
        name = r["backend"]
        cells = [_cell(c["key"], v["judgements"][name][c["key"]]) for c in constraints]
        p50 = fmt(r["p50_ms"], "ms") + ("\n(emulated)" if name in emulated and r["p50_ms"] is not None else "")
        rows.append([r["rank"], name, *cells, r["quality_group"], fmt(r["monthly_usd"], "usd"), p50])
    tables = [table(headers, rows)]
    pairs = _pair_rows(v)
    if pairs:
        tables.append(table(["pair", "quality (paired, same images)", "latency (single-stream p50)"], pairs))
    judged = "; ".join(f"{c['label']}: {c['judged_on']}" for c in constraints)
    how = v["rule"] + (f" Judged on: {judged}." if judged else "")
    return v["recommendation"], v.get("certainty", ""), how, tables


def _cell(key: str, j: Mapping[str, Any]) -> str:
    """`MEETS 0.934 [0.91, 0.95], margin +0.02 [-0.01, +0.04]`, or the status with its reason."""
    status = _STATUS.get(j["status"], j["status"])
    value = j.get("value")
    if "interval" in j:
        lo, hi = j["interval"]
        kind = "ms" if key.startswith("max_p") else "num"
        text = f"{status} {fmt(value, kind)} [{fmt(lo, kind)}, {fmt(hi, kind)}]"
        m_lo, m_hi = j["margin_interval"]
        # A line break between figure and margin (HTML shows it, Markdown a space) keeps a row two lines high.
        return text + f",\nmargin {j['margin']:+.3g} [{m_lo:+.3g}, {m_hi:+.3g}]"
    if key == "max_monthly_usd" and value is not None:
        margin = j["margin"]
        return f"{status} {fmt(value, 'usd')},\nmargin {'-' if margin < 0 else '+'}${abs(margin):,.2f}"
    if j.get("reason"):
        shown = f" {fmt(value, 'ms')}" if key.startswith("max_p") and value is not None else ""
        return f"{status}{shown}\n" + "\n".join(textwrap.wrap(f"({j['reason']})", 36))
    return f"{status} ({value})" if value is not None and not isinstance(value, bool) else status


def _pair_rows(v: Mapping[str, Any]) -> list[list[str]]:
    """The top-ranked backend against each other one (every pair is in report.json)."""
    top = v["ranking"][0]["backend"]
    rows = []
    for p in v["pairs"]:
        if top not in (p["a"], p["b"]):
            continue
        rows.append([f"{p['a']} / {p['b']}", _quality_text(p.get("quality")), _latency_text(p)])
    return rows


def _quality_text(q: Mapping[str, Any] | None) -> str:
    if not q:
        return "not compared"
    if q.get("identical"):
        return "indistinguishable: identical answers on every image"
    ba = q.get("balanced_accuracy") or {}
    ci = ba.get("interval")
    word = {True: "indistinguishable", False: "different", None: "not tested"}[q.get("indistinguishable")]
    if ba.get("difference") is None or not ci:
        return word
    return f"{word}: balanced accuracy difference {ba['difference']:+.3f} [{ci[0]:+.3f}, {ci[1]:+.3f}]"


def _latency_text(p: Mapping[str, Any]) -> str:
    lat = p.get("latency")
    if not lat or "p50" not in lat:
        return "not measured"
    if lat.get("not_comparable"):
        return f"not comparable: {lat['not_comparable']}"
    d = lat["p50"]
    ci = d.get("interval")
    faster = {"a": p["a"], "b": p["b"]}.get(lat.get("faster") or "")
    head = f"{faster} faster" if faster else "no clear difference"
    ci_text = f" [{ci[0]:+.0f}, {ci[1]:+.0f}]" if ci else ""
    note = " (both emulated)" if lat.get("note") else ""
    return (
        f"{head}: {fmt(d['a_ms'], 'ms')} vs {fmt(d['b_ms'], 'ms')} ms, difference {d['difference']:+.0f}{ci_text}{note}"
    )
