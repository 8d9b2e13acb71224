"""The report as one self-contained HTML page: figures embedded as base64 PNG (opens offline, mails as one file).

Decision first and compact (issue 20: five backends of one model fit in a few 1280x1000 screens): the verdict,
the summary table (every backend's quality, latency and cost on one row), then each section's headline table.
What an architect reads only when checking (method text, per-class tables, every latency scenario, fairness
groups, agreement, price sources, figures) is folded into `<details>` blocks: still in the page, still found by
the browser's search, opened without JavaScript.
"""

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
color:#222;line-height:1.45}table{border-collapse:collapse;margin:.5em 0 1em;font-size:.84em}
th,td{border:1px solid #ccc;padding:.2em .45em;text-align:right;white-space:pre-line}th{background:#f3f3f3}
td:first-child,th:first-child{text-align:left}.banner{background:#fff4e5;border-left:5px solid #f0a000;padding:.6em 1em}
.warn li{margin:.2em 0}.emu{background:#e8f0ff;border:1px solid #7aa0e0;border-radius:3px;padding:0 .3em;
font-size:.8em}figure{margin:1em 0}figcaption{font-size:.85em;color:#555}img{max-width:min(100%,800px)}
pre{background:#f7f7f7;padding:.8em;overflow:auto;font-size:.8em}.muted{color:#666;font-size:.9em}
.verdict{background:#eaf6ea;border-left:5px solid #2a8a2a;padding:.6em 1em;font-size:1.1em}
.vt{overflow-x:auto}.vt table{font-size:.8em}.vt td{text-align:left;white-space:pre}
details{margin:.3em 0 1em}summary{cursor:pointer;color:#245;font-size:.92em}h2{margin:1em 0 .3em}
"""
# How many of a section's tables stay open (its headline); the rest, its text and its figures are folded.
_SHOWN = {"Quality": 1, "Cost": 1}
# What each folded block holds, as its summary line says it (a section not named here gets a generic line).
_FOLDED = {
    "Quality": "method, per-class figures and reliability diagrams",
    "PPV and NPV at the stated prevalence": "PPV and NPV per class",
    "Input parity: metadata and same-model check": "metadata modes and the same-model check",
    "Agreement between backends": "pairwise agreement and disagreements",
    "Fairness by group": "figures per group, flagged small groups",
    "Latency": "every scenario per backend (single-stream with intervals, server, offline, cold start), the "
    "method and the machine's load (the summary table holds p50 / p90 / p99, server p99 and best QPS)",
    "Cost": "what the figures assume, break-even volumes, prices used with their source and age",
    "Cost, latency and quality": "every backend's Pareto band",
}
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
    """The whole page: the verdict, quality, banners, the summary table, warnings, every section, the run's facts."""
    esc = html.escape
    by_section: dict[str, list[Figure]] = {}
    for f in figures:
        by_section.setdefault(_FIG_SECTION.get(f.name, ""), []).append(f)
    rendered = [
        (title, _section(title, intro, tables, by_section.pop(title, [])))
        for title, intro, tables in sections(summary, html_table)
    ]
    # The quality of each model comes right after the verdict: with it, the first screen holds the decision.
    parts = _opening(summary, [part for title, part in rendered if title == "Quality"])
    parts += [part for title, part in rendered if title != "Quality"]
    for title, figs in by_section.items():
        parts += [f"<h2>{esc(title or 'Figures')}</h2>", _folded("figures", [_figure(f) for f in figs])]
    # The run's facts are an appendix: folded, so that the figures a reader compares fit in a few screens.
    config = "<h3>Config</h3><pre>" + esc(json.dumps(summary["run"]["config"], indent=1)) + "</pre>"
    parts += [
        "<h2>Run, backends and versions</h2>",
        _folded("facts of this run, its backends and its config", [*facts_tables(summary, html_table), config]),
    ]
    if summary["attribution"]:
        parts.append(
            "<h2>Attribution</h2><ul>" + "".join(f"<li>{esc(a)}</li>" for a in summary["attribution"]) + "</ul>"
        )
    parts.append(f"<p class='banner'>{esc(summary['disclaimer'])}</p></body></html>")
    return "\n".join(parts)


def _section(title: str, intro: str, tables: Sequence[str], figures: Sequence[Figure]) -> str:
    """A section's heading and headline table(s) in the open; its text, other tables and figures folded."""
    shown = _SHOWN.get(title, 0)
    folded = [f"<p class='muted'>{html.escape(intro)}</p>"] if intro else []
    folded += [*tables[shown:], *(_figure(f) for f in figures)]
    parts = [f"<h2>{html.escape(title)}</h2>", *tables[:shown]]
    if not tables and not figures:  # nothing measured: the text says why or how to get it, in the open
        parts += folded
    elif folded:
        parts.append(_folded(_FOLDED.get(title, "method and details"), folded))
    return "\n".join(parts)


def _opening(summary: Mapping[str, Any], quality: Sequence[str]) -> list[str]:
    """Head, title, disclaimer, the verdict, quality, the banners and top warnings, the summary table, warnings."""
    esc = html.escape
    parts = [
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{esc(summary['title'])}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>{esc(summary['title'])}</h1>",
        f"<p class='banner'><strong>{esc(summary['disclaimer'])}</strong></p>",
    ]
    recommendation, certainty, how, verdict_tables = verdict_parts(summary, html_table)
    if recommendation:
        parts += ["<h2>Verdict</h2>", f"<p class='verdict'><strong>{esc(recommendation)}</strong></p>"]
        # Cells keep their line breaks (`.vt`: figure, then margin; reasons wrapped short): two lines a row.
        parts += [f"<div class='vt'>{verdict_tables[0]}</div>", f"<p class='muted'>{esc(certainty)}</p>"]
        ranked = [f"<p class='muted'>{esc(how)}</p>", *verdict_tables[1:]]
        parts.append(_folded("how the backends are ranked, and the top one against each other", ranked))
    parts += quality
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
        items = "<ul class='warn'>" + "".join(f"<li>{esc(w)}</li>" for w in summary["warnings"]) + "</ul>"
        n = len(summary["warnings"])
        parts += ["<h2>Warnings</h2>", _folded(f"{n} warning{'s' * (n != 1)}: the banners above and the rest", [items])]
    return parts


def _folded(what: str, parts: Sequence[str]) -> str:
    """A closed `<details>` block: in the page and found by search, opened by a click, no JavaScript needed."""
    return f"<details><summary>{html.escape(what)}</summary>" + "\n".join(parts) + "</details>"


def _figure(f: Figure) -> str:
    esc = html.escape
    data = base64.b64encode(f.png).decode("ascii")
    return (
        f"<figure><img alt='{esc(f.caption)}' src='data:image/png;base64,{data}'><figcaption>{esc(f.caption)}"
        f" (data: figures/{esc(f.name)}.csv, .json)</figcaption></figure>"
    )
