"""Quality metrics of a 7-class lesion classifier: pure functions over numpy arrays.

Inputs everywhere: ``y_true``, the canonical class codes (``"mel"``...), and ``probs``, an ``(n, 7)`` array in
:data:`~derm_cloud.taxonomy.CLASS_CODES` order. The predicted class is the argmax, ties broken by canonical
order (as :attr:`Prediction.top_k <derm_cloud.types.Prediction.top_k>` does). Every figure is checked in the
tests against scikit-learn on the same data; scikit-learn is not needed at run time.

These are research figures about a model on a dataset. They support triage research; they are not evidence
that a model is safe to diagnose anyone, and a clinician reviews every result.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from derm_cloud.compare.metric_inputs import as_indices, as_probs
from derm_cloud.errors import ConfigError
from derm_cloud.taxonomy import CLASS_CODES, MALIGNANT_CODES

__all__ = [
    "HAM10000_PREVALENCE",
    "ISIC_THRESHOLD",
    "MALIGNANT_INDICES",
    "MEL",
    "PER_CLASS_DEFINITIONS",
    "accuracy",
    "as_indices",
    "as_probs",
    "balanced_accuracy",
    "confusion_matrix",
    "macro_auc",
    "malignant_sensitivity",
    "melanoma_sensitivity",
    "ppv_npv_at_prevalence",
    "quality_report",
    "roc_auc",
    "roc_curve",
    "sensitivity_at_specificity",
]

K = len(CLASS_CODES)
MEL = CLASS_CODES.index("mel")
MALIGNANT_INDICES = np.array(sorted(CLASS_CODES.index(c) for c in MALIGNANT_CODES))
#: The HAM10000 class mix (10,015 images; Tschandl et al. 2018). A referral-centre dermoscopy mix: closer to a
#: clinic than a curated split, but still not primary-care prevalence.
HAM10000_PREVALENCE: dict[str, float] = {
    c: n / 10015 for c, n in zip(CLASS_CODES, (327, 514, 1099, 115, 1113, 6705, 142), strict=True)
}
#: The ISIC 2018 Task 3 per-category rule: a class is called when its probability exceeds 0.5.
ISIC_THRESHOLD = 0.5
PER_CLASS_DEFINITIONS = {
    "argmax": "a class is called for an image when it has the highest probability (top-1); each image gets "
    "exactly one class; balanced accuracy is the mean of these sensitivities",
    "p_over_0_5": "a class is called when its own probability exceeds 0.5 (the ISIC 2018 leaderboard's "
    "per-category rule); an image may be called for no class",
}


def _f(x: float | np.floating[Any] | None) -> float | None:
    return None if x is None or not np.isfinite(x) else float(x)


def _ratio(num: float, den: float) -> float | None:
    return float(num / den) if den > 0 else None


# --- point metrics ----------------------------------------------------------------------------------------------


def accuracy(y: np.ndarray, probs: np.ndarray) -> float:
    """Share of argmax predictions equal to the label (``y`` as class indices)."""
    return float(np.mean(np.argmax(probs, axis=1) == y))


def balanced_accuracy(y: np.ndarray, probs: np.ndarray) -> float:
    """ISIC 2018 Task 3 metric: mean per-class recall over the classes present in ``y``.

    Equals ``sklearn.metrics.balanced_accuracy_score`` (``adjusted=False``).
    """
    pred = np.argmax(probs, axis=1)
    present = np.unique(y)
    return float(np.mean([np.mean(pred[y == k] == k) for k in present]))


def melanoma_sensitivity(y: np.ndarray, probs: np.ndarray) -> float | None:
    """Recall of melanoma at argmax; ``None`` when there is no melanoma."""
    mask = y == MEL
    return float(np.mean(np.argmax(probs[mask], axis=1) == MEL)) if mask.any() else None


def malignant_sensitivity(y: np.ndarray, probs: np.ndarray) -> float | None:
    """Share of malignant lesions (mel, bcc, akiec) whose argmax is a malignant class; ``None`` if none."""
    mask = np.isin(y, MALIGNANT_INDICES)
    return float(np.mean(np.isin(np.argmax(probs[mask], axis=1), MALIGNANT_INDICES))) if mask.any() else None


def confusion_matrix(y: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """``(7, 7)`` counts: rows = true class, columns = predicted class (canonical order)."""
    return np.bincount(y * K + np.argmax(probs, axis=1), minlength=K * K).reshape(K, K)


def _average_ranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    new_group = np.r_[True, xs[1:] != xs[:-1]]
    group = np.cumsum(new_group) - 1
    starts = np.flatnonzero(new_group)
    ends = np.r_[starts[1:], len(x)]
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = ((starts + 1 + ends) / 2.0)[group]  # mean of ranks start+1 .. end (1-based)
    return ranks


def roc_auc(y_binary: np.ndarray, scores: np.ndarray) -> float | None:
    """Area under the ROC curve (Mann-Whitney U with tied scores counted half); ``None`` if one class is empty."""
    pos = np.asarray(y_binary, dtype=bool)
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = _average_ranks(np.asarray(scores, dtype=np.float64))
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def macro_auc(y: np.ndarray, probs: np.ndarray) -> float | None:
    """Mean one-vs-rest AUC over the classes with both positives and negatives in ``y``."""
    aucs = [roc_auc(y == k, probs[:, k]) for k in range(K)]
    defined = [a for a in aucs if a is not None]
    return float(np.mean(defined)) if defined else None


def roc_curve(y_binary: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(fpr, tpr, thresholds)`` at every distinct score, starting at threshold ``inf`` (nothing positive).

    A sample is called positive when its score is ``>= threshold``; same points as
    ``sklearn.metrics.roc_curve(..., drop_intermediate=False)``.
    """
    pos = np.asarray(y_binary, dtype=bool)
    s = np.asarray(scores, dtype=np.float64)
    order = np.argsort(-s, kind="mergesort")
    s, pos = s[order], pos[order]
    last_of_group = np.r_[np.flatnonzero(np.diff(s) != 0), len(s) - 1]
    tps = np.cumsum(pos)[last_of_group]
    fps = last_of_group + 1 - tps
    n_pos, n_neg = max(int(pos.sum()), 1), max(int((~pos).sum()), 1)
    return np.r_[0.0, fps / n_neg], np.r_[0.0, tps / n_pos], np.r_[np.inf, s[last_of_group]]


