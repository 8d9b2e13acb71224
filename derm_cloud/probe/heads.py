"""Fit a probe head with scikit-learn: class-weighted logistic regression, temperature-calibrated, lesion-disjoint.

One fit, given embeddings, labels and lesion ids:

1. choose the regularisation `C` from `C_GRID` by the balanced accuracy of inner lesion-disjoint folds
   (`StratifiedGroupKFold` on `lesion_id`: images of one lesion never sit on both sides of a split);
2. fit a temperature on that C's held-out inner-fold logits (`fit_temperature`), then `StandardScaler` +
   `LogisticRegression(class_weight="balanced")` on everything given;
3. read the result out as a numpy-only `LinearHead`, checked to give the fitted model's probabilities.

The outer folds that measure a fit (`derm_cloud.probe.folds`) call this on their training part only, so every
choice above is made without the images it is measured on (nested cross-validation).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from derm_cloud.backends.probe_head import LinearHead
from derm_cloud.errors import ConfigError, ConversionError
from derm_cloud.taxonomy import CLASS_CODES

__all__ = ["C_GRID", "fit_head", "fit_temperature", "lesion_folds"]

#: Inverse regularisation strengths tried; strong regularisation suits a few dozen labelled images.
C_GRID = (0.01, 0.1, 1.0)
#: Logit of a class the head never saw in training: it is never predicted (e^-30 against the others).
_ABSENT_LOGIT = -30.0


def lesion_folds(y: np.ndarray, groups: Sequence[str], n_splits: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Lesion-disjoint, class-stratified `(train, test)` index pairs (fewer folds when there are few lesions)."""
    from sklearn.model_selection import StratifiedGroupKFold

    lesions = len(set(groups))
    largest_class = max(np.unique(y, return_counts=True)[1], default=0)
    splits = max(2, min(n_splits, lesions, int(largest_class)))
    if lesions < 2:
        raise ConfigError(f"lesion-disjoint folds need at least two lesions, got {lesions}")
    with warnings.catch_warnings():
        # "The least populated class has only k members": expected with 50 images and rare classes.
        warnings.simplefilter("ignore", UserWarning)
        folds = StratifiedGroupKFold(n_splits=splits, shuffle=True, random_state=seed)
        return [(train, test) for train, test in folds.split(np.zeros(len(y)), y, np.asarray(groups))]


def _pipeline(c: float, seed: int) -> Any:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(
        StandardScaler(), LogisticRegression(C=c, class_weight="balanced", max_iter=2000, random_state=seed)
    )


def _logits(model: Any, x: np.ndarray) -> np.ndarray:
    """`(n, 7)` logits in `CLASS_CODES` order; `-inf` for classes the model never saw (never predicted)."""
    out = np.full((len(x), len(CLASS_CODES)), -np.inf)
    decision = model.decision_function(x)
    if decision.ndim == 1:  # binary: one logit z, and softmax([0, z]) is scikit-learn's sigmoid(z)
        decision = np.stack([np.zeros_like(decision), decision], axis=1)
    out[:, [CLASS_CODES.index(str(c)) for c in model.classes_]] = decision
    return out


def _choose_c(
    x: np.ndarray, y: np.ndarray, folds: list[tuple[np.ndarray, np.ndarray]], seed: int
) -> tuple[float, np.ndarray]:
    """The C with the best inner-fold balanced accuracy, and that C's held-out logits (for the temperature)."""
    from derm_cloud.compare.analysis.metrics import balanced_accuracy

    index = np.asarray([CLASS_CODES.index(c) for c in y])
    best: tuple[float, float, np.ndarray] | None = None
    for c in C_GRID:
        logits = np.full((len(y), len(CLASS_CODES)), -np.inf)
        for train, test in folds:
            logits[test] = _logits(_pipeline(c, seed).fit(x[train], y[train]), x[test])
        score = balanced_accuracy(index, logits)
        if best is None or score > best[1]:  # ties go to the stronger regularisation (listed first)
            best = (c, score, logits)
    assert best is not None
    return best[0], best[2]


