"""Per-image exports of a comparison, so anyone can re-score a run with another tool.

Written beside the report:

```text
predictions.csv     one row per image and backend: truth, lesion, metadata mode, label, 7 probabilities, reencoded
predictions.jsonl   the same rows as JSON lines
quality_metrics.csv one row per backend and headline quality figure: value, 95% CI, in_sample and why
quality_metrics.json  the same rows as a JSON list
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
from derm_cloud.compare.analysis.quality_report import IN_SAMPLE_REASON

if TYPE_CHECKING:
    from derm_cloud.compare.analysis.summary import Summary

__all__ = ["ISIC_COLUMNS", "QUALITY_METRIC_FIELDS", "isic_file_name", "quality_metric_rows", "write_exports"]

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


#: The columns of quality_metrics.csv.
QUALITY_METRIC_FIELDS = ("backend", "metric", "value", "ci_low", "ci_high", "n", "in_sample", "in_sample_reason")


def quality_metric_rows(quality: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The headline quality figures of every scored backend, one row each, in-sample ones flagged with why.

    Args:
        quality: the summary's quality section.
    """
    rows: list[dict[str, Any]] = []
    for name, q in (quality.get("backends") or {}).items():
        if not q.get("n"):
            continue
        ci = q.get("ci") or {}
        mel, mal = q.get("melanoma") or {}, q.get("malignant") or {}
        figures: list[tuple[str, Any, Any, str | None]] = [
            ("accuracy", q.get("accuracy"), ci.get("accuracy"), None),
            ("balanced_accuracy", q.get("balanced_accuracy"), ci.get("balanced_accuracy"), None),
            ("macro_auc", q.get("macro_auc"), ci.get("macro_auc"), None),
            ("melanoma_sensitivity", mel.get("sensitivity"), ci.get("melanoma_sensitivity"), None),
            ("melanoma_specificity", mel.get("specificity"), None, None),
            ("melanoma_auc", mel.get("auc"), None, None),
            ("melanoma_referral_sensitivity", q.get("melanoma_referral_sensitivity"), None, None),
            ("ece", (q.get("calibration") or {}).get("ece"), None, None),
        ]
        in_sample = q.get("in_sample") or {}
        for key, section in (("melanoma", mel), ("malignant", mal)):
            why = in_sample.get(f"{key}.at_specificity", IN_SAMPLE_REASON)
            for point in section.get("at_specificity") or []:
                metric = f"{key}_sensitivity_at_specificity_{point['target_specificity']:.2f}"
                figures.append((metric, point.get("sensitivity"), None, why if point.get("in_sample") else None))
        for metric, value, interval, why in figures:
            low, high = (interval or [None, None])[:2]
            rows.append(
                {
                    "backend": name,
                    "metric": metric,
                    "value": value,
                    "ci_low": low,
                    "ci_high": high,
                    "n": q.get("n"),
                    "in_sample": why is not None,
                    "in_sample_reason": why,
                }
            )
    return rows


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
    metrics = quality_metric_rows(summary.quality)
    with (output_dir / "quality_metrics.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=QUALITY_METRIC_FIELDS)
        writer.writeheader()
        writer.writerows({k: ("" if v is None else v) for k, v in row.items()} for row in metrics)
    (output_dir / "quality_metrics.json").write_text(json.dumps(metrics, indent=1), encoding="utf-8")
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
        "quality_metrics_csv": "quality_metrics.csv",
        "quality_metrics_json": "quality_metrics.json",
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
