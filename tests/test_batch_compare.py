"""The comparator's `batch` scenario: batch answers in the run store beside the real-time ones, costed and checked.

Eight HAM10000 dev images (read in place), the tiny model, one emulated SageMaker backend and one local backend
(which runs real-time only, and the report says so).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests_helpers import DEV_CSV

from derm_cloud.compare import RunStore, run_comparison

OFF = {"enabled": False}


def _config(out: Path, model_dir: Path) -> dict[str, Any]:
    return {
        "title": "batch scenario",
        "output": str(out),
        "seed": 3,
        "dataset": {"source": str(DEV_CSV), "limit": 8},
        "metadata": {"mode": "blind"},
        "fairness": {"skin_tone": "none"},
        "scenarios": {
            "bootstrap": 20,
            "single_stream": OFF,
            "server": OFF,
            "offline": OFF,
            "cold_start": OFF,
            "batch": {"enabled": True, "startup_s": 60.0},
        },
        "backends": [
            {"name": "sm", "type": "sagemaker", "emulate": True, "model_dir": str(model_dir)},
            {"name": "local", "type": "local-onnx", "options": {"model_dir": str(model_dir)}},
        ],
    }


def test_batch_rows_are_stored_costed_and_match_the_realtime_path(tmp_path: Path, tiny_model_dir: Path) -> None:
    out = tmp_path / "out"
    cfg = _config(out, tiny_model_dir)
    result = run_comparison(cfg)
    batch = result.summary["batch"]["backends"]
    assert list(batch) == ["sm"]  # local backends have no batch job
    sm = batch["sm"]
    assert (sm["images"], sm["failed"], sm["submissions"]) == (8, 0, 1)
    assert sm["max_abs_dp"] is not None and sm["max_abs_dp"] <= 1e-5
    assert sm["turnaround_s"] >= 60.0 and sm["billed_instance_s"] >= 60.0  # the configured start-up counts
    assert sm["price"]["id"] == "aws.sagemaker.batch.ml.m5.large"
    assert sm["per_1k"] == sm["job_usd"] / 8 * 1000 and sm["per_1k"] > 0
    pairs = [p for g in result.summary["batch"]["same_model"]["groups"] for p in g["pairs"]]
    assert any(p["backend"] == "sm (batch)" and p["mismatch"] is False for p in pairs)
    assert any("local ran real-time only" in w for w in result.warnings)
    with RunStore(out / "runs.sqlite") as store:
        rows = list(store.results(result.run_id, "sm", "batch"))
    assert len(rows) == 8 and all(r.ok and r.probs for r in rows)
    assert "Batch jobs beside real-time" in result.markdown.read_text()
    assert (out / "batch-jobs" / result.run_id / "sm.json").is_file()
