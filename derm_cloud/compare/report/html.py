"""The report as one self-contained HTML page: figures embedded as base64 PNG (opens offline, mails as one file)."""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Mapping, Sequence
from typing import Any

from derm_cloud.compare.report.cells import html_table
from derm_cloud.compare.report.facts_section import facts_tables
from derm_cloud.compare.report.parity import evidence_text, top_warnings
from derm_cloud.compare.report.plots import Figure
from derm_cloud.compare.report.sections import sections
from derm_cloud.compare.report.summary_table import summary_table
from derm_cloud.compare.report.verdict_section import verdict_parts

__all__ = ["render_html"]

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;
color:#222;line-height:1.45}table{border-collapse:collapse;margin:.6em 0 1.2em;font-size:.88em}
th,td{border:1px solid #ccc;padding:.25em .55em;text-align:right}th{background:#f3f3f3}td:first-child,
th:first-child{text-align:left}.banner{background:#fff4e5;border-left:5px solid #f0a000;padding:.6em 1em}
.warn li{margin:.2em 0}.emu{background:#e8f0ff;border:1px solid #7aa0e0;border-radius:3px;padding:0 .3em;
font-size:.8em}figure{margin:1em 0}figcaption{font-size:.85em;color:#555}img{max-width:min(100%,800px)}
pre{background:#f7f7f7;padding:.8em;overflow:auto;font-size:.8em}.muted{color:#666;font-size:.9em}
.verdict{background:#eaf6ea;border-left:5px solid #2a8a2a;padding:.6em 1em;font-size:1.1em}
"""
# The section each figure is shown in (a figure of no section gets one of its own at the end).
_FIG_SECTION = {
    "reliability": "Quality",
    "group_bars": "Fairness by group",
    "latency_distribution": "Latency",
    "offline_throughput": "Latency",
    "cost_vs_volume": "Cost",
    "pareto": "Cost, latency and quality",
    "learning_curve": "Probes: foundation-model embeddings with a trained head",
}


def render_html(summary: Mapping[str, Any], figures: Sequence[Figure]) -> str:
    """The whole page: banners, the summary table, warnings, every section with its figures, the run's facts."""
    esc = html.escape
    parts = _opening(summary)
    by_section: dict[str, list[Figure]] = {}
    for f in figures:
        by_section.setdefault(_FIG_SECTION.get(f.name, ""), []).append(f)
    for title, intro, tables in sections(summary, html_table):
        parts += [f"<h2>{esc(title)}</h2>", f"<p class='muted'>{esc(intro)}</p>", *tables]
        parts += [_figure(f) for f in by_section.pop(title, [])]
    for title, figs in by_section.items():
        parts.append(f"<h2>{esc(title or 'Figures')}</h2>")
        parts += [_figure(f) for f in figs]
    # The run's facts are an appendix: folded, so that the figures a reader compares fit in a few screens.
    parts += [
        "<h2>Run, backends and versions</h2><details><summary>facts of this run, its backends and its config</summary>",
        *facts_tables(summary, html_table),
        "<h3>Config</h3><pre>" + esc(json.dumps(summary["run"]["config"], indent=1)) + "</pre></details>",
    ]
    if summary["attribution"]:
        parts.append(
            "<h2>Attribution</h2><ul>" + "".join(f"<li>{esc(a)}</li>" for a in summary["attribution"]) + "</ul>"
        )
    parts.append(f"<p class='banner'>{esc(summary['disclaimer'])}</p></body></html>")
    return "\n".join(parts)


def _opening(summary: Mapping[str, Any]) -> list[str]:
    """Head, title, the disclaimer and emulation banners, the top warnings, the summary table and all warnings."""
    esc = html.escape
    parts = [
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{esc(summary['title'])}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>{esc(summary['title'])}</h1>",
        f"<p class='banner'><strong>{esc(summary['disclaimer'])}</strong></p>",
    ]
    recommendation, how, verdict_tables = verdict_parts(summary, html_table)
    if recommendation:
        parts += ["<h2>Verdict</h2>", f"<p class='verdict'><strong>{esc(recommendation)}</strong></p>"]
        parts += [verdict_tables[0], f"<p class='muted'>{esc(how)}</p>", *verdict_tables[1:]]
    if summary["emulated"]:
        parts.append(
            "<p class='banner'><span class='emu'>EMULATED</span> "
            + esc(", ".join(summary["emulated"]))
            + ": these backends talked to a derm-cloud emulator on 127.0.0.1 through the real SDK, hosting "
            "the same model; they show the client path, not the cloud's own latency.</p>"
        )
    parts += [f"<p class='banner'><strong>{esc(w)}</strong></p>" for w in top_warnings(summary)]
    headers, rows = summary_table(summary)
    parts.append("<h2>Summary</h2>")
    if summary.get("headline"):
        parts.append(f"<p class='banner'><strong>{esc(summary['headline'])}</strong></p>")
    parts += [f"<p>{esc(evidence_text(summary))}</p>", html_table(headers, rows)]
    if summary["warnings"]:
        parts.append(
            "<h2>Warnings</h2><ul class='warn'>" + "".join(f"<li>{esc(w)}</li>" for w in summary["warnings"]) + "</ul>"
        )
    return parts


def _figure(f: Figure) -> str:
    esc = html.escape
    data = base64.b64encode(f.png).decode("ascii")
    return (
        f"<figure><img alt='{esc(f.caption)}' src='data:image/png;base64,{data}'><figcaption>{esc(f.caption)}"
        f" (data: figures/{esc(f.name)}.csv, .json)</figcaption></figure>"
    )
