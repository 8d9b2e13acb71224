"""Per-image exports of a comparison, so anyone can re-score a run with another tool.

Written beside the report:

```text
predictions.csv     one row per image and backend: truth, lesion, metadata mode, label, 7 probabilities
predictions.jsonl   the same rows as JSON lines
isic/<backend>.csv  an ISIC 2018 Task 3 submission per label-mapped backend (image,MEL,NV,BCC,AKIEC,BKL,DF,VASC)
isic/ground_truth.csv  the labelled images in the same format (one-hot), for the official scorer
```

The rows come from the summary (`Summary.predictions`: the quality pass as stored, never memory of the run).
No image bytes and no secrets are written; probabilities are in the canonical order of `CLASS_CODES`.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from derm_cloud.compare.analysis.predictions import PREDICTION_FIELDS

if TYPE_CHECKING:
    from derm_cloud.compare.analysis.summary import Summary

__all__ = ["ISIC_COLUMNS", "isic_file_name", "write_exports"]

#: ISIC 2018 Task 3 column order and the canonical code of each column.
ISIC_COLUMNS: tuple[tuple[str, str], ...] = (
    ("MEL", "mel"),
    ("NV", "nv"),
    ("BCC", "bcc"),
    ("AKIEC", "akiec"),
    ("BKL", "bkl"),
    ("DF", "df"),
    ("VASC", "vasc"),
)


def isic_file_name(backend: str) -> str:
    """The submission file name of a backend (`local-onnx +metadata` -> `local-onnx_metadata.csv`)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", backend).strip("_") + ".csv"


def write_exports(summary: Summary, output_dir: Path) -> dict[str, Any]:
    """Write predictions.csv, predictions.jsonl and the ISIC submissions; returns their paths (relative).

    Args:
        summary: the analysis's summary (`predictions`: one row per image and backend; `backends`: which
            backends' labels map onto the lesion classes).
        output_dir: the report folder.
    """
    output_dir.mkdir(parents=True, exist_ok=True)
    isic_dir = output_dir / "isic"
    isic_dir.mkdir(exist_ok=True)
    rows = summary.predictions
    with (output_dir / "predictions.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=PREDICTION_FIELDS)
        writer.writeheader()
        writer.writerows({k: ("" if v is None else v) for k, v in row.items()} for row in rows)
    with (output_dir / "predictions.jsonl").open("w", encoding="utf-8") as fh:
        fh.writelines(json.dumps(row) + "\n" for row in rows)
    header = ["image", *(col for col, _code in ISIC_COLUMNS)]
    files: dict[str, str] = {}
    for name, facts in summary.backends.items():
        if not facts.get("labels_mapped", True):
            continue
        path = isic_dir / isic_file_name(name)
        answered = [r for r in rows if r["backend"] == name and r["p_mel"] is not None]  # all 7 probabilities or none
        _write_csv(path, header, [_isic_row(r) for r in answered])
        files[name] = f"isic/{path.name}"
    truth = [
        [image_id, *("1.0" if label == code else "0.0" for _col, code in ISIC_COLUMNS)]
        for image_id, label in dict.fromkeys((r["image_id"], r["truth"]) for r in rows if r["truth"] is not None)
    ]
    out: dict[str, Any] = {
        "predictions_csv": "predictions.csv",
        "predictions_jsonl": "predictions.jsonl",
        "isic_submissions": files,
    }
    if truth:
        _write_csv(isic_dir / "ground_truth.csv", header, truth)
        out["isic_ground_truth"] = "isic/ground_truth.csv"
    return out


def _isic_row(row: Mapping[str, Any]) -> list[str]:
    return [row["image_id"], *(repr(float(row[f"p_{code}"])) for _col, code in ISIC_COLUMNS)]


def _write_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
