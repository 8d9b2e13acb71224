"""Quality, calibration, bootstrap and agreement metrics against independent oracles on the same data:
scikit-learn (accuracy, balanced accuracy, recall, precision, ROC AUC, ROC curve, confusion matrix, Brier, log loss,
Cohen's kappa), numpy by hand (ECE, Bayes PPV/NPV, Scott's pi) and the Fleiss (1971) textbook example."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from sklearn import metrics as skm

from derm_cloud.compare.analysis.agreement import agreement_report, cohen_kappa, fleiss_kappa, fleiss_kappa_from_labels
from derm_cloud.compare.analysis.bootstrap import bootstrap_ci, bootstrap_distribution, resample_indices
from derm_cloud.compare.analysis.calibration import brier, classwise_ece, ece, log_loss, reliability_bins
from derm_cloud.compare.analysis.metric_inputs import as_indices
from derm_cloud.compare.analysis.metrics import (
    HAM10000_PREVALENCE,
    accuracy,
    ppv_npv_at_prevalence,
    sensitivity_at_specificity,
)
from derm_cloud.compare.analysis.quality_report import quality_report
from derm_cloud.errors import ConfigError
from derm_cloud.taxonomy import CLASS_CODES, MALIGNANT_CODES
from derm_cloud.types import Prediction

CODES = np.array(CLASS_CODES)


def _data(n: int, seed: int, *, informative: bool = True, round_to: int | None = None) -> tuple[list[str], np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.choice(CODES, size=n, p=[0.08, 0.13, 0.28, 0.03, 0.23, 0.21, 0.04])
    p = rng.dirichlet(np.ones(7) * 0.7, size=n)
    if informative:  # make the classifier better than chance so AUCs and thresholds are non-trivial
        p[np.arange(n), as_indices(y)] += rng.uniform(0, 1.5, size=n)
        p /= p.sum(axis=1, keepdims=True)
    if round_to is not None:  # many exact ties
        p = np.round(p, round_to) + 1e-12
        p /= p.sum(axis=1, keepdims=True)
    return list(y), p


def _check_against_sklearn(y: list[str], p: np.ndarray, r: dict) -> None:
    pred = CODES[np.argmax(p, axis=1)]
    ya = np.array(y)
    assert r["accuracy"] == pytest.approx(skm.accuracy_score(ya, pred), abs=1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn warns when y_pred has classes absent from y_true
        assert r["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(ya, pred), abs=1e-12)
    cm = skm.confusion_matrix(ya, pred, labels=list(CLASS_CODES))
    assert r["confusion_matrix"]["matrix"] == cm.tolist()
    recall = skm.recall_score(ya, pred, labels=list(CLASS_CODES), average=None, zero_division=np.nan)
    precision = skm.precision_score(ya, pred, labels=list(CLASS_CODES), average=None, zero_division=np.nan)
    aucs = []
    for k, code in enumerate(CLASS_CODES):
        entry = r["per_class"][code]
        tn = cm.sum() - cm[k, :].sum() - cm[:, k].sum() + cm[k, k]
        fp = cm[:, k].sum() - cm[k, k]
        expected_spec = tn / (tn + fp) if tn + fp else None
        assert entry["support"] == int(np.sum(ya == code))
        assert (entry["sensitivity"] is None) == bool(np.isnan(recall[k]))
        if entry["sensitivity"] is not None:
            assert entry["sensitivity"] == pytest.approx(recall[k], abs=1e-12)
        if entry["ppv"] is not None:
            assert entry["ppv"] == pytest.approx(precision[k], abs=1e-12)
        if expected_spec is not None:
            assert entry["specificity"] == pytest.approx(expected_spec, abs=1e-12)
        truth = ya == code
        if 0 < truth.sum() < len(ya):
            expected_auc = skm.roc_auc_score(truth, p[:, k])
            assert entry["auc"] == pytest.approx(expected_auc, abs=1e-12)
            aucs.append(expected_auc)
        else:
            assert entry["auc"] is None and entry["auc_undefined_reason"]
    assert (r["macro_auc"] is None) == (not aucs)
    if aucs:
        assert r["macro_auc"] == pytest.approx(np.mean(aucs), abs=1e-12)
    mal_truth = np.isin(ya, sorted(MALIGNANT_CODES))
    mal_pred = np.isin(pred, sorted(MALIGNANT_CODES))
    if mal_truth.any():
        assert r["malignant"]["sensitivity"] == pytest.approx(skm.recall_score(mal_truth, mal_pred), abs=1e-12)
    if (~mal_truth).any():
        assert r["malignant"]["specificity"] == pytest.approx(skm.recall_score(~mal_truth, ~mal_pred), abs=1e-12)
    if 0 < mal_truth.sum() < len(ya):
        mal_score = p[:, [CLASS_CODES.index(c) for c in sorted(MALIGNANT_CODES)]].sum(axis=1)
        assert r["malignant"]["auc"] == pytest.approx(skm.roc_auc_score(mal_truth, mal_score), abs=1e-12)
    assert r["calibration"]["brier"] == pytest.approx(skm.brier_score_loss(ya, p, labels=list(CLASS_CODES)))
    assert r["calibration"]["log_loss"] == pytest.approx(skm.log_loss(ya, y_proba=p, labels=list(CLASS_CODES)))
    json.dumps(r, allow_nan=False)  # JSON-compatible: no NaN, no numpy types


@pytest.mark.parametrize(
    ("n", "seed", "informative", "round_to"), [(600, 0, True, None), (400, 1, False, None), (500, 2, True, 1)]
)
def test_quality_report_equals_sklearn_on_random_data(
    n: int, seed: int, informative: bool, round_to: int | None
) -> None:
    y, p = _data(n, seed, informative=informative, round_to=round_to)
    r = quality_report(y, p, n_boot=0)
    _check_against_sklearn(y, p, r)
    # With every class present, the macro AUC is sklearn's one-vs-rest macro AUC.
    assert r["macro_auc"] == pytest.approx(
        skm.roc_auc_score(np.array(y), p, multi_class="ovr", labels=list(CLASS_CODES)), abs=1e-12
    )


def test_absent_class_and_single_class_edge_cases() -> None:
    y, p = _data(300, 3)
    keep = [i for i, label in enumerate(y) if label != "df"]
    y_no_df, p_no_df = [y[i] for i in keep], p[keep]
    r = quality_report(y_no_df, p_no_df, n_boot=0)
    _check_against_sklearn(y_no_df, p_no_df, r)
    assert r["per_class"]["df"]["auc_undefined_reason"] == "no positive samples in y_true"
    assert "df" not in r["macro_auc_classes"] and any("df" in w for w in r["warnings"])

    only_mel = ["mel"] * 20
    r1 = quality_report(only_mel, p[:20], n_boot=50)
    _check_against_sklearn(only_mel, p[:20], r1)
    assert r1["macro_auc"] is None and r1["per_class"]["mel"]["auc_undefined_reason"] == "no negative samples in y_true"
    assert r1["melanoma"]["at_specificity"][0]["sensitivity"] is None
    assert r1["ci"]["macro_auc"] == [None, None]
    assert r1["ci"]["accuracy"][0] is not None


def test_argmax_ties_break_in_canonical_order_like_prediction() -> None:
    p = np.full((3, 7), 1 / 7)
    p[1, [2, 5]] = 0.3  # bkl and nv tie
    p[1] /= p[1].sum()
    r = quality_report(["akiec", "bkl", "nv"], p, n_boot=0)
    preds = [Prediction(dict(zip(CLASS_CODES, row, strict=True)), (), "t", "m").label for row in p]
    assert preds == ["akiec", "bkl", "akiec"]
    cm = np.array(r["confusion_matrix"]["matrix"])
    assert cm[0, 0] == cm[2, 2] == 1 and cm[5, 0] == 1 and cm.sum() == 3  # the all-equal nv row -> akiec
    assert r["accuracy"] == pytest.approx(2 / 3)


def test_sensitivity_at_specificity_matches_sklearn_roc_curve() -> None:
    for seed, round_to in [(4, None), (5, 1), (6, 2)]:
        y, p = _data(700, seed, round_to=round_to)
        truth = np.array(y) == "mel"
        score = p[:, CLASS_CODES.index("mel")]
        fpr, tpr, thr = skm.roc_curve(truth, score, drop_intermediate=False)
        for target in (0.8, 0.9, 0.95, 1.0):
            ok = np.flatnonzero(1 - fpr >= target - 1e-12)
            best = ok[np.argmax(tpr[ok])]
            got = sensitivity_at_specificity(truth, score, target)
            assert got["sensitivity"] == pytest.approx(tpr[best])
            assert got["specificity"] == pytest.approx(1 - fpr[best])
            assert got["specificity"] >= target - 1e-12
            if np.isfinite(thr[best]):
                assert got["threshold"] == pytest.approx(thr[best])
                # The stated threshold reproduces the stated sensitivity.
                assert np.mean(score[truth] >= got["threshold"]) == pytest.approx(got["sensitivity"])
            else:
                assert got["threshold"] is None and got["sensitivity"] == 0.0


def _hand_ece(conf: np.ndarray, hits: np.ndarray, n_bins: int) -> float:
    total = 0.0
    for b in range(n_bins):
        lo, hi = b / n_bins, (b + 1) / n_bins
        in_bin = [i for i, c in enumerate(conf) if (lo < c <= hi) or (b == 0 and c == 0)]
        if in_bin:
            total += len(in_bin) / len(conf) * abs(np.mean(hits[in_bin]) - np.mean(conf[in_bin]))
    return total


def test_ece_classwise_and_reliability_against_hand_computation() -> None:
    y, p = _data(400, 7)
    idx = as_indices(y)
    conf, pred = p.max(axis=1), p.argmax(axis=1)
    assert ece(y, p) == pytest.approx(_hand_ece(conf, (pred == idx).astype(float), 15), abs=1e-12)
    assert ece(y, p, n_bins=10) == pytest.approx(_hand_ece(conf, (pred == idx).astype(float), 10), abs=1e-12)
    cw = classwise_ece(y, p)
    for k, code in enumerate(CLASS_CODES):
        assert cw["per_class"][code] == pytest.approx(_hand_ece(p[:, k], (idx == k).astype(float), 15), abs=1e-12)
    assert cw["mean"] == pytest.approx(np.mean(list(cw["per_class"].values())))
    rel = reliability_bins(y, p)
    assert len(rel["edges"]) == 16 and sum(rel["counts"]) == 400
    for b, count in enumerate(rel["counts"]):
        lo, hi = rel["edges"][b], rel["edges"][b + 1]
        members = (conf > lo) & (conf <= hi)
        assert count == members.sum()
        if count:
            assert rel["confidence"][b] == pytest.approx(conf[members].mean())
            assert rel["accuracy"][b] == pytest.approx((pred == idx)[members].mean())
        else:
            assert rel["confidence"][b] is None
    # Confidence exactly on a bin edge (0.2 = 3/15) belongs to the bin it closes, as (lo, hi] says.
    row = np.array([[0.2, 0.2, 0.2, 0.2, 0.2, 0.0, 0.0]])
    assert reliability_bins(["akiec"], row)["counts"][2] == 1
    # Perfect one-hot predictions: zero ECE, zero Brier, (clipped) zero log loss.
    onehot = np.eye(7)[idx]
    assert ece(y, onehot) == 0.0 and brier(y, onehot) == 0.0 and log_loss(y, onehot) < 1e-12


def test_bootstrap_is_seeded_stratified_and_uses_the_metric_on_each_resample() -> None:
    y, p = _data(300, 8)
    idx = as_indices(y)
    draws = resample_indices(idx, 50, seed=3)
    assert draws.shape == (50, 300)
    for row in draws[:5]:
        assert np.array_equal(np.bincount(idx[row], minlength=7), np.bincount(idx, minlength=7))
    dist = bootstrap_distribution(accuracy, idx, p, n_boot=50, seed=3)
    oracle = [skm.accuracy_score(idx[row], p[row].argmax(axis=1)) for row in draws]
    assert np.allclose(dist, oracle)
    low, high = bootstrap_ci(accuracy, idx, p, n_boot=50, seed=3)
    assert (low, high) == pytest.approx(tuple(np.percentile(oracle, [2.5, 97.5])))
    assert bootstrap_ci(accuracy, idx, p, n_boot=50, seed=3) == (low, high)
    assert bootstrap_ci(accuracy, idx, p, n_boot=50, seed=4) != (low, high)
    r = quality_report(y, p, n_boot=200, seed=1)
    for key in ("accuracy", "balanced_accuracy", "macro_auc"):
        lo, hi = r["ci"][key]
        assert lo <= r[key] <= hi
    assert r["ci"]["melanoma_sensitivity"][0] <= r["melanoma"]["sensitivity"] <= r["ci"]["melanoma_sensitivity"][1]
    # A metric undefined on most resamples (unstratified, rare class) gives no interval rather than a biased one.
    never = bootstrap_ci(lambda yy, pp: None, idx, p, n_boot=20, seed=0)
    assert never == (None, None)


def test_prevalence_reweighting_follows_bayes() -> None:
    y, p = _data(800, 9)
    r = quality_report(y, p, n_boot=0, prevalence={"mel": 0.02, "bcc": 0.03, "akiec": 0.01})
    ya, pred = np.array(y), CODES[p.argmax(axis=1)]
    sens = skm.recall_score(ya == "mel", pred == "mel")
    spec = skm.recall_score(ya != "mel", pred != "mel")
    stated = r["prevalence"]["at_stated_prevalence"]
    assert stated["mel"]["ppv"] == pytest.approx(sens * 0.02 / (sens * 0.02 + (1 - spec) * 0.98))
    assert stated["mel"]["npv"] == pytest.approx(spec * 0.98 / (spec * 0.98 + (1 - sens) * 0.02))
    assert stated["malignant"]["prevalence"] == pytest.approx(0.06)
    # At the dataset's own mix, Bayes' rule gives back the empirical PPV/NPV (sklearn precision).
    share = float(np.mean(ya == "mel"))
    at_mix = ppv_npv_at_prevalence(sens, spec, share)
    assert at_mix["ppv"] == pytest.approx(skm.precision_score(ya == "mel", pred == "mel"))
    assert at_mix["npv"] == pytest.approx(skm.precision_score(ya != "mel", pred != "mel"))
    assert r["prevalence"]["at_dataset_mix"]["mel"]["ppv"] == pytest.approx(at_mix["ppv"])
    assert "not the natural prevalence" in r["prevalence"]["note"]
    assert (
        quality_report(y, p, n_boot=0, prevalence=0.05)["prevalence"]["at_stated_prevalence"]["mel"]["prevalence"]
        == 0.05
    )
    ham = quality_report(y, p, n_boot=0, prevalence=HAM10000_PREVALENCE)["prevalence"]["at_stated_prevalence"]
    assert set(ham) == {*CLASS_CODES, "malignant"}
    with pytest.raises(ConfigError, match="prevalence keys"):
        quality_report(y, p, n_boot=0, prevalence={"melanoma": 0.1})


def test_dev_mix_support_and_input_errors() -> None:
    from tests_helpers import DEV_CSV

    from derm_cloud.data import load_dataset

    ds = load_dataset(DEV_CSV)
    rng = np.random.default_rng(10)
    p = rng.dirichlet(np.ones(7), size=len(ds)) * 0.9  # rows sum to 0.9: renormalised, and said so
    r = quality_report(ds.labels, p, n_boot=0)  # type: ignore[arg-type]
    assert {c: r["per_class"][c]["support"] for c in CLASS_CODES} == ds.class_counts()
    assert any("renormalised" in w for w in r["warnings"])
    _check_against_sklearn(ds.labels, p / p.sum(axis=1, keepdims=True), r)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"y_true\[1\] is missing"):
        quality_report(["mel", None], np.eye(7)[[4, 4]])  # type: ignore[list-item]
    with pytest.raises(ConfigError, match="not a canonical code"):
        quality_report(["melanoma"], np.eye(7)[[4]])
    with pytest.raises(ConfigError, match=r"shape \(n, 7\)"):
        quality_report(["mel"], np.ones((1, 5)))
    with pytest.raises(ConfigError, match="all zero"):
        quality_report(["mel"], np.zeros((1, 7)))


# --- agreement ----------------------------------------------------------------------------------------------------


def test_fleiss_kappa_textbook_example() -> None:
    # Fleiss (1971) layout, worked example on Wikipedia ("Fleiss' kappa"): 10 subjects, 14 raters, 5 categories;
    # hand computation: p_j = .143 .200 .279 .171 .229, P-bar = 0.378, P-bar_e = 0.213, kappa = 0.210.
    table = np.array(
        [
            [0, 0, 0, 0, 14],
            [0, 2, 6, 4, 2],
            [0, 0, 3, 5, 6],
            [0, 3, 9, 2, 0],
            [2, 2, 8, 1, 1],
            [7, 7, 0, 0, 0],
            [3, 2, 6, 3, 0],
            [2, 5, 3, 2, 2],
            [6, 5, 2, 1, 0],
            [0, 2, 2, 3, 7],
        ]
    )
    assert fleiss_kappa(table) == pytest.approx(0.210, abs=5e-4)
    assert fleiss_kappa(np.array([[3, 0], [0, 3]])) == 1.0
    assert fleiss_kappa(np.array([[3, 0], [3, 0]])) is None
    with pytest.raises(ConfigError, match="same number of ratings"):
        fleiss_kappa(np.array([[2, 0], [1, 0]]))


def test_fleiss_with_two_raters_is_scotts_pi_and_cohen_matches_sklearn() -> None:
    rng = np.random.default_rng(11)
    a = list(rng.choice(CODES, size=200))
    b = [x if rng.random() < 0.6 else str(rng.choice(CODES)) for x in a]
    po = np.mean([x == y for x, y in zip(a, b, strict=True)])
    pe = sum(((a.count(c) + b.count(c)) / 400) ** 2 for c in CLASS_CODES)
    assert fleiss_kappa_from_labels([a, b]) == pytest.approx((po - pe) / (1 - pe))
    assert cohen_kappa(a, b) == pytest.approx(skm.cohen_kappa_score(a, b))
    assert cohen_kappa(["mel"] * 4, ["mel"] * 4) is None


def test_agreement_report_pairs_fleiss_and_disagreements() -> None:
    rng = np.random.default_rng(12)
    n = 120
    truth = list(rng.choice(CODES, size=n))
    backends = {
        name: [t if rng.random() < acc else str(rng.choice(CODES)) for t in truth]
        for name, acc in (("local", 0.8), ("sagemaker", 0.8), ("vertex", 0.5))
    }
    backends["vertex"][5] = None  # a failed call
    ids = [f"ISIC_{i:07d}" for i in range(n)]
    r = agreement_report(backends, ids, truth)
    pairs = {(e["a"], e["b"]): e for e in r["pairwise"]}
    for (a, b), entry in pairs.items():
        both = [(x, y) for x, y in zip(backends[a], backends[b], strict=True) if x and y]
        assert entry["n"] == len(both)
        assert entry["percent_agreement"] == pytest.approx(np.mean([x == y for x, y in both]))
        assert entry["cohen_kappa"] == pytest.approx(skm.cohen_kappa_score([x for x, _ in both], [y for _, y in both]))
    complete = [i for i in range(n) if i != 5]
    assert r["n_labelled_by_all"] == n - 1
    assert r["fleiss_kappa"] == pytest.approx(
        fleiss_kappa_from_labels([[backends[k][i] for i in complete] for k in backends])
    )
    expected = [ids[i] for i in range(n) if len({backends[k][i] for k in backends} - {None}) > 1]
    assert [d["image_id"] for d in r["disagreements"]] == expected == [d["image_id"] for d in r["disagreements"]]
    first = r["disagreements"][0]
    i = ids.index(first["image_id"])
    assert first["labels"] == {k: backends[k][i] for k in backends} and first["truth"] == truth[i]
    wrong = sum(
        1 for i in complete if len({backends[k][i] for k in backends}) == 1 and backends["local"][i] != truth[i]
    )
    assert r["agree_but_wrong"] == wrong
    assert len(agreement_report(backends, ids, truth, max_disagreements=3)["disagreements"]) == 3
    with pytest.raises(ConfigError, match="at least two backends"):
        agreement_report({"local": truth}, ids)
    with pytest.raises(ConfigError, match="has 2 labels for 120 images"):
        agreement_report({"a": truth, "b": ["mel", "nv"]}, ids)
