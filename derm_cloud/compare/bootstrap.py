"""Seeded percentile bootstrap confidence intervals for any metric of ``(y_true, probs)``.

Resampling is stratified by true class by default: every resample keeps the class counts of the data, so a
rare class (39 dermatofibromas in dev.csv) never vanishes from a resample and per-class figures stay defined.
The interval then reflects uncertainty at the evaluated class mix, which is what a comparison of backends on
the same dataset needs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from derm_cloud.errors import ConfigError

__all__ = ["bootstrap_ci", "bootstrap_distribution", "resample_indices"]

MetricFn = Callable[[np.ndarray, np.ndarray], float | None]


def resample_indices(y_true: np.ndarray, n_boot: int, seed: int, *, stratified: bool = True) -> np.ndarray:
    """``(n_boot, n)`` row indices drawn with replacement; within each class when ``stratified``."""
    y = np.asarray(y_true)
    n = len(y)
    rng = np.random.default_rng(seed)
    if not stratified:
        return rng.integers(0, n, size=(n_boot, n))
    out = np.empty((n_boot, n), dtype=np.int64)
    col = 0
    for value in sorted(set(y.tolist()), key=str):
        members = np.flatnonzero(y == value)
        out[:, col : col + len(members)] = members[rng.integers(0, len(members), size=(n_boot, len(members)))]
        col += len(members)
    return out


def bootstrap_distribution(
    metric_fn: MetricFn,
    y_true: Sequence[Any] | np.ndarray,
    probs: np.ndarray,
    n_boot: int = 1000,
    seed: int = 0,
    stratified: bool = True,
) -> np.ndarray:
    """The metric on each resample (undefined values, ``None`` or NaN, are dropped)."""
    y = np.asarray(y_true)
    p = np.asarray(probs)
    if len(y) != len(p):
        raise ConfigError(f"y_true has {len(y)} labels but probs has {len(p)} rows")
    if n_boot < 1 or len(y) == 0:
        return np.empty(0)
    values = []
    for idx in resample_indices(y, n_boot, seed, stratified=stratified):
        v = metric_fn(y[idx], p[idx])
        if v is not None and np.isfinite(v):
            values.append(float(v))
    return np.asarray(values, dtype=np.float64)


def bootstrap_ci(
    metric_fn: MetricFn,
    y_true: Sequence[Any] | np.ndarray,
    probs: np.ndarray,
    n_boot: int = 1000,
    seed: int = 0,
    stratified: bool = True,
    *,
    alpha: float = 0.05,
) -> tuple[float | None, float | None]:
    """Percentile bootstrap ``(low, high)`` interval of ``metric_fn(y_true, probs)``.

    Args:
        metric_fn: called with numpy arrays ``(y_resampled, probs_resampled)`` (``y`` keeps the dtype given);
            returns a float, or ``None`` when undefined on that resample.
        y_true: labels (codes or class indices); also the strata.
        probs: ``(n, k)`` scores, resampled with the same rows.
        n_boot: number of resamples.
        seed: seed of ``numpy.random.default_rng``; the same seed gives the same interval.
        stratified: resample within each true class (keeps class counts).
        alpha: 0.05 gives a 95% interval.

    Returns:
        ``(None, None)`` when fewer than half the resamples give a defined value (the interval would describe
        an unrepresentative subset of resamples).

    Example:
        >>> from derm_cloud.compare.metrics import accuracy
        >>> y = np.array([0, 0, 1, 1]); p = np.eye(7)[[0, 1, 1, 1]]
        >>> low, high = bootstrap_ci(accuracy, y, p, n_boot=200, seed=0)
        >>> 0.0 <= low <= 0.75 <= high <= 1.0
        True
    """
    if not 0 < alpha < 1:
        raise ConfigError(f"alpha must be in (0, 1), got {alpha}")
    values = bootstrap_distribution(metric_fn, y_true, probs, n_boot, seed, stratified)
    if len(values) == 0 or len(values) < n_boot / 2:
        return None, None
    low, high = np.percentile(values, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(low), float(high)
