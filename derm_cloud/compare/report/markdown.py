"""The report as Markdown: the headline tables, every warning and every section, figures named by file."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from derm_cloud.compare.report.cells import md_table
from derm_cloud.compare.report.facts_section import facts_tables
from derm_cloud.compare.report.parity import evidence_text, top_warnings
from derm_cloud.compare.report.sections import sections
from derm_cloud.compare.report.summary_table import summary_table
from derm_cloud.compare.report.verdict_section import verdict_parts

__all__ = ["render_markdown"]


def render_markdown(summary: Mapping[str, Any]) -> str:
    """report.md: what report.html shows, figures by file name instead of embedded."""
    lines = [f"# {summary['title']}", "", f"> {summary['disclaimer']}", ""]
    recommendation, certainty, how, verdict_tables = verdict_parts(summary, md_table)
    if recommendation:
        lines += ["## Verdict", "", f"**{recommendation}**", "", verdict_tables[0], "", f"{certainty} {how}", ""]
        for t in verdict_tables[1:]:
            lines += [t, ""]
    if summary["emulated"]:
        # An embedding endpoint's emulator hosts a stand-in encoder, not the model the row is named after.
        stand_ins = [
            n
            for n in summary["emulated"]
            if ((summary["backends"].get(n) or {}).get("model_facts") or {}).get("stand_in")
        ]
        hosted = f"; for {', '.join(stand_ins)} a stand-in encoder, not the provider's model" if stand_ins else ""
        lines += [
            f"**EMULATED backends:** {', '.join(summary['emulated'])} (a derm-cloud emulator on 127.0.0.1 "
            f"hosting the same model{hosted}, driven through the real SDK).",
            "",
        ]
    for w in top_warnings(summary):
        lines += [f"> **{w}**", ""]
    headers, rows = summary_table(summary)
    lines += ["## Summary", ""]
    if summary.get("headline"):
        lines += [f"**{summary['headline']}**", ""]
    lines += [evidence_text(summary), "", md_table(headers, rows), ""]
    if summary["warnings"]:
        lines += ["## Warnings", ""] + [f"- {w}" for w in summary["warnings"]] + [""]
    for title, intro, tables in sections(summary, md_table):
        lines += [f"## {title}", "", intro, ""]
        for t in tables:
            lines += [t, ""]
    lines += ["## Run, backends and versions", ""]
    for t in facts_tables(summary, md_table):
        lines += [t, ""]
    if summary.get("figures"):
        lines += (
            ["## Figures", ""]
            + [
                f"- {v['caption']}: `{v['png']}` (data `{v['csv']}`, `{v['json']}`)"
                for v in summary["figures"].values()
            ]
            + [""]
        )
    if summary["attribution"]:
        lines += ["## Attribution", ""] + [f"- {a}" for a in summary["attribution"]] + [""]
    lines += [f"_{summary['disclaimer']}_", ""]
    return "\n".join(lines)
