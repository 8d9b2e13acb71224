"""Referral policy, the ReferralClassifier wrapper, and the referral-rate / sensitivity evaluator."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
from tests_helpers import DEV_CSV, dev_image, dev_rows

import derm_cloud
from derm_cloud.cli import main
from derm_cloud.errors import ConfigError
from derm_cloud.governance.referral import (
    Referral,
    ReferralClassifier,
    ReferralPolicy,
    calibration_split_referral,
    clustered_wilson_interval,
    cross_fit_referral,
    evaluate_referral,
    evaluate_saved_policy,
    lesion_folds,
    parse_prevalence,
    plot_referral,
    referral_markdown,
    wilson_interval,
)
from derm_cloud.taxonomy import CLASS_CODES
from derm_cloud.types import Prediction


def pred(backend: str = "local-onnx", model: str = "m", **probs: float) -> Prediction:
    rest = 1.0 - sum(probs.values())
    others = [c for c in CLASS_CODES if c not in probs]
    full = {**{c: rest / len(others) for c in others}, **probs}
    return Prediction(full, (), backend, model)


# --- rules ----------------------------------------------------------------------------------------------------------


def test_malignant_threshold_fires_at_or_above_and_names_the_figure() -> None:
    policy = ReferralPolicy(malignant_threshold=0.3, refer_on_disagreement=False)
    assert policy.evaluate(pred(mel=0.35, nv=0.6)).reasons == ["mel probability 0.350 >= 0.300 (local-onnx / m)"]
    assert policy.evaluate(pred(bcc=0.3, nv=0.65)).rules == ("malignant_probability",)
    decision = policy.evaluate(pred(mel=0.29, akiec=0.01, bcc=0.01, nv=0.69))
    assert decision.refer is False and decision.reasons == [] and decision.rules == ()
    assert "clinician" in decision.note


def test_per_class_thresholds_and_low_confidence() -> None:
    policy = ReferralPolicy(malignant_threshold=0.5, thresholds={"mel": 0.1}, min_confidence=0.6)
    assert policy.class_thresholds() == {"akiec": 0.5, "bcc": 0.5, "mel": 0.1}
    d = policy.evaluate(pred(mel=0.12, nv=0.55, bkl=0.3))
    assert d.refer and set(d.rules) == {"malignant_probability", "low_confidence"}
    assert any("top class nv has probability 0.550 < 0.600" in r for r in d.reasons)
    assert not policy.evaluate(pred(mel=0.05, nv=0.9)).refer


def test_disagreement_between_backends() -> None:
    a = pred("local-onnx", "a", nv=0.7, bkl=0.2)
    b = pred("sagemaker", "b", bkl=0.6, nv=0.3)
    c = pred("vertex", "c", mel=0.6, nv=0.3)
    top1 = ReferralPolicy(malignant_threshold=None)
    assert top1.evaluate([a, b]).rules == ("disagreement",)
    assert "local-onnx / a says nv" in top1.evaluate([a, b]).reasons[0]
    assert not top1.evaluate([a, a]).refer
    malignancy = ReferralPolicy(malignant_threshold=None, disagreement="malignancy")
    assert not malignancy.evaluate([a, b]).refer  # both benign
    assert malignancy.evaluate([a, c]).rules == ("disagreement",)
    assert not ReferralPolicy(malignant_threshold=None, refer_on_disagreement=False).evaluate([a, c]).refer


def test_unmapped_model_always_refers() -> None:
    generic = Prediction({}, (), "google-vision", "labels", mapped=False)
    d = ReferralPolicy().evaluate(generic)
    assert d.refer and d.rules == ("unmapped",) and "cannot triage" in d.reasons[0]


def test_policy_validation_and_round_trip(tmp_path: Path) -> None:
    for bad in ({"malignant_threshold": 1.5}, {"min_confidence": -0.1}, {"thresholds": {"xyz": 0.2}}):
        with pytest.raises(ConfigError):
            ReferralPolicy(**bad)
    with pytest.raises(ConfigError, match="at least one prediction"):
        ReferralPolicy().evaluate([])
    policy = ReferralPolicy(malignant_threshold=0.2, thresholds={"mel": 0.05}, min_confidence=0.4)
    policy.save(tmp_path / "p.json")
    assert ReferralPolicy.load(tmp_path / "p.json") == policy
    with pytest.raises(ConfigError, match="unknown referral policy key"):
        ReferralPolicy.from_dict({"threshold": 0.1})
    assert "mel probability >= 0.05" in policy.describe()


# --- the wrapper ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def second_tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from derm_cloud.testing.tiny_models import build_tiny_onnx_model

    return build_tiny_onnx_model(tmp_path_factory.mktemp("tiny-b") / "tiny-b", seed=7, model_id="tiny-b")


def test_wrapper_returns_prediction_and_decision(tiny_model_dir: Path, second_tiny: Path) -> None:
    images = [dev_image(r) for r in dev_rows(6)]
    policy = ReferralPolicy(malignant_threshold=0.25)
    with ReferralClassifier(derm_cloud.create("local-onnx", model_dir=str(tiny_model_dir)), policy) as app:
        result = app.predict(images[0])
        assert isinstance(result, Referral)
        prediction, decision = result
        expected = any(prediction.probabilities[c] >= 0.25 for c in ("akiec", "bcc", "mel"))
        assert decision.refer == expected and decision.predictions == (prediction,)
        batch = app.predict_batch(images)
        assert [r.prediction.probabilities for r in batch] == [app.primary.predict(i).probabilities for i in images]
    with (
        derm_cloud.create("local-onnx", model_dir=str(tiny_model_dir)) as a,
        derm_cloud.create("local-onnx", model_dir=str(second_tiny)) as b,
    ):
        app = ReferralClassifier([a, b], ReferralPolicy(malignant_threshold=None), close_wrapped=False)
        for path in images:
            prediction, decision = app.predict(io.BytesIO(path.read_bytes()))  # a stream, read once for both
            other = b.predict(path)
            assert prediction.model_id == "tiny-onnx" and len(decision.predictions) == 2
            assert decision.refer == (prediction.label != other.label)
        result = asyncio.run(app.apredict(images[0]))
        assert result.prediction.probabilities == a.predict(images[0]).probabilities
        assert [i.model_id for i in app.describe()] == ["tiny-onnx", "tiny-b"]


# --- the evaluator --------------------------------------------------------------------------------------------------


def synthetic(n: int = 600, seed: int = 0) -> tuple[list[Prediction], list[str]]:
    """Labels with the dev set's rough mix, and probabilities that are informative but imperfect."""
    rng = np.random.default_rng(seed)
    labels = rng.choice(CLASS_CODES, size=n, p=[0.08, 0.13, 0.28, 0.03, 0.23, 0.21, 0.04]).tolist()
    preds = []
    for lab in labels:
        logits = rng.normal(0, 1.0, 7)
        logits[CLASS_CODES.index(lab)] += 1.5
        p = np.exp(logits) / np.exp(logits).sum()
        preds.append(Prediction(dict(zip(CLASS_CODES, p.tolist(), strict=True)), (), "local-onnx", "synthetic"))
    return preds, labels


