"""Evaluate the sklesion model through the local-onnx backend on the HAM10000 dev split.

Runs every image of a labelled manifest (default: ../shared/data/ham10000/dev.csv) twice, with and without the
patient metadata (age, sex, site), and prints n, accuracy and balanced accuracy (the ISIC 2018 metric) computed
by scikit-learn. Images: HAM10000 (Tschandl, Rosendahl & Kittler, Sci. Data 5, 180161, 2018), CC BY-NC 4.0.

sklesion was trained on HAM10000, so these figures are optimistic (training-data overlap); dev.csv's class mix is
not natural prevalence. Research use only: a clinician reviews every result.

    python examples/evaluate_local.py --limit 100 [--json]
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import derm_cloud

DEFAULT_CSV = Path(__file__).resolve().parents[2] / "shared" / "data" / "ham10000" / "dev.csv"


def read_manifest(path: Path, limit: int | None) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    return rows[:limit] if limit else rows


def evaluate(csv_path: Path, model_dir: str, limit: int | None, batch_size: int = 16) -> dict[str, object]:
    from sklearn.metrics import accuracy_score, balanced_accuracy_score

    rows = read_manifest(csv_path, limit)
    images = [csv_path.parent / r["file"] for r in rows]
    metadata = [
        {"age": float(r["age"]) if r["age"] else None, "sex": r["sex"] or "unknown", "site": r["localization"]}
        for r in rows
    ]
    truth = [r["dx"] for r in rows]
    results: dict[str, object] = {"n": len(rows), "manifest": str(csv_path), "image_ids": [r["image_id"] for r in rows]}
    for name, use_metadata in (("with_metadata", True), ("without_metadata", False)):
        with derm_cloud.create("local-onnx", model_dir=model_dir, use_metadata=use_metadata) as clf:
            predictions = clf.predict_batch(images, metadata, batch_size=batch_size)
        labels = [p.label for p in predictions]
        results[name] = {
            "accuracy": accuracy_score(truth, labels),
            "balanced_accuracy": balanced_accuracy_score(truth, labels),
            "predicted": labels,
        }
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--csv", type=Path, default=DEFAULT_CSV, help="labelled manifest (dev.csv layout)")
    parser.add_argument("--model-dir", default="sklesion", help="model directory or 'sklesion'")
    parser.add_argument("--limit", type=int, default=None, help="evaluate only the first N rows")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    results = evaluate(args.csv, args.model_dir, args.limit)
    if args.json:
        print(json.dumps(results))
        return 0
    print(f"sklesion through local-onnx on {results['n']} images of {args.csv.name}")
    for name in ("with_metadata", "without_metadata"):
        figures = results[name]
        assert isinstance(figures, dict)
        print(f"  {name:<17} accuracy {figures['accuracy']:.4f}   balanced accuracy {figures['balanced_accuracy']:.4f}")
    print("Trained on HAM10000: figures are optimistic. Research use only; a clinician reviews every result.")
    print("Images: HAM10000 (Tschandl et al. 2018), CC BY-NC 4.0.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
