"""Seeded percentile bootstrap confidence intervals for any metric of `(y_true, probs)`.

Resampling is stratified by true class by default: every resample keeps the class counts of the data, so a
rare class (39 dermatofibromas in dev.csv) never vanishes from a resample and per-class figures stay defined.
The interval then reflects uncertainty at the evaluated class mix, which is what a comparison of backends on
the same dataset needs.

When `clusters` is given (HAM10000's `lesion_id`: 1.34 images per lesion), whole clusters are resampled
(a cluster bootstrap): images of one lesion are not independent, and resampling them one by one gives intervals
that are too narrow. Clusters are stratified by the label of their first image (a lesion has one diagnosis).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from derm_cloud.errors import ConfigError

__all__ = ["bootstrap_ci", "bootstrap_distribution", "cluster_resample_indices", "resample_indices"]

MetricFn = Callable[[np.ndarray, np.ndarray], float | None]


def resample_indices(y_true: np.ndarray, n_boot: int, seed: int, *, stratified: bool = True) -> np.ndarray:
    """`(n_boot, n)` row indices drawn with replacement; within each class when `stratified`."""
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


def cluster_resample_indices(
    y_true: np.ndarray, clusters: Sequence[Any], n_boot: int, seed: int, *, stratified: bool = True
) -> list[np.ndarray]:
    """Row indices of `n_boot` cluster resamples: clusters drawn with replacement, all rows of each kept.

    Args:
        y_true: labels (the strata, taken from each cluster's first row).
        clusters: one cluster id per row (`lesion_id`); `None` makes a row a cluster of its own.
        n_boot: number of resamples.
        seed: seed of `numpy.random.default_rng`.
        stratified: draw clusters within each stratum (keeps the number of clusters per class).

    Returns:
        One index array per resample (lengths vary with the drawn clusters' sizes).
    """
    y = np.asarray(y_true)
    if len(clusters) != len(y):
        raise ConfigError(f"clusters has {len(clusters)} ids but y_true has {len(y)} labels")
    members: dict[Any, list[int]] = {}
    for i, c in enumerate(clusters):
        members.setdefault(("row", i) if c is None else ("id", c), []).append(i)
    groups = [np.asarray(rows, dtype=np.int64) for rows in members.values()]
    strata: dict[Any, list[int]] = {}
    for g, rows in enumerate(groups):
        strata.setdefault(y[rows[0]].item() if stratified else 0, []).append(g)
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_boot):
        picked: list[np.ndarray] = []
        for key in sorted(strata, key=str):
            pool = strata[key]
            picked.extend(groups[pool[j]] for j in rng.integers(0, len(pool), size=len(pool)))
        out.append(np.concatenate(picked) if picked else np.empty(0, dtype=np.int64))
    return out


def bootstrap_distribution(
    metric_fn: MetricFn,
    y_true: Sequence[Any] | np.ndarray,
    probs: np.ndarray,
    n_boot: int = 1000,
    seed: int = 0,
    stratified: bool = True,
    clusters: Sequence[Any] | None = None,
) -> np.ndarray:
    """The metric on each resample (undefined values, `None` or NaN, are dropped); cluster resamples with
    `clusters`."""
    y = np.asarray(y_true)
    p = np.asarray(probs)
    if len(y) != len(p):
        raise ConfigError(f"y_true has {len(y)} labels but probs has {len(p)} rows")
    if n_boot < 1 or len(y) == 0:
        return np.empty(0)
    values = []
    draws = (
        cluster_resample_indices(y, clusters, n_boot, seed, stratified=stratified)
        if clusters is not None
        else resample_indices(y, n_boot, seed, stratified=stratified)
    )
    for idx in draws:
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
    clusters: Sequence[Any] | None = None,
) -> tuple[float | None, float | None]:
    """Percentile bootstrap `(low, high)` interval of `metric_fn(y_true, probs)`.

    Args:
        metric_fn: called with numpy arrays `(y_resampled, probs_resampled)` (`y` keeps the dtype given);
            returns a float, or `None` when undefined on that resample.
        y_true: labels (codes or class indices); also the strata.
        probs: `(n, k)` scores, resampled with the same rows.
        n_boot: number of resamples.
        seed: seed of `numpy.random.default_rng`; the same seed gives the same interval.
        stratified: resample within each true class (keeps class counts).
        alpha: 0.05 gives a 95% interval.
        clusters: one cluster id per row (`lesion_id`): resample whole clusters (see the module docstring).

    Returns:
        `(None, None)` when fewer than half the resamples give a defined value (the interval would describe
        an unrepresentative subset of resamples).

    Example:
        >>> from derm_cloud.compare.analysis.metrics import accuracy
        >>> y = np.array([0, 0, 1, 1]); p = np.eye(7)[[0, 1, 1, 1]]
        >>> low, high = bootstrap_ci(accuracy, y, p, n_boot=200, seed=0)
        >>> 0.0 <= low <= 0.75 <= high <= 1.0
        True
    """
    if not 0 < alpha < 1:
        raise ConfigError(f"alpha must be in (0, 1), got {alpha}")
    values = bootstrap_distribution(metric_fn, y_true, probs, n_boot, seed, stratified, clusters)
    if len(values) == 0 or len(values) < n_boot / 2:
        return None, None
    low, high = np.percentile(values, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(low), float(high)
