"""examples/evaluate_local.py against an independent evaluation (bare onnxruntime + numpy), and ONNX-vs-Keras."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from tests_helpers import dev_subset

ROOT = Path(__file__).resolve().parents[1]
N = 40


def _independent(model_dir: Path, rows: list[dict[str, str]], csv_dir: Path, use_metadata: bool) -> list[str]:
    """No derm-cloud classifier code: onnxruntime on the author's preprocessing, labels by argmax."""
    import onnxruntime as ort

    from derm_cloud.models.sklesion import LABELS, encode_metadata, preprocess_image

    session = ort.InferenceSession(str(model_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    image_in, meta_in = (i.name for i in session.get_inputs())
    out = []
    for r in rows:
        x = preprocess_image(csv_dir / r["file"])[None]
        age = float(r["age"]) if r["age"] and use_metadata else None
        m = encode_metadata(age, r["sex"] if use_metadata else None, r["localization"] if use_metadata else None)
        probs = session.run(None, {image_in: x, meta_in: m[None]})[0][0]
        out.append(LABELS[int(np.argmax(probs))])
    return out


def _balanced_accuracy(truth: list[str], pred: list[str]) -> float:
    recalls = [np.mean([p == c for t, p in zip(truth, pred, strict=True) if t == c]) for c in sorted(set(truth))]
    return float(np.mean(recalls))


@pytest.mark.slow
def test_example_figures_match_an_independent_evaluation(sklesion_model_dir: Path) -> None:
    rows, csv_path = dev_subset(N)
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "examples" / "evaluate_local.py"),
            "--csv",
            str(csv_path),
            "--limit",
            str(N),
            "--model-dir",
            str(sklesion_model_dir),
            "--json",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    figures = json.loads(proc.stdout)
    assert figures["n"] == N
    truth = [r["dx"] for r in rows]
    for key, use_metadata in (("with_metadata", True), ("without_metadata", False)):
        labels = _independent(sklesion_model_dir, rows, csv_path.parent, use_metadata)
        accuracy = float(np.mean([t == p for t, p in zip(truth, labels, strict=True)]))
        assert round(figures[key]["accuracy"], 3) == round(accuracy, 3)
        assert round(figures[key]["balanced_accuracy"], 3) == round(_balanced_accuracy(truth, labels), 3)
        assert 0.3 < figures[key]["accuracy"] <= 1.0  # a real model, far above chance (1/7)
