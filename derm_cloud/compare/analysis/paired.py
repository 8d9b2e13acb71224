"""Can two backends be told apart? Paired tests on the same images (quality) and on the latency samples.

* **Quality**: a paired, lesion-resampled bootstrap of the difference. Both backends' answers on the images
  both answered are resampled with the same draws of whole lesions (stratified by diagnosis, the cluster
  bootstrap of `derm_cloud.compare.analysis.bootstrap`), and the difference of balanced accuracy and of melanoma
  sensitivity (top-1, argmax) is taken on each draw. Pairing removes the image-to-image variation both backends
  share, so the interval of the difference is much narrower than the two separate intervals suggest. Two
  backends are *indistinguishable in quality* when the 95% interval of both differences contains 0 (identical
  answers give a difference of exactly 0 on every draw).
* **Latency**: the two sets of single-stream latencies are resampled independently (they are separate requests,
  not pairs) and the differences of p50 and p95 taken; one backend is *faster* when the 95% interval of the p50
  difference excludes 0.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from derm_cloud.compare.analysis.bootstrap import cluster_resample_indices
from derm_cloud.compare.analysis.metrics import balanced_accuracy, melanoma_sensitivity

__all__ = ["QUALITY_METRICS", "latency_difference", "quality_difference"]

#: The quality figures compared pairwise (the same definitions as the quality section: top-1, argmax).
QUALITY_METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float | None]] = {
    "balanced_accuracy": balanced_accuracy,
    "melanoma_sensitivity": melanoma_sensitivity,
}


def _interval(values: Sequence[float], level: float) -> list[float] | None:
    if not len(values):
        return None
    lo, hi = np.percentile(np.asarray(values, dtype=np.float64), [50 * (1 - level), 50 * (1 + level)])
    return [float(lo), float(hi)]


def quality_difference(
    y: np.ndarray,
    probs_a: np.ndarray,
    probs_b: np.ndarray,
    lesions: Sequence[str | None],
    *,
    n_boot: int,
    seed: int,
    level: float = 0.95,
) -> dict[str, Any]:
    """Paired bootstrap of `metric(a) - metric(b)` on the same images, resampling whole lesions.

    Args:
        y: class indices of the images both backends answered.
        probs_a, probs_b: `(n, 7)` probabilities of the two backends on those images, row for row.
        lesions: one lesion id per image (`None`: the image is its own cluster).
        n_boot: resamples (0: only identical answers can be called indistinguishable).
        seed: seed of the resampling (the same draws for every pair, so pairs are comparable).
        level: interval level.

    Returns:
        `images`, `identical` (the same probabilities on every image), per metric `{difference, interval}`,
        and `indistinguishable` (`True`/`False`, `None` when it could not be tested).

    Example:
        >>> y = np.array([4, 4, 5, 5]); p = np.eye(7)[[4, 5, 5, 5]]
        >>> quality_difference(y, p, p, [None] * 4, n_boot=50, seed=0)["indistinguishable"]
        True
    """
    out: dict[str, Any] = {"images": len(y), "identical": bool(np.array_equal(probs_a, probs_b))}
    if not len(y):
        return {**out, "indistinguishable": None, "why": "no image answered by both"}
    draws = cluster_resample_indices(y, list(lesions), n_boot, seed) if n_boot and not out["identical"] else []
    verdicts = []
    for name, fn in QUALITY_METRICS.items():
        a, b = fn(y, probs_a), fn(y, probs_b)
        diff = None if a is None or b is None else a - b
        if out["identical"]:
            interval: list[float] | None = [0.0, 0.0]
        else:
            values = []
            for idx in draws:
                da, db = fn(y[idx], probs_a[idx]), fn(y[idx], probs_b[idx])
                if da is not None and db is not None:
                    values.append(da - db)
            interval = _interval(values, level) if len(values) >= max(1, n_boot // 2) else None
        out[name] = {"difference": diff, "interval": interval}
        if interval is not None:
            verdicts.append(interval[0] <= 0.0 <= interval[1])
    out["indistinguishable"] = all(verdicts) if verdicts else None
    out["method"] = (
        f"paired percentile bootstrap of the difference, {n_boot} resamples of whole lesions stratified by "
        f"diagnosis, seed {seed}; indistinguishable when every {level:.0%} interval contains 0"
    )
    return out


def latency_difference(
    a: Sequence[float],
    b: Sequence[float],
    *,
    n_boot: int,
    seed: int,
    method: str = "linear",
    level: float = 0.95,
) -> dict[str, Any]:
    """Bootstrap of `pXX(a) - pXX(b)` for p50 and p95, the two sample sets resampled independently.

    Returns:
        Per percentile `{difference, interval, relative}` (`relative`: the difference over b's value), and
        `faster`: `"a"`, `"b"`, or `None` when the p50 interval contains 0 (or too few samples to test).
    """
    xa, xb = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    out: dict[str, Any] = {"samples": [int(xa.size), int(xb.size)], "faster": None}
    if xa.size < 2 or xb.size < 2:
        return {**out, "why": "fewer than 2 latency samples"}
    rng = np.random.default_rng([seed, 95])
    boots = max(n_boot, 1)
    ra = xa[rng.integers(0, xa.size, size=(boots, xa.size))]
    rb = xb[rng.integers(0, xb.size, size=(boots, xb.size))]
    for q in (50, 95):
        va = float(np.percentile(xa, q, method=method))  # type: ignore[call-overload]
        vb = float(np.percentile(xb, q, method=method))  # type: ignore[call-overload]
        diffs = np.percentile(ra, q, axis=1, method=method) - np.percentile(rb, q, axis=1, method=method)  # type: ignore[call-overload]
        out[f"p{q}"] = {
            "a_ms": va,
            "b_ms": vb,
            "difference": va - vb,
            "interval": _interval(list(diffs), level) if n_boot else None,
            "relative": (va - vb) / vb if vb else None,
        }
    interval = out["p50"]["interval"]
    if interval is not None and interval[1] < 0:
        out["faster"] = "a"
    elif interval is not None and interval[0] > 0:
        out["faster"] = "b"
    out["method"] = (
        f"percentile bootstrap of the p50 and p95 differences, {n_boot} resamples of each backend's "
        f"single-stream latencies (independent requests, resampled separately), seed {seed}"
    )
    return out
