"""What every referral evaluation starts from: one score per image, the threshold search and Wilson intervals.

The malignant-probability rule refers an image when its score, `max(p_mel, p_bcc, p_akiec)`, is at or above a
threshold `t`; a confidence rule, when the policy has one, refers some images whatever `t` is (`base`).
In-sample fitting (`evaluation`) and out-of-sample fitting (`holdout`) share these pieces, so
both check their inputs with the same messages and search thresholds the same way.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from derm_cloud.errors import ConfigError
from derm_cloud.governance.referral.policy import MALIGNANT, ReferralPolicy
from derm_cloud.taxonomy import CLASS_CODES
from derm_cloud.types import Prediction

__all__ = [
    "TARGETS",
    "Scores",
    "clustered_wilson_interval",
    "fit_threshold",
    "lesion_keys",
    "referral_scores",
    "wilson_interval",
]

#: What a threshold can be fitted to detect: melanoma alone, or any malignant class.
TARGETS = {"mel": ("mel",), "malignant": MALIGNANT}


class Scores(NamedTuple):
    """The inputs of a threshold fit, one entry per image.

    Attributes:
        score: the top malignant probability.
        base: referred by the policy's other (confidence) rule, whatever the threshold.
        labels: the class codes.
        base_rules: that other rule in words (`None` when there is none).
    """

    score: np.ndarray
    base: np.ndarray
    labels: np.ndarray
    base_rules: str | None


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float] | None:
    """Wilson score interval for a proportion (`None` when `n` is 0).

    Example:
        >>> [round(x, 3) for x in wilson_interval(289, 304)]
        [0.92, 0.97]
    """
    if n <= 0:
        return None
    from statistics import NormalDist

    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def lesion_keys(lesion_ids: Sequence[str | None] | None, n: int) -> list[str]:
    """One cluster key per image: its lesion id, or the image's own key when it has none."""
    ids = list(lesion_ids) if lesion_ids is not None else [None] * n
    if len(ids) != n:
        raise ConfigError(f"{len(ids)} lesion ids for {n} images; pass one lesion id (or None) per image")
    return [str(lid) if lid else f"image:{i}" for i, lid in enumerate(ids)]


def clustered_wilson_interval(
    hits: np.ndarray, clusters: Sequence[str], confidence: float = 0.95
) -> tuple[float, float] | None:
    """Wilson interval for a proportion of images whose outcomes are correlated within clusters (lesions).

    Images of one lesion tend to be referred or missed together, so they carry less information than as many
    independent images. The interval is Wilson's with Kish's effective sample size `n / deff`, where the design
    effect `deff` is the cluster-robust (ratio-estimator) variance of the proportion over its binomial
    variance, never below 1 (with all images hit, or none, each lesion counts once). With one image per lesion it is
    the plain Wilson interval; with every lesion holding `m` images that share their outcome, `deff` is `m`.

    Args:
        hits: one boolean per image (referred, detected ...), or a share in [0, 1] (a decision averaged over
            several deals of folds).
        clusters: the lesion key of each image (see `lesion_keys`).
        confidence: two-sided level.

    Example:
        >>> hits = np.array([True, True, False, False, True, True])
        >>> [round(x, 3) for x in clustered_wilson_interval(hits, ["a", "a", "b", "b", "c", "c"])]
        [0.208, 0.939]
    """
    hits = np.asarray(hits, dtype=float)
    n = int(hits.size)
    if n == 0:
        return None
    p = float(hits.mean())
    _, index = np.unique(np.asarray(clusters, dtype=object).astype(str), return_inverse=True)
    if 0.0 < p < 1.0:
        # Sum of (hits - p * images) per cluster: the linearised ratio estimator; no small-sample factor, so
        # singleton clusters give exactly the binomial variance (deff 1, the plain Wilson interval).
        per_cluster = np.bincount(index, weights=hits) - p * np.bincount(index)
        robust = float((per_cluster**2).sum()) / n**2
        deff = max(1.0, robust / (p * (1 - p) / n))
    else:
        # All hits or none: no spread to estimate deff from, so count each lesion once (never fewer than that).
        deff = n / (int(index.max()) + 1)
    n_eff = n / deff
    from statistics import NormalDist

    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    denom = 1 + z * z / n_eff
    centre = (p + z * z / (2 * n_eff)) / denom
    half = z * math.sqrt(p * (1 - p) / n_eff + z * z / (4 * n_eff * n_eff)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def referral_scores(
    predictions: Sequence[Prediction], labels: Sequence[str], base_policy: ReferralPolicy | None
) -> Scores:
    """Check one backend's labelled predictions and score them.

    Raises:
        ConfigError: mismatched lengths, no predictions, unknown labels or unmapped predictions.
    """
    if len(predictions) != len(labels):
        raise ConfigError(f"{len(predictions)} predictions but {len(labels)} labels; pass one label per prediction")
    if not predictions:
        raise ConfigError("no predictions to evaluate")
    bad = sorted({lab for lab in labels if lab not in CLASS_CODES})
    if bad:
        raise ConfigError(f"labels {bad} are not class codes ({', '.join(CLASS_CODES)})")
    if any(not p.mapped for p in predictions):
        raise ConfigError("a model whose labels are not lesion classes cannot be evaluated for referral")
    score = np.array([max(p.probabilities[c] for c in MALIGNANT) for p in predictions])
    base = np.zeros(len(labels), dtype=bool)
    base_rules = None
    if base_policy is not None and base_policy.min_confidence is not None:
        fixed = ReferralPolicy(malignant_threshold=None, min_confidence=base_policy.min_confidence)
        base = np.array([fixed.evaluate(p).refer for p in predictions])
        base_rules = fixed.describe()
    return Scores(score, base, np.array(labels), base_rules)


def fit_threshold(score: np.ndarray, base: np.ndarray, positive: np.ndarray, target: float) -> float | None:
    """Largest t with sensitivity(base | score >= t) >= target; `None` if there are no positives."""
    n_pos = int(positive.sum())
    if n_pos == 0:
        return None
    needed = math.ceil(target * n_pos - 1e-9) - int((positive & base).sum())
    if needed <= 0:
        return None  # the fixed rules alone reach the target
    candidates = np.sort(score[positive & ~base])[::-1]
    return float(candidates[needed - 1])