def independent_rate(preds: list[Prediction], labels: list[str], t: float, classes: tuple[str, ...]) -> tuple:
    score = np.array([max(p.probabilities[c] for c in ("akiec", "bcc", "mel")) for p in preds])
    y = np.array(labels)
    referred = score >= t
    pos = np.isin(y, classes)
    return referred[pos].mean(), referred.mean()


@pytest.mark.parametrize("target", [0.8, 0.9, 0.95, 1.0])
def test_threshold_reaches_the_target_on_the_data_it_was_fit_on(target: float) -> None:
    preds, labels = synthetic()
    ev = evaluate_referral(preds, labels, target_sensitivity=target)
    for key, classes in (("mel", ("mel",)), ("malignant", ("akiec", "bcc", "mel"))):
        point = ev.points[key]
        sens, rate = independent_rate(preds, labels, point.threshold, classes)
        assert sens >= target and point.sensitivity == pytest.approx(sens)
        assert point.referral_rate == pytest.approx(rate)
        # It is the largest such threshold: nudging it up loses the target.
        assert independent_rate(preds, labels, np.nextafter(point.threshold, 1.0), classes)[0] < target
        policy = ev.policy(key)
        referred = [policy.evaluate(p).refer for p in preds]
        assert np.mean(referred) == pytest.approx(point.referral_rate)


