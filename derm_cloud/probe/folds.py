"""Out-of-fold figures and the learning curve of a probe: nested, lesion-disjoint cross-validation.

Outer folds (`StratifiedGroupKFold` on `lesion_id`) hold out about a fifth of the lesions each; the head is
fitted on the rest (with its own inner folds, `derm_cloud.probe.heads`) and predicts the held-out images, so
every image is predicted once by a head that never saw its lesion. Balanced accuracy and melanoma sensitivity
come with 95% cluster-bootstrap intervals (whole lesions resampled, stratified by class).

The learning curve repeats this with the training part of each outer fold cut down to `n` labelled images
(whole lesions, every class kept with at least two images where it has them): quality against the number of
labelled images, measured on the same held-out images for every `n`. Its last point uses each fold's whole
training part (about four fifths of the data).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from derm_cloud.compare.analysis.bootstrap import bootstrap_ci
from derm_cloud.compare.analysis.metrics import accuracy, balanced_accuracy, melanoma_sensitivity
from derm_cloud.probe.heads import fit_head, lesion_folds
from derm_cloud.taxonomy import CLASS_CODES

__all__ = ["LEARNING_CURVE_SIZES", "cross_validate", "figures", "learning_curve", "subsample_lesions"]

LEARNING_CURVE_SIZES = (50, 100, 200, 500)
_MIN_PER_CLASS = 2


def subsample_lesions(
    train: np.ndarray, n: int, y: np.ndarray, groups: Sequence[str], rng: np.random.Generator
) -> np.ndarray:
    """About `n` of the `train` rows, taken as whole lesions, each class in proportion (at least two images)."""
    by_lesion: dict[str, list[int]] = {}
    for i in train.tolist():
        by_lesion.setdefault(groups[i], []).append(i)
    by_class: dict[str, list[str]] = {}
    for lesion, rows in by_lesion.items():
        by_class.setdefault(str(y[rows[0]]), []).append(lesion)
    picked: list[int] = []
    for _label, lesions in sorted(by_class.items()):
        images = sum(len(by_lesion[lesion]) for lesion in lesions)
        quota = max(_MIN_PER_CLASS, round(n * images / len(train)))
        count = 0
        for j in rng.permutation(len(lesions)):
            if count >= quota:
                break
            picked.extend(by_lesion[lesions[j]])
            count += len(by_lesion[lesions[j]])
    return np.asarray(sorted(picked), dtype=np.int64)


def cross_validate(
    x: np.ndarray,
    y: np.ndarray,
    groups: Sequence[str],
    *,
    outer_splits: int = 5,
    seed: int = 0,
    train_size: int | None = None,
) -> tuple[np.ndarray, float, list[dict[str, Any]]]:
    """Out-of-fold probabilities `(n, 7)`, the mean training size, and each outer fold's head choices."""
    probs = np.zeros((len(y), len(CLASS_CODES)))
    sizes, choices = [], []
    rng = np.random.default_rng(seed)
    for train, test in lesion_folds(y, groups, outer_splits, seed):
        if train_size is not None and train_size < len(train):
            train = subsample_lesions(train, train_size, y, groups, rng)
        head, chosen = fit_head(x[train], y[train], [groups[i] for i in train], seed=seed)
        probs[test] = head.predict_proba(x[test])
        sizes.append(len(train))
        choices.append(chosen)
    return probs, float(np.mean(sizes)), choices


def figures(probs: np.ndarray, y: np.ndarray, groups: Sequence[str], *, n_boot: int = 1000) -> dict[str, Any]:
    """Balanced accuracy, melanoma sensitivity (with 95% lesion-bootstrap intervals) and accuracy."""
    index = np.asarray([CLASS_CODES.index(c) for c in y])
    out: dict[str, Any] = {"images": len(y), "lesions": len(set(groups))}
    for name, fn in (("balanced_accuracy", balanced_accuracy), ("melanoma_sensitivity", melanoma_sensitivity)):
        value = fn(index, probs)
        out[name] = None if value is None else round(float(value), 4)
        low, high = bootstrap_ci(fn, index, probs, n_boot=n_boot, seed=0, clusters=list(groups))
        out[f"{name}_ci"] = None if low is None or high is None else [round(low, 4), round(high, 4)]
    out["accuracy"] = round(accuracy(index, probs), 4)
    return out


def learning_curve(
    x: np.ndarray,
    y: np.ndarray,
    groups: Sequence[str],
    *,
    sizes: Sequence[int] = LEARNING_CURVE_SIZES,
    outer_splits: int = 5,
    seed: int = 0,
    full: tuple[np.ndarray, float] | None = None,
) -> list[dict[str, Any]]:
    """One point per size below the outer training size, then one for the whole training part.

    Args:
        full: the whole-training-part result already computed (`cross_validate` without `train_size`), reused.

    Returns:
        `[{"n": mean training images, "asked": size or "all", "balanced_accuracy": .., "ci": [lo, hi],
        "melanoma_sensitivity": ..}, ...]`.
    """
    points = []
    if full is None:
        full = cross_validate(x, y, groups, outer_splits=outer_splits, seed=seed)[:2]
    all_probs, all_n = full
    for size in sorted(set(sizes)):
        if size >= all_n:
            continue
        probs, n, _ = cross_validate(x, y, groups, outer_splits=outer_splits, seed=seed, train_size=size)
        points.append(_point(size, n, probs, y, groups))
    points.append(_point("all", all_n, all_probs, y, groups))
    return points


def _point(asked: int | str, n: float, probs: np.ndarray, y: np.ndarray, groups: Sequence[str]) -> dict[str, Any]:
    f = figures(probs, y, groups, n_boot=500)
    return {
        "asked": asked,
        "n": round(n, 1),
        "balanced_accuracy": f["balanced_accuracy"],
        "ci": f["balanced_accuracy_ci"],
        "melanoma_sensitivity": f["melanoma_sensitivity"],
    }