def sensitivity_at_specificity(y_binary: np.ndarray, scores: np.ndarray, specificity: float) -> dict[str, Any]:
    """The highest sensitivity whose specificity is at least ``specificity``, and the threshold giving it.

    The threshold is chosen on the same data it is measured on, so the operating point is optimistic; fix
    thresholds on a separate split before relying on them.
    """
    pos = np.asarray(y_binary, dtype=bool)
    if not pos.any() or pos.all():
        return {"target_specificity": specificity, "sensitivity": None, "specificity": None, "threshold": None}
    fpr, tpr, thr = roc_curve(pos, scores)
    ok = np.flatnonzero(1.0 - fpr >= specificity - 1e-12)
    best = ok[np.argmax(tpr[ok])]  # tpr rises with fpr: the first maximum has the lowest fpr
    return {
        "target_specificity": specificity,
        "sensitivity": float(tpr[best]),
        "specificity": float(1.0 - fpr[best]),
        "threshold": _f(thr[best]),  # None = no threshold reaches it with any positive call
    }


def ppv_npv_at_prevalence(sensitivity: float | None, specificity: float | None, prevalence: float) -> dict[str, Any]:
    """PPV and NPV that a test with this sensitivity/specificity would have at ``prevalence`` (Bayes' rule).

    Example:
        >>> ppv_npv_at_prevalence(0.9, 0.8, 0.02)["ppv"]  # doctest: +ELLIPSIS
        0.0841...
    """
    if sensitivity is None or specificity is None:
        return {"prevalence": prevalence, "ppv": None, "npv": None}
    tp, fp = sensitivity * prevalence, (1 - specificity) * (1 - prevalence)
    tn, fn = specificity * (1 - prevalence), (1 - sensitivity) * prevalence
    return {"prevalence": prevalence, "ppv": _ratio(tp, tp + fp), "npv": _ratio(tn, tn + fn)}


