"""The report's sections in reading order, each rendered with the table writer of the page (HTML or Markdown)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from derm_cloud.compare.report.batch_section import batch_section
from derm_cloud.compare.report.cells import Section, Table
from derm_cloud.compare.report.cost_section import cost_section
from derm_cloud.compare.report.groups_section import agreement_sections, fairness_section
from derm_cloud.compare.report.latency_section import latency_section
from derm_cloud.compare.report.pareto_section import pareto_section
from derm_cloud.compare.report.parity import parity_section
from derm_cloud.compare.report.probe_section import probe_section
from derm_cloud.compare.report.quality_section import quality_sections

__all__ = ["sections"]


def sections(summary: Mapping[str, Any], table: Table) -> list[Section]:
    """(title, intro, tables) per section: quality, input parity, agreement, fairness, latency, cost, Pareto."""
    out = quality_sections(summary, table)
    if (probes := probe_section(summary, table)) is not None:
        out.append(probes)
    if "metadata" in summary:
        out.append(parity_section(summary, table))
    out += agreement_sections(summary, table)
    out.append(fairness_section(summary, table))
    out.append(latency_section(summary, table))
    out.append(cost_section(summary, table))
    if summary.get("batch", {}).get("backends"):
        out.append(batch_section(summary, table))
    if summary.get("pareto", {}).get("points"):
        out.append(pareto_section(summary, table))
    return out
