"""Calibration: does a 0.8 probability mean right 80% of the time?

* `ece`: top-label expected calibration error (Guo et al. 2017) over equal-width confidence bins;
  bin `b` holds confidences in `(b/M, (b+1)/M]` (the first bin also holds 0).
* `classwise_ece`: the same per class, one-vs-rest, on that class's probability.
* `reliability_bins`: the data of a reliability diagram.
* `brier`, `log_loss`: proper scoring rules (equal to scikit-learn's multiclass definitions).

`y_true` is a sequence of canonical codes (or class indices) and `probs` an `(n, 7)` array in
`CLASS_CODES` order; rows are renormalised to sum to 1.

Example:
    >>> import numpy as np
    >>> round(ece(["mel", "nv"], np.array([[0, 0, 0, 0, 0.9, 0.1, 0], [0, 0, 0, 0, 0.6, 0.4, 0]])), 3)
    0.35
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from derm_cloud.compare.analysis.metric_inputs import as_indices, as_probs
from derm_cloud.taxonomy import CLASS_CODES

__all__ = ["bin_index", "brier", "classwise_ece", "ece", "log_loss", "reliability_bins"]

Labels = Sequence[str] | np.ndarray


def bin_index(values: np.ndarray, n_bins: int) -> np.ndarray:
    """Bin of each value in `[0, 1]`: `b` such that `edges[b] < v <= edges[b + 1]` (0 goes to bin 0)."""
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # searchsorted on the exact edges avoids ceil(v * M) rounding 0.2 * 15 = 3.0000000000000004 into the next bin.
    return np.clip(np.searchsorted(edges, values, side="left") - 1, 0, n_bins - 1)


def _binned_gap(scores: np.ndarray, hits: np.ndarray, n_bins: int) -> float:
    idx = bin_index(scores, n_bins)
    conf = np.bincount(idx, weights=scores, minlength=n_bins)
    acc = np.bincount(idx, weights=hits.astype(np.float64), minlength=n_bins)
    # sum_b (n_b / n) * |acc_b - conf_b| == sum_b |sum(hits_b) - sum(scores_b)| / n
    return float(np.sum(np.abs(acc - conf)) / len(scores))


def _prepare(y_true: Labels, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = as_indices(y_true)
    p, _ = as_probs(probs, len(y))
    return y, p


def ece(y_true: Labels, probs: np.ndarray, *, n_bins: int = 15) -> float:
    """Top-label expected calibration error: `sum_b (n_b / n) |accuracy_b - confidence_b|`."""
    y, p = _prepare(y_true, probs)
    return _binned_gap(p.max(axis=1), np.argmax(p, axis=1) == y, n_bins)


def classwise_ece(y_true: Labels, probs: np.ndarray, *, n_bins: int = 15) -> dict[str, Any]:
    """Per-class (one-vs-rest) ECE on `p(class)` against `label == class`, and their mean.

    Returns:
        `{"mean": float, "per_class": {code: float}}`.
    """
    y, p = _prepare(y_true, probs)
    per_class = {c: _binned_gap(p[:, k], y == k, n_bins) for k, c in enumerate(CLASS_CODES)}
    return {"mean": float(np.mean(list(per_class.values()))), "per_class": per_class}


def reliability_bins(y_true: Labels, probs: np.ndarray, *, n_bins: int = 15) -> dict[str, Any]:
    """Reliability-diagram data for the top label.

    Returns:
        `edges` (`n_bins + 1` floats), and per bin `confidence` (mean top probability), `accuracy`
        (share correct) and `counts`; empty bins have `None` confidence and accuracy.
    """
    y, p = _prepare(y_true, probs)
    conf = p.max(axis=1)
    hits = (np.argmax(p, axis=1) == y).astype(np.float64)
    idx = bin_index(conf, n_bins)
    counts = np.bincount(idx, minlength=n_bins)
    conf_sum = np.bincount(idx, weights=conf, minlength=n_bins)
    hit_sum = np.bincount(idx, weights=hits, minlength=n_bins)
    return {
        "edges": np.linspace(0.0, 1.0, n_bins + 1).tolist(),
        "confidence": [float(conf_sum[b] / counts[b]) if counts[b] else None for b in range(n_bins)],
        "accuracy": [float(hit_sum[b] / counts[b]) if counts[b] else None for b in range(n_bins)],
        "counts": counts.astype(int).tolist(),
    }


def brier(y_true: Labels, probs: np.ndarray) -> float:
    """Multiclass Brier score: mean over images of `sum_k (p_k - [y == k])^2` (0 best, 2 worst)."""
    y, p = _prepare(y_true, probs)
    onehot = np.eye(len(CLASS_CODES))[y]
    return float(np.mean(np.sum((p - onehot) ** 2, axis=1)))


def log_loss(y_true: Labels, probs: np.ndarray) -> float:
    """Mean negative natural log of the true class's probability, clipped at machine epsilon (as scikit-learn)."""
    y, p = _prepare(y_true, probs)
    eps = np.finfo(np.float64).eps
    return float(-np.mean(np.log(np.clip(p[np.arange(len(y)), y], eps, 1 - eps))))
