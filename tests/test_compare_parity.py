"""Fair comparisons (issue 9): metadata parity, the same-model check, lesion-level statistics, per-image exports.

The end-to-end test reads real HAM10000 images in place (HAM10000, Tschandl et al. 2018, CC BY-NC 4.0).
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.metrics import recall_score, roc_auc_score
from tests_helpers import DEV_CSV

from derm_cloud.compare import run_comparison
from derm_cloud.compare.analysis.bootstrap import bootstrap_ci, cluster_resample_indices
from derm_cloud.compare.analysis.evidence import evidence_line, overlap_in_context, stated_test_figures
from derm_cloud.compare.analysis.metadata import metadata_summary
from derm_cloud.compare.analysis.metrics import accuracy
from derm_cloud.compare.analysis.quality_report import quality_report
from derm_cloud.compare.analysis.same_model import same_model_report
from derm_cloud.compare.run.facts import model_fingerprint
from derm_cloud.compare.run.metadata_modes import plan_metadata
from derm_cloud.data.dataset import Sample
from derm_cloud.taxonomy import CLASS_CODES

# --- metadata parity -----------------------------------------------------------------------------------------


def test_auto_mode_is_blind_unless_every_backend_can_use_metadata() -> None:
    assert plan_metadata({"local": True, "cv": False}).use == {"local": False, "cv": False}
    assert plan_metadata({"local": True, "sm": True}).use == {"local": True, "sm": True}
    assert plan_metadata({"local": True, "sm": True}, "blind").use == {"local": False, "sm": False}
    assert plan_metadata({"local": True, "cv": False}, "each").use == {"local": True, "cv": False}


def test_variants_add_an_other_mode_row_for_backends_that_can_use_metadata() -> None:
    plan = plan_metadata({"local": True, "cv": False}, "auto", variants=True)
    assert plan.variants == (("local +metadata", "local", True),)
    plan = plan_metadata({"local": True, "sm": True}, "auto", variants=True)
    assert [v[0] for v in plan.variants] == ["local -metadata", "sm -metadata"]
    with pytest.raises(ValueError, match="metadata mode"):
        plan_metadata({"a": True}, "sometimes")


def test_mixed_modes_warn_and_variant_rows_are_stated_not_warned() -> None:
    mixed = {"a": {"uses_metadata": True, "metadata_used": True}, "b": {"metadata_used": False}}
    report, warnings = metadata_summary(mixed)
    assert report["mode"] == "mixed" and len(warnings) == 1 and "MIXED METADATA MODES" in warnings[0]
    variant = {
        "a": {"uses_metadata": True, "metadata_used": False},
        "a +metadata": {"uses_metadata": True, "metadata_used": True, "variant_of": "a"},
        "b": {"metadata_used": False},
    }
    report, warnings = metadata_summary(variant)
    assert report["mode"].startswith("metadata-blind, plus explicit variant rows")
    # Not a warning: a note at the top saying which row used what (issue 20).
    assert warnings == [report["note"]] and "MIXED" not in warnings[0]
    assert "Image-only (metadata-blind), the cross-backend comparison: a, b. With metadata: a +metadata" in warnings[0]


# --- same-model check ----------------------------------------------------------------------------------------


def test_model_fingerprint_follows_content_not_path(tmp_path: Path) -> None:
    for name in ("a", "b", "c"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "spec.json").write_text('{"model_id": "m"}')
        (tmp_path / name / "model.onnx").write_bytes(b"weights" + (b"!" if name == "c" else b""))
    assert model_fingerprint(tmp_path / "a") == model_fingerprint(tmp_path / "b")
    assert model_fingerprint(tmp_path / "a") != model_fingerprint(tmp_path / "c")
    assert model_fingerprint(None) is None


def test_same_model_gap_flags_a_mismatch_above_tolerance() -> None:
    base = {"i1": [0.1, 0.1, 0.1, 0.1, 0.4, 0.1, 0.1], "i2": [0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0]}
    moved = {"i1": [0.1, 0.1, 0.1, 0.1, 0.4 - 3e-3, 0.1 + 3e-3, 0.1], "i2": base["i2"]}
    infos = {
        "local": {"model_fingerprint": "f" * 64},
        "sm": {"model_fingerprint": "f" * 64},
        "cv": {"model_fingerprint": "f" * 64},
        "local +metadata": {"model_fingerprint": "f" * 64, "metadata_used": True},
    }
    probs = {"local": base, "sm": base, "cv": moved, "local +metadata": moved}
    report, warnings = same_model_report(infos, probs)
    pairs = {p["backend"]: p for g in report["groups"] for p in g["pairs"]}
    assert set(pairs) == {"sm", "cv"}  # the +metadata row is in another mode: not compared
    assert pairs["sm"]["max_abs_gap"] == 0.0 and pairs["sm"]["mismatch"] is False
    assert pairs["cv"]["max_abs_gap"] == pytest.approx(3e-3) and pairs["cv"]["mismatch"] is True
    assert pairs["cv"]["image_id"] == "i1" and pairs["cv"]["images_over_tolerance"] == 1
    assert len(warnings) == 1 and "cv and local" in warnings[0]


# --- statistics ----------------------------------------------------------------------------------------------


def test_cluster_bootstrap_keeps_lesions_whole_and_per_stratum_counts() -> None:
    y = np.array([0, 0, 0, 1, 1])
    clusters = ["L1", "L1", "L2", "L3", None]
    for idx in cluster_resample_indices(y, clusters, n_boot=50, seed=1):
        picked = idx.tolist()
        assert picked.count(0) == picked.count(1)  # L1's two images travel together
        assert sum(1 for i in picked if y[i] == 1) == 2  # two class-1 clusters drawn, one row each


def test_cluster_bootstrap_of_duplicated_images_equals_image_bootstrap_of_lesions() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 7, size=60)
    p = rng.dirichlet(np.ones(7), size=60)
    dup_y, dup_p = np.repeat(y, 2), np.repeat(p, 2, axis=0)
    lesions = [f"L{i}" for i in np.repeat(np.arange(60), 2)]
    by_lesion = bootstrap_ci(accuracy, dup_y, dup_p, n_boot=300, seed=4, clusters=lesions)
    oracle = bootstrap_ci(accuracy, y, p, n_boot=300, seed=4, clusters=[f"L{i}" for i in range(60)])
    assert by_lesion == pytest.approx(oracle)
    naive = bootstrap_ci(accuracy, dup_y, dup_p, n_boot=300, seed=4)
    assert naive[1] - naive[0] < by_lesion[1] - by_lesion[0]  # images resampled alone: too narrow


def test_per_class_figures_in_both_definitions_match_scikit_learn() -> None:
    rng = np.random.default_rng(3)
    y_idx = np.repeat(np.arange(7), 12)
    p = rng.dirichlet(np.ones(7) * 0.4, size=len(y_idx))
    y = [CLASS_CODES[i] for i in y_idx]
    report = quality_report(y, p, n_boot=20, clusters=[f"L{i // 2}" for i in range(len(y))])
    for k, code in enumerate(CLASS_CODES):
        argmax = recall_score(y_idx == k, np.argmax(p, axis=1) == k)
        isic = recall_score(y_idx == k, p[:, k] > 0.5)
        assert report["per_class"][code]["sensitivity"] == pytest.approx(argmax)
        assert report["per_class"][code]["p_over_0_5"]["sensitivity"] == pytest.approx(isic)
    assert report["ci"]["resampled"] == "lesions" and report["ci"]["resampled_units"] == len(y) // 2
    assert set(report["per_class_definitions"]) == {"argmax", "p_over_0_5"}


def test_evidence_line_counts_images_lesions_and_labels() -> None:
    samples = [
        Sample("a", Path("a.jpg"), "mel", lesion_id="L1"),
        Sample("b", Path("b.jpg"), "mel", lesion_id="L1"),
        Sample("c", Path("c.jpg"), "nv", lesion_id="L2"),
    ]
    line = evidence_line(samples, n_images=5)
    assert (line["images"], line["lesions"], line["classes"]) == (3, 2, 2)
    assert line["text"].startswith("Quality figures rest on 3 labelled images of 2 lesions, 2 of 7 classes")


def test_overlap_warning_puts_stated_figures_beside_measured() -> None:
    stated = stated_test_figures({}, "sklesion-0.2.2")
    assert stated is not None and stated["balanced_accuracy"] == 0.723 and stated["melanoma_recall"] == 0.579
    text = overlap_in_context(
        "Overlap!", stated, {"accuracy": 0.9, "balanced_accuracy": 0.95, "melanoma": {"sensitivity": 1.0}}
    )
    assert "accuracy 0.825 stated vs 0.900 measured" in text
    assert "balanced accuracy 0.723 stated vs 0.950 measured" in text
    assert "melanoma recall 0.579 stated vs 1.000 measured" in text


# --- end to end: metadata variants, same model, exports scored by the official ISIC scorer -------------------


def _isic_scorer() -> str:
    local = Path(__file__).resolve().parents[1] / ".venv-isic" / "bin" / "isic-challenge-scoring"
    found = (
        os.environ.get("DERM_CLOUD_ISIC_SCORING")
        or shutil.which("isic-challenge-scoring")
        or (str(local) if local.exists() else None)
    )
    if not found or not Path(found).exists():
        pytest.fail(
            "isic-challenge-scoring not found: set DERM_CLOUD_ISIC_SCORING to its path (scripts/test.sh installs "
            "it into .venv-isic: python -m venv .venv-isic && .venv-isic/bin/pip install isic-challenge-scoring "
            "'pandas<3')"
        )
    return found


@pytest.fixture(scope="module")
def meta_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from derm_cloud.testing.tiny_models import build_tiny_onnx_model

    return build_tiny_onnx_model(tmp_path_factory.mktemp("meta") / "m", with_metadata=True, model_id="tiny-meta")


def test_comparison_runs_one_mode_checks_same_model_and_exports_scoreable_files(
    tmp_path: Path, meta_model_dir: Path, tiny_model_dir: Path
) -> None:
    off = {"enabled": False}
    cfg: dict[str, Any] = {
        "title": "parity",
        "output": str(tmp_path / "out"),
        "seed": 1,
        "dataset": {"source": str(DEV_CSV), "limit": 30},
        "fairness": {"skin_tone": "none", "min_group_size": 5},
        "metadata": {"variants": True},
        "scenarios": {"bootstrap": 50, **{s: off for s in ("single_stream", "server", "offline", "cold_start")}},
        "backends": [
            {"name": "meta-a", "type": "local-onnx", "options": {"model_dir": str(meta_model_dir)}},
            {"name": "meta-b", "type": "local-onnx", "options": {"model_dir": str(meta_model_dir)}},
            {"name": "image-only", "type": "local-onnx", "options": {"model_dir": str(tiny_model_dir)}},
        ],
    }
    result = run_comparison(cfg, progress=False)
    s = result.summary
    meta = s["metadata"]["backends"]
    assert {n: (r["can_use"], r["sent"]) for n, r in meta.items()} == {
        "meta-a": (True, False),
        "meta-a +metadata": (True, True),
        "meta-b": (True, False),
        "meta-b +metadata": (True, True),
        "image-only": (False, False),
    }
    assert not any("MIXED METADATA" in w for w in s["warnings"])
    groups = {tuple(g["backends"]): g for g in s["same_model"]["groups"]}
    blind = groups[("meta-a", "meta-b")]["pairs"][0]
    assert blind["max_abs_gap"] == 0.0 and blind["mismatch"] is False
    assert s["evidence"]["images"] == 30 and s["evidence"]["lesions"] <= 30
    from derm_cloud.commands.compare import _headline

    terminal = _headline(s)  # the CLI's table keeps quality, latency and cost columns, chosen by name
    assert all(h in terminal[0] for h in ("backend", "metadata", "balanced acc. [95% CI]", "p50 / p90 / p99 ms"))
    assert len(terminal) == 1 + len(meta)
    md = result.markdown.read_text()
    assert md.split("## Summary", 1)[1].lstrip().startswith("Quality figures rest on 30 labelled images")
    assert "| metadata |" in md and "blind (can use)" in md and "sens. (p > 0.5)" in md
    assert "The latency timer starts" in md
    # Per-image exports: every backend's probabilities, label and metadata mode per image.
    rows = list(csv.DictReader((result.output_dir / "predictions.csv").open()))
    assert len(rows) == 30 * 5
    jsonl = [json.loads(line) for line in (result.output_dir / "predictions.jsonl").open()]
    assert [r["image_id"] for r in jsonl] == [r["image_id"] for r in rows]
    plus = [r for r in rows if r["backend"] == "meta-a +metadata"]
    assert {r["metadata"] for r in plus} == {"used"}
    # The official ISIC scorer agrees with the report's balanced accuracy and per-class AUCs to 1e-6.
    truth = result.output_dir / "isic" / "ground_truth.csv"
    for name in ("meta-a +metadata", "image-only"):
        sub = result.output_dir / s["exports"]["isic_submissions"][name]
        proc = subprocess.run(
            [_isic_scorer(), "-o", "json", "classification", str(truth), str(sub)],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        scored = json.loads(proc.stdout)
        q = s["quality"]["backends"][name]
        assert scored["aggregate"]["balanced_accuracy"] == pytest.approx(q["balanced_accuracy"], abs=1e-6)
        per_category = scored["per_category"]
        for col, code in (("MEL", "mel"), ("NV", "nv"), ("BCC", "bcc"), ("BKL", "bkl")):
            auc = q["per_class"][code]["auc"]
            official = per_category[col] if col in per_category else {k: v[col] for k, v in per_category.items()}
            assert official["auc"] == pytest.approx(auc, abs=1e-6)
            # The ISIC per-category rule is p > 0.5: the report's p_over_0_5 figures, not the argmax ones.
            half = q["per_class"][code]["p_over_0_5"]
            assert official["sensitivity"] == pytest.approx(half["sensitivity"], abs=1e-6)
            assert official["specificity"] == pytest.approx(half["specificity"], abs=1e-6)
            probs = np.array([[float(r[f"p_{c}"]) for c in CLASS_CODES] for r in rows if r["backend"] == name])
            truth_k = np.array([r["truth"] == code for r in rows if r["backend"] == name])
            assert auc == pytest.approx(roc_auc_score(truth_k, probs[:, CLASS_CODES.index(code)]), abs=1e-9)
