"""A referral policy that keeps its promise: conservative fitting, policy.json as a versioned artefact, and the
comparator's predictions.jsonl as input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from tests_helpers import DEV_CSV

from derm_cloud.cli import main
from derm_cloud.errors import PolicyMismatchError
from derm_cloud.governance.referral import (
    ModelIdentity,
    SavedPolicy,
    check_saved_policy,
    clustered_wilson_interval,
    cross_fit_referral,
    data_hash,
    evaluate_referral,
    lesion_folds,
    nested_conservative_referral,
    wilson_interval,
)
from derm_cloud.taxonomy import CLASS_CODES
from derm_cloud.types import Prediction

TAU_STEP = 0.001


def synthetic(n: int, seed: int, signal: float = 1.5) -> tuple[list[Prediction], list[str], list[str]]:
    """Informative but imperfect probabilities, a quarter melanoma, and some lesions with two images."""
    rng = np.random.default_rng(seed)
    labels = rng.choice(CLASS_CODES, size=n, p=[0.06, 0.1, 0.2, 0.03, 0.25, 0.32, 0.04]).tolist()
    preds, lesions, current = [], [], 0
    for i, lab in enumerate(labels):
        logits = rng.normal(0, 1.0, 7)
        logits[CLASS_CODES.index(lab)] += signal
        p = np.exp(logits) / np.exp(logits).sum()
        preds.append(Prediction(dict(zip(CLASS_CODES, p.tolist(), strict=True)), (), "local-onnx", "synthetic"))
        if i and labels[i - 1] == lab and i % 4 == 0:
            lesions.append(lesions[-1])
        else:
            current += 1
            lesions.append(f"L{current}")
    return preds, labels, lesions


def score(preds: list[Prediction]) -> np.ndarray:
    return np.array([max(p.probabilities[c] for c in ("akiec", "bcc", "mel")) for p in preds])


# --- lesion-clustered intervals ---------------------------------------------------------------------------------


def test_clustered_interval_counts_lesions_not_images() -> None:
    rng = np.random.default_rng(0)
    hits = rng.random(200) < 0.9
    k = int(hits.sum())
    singles = [f"L{i}" for i in range(200)]
    assert clustered_wilson_interval(hits, singles) == pytest.approx(wilson_interval(k, 200))
    # Every lesion photographed three times with the same outcome: the information of 200 images, not 600.
    tripled = np.repeat(hits, 3)
    assert clustered_wilson_interval(tripled, np.repeat(singles, 3).tolist()) == pytest.approx(wilson_interval(k, 200))
    assert clustered_wilson_interval(tripled, [f"I{i}" for i in range(600)]) == pytest.approx(
        wilson_interval(3 * k, 600)
    )
    # All referred: no spread to estimate from, each lesion counts once.
    assert clustered_wilson_interval(np.ones(600, bool), np.repeat(singles, 3).tolist()) == pytest.approx(
        wilson_interval(200, 200)
    )
    assert clustered_wilson_interval(np.array([], bool), []) is None


# --- conservative fitting -------------------------------------------------------------------------------------------


def inner_bound(preds: list[Prediction], labels: list[str], lesions: list[str], tau: float, folds: int) -> float:
    """The lower bound of the inner folds' held-out melanoma sensitivity at in-sample target ``tau``."""
    ci = cross_fit_referral(preds, labels, lesions, target_sensitivity=tau, folds=folds, seed=0).points["mel"]
    assert ci.sensitivity_ci is not None
    return ci.sensitivity_ci[0]


def test_conservative_threshold_is_the_smallest_target_whose_inner_bound_reaches_the_goal() -> None:
    preds, labels, lesions = synthetic(1500, seed=1)
    fit = nested_conservative_referral(
        preds, labels, lesions, target_sensitivity=0.85, margin=0.0, outer_folds=4, inner_folds=4, repeats=1
    )
    # Checked with the public cross-fitting: the chosen tau's inner bound reaches 0.85, one step less does not.
    assert fit.reachable and fit.tau > 0.85
    assert inner_bound(preds, labels, lesions, fit.tau, 4) >= 0.85
    assert inner_bound(preds, labels, lesions, round(fit.tau - TAU_STEP, 6), 4) < 0.85
    assert fit.inner_lower_bound == pytest.approx(inner_bound(preds, labels, lesions, fit.tau, 4))
    # The shipped threshold is the plain fit to that tau on all the data; it refers more than the plain fit.
    plain = evaluate_referral(preds, labels, target_sensitivity=0.85).points["mel"]
    assert fit.threshold == pytest.approx(
        evaluate_referral(preds, labels, target_sensitivity=fit.tau).points["mel"].threshold
    )
    assert fit.threshold < plain.threshold and fit.in_sample_referral_rate > plain.referral_rate
    assert fit.policy().malignant_threshold == pytest.approx(fit.threshold)


