"""Quality metrics of a 7-class lesion classifier: pure functions over numpy arrays.

Inputs everywhere: `y_true`, the canonical class codes (`"mel"`...), and `probs`, an `(n, 7)` array in
`CLASS_CODES` order. The predicted class is the argmax, ties broken by canonical
order (as `Prediction.top_k` does). Every figure is checked in the
tests against scikit-learn on the same data; scikit-learn is not needed at run time. `quality_report` (in
`derm_cloud.compare.analysis.quality_report`) gathers them into one backend's quality figures.

These are research figures about a model on a dataset. They support triage research; they are not evidence
that a model is safe to diagnose anyone, and a clinician reviews every result.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from derm_cloud.taxonomy import CLASS_CODES, MALIGNANT_CODES

__all__ = [
    "HAM10000_PREVALENCE",
    "MALIGNANT_INDICES",
    "MEL",
    "accuracy",
    "balanced_accuracy",
    "confusion_matrix",
    "macro_auc",
    "malignant_sensitivity",
    "melanoma_sensitivity",
    "ppv_npv_at_prevalence",
    "roc_auc",
    "roc_curve",
    "safe_ratio",
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


def _f(x: float | np.floating[Any] | None) -> float | None:
    return None if x is None or not np.isfinite(x) else float(x)


def safe_ratio(num: float, den: float) -> float | None:
    """`num / den`, or `None` when the denominator is 0 (a share of nothing is undefined, not 0)."""
    return float(num / den) if den > 0 else None


# --- point metrics ----------------------------------------------------------------------------------------------


def accuracy(y: np.ndarray, probs: np.ndarray) -> float:
    """Share of argmax predictions equal to the label (`y` as class indices)."""
    return float(np.mean(np.argmax(probs, axis=1) == y))


def balanced_accuracy(y: np.ndarray, probs: np.ndarray) -> float:
    """ISIC 2018 Task 3 metric: mean per-class recall over the classes present in `y`.

    Equals `sklearn.metrics.balanced_accuracy_score` (`adjusted=False`).
    """
    pred = np.argmax(probs, axis=1)
    present = np.unique(y)
    return float(np.mean([np.mean(pred[y == k] == k) for k in present]))


def melanoma_sensitivity(y: np.ndarray, probs: np.ndarray) -> float | None:
    """Recall of melanoma at argmax; `None` when there is no melanoma."""
    mask = y == MEL
    return float(np.mean(np.argmax(probs[mask], axis=1) == MEL)) if mask.any() else None


def malignant_sensitivity(y: np.ndarray, probs: np.ndarray) -> float | None:
    """Share of malignant lesions (mel, bcc, akiec) whose argmax is a malignant class; `None` if none."""
    mask = np.isin(y, MALIGNANT_INDICES)
    return float(np.mean(np.isin(np.argmax(probs[mask], axis=1), MALIGNANT_INDICES))) if mask.any() else None


def confusion_matrix(y: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """`(7, 7)` counts: rows = true class, columns = predicted class (canonical order)."""
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
    """Area under the ROC curve (Mann-Whitney U with tied scores counted half); `None` if one class is empty."""
    pos = np.asarray(y_binary, dtype=bool)
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = _average_ranks(np.asarray(scores, dtype=np.float64))
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def macro_auc(y: np.ndarray, probs: np.ndarray) -> float | None:
    """Mean one-vs-rest AUC over the classes with both positives and negatives in `y`."""
    aucs = [roc_auc(y == k, probs[:, k]) for k in range(K)]
    defined = [a for a in aucs if a is not None]
    return float(np.mean(defined)) if defined else None


def roc_curve(y_binary: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`(fpr, tpr, thresholds)` at every distinct score, starting at threshold `inf` (nothing positive).

    A sample is called positive when its score is `>= threshold`; same points as
    `sklearn.metrics.roc_curve(..., drop_intermediate=False)`.
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
    """The highest sensitivity whose specificity is at least `specificity`, and the threshold giving it.

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
    """PPV and NPV that a test with this sensitivity/specificity would have at `prevalence` (Bayes' rule).

    Example:
        >>> ppv_npv_at_prevalence(0.9, 0.8, 0.02)["ppv"]  # doctest: +ELLIPSIS
        0.0841...
    """
    if sensitivity is None or specificity is None:
        return {"prevalence": prevalence, "ppv": None, "npv": None}
    tp, fp = sensitivity * prevalence, (1 - specificity) * (1 - prevalence)
    tn, fn = specificity * (1 - prevalence), (1 - sensitivity) * prevalence
    return {"prevalence": prevalence, "ppv": safe_ratio(tp, tp + fp), "npv": safe_ratio(tn, tn + fn)}
