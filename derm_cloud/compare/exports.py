"""Per-image exports of a comparison, so anyone can re-score a run with another tool.

Written beside the report::

    predictions.csv     one row per image and backend: truth, lesion, metadata mode, label, 7 probabilities
    predictions.jsonl   the same rows as JSON lines
    isic/<backend>.csv  an ISIC 2018 Task 3 submission per label-mapped backend (image,MEL,NV,BCC,AKIEC,BKL,DF,VASC)
    isic/ground_truth.csv  the labelled images in the same format (one-hot), for the official scorer

Everything comes from the run store (the quality pass), never from memory of the run. No image bytes and no
secrets are written; probabilities are in the canonical order of :data:`~derm_cloud.taxonomy.CLASS_CODES`.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from derm_cloud.taxonomy import CLASS_CODES

if TYPE_CHECKING:
    from derm_cloud.compare.store import RunStore
    from derm_cloud.data import Dataset

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
_FIELDS = [
    "image_id",
    "lesion_id",
    "truth",
    "backend",
    "metadata",
    "ok",
    "error_type",
    "label",
    "provider_label",
    *(f"p_{c}" for c in CLASS_CODES),
]


def isic_file_name(backend: str) -> str:
    """The submission file name of a backend (``local-onnx +metadata`` -> ``local-onnx_metadata.csv``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", backend).strip("_") + ".csv"


def _isic_row(image_id: str, probs: Mapping[str, float]) -> list[str]:
    return [image_id, *(repr(float(probs[code])) for _col, code in ISIC_COLUMNS)]


def write_exports(
    store: RunStore, run_id: str, ds: Dataset, infos: Mapping[str, Mapping[str, Any]], output_dir: Path
) -> dict[str, Any]:
    """Write predictions.csv, predictions.jsonl and the ISIC submissions; returns their paths (relative).

    Args:
        store: the run store.
        run_id: the run.
        ds: the dataset (image order, labels, lesion ids).
        infos: backend name -> facts (``metadata_used``, ``labels_mapped``).
        output_dir: the report folder.
    """
    output_dir.mkdir(parents=True, exist_ok=True)
    isic_dir = output_dir / "isic"
    isic_dir.mkdir(exist_ok=True)
    rows: list[dict[str, Any]] = []
    submissions: dict[str, list[list[str]]] = {}
    for name, facts in infos.items():
        answers = {r.image_id: r for r in store.results(run_id, name, "quality")}
        mapped = bool(facts.get("labels_mapped", True))
        if mapped:
            submissions[name] = []
        for sample in ds.samples:
            r = answers.get(sample.image_id)
            probs = dict(zip(CLASS_CODES, r.probs, strict=True)) if r is not None and r.ok and r.probs else None
            rows.append(
                {
                    "image_id": sample.image_id,
                    "lesion_id": sample.lesion_id,
                    "truth": sample.label,
                    "backend": name,
                    "metadata": "used" if facts.get("metadata_used") else "blind",
                    "ok": None if r is None else r.ok,
                    "error_type": None if r is None else r.error_type,
                    # Ties go to the first class in canonical order, as Prediction.top_k breaks them.
                    "label": max(CLASS_CODES, key=lambda c: probs[c]) if probs else None,
                    "provider_label": None if r is None else r.label,
                    **{f"p_{c}": (probs[c] if probs else None) for c in CLASS_CODES},
                }
            )
            if mapped and probs:
                submissions[name].append(_isic_row(sample.image_id, probs))
    with (output_dir / "predictions.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=_FIELDS)
        writer.writeheader()
        writer.writerows({k: ("" if v is None else v) for k, v in row.items()} for row in rows)
    with (output_dir / "predictions.jsonl").open("w", encoding="utf-8") as fh:
        fh.writelines(json.dumps(row) + "\n" for row in rows)
    header = ["image", *(col for col, _code in ISIC_COLUMNS)]
    files: dict[str, str] = {}
    for name, sub in submissions.items():
        path = isic_dir / isic_file_name(name)
        _write_csv(path, header, sub)
        files[name] = f"isic/{path.name}"
    truth = [
        [s.image_id, *("1.0" if s.label == code else "0.0" for _col, code in ISIC_COLUMNS)]
        for s in ds.samples
        if s.label is not None
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


def _write_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