def _binary_stats(truth: np.ndarray, called: np.ndarray) -> dict[str, Any]:
    tp = int(np.sum(truth & called))
    fn = int(np.sum(truth & ~called))
    fp = int(np.sum(~truth & called))
    tn = int(np.sum(~truth & ~called))
    return {
        "support": tp + fn,
        "predicted": tp + fp,
        "sensitivity": _ratio(tp, tp + fn),
        "specificity": _ratio(tn, tn + fp),
        "ppv": _ratio(tp, tp + fp),
        "npv": _ratio(tn, tn + fn),
    }


def _auc_entry(truth: np.ndarray, scores: np.ndarray) -> tuple[float | None, str | None]:
    auc = roc_auc(truth, scores)
    if auc is not None:
        return auc, None
    return None, "no positive samples in y_true" if not truth.any() else "no negative samples in y_true"


# --- the report -------------------------------------------------------------------------------------------------


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
        probs: ``(n, 7)`` probabilities in ``CLASS_CODES`` order (rows not summing to 1 are renormalised and
            counted in ``warnings``).
        prevalence: class prevalences (``{"mel": 0.02}``; ``"malignant"`` accepted; a float means melanoma) at
            which PPV/NPV are re-weighted with Bayes' rule. :data:`HAM10000_PREVALENCE` is one choice.
        specificities: fixed specificities for melanoma (and malignant) sensitivity.
        n_boot: bootstrap resamples for the 95% CIs (0 skips them).
        seed: bootstrap seed.
        n_bins: calibration bins (equal width).
        dataset_note: a sentence about the evaluation set's class mix, printed with the prevalence section.
        clusters: one lesion id per image (``None`` where unknown): the CIs then resample lesions (cluster
            bootstrap) instead of images, since images of one lesion are not independent.

    Returns:
        Keys ``n``, ``accuracy``, ``balanced_accuracy``, ``per_class``, ``macro_auc``, ``melanoma``,
        ``malignant``, ``confusion_matrix``, ``calibration``, ``ci``, ``prevalence``, ``warnings``.

    Raises:
        ConfigError: missing or unknown labels, or a malformed probability array.

    Example:
        >>> r = quality_report(["mel", "nv"], np.eye(7)[[4, 5]], n_boot=0)
        >>> r["accuracy"], r["melanoma"]["sensitivity"]
        (1.0, 1.0)
    """
    from derm_cloud.compare.bootstrap import bootstrap_ci
    from derm_cloud.compare.calibration import brier, classwise_ece, ece, log_loss, reliability_bins

    y = as_indices(y_true)
    if len(y) == 0:
        raise ConfigError("quality_report needs at least one labelled image")
    p, renormalised = as_probs(probs, len(y))
    pred = np.argmax(p, axis=1)
    warnings: list[str] = []
    if renormalised:
        warnings.append(f"{renormalised} probability rows did not sum to 1 and were renormalised")
    present = sorted(set(y.tolist()))
    if len(present) < K:
        missing = [CLASS_CODES[k] for k in range(K) if k not in present]
        warnings.append(f"classes absent from y_true: {', '.join(missing)} (their recall and AUC are undefined)")

    per_class: dict[str, Any] = {}
    for k, code in enumerate(CLASS_CODES):
        entry = _binary_stats(y == k, pred == k)
        entry["auc"], entry["auc_undefined_reason"] = _auc_entry(y == k, p[:, k])
        # The ISIC 2018 leaderboard's per-category figures call a class when its own probability exceeds 0.5.
        entry["p_over_0_5"] = _binary_stats(y == k, p[:, k] > ISIC_THRESHOLD)
        per_class[code] = entry
    auc_classes = [c for c in CLASS_CODES if per_class[c]["auc"] is not None]

    mel_truth = y == MEL
    melanoma = {
        **_binary_stats(mel_truth, pred == MEL),
        "auc": _auc_entry(mel_truth, p[:, MEL])[0],
        "at_specificity": [sensitivity_at_specificity(mel_truth, p[:, MEL], s) for s in specificities],
        "threshold_note": "thresholds on p(mel) chosen on this data (in-sample, optimistic); a sample is "
        "called melanoma when p(mel) >= threshold",
    }
    mal_truth = np.isin(y, MALIGNANT_INDICES)
    mal_score = p[:, MALIGNANT_INDICES].sum(axis=1)
    malignant = {
        **_binary_stats(mal_truth, np.isin(pred, MALIGNANT_INDICES)),
        "classes": sorted(MALIGNANT_CODES),
        "auc": _auc_entry(mal_truth, mal_score)[0],
        "at_specificity": [sensitivity_at_specificity(mal_truth, mal_score, s) for s in specificities],
        "score": "sum of p(mel), p(bcc), p(akiec); called malignant at argmax when the top class is one of them",
    }

    if clusters is not None and len(clusters) != len(y):
        raise ConfigError(f"clusters has {len(clusters)} lesion ids but y_true has {len(y)} labels")
    use_clusters = clusters is not None and any(c is not None for c in clusters)
    groups = list(clusters) if use_clusters and clusters is not None else None

    def ci(fn: Any) -> list[float | None]:
        if not n_boot:
            return [None, None]
        return list(bootstrap_ci(fn, y, p, n_boot=n_boot, seed=seed, stratified=True, clusters=groups))

    mix = {c: float(np.mean(y == k)) for k, c in enumerate(CLASS_CODES)}
    prev = _prevalences(prevalence)
    stated: dict[str, Any] | None = None
    if prev is not None:
        stated = {}
        for key, value in prev.items():
            src = malignant if key == "malignant" else per_class[key]
            stated[key] = {
                **ppv_npv_at_prevalence(src["sensitivity"], src["specificity"], value),
                "sensitivity": src["sensitivity"],
                "specificity": src["specificity"],
            }
    unit = "lesions (cluster bootstrap over lesion_id)" if groups is not None else "images"
    n_units = len({("row", i) if c is None else c for i, c in enumerate(groups)}) if groups is not None else len(y)
    ci_method = f"percentile bootstrap resampling {unit}, {n_boot} resamples stratified by true class, seed {seed}"
    return {
        "n": len(y),
        "classes": list(CLASS_CODES),
        "accuracy": accuracy(y, p),
        "balanced_accuracy": balanced_accuracy(y, p),
        "balanced_accuracy_definition": "mean per-class recall over the classes present (ISIC 2018 Task 3)",
        "per_class": per_class,
        "per_class_definitions": PER_CLASS_DEFINITIONS,
        "macro_auc": macro_auc(y, p),
        "macro_auc_classes": auc_classes,
        "melanoma": melanoma,
        "malignant": malignant,
        "confusion_matrix": {
            "labels": list(CLASS_CODES),
            "rows": "true",
            "columns": "predicted",
            "matrix": confusion_matrix(y, p).tolist(),
        },
        "calibration": {
            "ece": ece(y, p, n_bins=n_bins),
            "classwise_ece": classwise_ece(y, p, n_bins=n_bins),
            "reliability": reliability_bins(y, p, n_bins=n_bins),
            "brier": brier(y, p),
            "log_loss": log_loss(y, p),
            "definition": f"top-label ECE over {n_bins} equal-width confidence bins; classwise ECE per class "
            "one-vs-rest; multiclass Brier = mean sum of squared errors (0..2); natural-log loss",
        },
        "ci": {
            "level": 0.95,
            "method": ci_method,
            "resampled": "lesions" if groups is not None else "images",
            "resampled_units": n_units,
            "accuracy": ci(accuracy),
            "balanced_accuracy": ci(balanced_accuracy),
            "macro_auc": ci(macro_auc),
            "melanoma_sensitivity": ci(melanoma_sensitivity),
        },
        "prevalence": {
            "dataset_mix": mix,
            "note": dataset_note
            or "PPV and NPV at the dataset's own class mix depend on how the set was assembled; a curated "
            "evaluation split (such as HAM10000 dev.csv) is not the natural prevalence of any clinic",
            "at_dataset_mix": {c: {"ppv": per_class[c]["ppv"], "npv": per_class[c]["npv"]} for c in CLASS_CODES}
            | {"malignant": {"ppv": malignant["ppv"], "npv": malignant["npv"]}},
            "at_stated_prevalence": stated,
            "method": "Bayes' rule with the measured sensitivity and specificity at argmax",
        },
        "warnings": warnings,
    }
