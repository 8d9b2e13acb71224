"""The report's batch section: each backend's batch job beside its real-time endpoint, on the same images."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from derm_cloud.compare.report.cells import Section, Table, fmt

__all__ = ["batch_section"]

_HEADERS = [
    "backend",
    "images (failed)",
    "batch turnaround s",
    "real-time turnaround s",
    "batch billed instance-s",
    "batch USD/1k",
    "real-time USD/1k at throughput",
    "real-time USD/1k at volume",
    "max |dp| batch vs real-time",
    "job submissions",
]


def batch_section(summary: Mapping[str, Any], table: Table) -> Section:
    """Turnaround, cost per 1,000 images and the batch-to-real-time probability gap, per backend."""
    batch = summary["batch"]
    rows, prices, failures = [], [], []
    for name, b in batch["backends"].items():
        price = b.get("price") or {}
        rows.append(
            [
                name,
                f"{b['images']:,} ({b['failed']:,})",
                fmt(b.get("turnaround_s")),
                fmt(b.get("realtime_turnaround_s")),
                fmt(b.get("billed_instance_s")),
                fmt(b.get("per_1k"), "usd") if price else "unknown",
                fmt(b.get("realtime_per_1k_at_throughput"), "usd"),
                fmt(b.get("realtime_per_1k_at_volume"), "usd"),
                "n/a" if b.get("max_abs_dp") is None else f"{b['max_abs_dp']:.2e}",
                b.get("submissions") if b.get("submissions") is not None else "n/a",
            ]
        )
        prices.append([name, price.get("id", "none"), price.get("unit", ""), price.get("status", ""), b["storage"]])
        failures += [[name, cause] for cause in b.get("failures", [])]
    intro = (
        "Each emulated SageMaker, Vertex AI and Azure ML backend classified the same images again as one batch job "
        "(Batch Transform, batch prediction, batch endpoint), through the real SDK against derm-cloud's job "
        f"emulators. Batch turnaround is submit to finished plus an assumed start-up of {fmt(batch['startup_s'])} s "
        "([scenarios.batch] startup_s: an emulated job starts at once, a cloud job first provisions instances); "
        "real-time turnaround is the quality pass's first request to last answer. Batch cost is the instance time "
        "the job ran (plus the start-up) at the batch price, per 1,000 images answered; storage is not priced. "
        "Emulated figures are this machine's, not the clouds'. Triage and research only: a clinician reviews "
        "every result."
    )
    tables = [table(_HEADERS, rows), table(["backend", "batch price", "unit", "status", "storage"], prices)]
    if failures:
        tables.append(table(["backend", "failed image cause (first 5)"], failures))
    return ("Batch jobs beside real-time", intro, tables)