def test_curve_is_monotone_and_plots() -> None:
    preds, labels = synthetic(300, seed=1)
    ev = evaluate_referral(preds, labels)
    t = np.array(ev.curve["threshold"])
    for key in ("referral_rate", "sensitivity_mel", "sensitivity_malignant"):
        values = np.array(ev.curve[key])
        assert np.all(np.diff(values) >= -1e-12)  # thresholds descend, so referrals only grow
    assert np.all(np.diff(t) < 0) and ev.curve["referral_rate"][-1] == 1.0
    assert plot_referral([ev])[:8] == b"\x89PNG\r\n\x1a\n"
    assert "## Per group" not in referral_markdown(ev) and "t = " in referral_markdown(ev)


def test_groups_base_rules_and_prevalence() -> None:
    preds, labels = synthetic(800, seed=2)
    sex = ["female" if i % 3 else "male" for i in range(len(labels))]
    site = ["scalp" if i < 20 else "back" for i in range(len(labels))]
    ev = evaluate_referral(preds, labels, groups={"sex": sex, "site": site}, min_group_positives=10)
    t = ev.points["mel"].threshold
    for g in ev.groups:
        idx = [i for i, v in enumerate(sex if g.attribute == "sex" else site) if v == g.group]
        sub_p, sub_y = [preds[i] for i in idx], [labels[i] for i in idx]
        sens, rate = independent_rate(sub_p, sub_y, t, ("mel",))
        assert g.sensitivity == pytest.approx(sens) and g.referral_rate == pytest.approx(rate)
        assert g.n == len(idx) and g.positives == sub_y.count("mel")
        assert g.too_small == (g.positives < 10)
        if g.own_threshold is not None:
            assert independent_rate(sub_p, sub_y, g.own_threshold, ("mel",))[0] >= 0.95
    assert any(g.too_small for g in ev.groups if g.group == "scalp")
    # A confidence rule refers regardless of t; the fitted t still reaches the target.
    base = ReferralPolicy(malignant_threshold=None, min_confidence=0.5)
    with_base = evaluate_referral(preds, labels, base_policy=base)
    assert with_base.points["mel"].sensitivity >= 0.95
    assert with_base.points["mel"].referral_rate >= np.mean([base.evaluate(p).refer for p in preds])
    # Re-weighting to the set's own mix changes nothing; to a 2 % melanoma mix it lowers the rate.
    mix = {c: labels.count(c) / len(labels) for c in CLASS_CODES}
    same = evaluate_referral(preds, labels, prevalence=mix).points["mel"]
    assert same.referral_rate_at_prevalence == pytest.approx(same.referral_rate)
    low = evaluate_referral(preds, labels, prevalence=parse_prevalence("mel=0.02")).points["mel"]
    assert low.referral_rate_at_prevalence < low.referral_rate


