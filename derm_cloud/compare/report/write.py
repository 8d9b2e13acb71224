"""Write a comparison's report: self-contained HTML, a Markdown summary, the full JSON, figures and exports.

Layout of the output folder:

```text
report.html          one file, figures embedded as base64 PNG (opens offline, mails as one attachment)
report.md            the headline tables and every warning
report.json          everything the report shows (format derm-cloud-comparison/1)
figures/<name>.png   each figure, with <name>.json and <name>.csv holding the data it draws
predictions.csv      per-image answers of every backend (and predictions.jsonl, isic/: see exports)
runs.sqlite          the run store (results as they arrived; written by the run stage)
```

Every report states that the comparison supports triage and research, that a clinician reviews every result,
which backends were emulated, the versions, config, dataset fingerprint and the as-of date of each price.
"""

from __future__ import annotations

import csv
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from derm_cloud.compare.report.exports import write_exports
from derm_cloud.compare.report.html import render_html
from derm_cloud.compare.report.markdown import render_markdown
from derm_cloud.compare.report.plots import Figure, make_figures
from derm_cloud.compare.report.probe_section import learning_curve_figure

if TYPE_CHECKING:
    from derm_cloud.compare.analysis.summary import Summary

__all__ = ["VALIDATE_ENV", "ReportFiles", "write_report"]

#: When this environment variable is set, `write_report` checks the report.json it wrote against the shipped
#: schema (`derm_cloud.compare.report.schema`) and raises `ReportSchemaError` if it does not match.
VALIDATE_ENV = "DERM_CLOUD_VALIDATE_REPORT"


@dataclass(frozen=True)
class ReportFiles:
    """What `write_report` wrote.

    Attributes:
        html, markdown, json: the report files.
        figures_dir: each figure as PNG, with the JSON and CSV data it draws.
        data: what report.json holds: the summary plus the exports, the figures and when it was written.
    """

    html: Path
    markdown: Path
    json: Path
    figures_dir: Path
    data: dict[str, Any]


def write_report(summary: Summary, output_dir: Path) -> ReportFiles:
    """Write report.html, report.md, report.json, figures/ and the per-image exports into `output_dir`."""
    output_dir.mkdir(parents=True, exist_ok=True)
    data = summary.to_dict()
    data["run"] = _stamped(data["run"])
    data["exports"] = write_exports(summary, output_dir)
    figures = make_figures(data)
    if (curve := learning_curve_figure(data)) is not None:
        figures.append(curve)
    data["figures"] = {
        f.name: {
            "caption": f.caption,
            "png": f"figures/{f.name}.png",
            "csv": f"figures/{f.name}.csv",
            "json": f"figures/{f.name}.json",
        }
        for f in figures
    }
    files = ReportFiles(
        html=output_dir / "report.html",
        markdown=output_dir / "report.md",
        json=output_dir / "report.json",
        figures_dir=_write_figures(figures, output_dir / "figures"),
        data=data,
    )
    files.json.write_text(json.dumps(data, indent=1, default=str), encoding="utf-8")
    if os.environ.get(VALIDATE_ENV):  # the test suite sets it: every report any test writes matches the schema
        from derm_cloud.compare.report.schema import validate_report

        validate_report(files.json)
    files.html.write_text(render_html(data, figures), encoding="utf-8")
    files.markdown.write_text(render_markdown(data), encoding="utf-8")
    return files


def _stamped(run: dict[str, Any]) -> dict[str, Any]:
    """The run facts with the time the report was written, after the time the run was created."""
    out: dict[str, Any] = {}
    for key, value in run.items():
        out[key] = value
        if key == "created":
            out["report_written"] = time.strftime("%Y-%m-%d %H:%M:%S")
    return out


def _write_figures(figures: list[Figure], folder: Path) -> Path:
    folder.mkdir(exist_ok=True)
    for f in figures:
        (folder / f"{f.name}.png").write_bytes(f.png)
        (folder / f"{f.name}.json").write_text(json.dumps(f.rows, indent=1, default=str), encoding="utf-8")
        with (folder / f"{f.name}.csv").open("w", newline="", encoding="utf-8") as fh:
            keys = list(dict.fromkeys(k for r in f.rows for k in r))
            writer = csv.DictWriter(fh, fieldnames=keys)
            writer.writeheader()
            writer.writerows(f.rows)
    return folder