def fit_temperature(logits: np.ndarray, y_index: np.ndarray) -> float:
    """Inverse temperature `beta` minimising the log loss of `softmax(beta * logits)` on held-out logits.

    A bounded search over `beta` in [0.05, 20] (log scale). scikit-learn's `method="temperature"` searches
    without bounds and diverges when a small fold separates its classes perfectly; rows whose true class the
    fold's model never saw say nothing about the temperature and are left out.
    """
    from scipy.optimize import minimize_scalar

    rows = np.arange(len(y_index))
    usable = np.isfinite(logits[rows, y_index])
    z, t = logits[usable], y_index[usable]
    if len(t) == 0:
        return 1.0

    def log_loss(log_beta: float) -> float:
        scaled = np.exp(log_beta) * z
        scaled = scaled - scaled.max(axis=1, keepdims=True)
        return float(-(scaled[np.arange(len(t)), t] - np.log(np.exp(scaled).sum(axis=1))).mean())

    result = minimize_scalar(log_loss, bounds=(np.log(0.05), np.log(20.0)), method="bounded")
    return float(np.exp(result.x))


def fit_head(
    x: np.ndarray, y: Sequence[str] | np.ndarray, groups: Sequence[str], *, seed: int = 0, inner_splits: int = 3
) -> tuple[LinearHead, dict[str, Any]]:
    """Fit a head on embeddings `x` `(n, d)` with class codes `y` and lesion ids `groups`.

    Returns:
        The head and what was chosen (`C`, inverse temperature, inner folds, classes absent from training).

    Raises:
        ConfigError: fewer than two classes or two lesions.
        ConversionError: the exported arrays do not reproduce scikit-learn's probabilities.
    """
    from threadpoolctl import threadpool_limits

    labels = np.asarray(y)
    present = sorted(set(labels.tolist()), key=CLASS_CODES.index)
    if len(present) < 2:
        raise ConfigError(f"a head needs labelled images of at least two classes, got {present}")
    folds = lesion_folds(labels, groups, inner_splits, seed)
    # One BLAS thread: on matrices this small, thread start-up costs more than it saves (5x on two busy cores).
    with warnings.catch_warnings(), threadpool_limits(limits=1):
        warnings.simplefilter("ignore", UserWarning)  # a rare class missing from one inner fold's training part
        c, held_out = _choose_c(x, labels, folds, seed)
        beta = fit_temperature(held_out, np.asarray([CLASS_CODES.index(v) for v in labels]))
        model = _pipeline(c, seed).fit(x, labels)
    scaler, logistic = model[0], model[-1]
    rows = [CLASS_CODES.index(str(v)) for v in logistic.classes_]
    weights, biases = logistic.coef_, logistic.intercept_
    if len(rows) == 2:  # binary: see _logits
        weights, biases = np.vstack([np.zeros_like(weights), weights]), np.concatenate([[0.0], biases])
    coef = np.zeros((len(CLASS_CODES), x.shape[1]))
    intercept = np.zeros(len(CLASS_CODES))
    coef[rows], intercept[rows] = weights, biases
    # A class absent from training gets a logit of _ABSENT_LOGIT after the temperature: never predicted.
    absent = [i for i in range(len(CLASS_CODES)) if i not in rows]
    intercept[absent] = _ABSENT_LOGIT / beta
    head = LinearHead(
        mean=np.asarray(scaler.mean_, np.float64),
        scale=np.asarray(scaler.scale_, np.float64),
        coef=coef,
        intercept=intercept,
        beta=beta,
        classes=tuple(CLASS_CODES),
    )
    reference = beta * _logits(model, x)[:, rows]
    reference = np.exp(reference - reference.max(axis=1, keepdims=True))
    reference /= reference.sum(axis=1, keepdims=True)
    gap = float(np.abs(head.predict_proba(x)[:, rows] - reference).max())
    if gap > 1e-4:
        raise ConversionError(f"the exported head differs from scikit-learn's by {gap:.2e}; it was not saved")
    return head, {
        "C": c,
        "inverse_temperature": round(beta, 4),
        "inner_folds": len(folds),
        "absent_classes": [CLASS_CODES[i] for i in absent],
        "export_max_abs_diff": gap,
    }
