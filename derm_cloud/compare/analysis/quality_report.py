"""All quality figures of one backend on one labelled set, each concern in its own function.

`quality_report` assembles them: accuracy and balanced accuracy, per-class figures under two definitions (argmax
and the ISIC 2018 per-category rule p > 0.5), melanoma and malignant sensitivity at fixed specificities, the
confusion matrix, calibration, bootstrap intervals and PPV/NPV at a stated prevalence. The metrics themselves
are pure functions in `derm_cloud.compare.analysis.metrics`, checked against scikit-learn in the tests.

These are research figures about a model on a dataset. They support triage research; they are not evidence
that a model is safe to diagnose anyone, and a clinician reviews every result.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from derm_cloud.compare.analysis.bootstrap import bootstrap_ci
from derm_cloud.compare.analysis.calibration import brier, classwise_ece, ece, log_loss, reliability_bins
from derm_cloud.compare.analysis.metric_inputs import as_indices, as_probs
from derm_cloud.compare.analysis.metrics import (
    MALIGNANT_INDICES,
    MEL,
    accuracy,
    balanced_accuracy,
    confusion_matrix,
    macro_auc,
    melanoma_sensitivity,
    ppv_npv_at_prevalence,
    roc_auc,
    safe_ratio,
    sensitivity_at_specificity,
)
from derm_cloud.errors import ConfigError
from derm_cloud.taxonomy import CLASS_CODES, MALIGNANT_CODES

__all__ = ["IN_SAMPLE_METRICS", "IN_SAMPLE_REASON", "ISIC_THRESHOLD", "PER_CLASS_DEFINITIONS", "quality_report"]

K = len(CLASS_CODES)
#: The ISIC 2018 Task 3 per-category rule: a class is called when its probability exceeds 0.5.
ISIC_THRESHOLD = 0.5
PER_CLASS_DEFINITIONS = {
    "argmax": "a class is called for an image when it has the highest probability (top-1); each image gets "
    "exactly one class; balanced accuracy is the mean of these sensitivities",
    "p_over_0_5": "a class is called when its own probability exceeds 0.5 (the ISIC 2018 leaderboard's "
    "per-category rule); an image may be called for no class",
}
#: Why a sensitivity at a fixed specificity is in-sample: the report marks it so in every format.
IN_SAMPLE_REASON = (
    "in-sample: the threshold on the score is chosen on the same images the sensitivity is measured on, so the "
    "figure is optimistic; fix the threshold on another split (derm-cloud governance referral) before relying on it"
)
#: The figures of each backend's quality entry that are fitted on the data they are measured on.
IN_SAMPLE_METRICS = ("melanoma.at_specificity", "malignant.at_specificity")


def quality_report(
    y_true: Sequence[str],
    probs: np.ndarray,
    *,
    prevalence: Mapping[str, float] | float | None = None,
    specificities: Sequence[float] = (0.8, 0.9, 0.95),
    n_boot: int = 1000,
    seed: int = 0,
    n_bins: int = 15,
    dataset_note: str | None = None,
    clusters: Sequence[str | None] | None = None,
) -> dict[str, Any]:
    """All quality figures of one backend on one labelled dataset, as a JSON-compatible dict.

    Args:
        y_true: canonical codes, one per image.
        probs: `(n, 7)` probabilities in `CLASS_CODES` order (rows not summing to 1 are renormalised and
            counted in `warnings`).
        prevalence: class prevalences (`{"mel": 0.02}`; `"malignant"` accepted; a float means melanoma) at
            which PPV/NPV are re-weighted with Bayes' rule. `HAM10000_PREVALENCE` is one choice.
        specificities: fixed specificities for melanoma (and malignant) sensitivity.
        n_boot, seed: bootstrap resamples for the 95% CIs (0 skips them) and their seed.
        n_bins: calibration bins (equal width).
        dataset_note: a sentence about the evaluation set's class mix, printed with the prevalence section.
        clusters: one lesion id per image (`None` where unknown): the CIs then resample lesions (images of one
            lesion are not independent).

    Returns:
        `n`, `accuracy`, `balanced_accuracy`, `per_class`, `macro_auc`, `melanoma`, `malignant`,
        `confusion_matrix`, `calibration`, `ci`, `prevalence` and `warnings`, with their definitions.

    Raises:
        ConfigError: missing or unknown labels, or a malformed probability array.

    Example:
        >>> r = quality_report(["mel", "nv"], np.eye(7)[[4, 5]], n_boot=0)
        >>> r["accuracy"], r["melanoma"]["sensitivity"]
        (1.0, 1.0)
    """
    y = as_indices(y_true)
    if len(y) == 0:
        raise ConfigError("quality_report needs at least one labelled image")
    p, renormalised = as_probs(probs, len(y))
    per_class, malignant = _per_class(y, p), _malignant(y, p, specificities)
    groups = _lesion_clusters(clusters, len(y))
    stated = _stated_prevalence(_prevalences(prevalence), per_class, malignant)
    return {
        "n": len(y),
        "classes": list(CLASS_CODES),
        "accuracy": accuracy(y, p),
        "balanced_accuracy": balanced_accuracy(y, p),
        "balanced_accuracy_definition": "mean per-class recall over the classes present (ISIC 2018 Task 3)",
        "per_class": per_class,
        "per_class_definitions": PER_CLASS_DEFINITIONS,
        "macro_auc": macro_auc(y, p),
        "macro_auc_classes": [c for c in CLASS_CODES if per_class[c]["auc"] is not None],
        "melanoma": _melanoma(y, p, specificities),
        "malignant": malignant,
        "confusion_matrix": _confusion(y, p),
        "calibration": _calibration(y, p, n_bins),
        "ci": _intervals(y, p, n_boot, seed, groups),
        "prevalence": _prevalence_section(y, per_class, malignant, stated, dataset_note),
        "in_sample": dict.fromkeys(IN_SAMPLE_METRICS, IN_SAMPLE_REASON),
        "warnings": _warnings(y, renormalised),
    }


def _confusion(y: np.ndarray, p: np.ndarray) -> dict[str, Any]:
    return {
        "labels": list(CLASS_CODES),
        "rows": "true",
        "columns": "predicted",
        "matrix": confusion_matrix(y, p).tolist(),
    }


def _warnings(y: np.ndarray, renormalised: int) -> list[str]:
    warnings: list[str] = []
    if renormalised:
        warnings.append(f"{renormalised} probability rows did not sum to 1 and were renormalised")
    present = sorted(set(y.tolist()))
    if len(present) < K:
        missing = [CLASS_CODES[k] for k in range(K) if k not in present]
        warnings.append(f"classes absent from y_true: {', '.join(missing)} (their recall and AUC are undefined)")
    return warnings


def _binary_stats(truth: np.ndarray, called: np.ndarray) -> dict[str, Any]:
    tp = int(np.sum(truth & called))
    fn = int(np.sum(truth & ~called))
    fp = int(np.sum(~truth & called))
    tn = int(np.sum(~truth & ~called))
    return {
        "support": tp + fn,
        "predicted": tp + fp,
        "sensitivity": safe_ratio(tp, tp + fn),
        "specificity": safe_ratio(tn, tn + fp),
        "ppv": safe_ratio(tp, tp + fp),
        "npv": safe_ratio(tn, tn + fn),
    }


def _auc_entry(truth: np.ndarray, scores: np.ndarray) -> tuple[float | None, str | None]:
    auc = roc_auc(truth, scores)
    if auc is not None:
        return auc, None
    return None, "no positive samples in y_true" if not truth.any() else "no negative samples in y_true"


def _per_class(y: np.ndarray, p: np.ndarray) -> dict[str, Any]:
    """Per class, one-vs-rest: counts, sensitivity, specificity, PPV, NPV and AUC; at argmax and at p > 0.5."""
    pred = np.argmax(p, axis=1)
    per_class: dict[str, Any] = {}
    for k, code in enumerate(CLASS_CODES):
        entry = _binary_stats(y == k, pred == k)
        entry["auc"], entry["auc_undefined_reason"] = _auc_entry(y == k, p[:, k])
        # The ISIC 2018 leaderboard's per-category figures call a class when its own probability exceeds 0.5.
        entry["p_over_0_5"] = _binary_stats(y == k, p[:, k] > ISIC_THRESHOLD)
        per_class[code] = entry
    return per_class


def _melanoma(y: np.ndarray, p: np.ndarray, specificities: Sequence[float]) -> dict[str, Any]:
    """Melanoma against the rest: at argmax, its AUC on p(mel), and the sensitivity at fixed specificities."""
    truth = y == MEL
    return {
        **_binary_stats(truth, np.argmax(p, axis=1) == MEL),
        "auc": _auc_entry(truth, p[:, MEL])[0],
        "at_specificity": [_in_sample(sensitivity_at_specificity(truth, p[:, MEL], s)) for s in specificities],
        "threshold_note": "thresholds on p(mel) chosen on this data (in-sample, optimistic); a sample is "
        "called melanoma when p(mel) >= threshold",
    }


def _malignant(y: np.ndarray, p: np.ndarray, specificities: Sequence[float]) -> dict[str, Any]:
    """Malignant (mel, bcc, akiec) against benign, scored on the sum of the malignant probabilities."""
    truth = np.isin(y, MALIGNANT_INDICES)
    score = p[:, MALIGNANT_INDICES].sum(axis=1)
    return {
        **_binary_stats(truth, np.isin(np.argmax(p, axis=1), MALIGNANT_INDICES)),
        "classes": sorted(MALIGNANT_CODES),
        "auc": _auc_entry(truth, score)[0],
        "at_specificity": [_in_sample(sensitivity_at_specificity(truth, score, s)) for s in specificities],
        "score": "sum of p(mel), p(bcc), p(akiec); called malignant at argmax when the top class is one of them",
    }


def _in_sample(entry: dict[str, Any]) -> dict[str, Any]:
    """An operating point whose threshold was chosen on the data it is measured on, flagged as such."""
    return {**entry, "in_sample": True}


def _calibration(y: np.ndarray, p: np.ndarray, n_bins: int) -> dict[str, Any]:
    return {
        "ece": ece(y, p, n_bins=n_bins),
        "classwise_ece": classwise_ece(y, p, n_bins=n_bins),
        "reliability": reliability_bins(y, p, n_bins=n_bins),
        "brier": brier(y, p),
        "log_loss": log_loss(y, p),
        "definition": f"top-label ECE over {n_bins} equal-width confidence bins; classwise ECE per class "
        "one-vs-rest; multiclass Brier = mean sum of squared errors (0..2); natural-log loss",
    }


def _lesion_clusters(clusters: Sequence[str | None] | None, n: int) -> list[str | None] | None:
    """The lesion id per image when any is known (the CIs then resample lesions), else `None`."""
    if clusters is not None and len(clusters) != n:
        raise ConfigError(f"clusters has {len(clusters)} lesion ids but y_true has {n} labels")
    use_clusters = clusters is not None and any(c is not None for c in clusters)
    return list(clusters) if use_clusters and clusters is not None else None


def _intervals(y: np.ndarray, p: np.ndarray, n_boot: int, seed: int, groups: list[str | None] | None) -> dict[str, Any]:
    """95% percentile-bootstrap intervals of the headline metrics, stratified by true class."""

    def ci(fn: Any) -> list[float | None]:
        if not n_boot:
            return [None, None]
        return list(bootstrap_ci(fn, y, p, n_boot=n_boot, seed=seed, stratified=True, clusters=groups))

    unit = "lesions (cluster bootstrap over lesion_id)" if groups is not None else "images"
    n_units = len({("row", i) if c is None else c for i, c in enumerate(groups)}) if groups is not None else len(y)
    return {
        "level": 0.95,
        "method": f"percentile bootstrap resampling {unit}, {n_boot} resamples stratified by true class, seed {seed}",
        "resampled": "lesions" if groups is not None else "images",
        "resampled_units": n_units,
        "accuracy": ci(accuracy),
        "balanced_accuracy": ci(balanced_accuracy),
        "macro_auc": ci(macro_auc),
        "melanoma_sensitivity": ci(melanoma_sensitivity),
    }


def _prevalences(prevalence: Mapping[str, float] | float | None) -> dict[str, float] | None:
    if prevalence is None:
        return None
    prev = {"mel": float(prevalence)} if isinstance(prevalence, (int, float)) else dict(prevalence)
    bad = sorted(set(prev) - {*CLASS_CODES, "malignant"})
    if bad:
        raise ConfigError(f"prevalence keys must be class codes or 'malignant', got {bad}")
    for key, value in prev.items():
        if not 0.0 <= float(value) <= 1.0:
            raise ConfigError(f"prevalence[{key!r}] must be between 0 and 1, got {value}")
    if sum(v for k, v in prev.items() if k in CLASS_CODES) > 1.0 + 1e-9:
        raise ConfigError("class prevalences sum to more than 1")
    if "malignant" not in prev and all(c in prev for c in MALIGNANT_CODES):
        prev["malignant"] = sum(prev[c] for c in MALIGNANT_CODES)
    return {k: float(v) for k, v in prev.items()}


def _stated_prevalence(
    prev: dict[str, float] | None, per_class: Mapping[str, Any], malignant: Mapping[str, Any]
) -> dict[str, Any] | None:
    """PPV and NPV each class (or `malignant`) would have at its stated prevalence (Bayes' rule)."""
    if prev is None:
        return None
    stated: dict[str, Any] = {}
    for key, value in prev.items():
        src = malignant if key == "malignant" else per_class[key]
        stated[key] = {
            **ppv_npv_at_prevalence(src["sensitivity"], src["specificity"], value),
            "sensitivity": src["sensitivity"],
            "specificity": src["specificity"],
        }
    return stated


def _prevalence_section(
    y: np.ndarray,
    per_class: Mapping[str, Any],
    malignant: Mapping[str, Any],
    stated: dict[str, Any] | None,
    dataset_note: str | None,
) -> dict[str, Any]:
    return {
        "dataset_mix": {c: float(np.mean(y == k)) for k, c in enumerate(CLASS_CODES)},
        "note": dataset_note
        or "PPV and NPV at the dataset's own class mix depend on how the set was assembled; a curated "
        "evaluation split (such as HAM10000 dev.csv) is not the natural prevalence of any clinic",
        "at_dataset_mix": {c: {"ppv": per_class[c]["ppv"], "npv": per_class[c]["npv"]} for c in CLASS_CODES}
        | {"malignant": {"ppv": malignant["ppv"], "npv": malignant["npv"]}},
        "at_stated_prevalence": stated,
        "method": "Bayes' rule with the measured sensitivity and specificity at argmax",
    }