def test_wilson_interval_textbook_values() -> None:
    # Newcombe (1998), Table I: 0/10 -> 0.0000-0.2775; 5/10 -> 0.2366-0.7634 (95 %).
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert wilson_interval(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert wilson_interval(0, 0) is None


def test_evaluator_rejects_bad_input() -> None:
    preds, labels = synthetic(20)
    with pytest.raises(ConfigError, match="labels"):
        evaluate_referral(preds, labels[:-1])
    with pytest.raises(ConfigError, match="class codes"):
        evaluate_referral(preds, ["melanoma"] * 20)
    with pytest.raises(ConfigError, match="target_sensitivity"):
        evaluate_referral(preds, labels, target_sensitivity=1.5)
    with pytest.raises(ConfigError, match="CLASS=SHARE"):
        parse_prevalence("melanoma=0.1")
    assert math.isclose(sum(parse_prevalence("ham10000").values()), 1.0)


def test_cli_referral_with_tiny_model(tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "ref"
    args = ["governance", "referral", "--backend", "local-onnx", "-o", f"model_dir={tiny_model_dir}"]
    args += ["--dataset", str(DEV_CSV), "--limit", "40", "--skin-tone", "none", "--out", str(out)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    data = json.loads((out / "referral.json").read_text())
    t = data["points"]["mel"]["threshold"]
    assert f"melanoma sensitivity >= 0.95: threshold t = {t:.4f}" in printed
    assert f"referral rate {data['points']['mel']['referral_rate']:.3f}" in printed
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()[1:]]
    assert len(rows) == 40 == data["n"]
    preds = [Prediction.from_dict(r["prediction"]) for r in rows]
    sens, rate = independent_rate(preds, [r["label"] for r in rows], t, ("mel",))
    assert sens >= 0.95 and rate == pytest.approx(data["points"]["mel"]["referral_rate"])
    assert ReferralPolicy.load(out / "policy.json").malignant_threshold == pytest.approx(t)
    assert (out / "referral.png").read_bytes()[:4] == b"\x89PNG" and "Caveats" in (out / "referral.md").read_text()
    # Reusing the stored predictions gives the same figures without running the model.
    assert main([*args[:6], "--dataset", str(DEV_CSV), "--limit", "40", "--skin-tone", "none",
                 "--predictions", str(out / "predictions.jsonl"), "--json"]) == 0  # fmt: skip
    again = json.loads(capsys.readouterr().out)
    assert again["points"]["mel"]["threshold"] == t


@pytest.mark.slow
def test_sklesion_dev_subset_referral(sklesion_model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "sk"
    args = ["governance", "referral", "-o", f"model_dir={sklesion_model_dir}", "--dataset", str(DEV_CSV)]
    assert main([*args, "--limit", "150", "--skin-tone", "none", "--out", str(out)]) == 0
    data = json.loads((out / "referral.json").read_text())
    mel = data["points"]["mel"]
    assert mel["sensitivity"] >= 0.95 and 0 < mel["threshold"] < 1 and mel["referral_rate"] < 1
    assert data["model_id"] == "sklesion-0.2.2"


# --- out of sample --------------------------------------------------------------------------------------------------


def synthetic_lesions(n: int = 600, seed: int = 0) -> tuple[list[Prediction], list[str], list[str]]:
    """Synthetic predictions where some lesions have two images (same label), as in HAM10000."""
    preds, labels = synthetic(n, seed)
    lesions, current = [], 0
    for i in range(n):
        if i and labels[i] == labels[i - 1] and i % 3 == 0:
            lesions.append(lesions[-1])  # a second image of the previous lesion
        else:
            current += 1
            lesions.append(f"L{current}")
    return preds, labels, lesions


def test_lesion_folds_are_disjoint_even_and_stratified() -> None:
    _, labels, lesions = synthetic_lesions(900, seed=3)
    folds = lesion_folds(labels, lesions, folds=5, seed=0)
    by_lesion: dict[str, set[int]] = {}
    for lid, f in zip(lesions, folds, strict=True):
        by_lesion.setdefault(lid, set()).add(int(f))
    assert all(len(fs) == 1 for fs in by_lesion.values())  # no lesion straddles two folds
    mel_lesions = [sum(1 for lid, f in by_lesion.items() if f == {k} and labels[lesions.index(lid)] == "mel")
                   for k in range(5)]  # fmt: skip
    assert max(mel_lesions) - min(mel_lesions) <= 1  # stratified: melanoma lesions dealt evenly
    assert np.array_equal(folds, lesion_folds(labels, lesions, folds=5, seed=0))  # seeded
    assert not np.array_equal(folds, lesion_folds(labels, lesions, folds=5, seed=1))
    with pytest.raises(ConfigError, match="folds"):
        lesion_folds(labels[:3], lesions[:3], folds=5)


def test_cross_fitting_matches_an_independent_fold_by_fold_computation() -> None:
    preds, labels, lesions = synthetic_lesions(700, seed=4)
    held = cross_fit_referral(preds, labels, lesions, target_sensitivity=0.95, folds=4, seed=2)
    folds = lesion_folds(labels, lesions, folds=4, seed=2)
    for key, classes in (("mel", ("mel",)), ("malignant", ("akiec", "bcc", "mel"))):
        detected = positives = referred = 0
        for f in range(4):
            train = [i for i in range(len(labels)) if folds[i] != f]
            test = [i for i in range(len(labels)) if folds[i] == f]
            t = evaluate_referral([preds[i] for i in train], [labels[i] for i in train]).points[key].threshold
            assert held.points[key].thresholds[f] == pytest.approx(t)
            sub_p, sub_y = [preds[i] for i in test], [labels[i] for i in test]
            sens, rate = independent_rate(sub_p, sub_y, t, classes)
            n_pos = sum(1 for y in sub_y if y in classes)
            detected += round(sens * n_pos)
            positives += n_pos
            referred += round(rate * len(test))
        point = held.points[key]
        assert (point.detected, point.positives, point.referred) == (detected, positives, referred)
        assert point.sensitivity == pytest.approx(detected / positives)
        # Intervals count lesions, not images: the clustered Wilson interval of the same decisions.
        hits = np.zeros(len(labels), dtype=bool)
        for f in range(4):
            hits[folds == f] = [
                max(preds[i].probabilities[c] for c in ("akiec", "bcc", "mel")) >= held.points[key].thresholds[f]
                for i in np.flatnonzero(folds == f)
            ]
        pos = np.isin(labels, classes)
        assert int(hits[pos].sum()) == detected
        assert point.sensitivity_ci == pytest.approx(
            clustered_wilson_interval(hits[pos], [lid for lid, p in zip(lesions, pos, strict=True) if p])
        )
        assert point.referral_rate_ci == pytest.approx(clustered_wilson_interval(hits, lesions))
        assert point.referral_rate_ci != pytest.approx(wilson_interval(referred, len(labels)))  # lesions repeat
        in_sample = evaluate_referral(preds, labels).points[key]
        assert point.in_sample_sensitivity == pytest.approx(in_sample.sensitivity)
        assert point.in_sample_referral_rate == pytest.approx(in_sample.referral_rate)
    assert "lesion-disjoint" in held.description and "4-fold" in held.description
    line = held.headline("mel")
    assert f"{held.points['mel'].sensitivity:.3f} (95% CI" in line and "in-sample" in line


def test_calibration_split_fits_on_one_part_and_reports_the_other() -> None:
    preds, labels, lesions = synthetic_lesions(600, seed=5)
    calibrate = [i % 2 == 0 for i in range(len(labels))]
    held = calibration_split_referral(preds, labels, calibrate, lesions, split_name="cal")
    fit = [i for i, c in enumerate(calibrate) if c]
    rest = [i for i, c in enumerate(calibrate) if not c]
    t = evaluate_referral([preds[i] for i in fit], [labels[i] for i in fit]).points["mel"].threshold
    sens, rate = independent_rate([preds[i] for i in rest], [labels[i] for i in rest], t, ("mel",))
    point = held.points["mel"]
    assert point.thresholds == [pytest.approx(t)] and point.n == len(rest) == held.n_evaluated
    assert point.sensitivity == pytest.approx(sens) and point.referral_rate == pytest.approx(rate)
    assert point.in_sample_sensitivity >= 0.95
    shared = {lesions[i] for i in fit} & {lesions[i] for i in rest}
    assert shared and f"{len(shared)} lesions have images on both sides" in held.notes[0]
    with pytest.raises(ConfigError, match="calibration split 'cal' holds 0"):
        calibration_split_referral(preds, labels, [False] * len(labels), split_name="cal")


def test_saved_policy_is_applied_unchanged() -> None:
    preds, labels = synthetic(400, seed=6)
    policy = ReferralPolicy(malignant_threshold=0.2, min_confidence=0.4, refer_on_disagreement=False)
    held = evaluate_saved_policy(policy, preds, labels)
    referred = [policy.evaluate(p).refer for p in preds]
    mel = [r for r, y in zip(referred, labels, strict=True) if y == "mel"]
    assert held.points["mel"].referred == sum(referred) and held.points["mel"].detected == sum(mel)
    assert held.points["mel"].sensitivity == pytest.approx(np.mean(mel))
    assert held.points["mel"].in_sample_sensitivity is None and "in-sample" not in held.headline()


def _manifest(tmp_path: Path, name: str, rows: list[dict[str, str]], split: str | None = None) -> Path:
    path = tmp_path / name
    fields = ["image_id", "lesion_id", "dx", "age", "sex", "localization", "file"] + (["split"] if split else [])
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fields, extrasaction="ignore")
        writer.writeheader()
        for i, r in enumerate(rows):
            writer.writerow({**r, "file": str(dev_image(r)), "split": (split if i % 2 == 0 else "test")})
    return path


def test_cli_out_of_sample_headline_policy_and_overlap(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = dev_rows(160)
    fit_csv, new_csv = _manifest(tmp_path, "fit.csv", rows[:100]), _manifest(tmp_path, "new.csv", rows[100:])
    out = tmp_path / "ref"
    backend = ["governance", "referral", "-o", f"model_dir={tiny_model_dir}", "--skin-tone", "none"]
    assert main([*backend, "--dataset", str(fit_csv), "--folds", "4", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    data = json.loads((out / "referral.json").read_text())
    held = data["out_of_sample"]["points"]["mel"]
    assert "Out of sample, target sensitivity 0.95: 4-fold cross-fitting, lesion-disjoint" in printed
    assert f"melanoma sensitivity {held['sensitivity']:.3f} (95% CI {held['sensitivity_ci'][0]:.3f}" in printed
    assert printed.index("Out of sample") < printed.index("In sample")
    assert "**Out of sample**" in (out / "referral.md").read_text()
    saved = json.loads((out / "policy.json").read_text())
    assert saved["fitted_on"]["image_ids"] == [r["image_id"] for r in rows[:100]]
    assert saved["expected"]["mel"]["sensitivity"] == held["sensitivity"]
    # The saved policy on new data: its own figures, checked against an independent application of the rules.
    assert main([*backend, "--dataset", str(new_csv), "--policy", str(out / "policy.json"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    policy = ReferralPolicy.load(out / "policy.json")
    with derm_cloud.create("local-onnx", model_dir=str(tiny_model_dir)) as clf:
        new_preds = [clf.predict(dev_image(r), {"age": r["age"] or None, "sex": r["sex"], "site": r["localization"]})
                     for r in rows[100:]]  # fmt: skip
    mel = [policy.evaluate(p).refer for p, r in zip(new_preds, rows[100:], strict=True) if r["dx"] == "mel"]
    point = report["evaluation"]["points"]["mel"]
    assert point["detected"] == sum(mel) and point["positives"] == len(mel)
    shared = {r["lesion_id"] for r in rows[:100]} & {r["lesion_id"] for r in rows[100:]}
    notes = " ".join(report["evaluation"]["notes"])
    assert ("Not out of sample" in notes) == bool(shared)
    # Evaluating on the fitting data itself is flagged.
    assert main([*backend, "--dataset", str(fit_csv), "--policy", str(out / "policy.json")]) == 0
    assert "Not out of sample: 100 of 100 images" in capsys.readouterr().out


def test_cli_calibration_split_and_overlap_note_survives_predictions(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = _manifest(tmp_path, "split.csv", dev_rows(80), split="cal")
    out = tmp_path / "cal"
    backend = ["governance", "referral", "-o", f"model_dir={tiny_model_dir}", "--skin-tone", "none"]
    assert main([*backend, "--dataset", str(manifest), "--calibration-split", "cal", "--out", str(out), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["out_of_sample"]["n_fit"] == 40 == data["out_of_sample"]["n_evaluated"] == data["n"]
    lines = (out / "predictions.jsonl").read_text().splitlines()
    header = json.loads(lines[0])
    assert header["model_id"] == "tiny-onnx" and len(lines) == 81  # header + every image, not only the split
    # Stored predictions whose header says the model was trained on HAM10000: the overlap note survives.
    header["model_facts"] = {"training_data": "HAM10000 (ISIC 2018 task 3)"}
    (out / "predictions.jsonl").write_text("\n".join([json.dumps(header), *lines[1:]]) + "\n")
    args = [*backend, "--dataset", str(manifest), "--predictions", str(out / "predictions.jsonl")]
    assert main(args) == 0
    assert "note: Training-data overlap: Possible train/test overlap" in capsys.readouterr().out
    # Without a header (another tool's file), the HAM10000 image ids alone still raise it.
    (out / "predictions.jsonl").write_text("\n".join(lines[1:]) + "\n")
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "note: Training-data overlap: The model declares no training data" in printed
    # Nor does it say whose probabilities these are: a policy fitted on it could never be checked.
    assert "records no model or metadata mode" in printed and "unless --allow-mismatch" in printed