def test_outer_folds_measure_the_whole_procedure_and_the_bound_reaches_the_target() -> None:
    preds, labels, lesions = synthetic(1500, seed=2)
    fit = nested_conservative_referral(
        preds, labels, lesions, target_sensitivity=0.85, margin=0.0, outer_folds=4, inner_folds=4, repeats=1
    )
    outer = lesion_folds(labels, lesions, 4, 0)
    s, y = score(preds), np.array(labels)
    referred = np.zeros(len(y), dtype=bool)
    for f in range(4):
        train = np.flatnonzero(outer != f)
        sub = ([preds[i] for i in train], [labels[i] for i in train], [lesions[i] for i in train])
        tau = fit.outer_taus[f]
        # Each outer fold reran the inner selection on its own training lesions.
        assert inner_bound(*sub, tau, 4) >= 0.85 > inner_bound(*sub, round(tau - TAU_STEP, 6), 4)
        t = evaluate_referral(sub[0], sub[1], target_sensitivity=tau).points["mel"].threshold
        assert fit.held_out.points["mel"].thresholds[f] == pytest.approx(t)
        referred[outer == f] = s[outer == f] >= t
    mel = y == "mel"
    point = fit.held_out.points["mel"]
    assert (point.detected, point.positives, point.referred) == (
        int(referred[mel].sum()),
        int(mel.sum()),
        int(referred.sum()),
    )
    assert point.sensitivity_ci == pytest.approx(
        clustered_wilson_interval(referred[mel], np.array(lesions)[mel].tolist())
    )
    # The promise: the out-of-sample lower bound reaches the target, where the plain fit's does not.
    assert fit.keeps_promise and point.sensitivity_ci[0] >= 0.85
    plain = cross_fit_referral(preds, labels, lesions, target_sensitivity=0.85, folds=4, seed=0).points["mel"]
    assert plain.sensitivity_ci is not None and plain.sensitivity_ci[0] < 0.85
    assert point.referral_rate > plain.referral_rate  # what the promise costs
    assert "keeps the target 0.85" in fit.headline()


# --- policy.json as a versioned artefact; the comparator's predictions.jsonl as input ---------------------------

OFF = {"enabled": False}
SCENARIOS = {"warmup": 0, "bootstrap": 20, "single_stream": OFF, "server": OFF, "offline": OFF, "cold_start": OFF}
REFERRAL = ["governance", "referral", "--skin-tone", "none"]
SUBSET = ["--dataset", str(DEV_CSV), "--limit", "24", "--seed", "0"]


@pytest.fixture(scope="module")
def compare_run(tmp_path_factory: pytest.TempPathFactory, tiny_meta_model_dir: Path) -> Path:
    """A real comparison: a model that reads metadata, locally and behind the SageMaker emulator, both modes."""
    from derm_cloud.compare import run_comparison

    out = tmp_path_factory.mktemp("compare") / "run"
    backends = [
        {"name": "local", "type": "local-onnx", "options": {"model_dir": str(tiny_meta_model_dir)}},
        {"name": "sm", "type": "sagemaker", "emulate": True, "model_dir": str(tiny_meta_model_dir)},
    ]
    config = {
        "title": "referral input",
        "output": str(out),
        "seed": 0,
        "dataset": {"source": str(DEV_CSV), "limit": 24},
        "metadata": {"mode": "blind", "variants": True},
        "scenarios": SCENARIOS,
        "backends": backends,
    }
    run_comparison(config)
    return out


