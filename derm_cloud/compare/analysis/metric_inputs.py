"""Checks of the inputs every metric takes: labels as class indices and a valid `(n, 7)` probability array.

A leaf module: `derm_cloud.compare.analysis.metrics`, `...analysis.calibration`, `...analysis.quality_report` and
`...analysis.fairness` import it, it imports none of them (they used to import each other).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from derm_cloud.errors import ConfigError
from derm_cloud.taxonomy import CLASS_CODES

__all__ = ["as_indices", "as_probs"]

K = len(CLASS_CODES)
_INDEX = {c: i for i, c in enumerate(CLASS_CODES)}


def as_indices(y_true: Sequence[str | None] | np.ndarray) -> np.ndarray:
    """Canonical codes -> class indices (an integer array passes through after a range check).

    Raises:
        ConfigError: a label is missing (`None`) or not a canonical code.
    """
    arr = np.asarray(y_true)
    if arr.dtype.kind in "iu":
        if arr.size and (arr.min() < 0 or arr.max() >= K):
            raise ConfigError(f"class indices must be in 0..{K - 1}")
        return arr.astype(np.int64)
    out = np.empty(len(arr), dtype=np.int64)
    for i, label in enumerate(arr):
        if label is None:
            raise ConfigError(f"y_true[{i}] is missing: quality metrics need a label for every image")
        try:
            out[i] = _INDEX[str(label)]
        except KeyError:
            raise ConfigError(
                f"y_true[{i}] = {label!r} is not a canonical code; use {', '.join(CLASS_CODES)} "
                "(derm_cloud.data.canonical_label maps other names)"
            ) from None
    return out


def as_probs(probs: np.ndarray | Sequence[Sequence[float]], n: int | None = None) -> tuple[np.ndarray, int]:
    """Validate an `(n, 7)` probability array; rows not summing to 1 are renormalised.

    Returns:
        `(probs, n_renormalised)`: float64 array whose rows sum to 1, and how many rows had to be rescaled
        (top-k responses leave out classes; those rows sum to less than 1).

    Raises:
        ConfigError: wrong shape, negative or non-finite values, or a row of zeros.
    """
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != K:
        raise ConfigError(f"probs must have shape (n, {K}) in CLASS_CODES order, got {p.shape}")
    if n is not None and p.shape[0] != n:
        raise ConfigError(f"probs has {p.shape[0]} rows but y_true has {n} labels")
    if not np.all(np.isfinite(p)) or np.any(p < 0):
        raise ConfigError("probs must be finite and non-negative")
    sums = p.sum(axis=1)
    if np.any(sums <= 0):
        raise ConfigError(f"{int(np.sum(sums <= 0))} rows of probs are all zero (unmapped or failed predictions?)")
    off = np.abs(sums - 1.0) > 1e-6
    if off.any():
        # Only rows visibly off are rescaled: dividing rows that already sum to 1 +- rounding would perturb
        # exactly tied scores across rows and change tie-aware figures such as AUC.
        p = p.copy()
        p[off] /= sums[off, None]
    return p, int(off.sum())