def test_referral_reads_the_comparators_predictions_jsonl(
    compare_run: Path, tiny_meta_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from derm_cloud.compare.run.facts import model_fingerprint

    file = str(compare_run / "predictions.jsonl")
    names = list(dict.fromkeys(json.loads(line)["backend"] for line in Path(file).read_text().splitlines()))
    assert sorted(names) == ["local", "local +metadata", "sm", "sm +metadata"]
    # Several backends and none named: a clear error listing them.
    assert main([*REFERRAL, *SUBSET, "--predictions", file]) == 1
    err = capsys.readouterr().err
    assert f"holds 4 backends ({', '.join(names)}); name the one to use with --backend NAME" in err
    assert main([*REFERRAL, *SUBSET, "--predictions", file, "--backend", "nope"]) == 1
    assert f"has no backend 'nope'; it holds: {', '.join(names)}" in capsys.readouterr().err
    # The comparison used 24 of dev.csv's images: the error says how to select the same ones.
    assert main([*REFERRAL, "--dataset", str(DEV_CSV), "--predictions", file, "--backend", "local"]) == 1
    assert "pass --limit 24 --seed 0 with the same --dataset" in capsys.readouterr().err
    # One backend picked: the same figures as running the model itself, and its identity from report.json.
    assert main([*REFERRAL, *SUBSET, "--predictions", file, "--backend", "local +metadata", "--json"]) == 0
    stored = json.loads(capsys.readouterr().out)
    live_args = [*REFERRAL, *SUBSET, "-o", f"model_dir={tiny_meta_model_dir}", "--json"]
    assert main(live_args) == 0
    live = json.loads(capsys.readouterr().out)
    # (one image at a time in the comparator, batched here: float32 sums differ in the last bits)
    assert stored["points"]["mel"]["threshold"] == pytest.approx(live["points"]["mel"]["threshold"], rel=1e-5)
    for key in ("detected", "positives", "referred", "n"):
        assert stored["out_of_sample"]["points"]["mel"][key] == live["out_of_sample"]["points"]["mel"][key]
    fingerprint = model_fingerprint(tiny_meta_model_dir)
    assert stored["model"] == {"backend": "local +metadata", "model_id": "tiny-meta", "fingerprint": fingerprint,
                               "metadata_mode": "used"}  # fmt: skip
    assert live["model"]["fingerprint"] == fingerprint and live["model"]["metadata_mode"] == "used"
    assert main([*REFERRAL, *SUBSET, "--predictions", file, "--backend", "sm", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["model"]["metadata_mode"] == "blind"


def test_policy_fitted_with_metadata_is_refused_on_metadata_free_predictions(
    compare_run: Path, tiny_meta_model_dir: Path, tiny_model_dir: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    from derm_cloud.compare.run.facts import model_fingerprint

    fit = tmp_path / "fit"
    meta_model = ["-o", f"model_dir={tiny_meta_model_dir}"]
    assert main([*REFERRAL, *SUBSET, *meta_model, "--out", str(fit)]) == 0
    capsys.readouterr()
    policy_file = str(fit / "policy.json")
    saved = json.loads(Path(policy_file).read_text())
    assert saved["schema_version"] == 2 and saved["metadata_mode"] == "used"
    assert saved["model"] == {"backend": "local-onnx", "model_id": "tiny-meta",
                              "fingerprint": model_fingerprint(tiny_meta_model_dir)}  # fmt: skip
    assert saved["target"] == {"classes": "mel", "sensitivity": 0.95, "margin": 0.0}
    assert saved["method"]["name"] == "point" and saved["expected"]["mel"]["sensitivity_ci"]
    rows = [json.loads(line) for line in (fit / "predictions.jsonl").read_text().splitlines()[1:]]
    preds = [Prediction.from_dict(r["prediction"]) for r in rows]
    assert saved["data_hash"] == data_hash([r["image_id"] for r in rows], [r["label"] for r in rows], preds)
    # The same model without metadata: refused, in one line naming both modes and the fix.
    assert main([*REFERRAL, *SUBSET, *meta_model, "--no-metadata", "--policy", policy_file]) == 1
    err = capsys.readouterr().err.strip()  # refused before the model ran: no progress line
    assert err.startswith("derm-cloud: error: PolicyMismatchError:") and "\n" not in err
    tiny_meta = f"tiny-meta (fingerprint {model_fingerprint(tiny_meta_model_dir)[:12]})"
    assert f"was fitted on {tiny_meta} with patient metadata but these predictions are from {tiny_meta} without " in err
    assert "the metadata mode differs" in err and "refit the policy" in err and "--allow-mismatch" in err
    # The comparator's metadata-free rows of the same model behind SageMaker: refused; its +metadata rows: the
    # same fingerprint in the same mode, so accepted.
    comparator = ["--predictions", str(compare_run / "predictions.jsonl")]
    assert main([*REFERRAL, *SUBSET, *comparator, "--backend", "sm", "--policy", policy_file]) == 1
    assert "without patient metadata" in capsys.readouterr().err
    assert main([*REFERRAL, *SUBSET, *comparator, "--backend", "sm +metadata", "--policy", policy_file]) == 0
    assert "these are the very labels" not in capsys.readouterr().out.lower()  # SageMaker's float32 round trip
    # Another model: refused, naming both models by fingerprint.
    assert main([*REFERRAL, *SUBSET, "-o", f"model_dir={tiny_model_dir}", "--policy", policy_file]) == 1
    err = capsys.readouterr().err
    assert f"fitted on {tiny_meta} with patient metadata but these predictions are from tiny-onnx (fingerprint " in err
    assert (
        f"{model_fingerprint(tiny_model_dir)[:12]}) without patient metadata: the model (compared by fingerprint)"
        in err
    )
    # The override: applied, and the result records that it was used and what differed.
    out = tmp_path / "override"
    args = [*REFERRAL, *SUBSET, *meta_model, "--no-metadata", "--policy", policy_file, "--allow-mismatch"]
    assert main([*args, "--out", str(out)]) == 0
    assert "note: OVERRIDE (--allow-mismatch): applied although metadata_mode differs" in capsys.readouterr().out
    record = json.loads((out / "policy-evaluation.json").read_text())
    assert record["override"] == {
        "allow_mismatch": True,
        "used": True,
        "differences": [{"field": "metadata_mode", "policy": "with patient metadata",
                         "predictions": "without patient metadata", "how": ""}],
    }  # fmt: skip
    assert record["predictions_model"]["metadata_mode"] == "blind" and record["model"]["model_id"] == "tiny-meta"
    # The same data the policy was fitted on, same mode: accepted, and the data hash says it is that very data.
    assert main([*REFERRAL, *SUBSET, *meta_model, "--policy", policy_file]) == 0
    assert "very labels and probabilities the policy was fitted on" in capsys.readouterr().out


def test_policy_file_without_schema_version_is_refused_unless_overridden(
    tiny_meta_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old = tmp_path / "old-policy.json"
    old.write_text(json.dumps({"policy": {"malignant_threshold": 0.2, "refer_on_disagreement": False}}))
    args = [*REFERRAL, *SUBSET, "-o", f"model_dir={tiny_meta_model_dir}", "--policy", str(old)]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "has no schema_version" in err and "--allow-mismatch" in err
    assert main([*args, "--allow-mismatch", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["override"]["used"] and record["override"]["differences"][0]["field"] == "schema"


def test_library_check_refuses_and_records_the_override(tiny_meta_model_dir: Path, tmp_path: Path) -> None:
    from derm_cloud.data import load_dataset

    fit = tmp_path / "fit"
    assert main([*REFERRAL, *SUBSET, "-o", f"model_dir={tiny_meta_model_dir}", "--out", str(fit)]) == 0
    saved = SavedPolicy.load(fit / "policy.json")
    assert saved.identity is not None and saved.identity.metadata_mode == "used"
    samples = list(load_dataset(DEV_CSV).subset(24, seed=0))
    rows = [json.loads(line) for line in (fit / "predictions.jsonl").read_text().splitlines()[1:]]
    preds = [Prediction.from_dict(r["prediction"]) for r in rows]
    blind = ModelIdentity("local-onnx", "tiny-meta", saved.identity.fingerprint, "blind")
    common = {"dataset_name": "dev", "source": "dev.csv", "policy_file": "policy.json"}
    with pytest.raises(PolicyMismatchError) as caught:
        check_saved_policy(saved, samples, preds, identity=blind, **common)
    assert caught.value.differences == [{"field": "metadata_mode", "policy": "with patient metadata",
                                         "predictions": "without patient metadata", "how": ""}]  # fmt: skip
    held, record = check_saved_policy(saved, samples, preds, identity=blind, allow_mismatch=True, **common)
    assert record["override"]["used"] and held.notes[0].startswith("OVERRIDE")
    same = check_saved_policy(saved, samples, preds, identity=saved.identity, **common)[1]
    assert same["override"] == {"allow_mismatch": False, "used": False, "differences": []}


@pytest.mark.slow
def test_sklesion_policy_with_metadata_is_refused_without(
    sklesion_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The issue's case with the real model: fitted with metadata, applied to metadata-free predictions."""
    from derm_cloud.compare.run.facts import model_fingerprint

    model = ["-o", f"model_dir={sklesion_model_dir}", "--dataset", str(DEV_CSV), "--skin-tone", "none"]
    fit = tmp_path / "fit"
    assert main(["governance", "referral", *model, "--limit", "120", "--fit", "conservative", "--out", str(fit)]) == 0
    saved = json.loads((fit / "policy.json").read_text())
    assert saved["model"]["model_id"] == "sklesion-0.2.2" and saved["metadata_mode"] == "used"
    assert saved["model"]["fingerprint"] == model_fingerprint(sklesion_model_dir)
    assert saved["method"]["name"] == "conservative" and saved["target"]["margin"] == 0.0075
    printed = capsys.readouterr().out
    # 120 images hold about 25 melanomas: no threshold can bound sensitivity at 0.95 from so few, and it says so.
    assert "not reachable" in printed and "MISSES the target 0.95" in printed
    new = ["--limit", "60", "--seed", "1", "--policy", str(fit / "policy.json")]
    assert main(["governance", "referral", *model, *new, "--no-metadata"]) == 1
    err = capsys.readouterr().err
    assert "with patient metadata but these predictions are from sklesion-0.2.2" in err
    assert "without patient metadata: the metadata mode differs" in err
    assert main(["governance", "referral", *model, *new, "--no-metadata", "--allow-mismatch", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["override"]["used"] and record["predictions_model"]["metadata_mode"] == "blind"
    assert main(["governance", "referral", *model, *new, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["override"]["used"] is False
