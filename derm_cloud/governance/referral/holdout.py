"""Referral thresholds that hold out of sample: fit on one part of the data, report on another.

A threshold fitted to reach a sensitivity target on a set reaches it on that set by construction; on new images
it does less well (on HAM10000, a threshold fitted on dev.csv for melanoma sensitivity 0.95 gives about 0.91 on
other lesions). So the headline of a referral evaluation is an *out-of-sample* figure:

* **cross-fitting** (default): the lesions are dealt into `k` folds (lesion-disjoint, so no lesion has images on
  both sides; stratified so each fold holds its share of melanomas and other malignant lesions). For each fold
  the threshold is fitted on the other `k - 1` folds and applied to it; the pooled held-out decisions give the
  sensitivity and referral rate with Wilson 95% intervals. This estimates what the fitting procedure delivers
  on new lesions from the same source; the policy shipped is the one fitted on all the data.
* **calibration split**: the rows whose `split` column names the calibration split fit the threshold, every other
  row evaluates it (a lesion on both sides is reported).
* **saved policy**: `evaluate_saved_policy` applies a `policy.json` unchanged to new labelled data.

Referral is triage support, never a diagnosis: a clinician reviews every result, referred or not.

Example:
    >>> ho = cross_fit_referral(predictions, labels, lesion_ids, target_sensitivity=0.95)  # doctest: +SKIP
    >>> ho.points["mel"].sensitivity, ho.points["mel"].sensitivity_ci  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from derm_cloud.errors import ConfigError
from derm_cloud.governance.referral.policy import HUMAN_REVIEW, MALIGNANT, ReferralPolicy
from derm_cloud.governance.referral.scores import (
    TARGETS,
    clustered_wilson_interval,
    fit_threshold,
    lesion_keys,
    referral_scores,
)
from derm_cloud.types import Prediction

__all__ = [
    "HeldOutPoint",
    "HoldoutEvaluation",
    "calibration_split_referral",
    "cross_fit_referral",
    "evaluate_saved_policy",
    "lesion_folds",
]

_WHAT = {"mel": "melanoma", "malignant": "malignant (mel, bcc, akiec)"}


@dataclass(frozen=True)
class HeldOutPoint:
    """Sensitivity and referral rate of a threshold on images it was not fitted on.

    Attributes:
        target: `"mel"` or `"malignant"`.
        target_sensitivity: the sensitivity the threshold was fitted to reach (`None` for a saved policy).
        sensitivity, sensitivity_ci: held-out sensitivity and its Wilson 95% interval (`None` without positives).
        detected, positives: referred positives and all positives among the held-out images.
        referral_rate, referral_rate_ci: share of held-out images referred, with its Wilson 95% interval.
        referred, n: referred and evaluated held-out images.
        thresholds: the threshold applied to each fold (one entry for a split or a saved policy).
        in_sample_sensitivity, in_sample_referral_rate: the figures of the threshold fitted on all the data and
            evaluated on the same data, for comparison (`None` for a saved policy).
    """

    target: str
    target_sensitivity: float | None
    sensitivity: float | None
    sensitivity_ci: tuple[float, float] | None
    detected: int
    positives: int
    referral_rate: float
    referral_rate_ci: tuple[float, float] | None
    referred: int
    n: int
    thresholds: list[float | None]
    in_sample_sensitivity: float | None = None
    in_sample_referral_rate: float | None = None


@dataclass
class HoldoutEvaluation:
    """Out-of-sample referral figures for one backend.

    Attributes:
        method: `"cross-fitting"`, `"calibration split"` or `"saved policy"`.
        description: how the data was split, in one sentence (folds, lesions, split names).
        n_fit, n_evaluated: images the threshold(s) were fitted on and evaluated on (cross-fitting: every image
            is evaluated once, and each is in the fitting part of `k - 1` folds).
        points: the held-out figures per target (`"mel"`, `"malignant"`).
        notes: caveats (lesions on both sides of a split, overlap with the policy's fitting data ...).
    """

    method: str
    description: str
    n_fit: int
    n_evaluated: int
    points: dict[str, HeldOutPoint]
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["human_review"] = HUMAN_REVIEW
        return out

    def headline(self, target: str = "mel") -> str:
        """One line: the out-of-sample sensitivity and referral rate with CIs, the in-sample figure beside."""
        p = self.points[target]
        if p.sensitivity is None or p.sensitivity_ci is None:
            return f"{_WHAT[target]}: no positives among the {p.n} held-out images, sensitivity not measurable"
        rate_ci = f" (95% CI {p.referral_rate_ci[0]:.3f}-{p.referral_rate_ci[1]:.3f})" if p.referral_rate_ci else ""
        line = (
            f"{_WHAT[target]} sensitivity {p.sensitivity:.3f} (95% CI {p.sensitivity_ci[0]:.3f}-"
            f"{p.sensitivity_ci[1]:.3f}; {p.detected}/{p.positives}), referral rate {p.referral_rate:.3f}{rate_ci}"
            f" ({p.referred}/{p.n})"
        )
        if p.in_sample_sensitivity is not None and p.in_sample_referral_rate is not None:
            line += (
                f"; in-sample {p.in_sample_sensitivity:.3f} / {p.in_sample_referral_rate:.3f} "
                "(fitted and measured on the same images)"
            )
        return line


def lesion_folds(labels: Sequence[str], lesion_ids: Sequence[str | None], folds: int = 5, seed: int = 0) -> np.ndarray:
    """A fold index per image such that all images of a lesion share a fold (lesion-disjoint folds).

    Lesions are stratified by their most serious label (melanoma, other malignant, benign) and dealt round-robin
    in a seeded random order, so each fold holds its share of each stratum. Images without a lesion id count
    as a lesion of their own.

    Raises:
        ConfigError: fewer than 2 folds, or fewer lesions than folds.

    Example:
        >>> f = lesion_folds(["mel", "mel", "nv", "nv"], ["L1", "L1", "L2", "L3"], folds=2)
        >>> bool(f[0] == f[1])
        True
    """
    if folds < 2:
        raise ConfigError(f"cross-fitting needs at least 2 folds, got {folds}")
    if len(labels) != len(lesion_ids):
        raise ConfigError(f"{len(labels)} labels but {len(lesion_ids)} lesion ids")
    keys = [lid if lid else f"image:{i}" for i, lid in enumerate(lesion_ids)]
    stratum: dict[str, int] = {}
    for key, lab in zip(keys, labels, strict=True):
        rank = 0 if lab == "mel" else 1 if lab in MALIGNANT else 2
        stratum[key] = min(rank, stratum.get(key, rank))
    if len(stratum) < folds:
        raise ConfigError(f"{len(stratum)} lesions cannot be split into {folds} folds; pass fewer --folds")
    rng = np.random.default_rng(seed)
    fold_of: dict[str, int] = {}
    offset = 0
    for rank in (0, 1, 2):
        members = sorted(k for k, r in stratum.items() if r == rank)
        for j, i in enumerate(rng.permutation(len(members))):
            fold_of[members[int(i)]] = (offset + j) % folds
        offset += len(members)  # continue the deal where the last stratum stopped: fold sizes stay even
    return np.array([fold_of[k] for k in keys])


def held_out_point(
    target: str,
    goal: float | None,
    referred: np.ndarray,
    positive: np.ndarray,
    thresholds: list[float | None],
    clusters: Sequence[str] | None = None,
    in_sample: tuple[float | None, float | None] = (None, None),
) -> HeldOutPoint:
    """Pooled held-out figures; intervals are lesion-clustered Wilson ones when `clusters` are given."""
    n_pos, detected, n = int(positive.sum()), int((referred & positive).sum()), len(referred)
    keys = list(clusters) if clusters is not None else [f"image:{i}" for i in range(n)]
    return HeldOutPoint(
        target=target,
        target_sensitivity=goal,
        sensitivity=detected / n_pos if n_pos else None,
        sensitivity_ci=clustered_wilson_interval(referred[positive], [k for k, p in zip(keys, positive) if p]),
        detected=detected,
        positives=n_pos,
        referral_rate=float(referred.mean()) if n else 0.0,
        referral_rate_ci=clustered_wilson_interval(referred, keys),
        referred=int(referred.sum()),
        n=n,
        thresholds=thresholds,
        in_sample_sensitivity=in_sample[0],
        in_sample_referral_rate=in_sample[1],
    )


def fit_and_apply(
    score: np.ndarray, base: np.ndarray, positive: np.ndarray, fit: np.ndarray, apply: np.ndarray, goal: float
) -> tuple[np.ndarray, float | None]:
    """Fit the threshold on `fit` and return the decisions on `apply` (no positives to fit on: refer all)."""
    t = fit_threshold(score[fit], base[fit], positive[fit], goal)
    if t is None and not positive[fit].any():
        return np.ones(int(apply.sum()), dtype=bool), 0.0  # nothing to fit on: the only safe threshold
    referred = base[apply] | (score[apply] >= t) if t is not None else base[apply].copy()
    return referred, t


def _in_sample(score: np.ndarray, base: np.ndarray, positive: np.ndarray, goal: float) -> tuple[float, float]:
    everything = np.ones(len(score), dtype=bool)
    referred, _ = fit_and_apply(score, base, positive, everything, everything, goal)
    return float((referred & positive).sum() / max(1, positive.sum())), float(referred.mean())


def cross_fit_referral(
    predictions: Sequence[Prediction],
    labels: Sequence[str],
    lesion_ids: Sequence[str | None] | None = None,
    *,
    target_sensitivity: float = 0.95,
    folds: int = 5,
    seed: int = 0,
    base_policy: ReferralPolicy | None = None,
) -> HoldoutEvaluation:
    """Cross-fit the malignant threshold over lesion-disjoint folds and report the pooled held-out figures.

    Args:
        predictions: one backend's predictions, aligned with `labels`.
        labels: canonical class codes.
        lesion_ids: lesion per image (`None` entries: the image is its own lesion); `None` = all images
            independent, which is optimistic when a lesion has several images.
        target_sensitivity: the sensitivity each fold's threshold is fitted to reach.
        folds: number of folds (default 5).
        seed: seed of the fold assignment.
        base_policy: a confidence rule applied on top, as in
            `evaluate_referral`.

    Raises:
        ConfigError: mismatched lengths, unknown labels, unmapped predictions, or too few lesions for the folds.
    """
    score, base, y, _ = referral_scores(predictions, labels, base_policy)
    ids = list(lesion_ids) if lesion_ids is not None else [None] * len(y)
    keys = lesion_keys(ids, len(y))
    fold = lesion_folds(y.tolist(), ids, folds, seed)
    points = {}
    for target, codes in TARGETS.items():
        positive = np.isin(y, codes)
        referred = np.zeros(len(y), dtype=bool)
        thresholds: list[float | None] = []
        for f in range(folds):
            held = fold == f
            referred[held], t = fit_and_apply(score, base, positive, ~held, held, target_sensitivity)
            thresholds.append(t)
        points[target] = held_out_point(
            target,
            target_sensitivity,
            referred,
            positive,
            thresholds,
            keys,
            _in_sample(score, base, positive, target_sensitivity),
        )
    n_lesions = len(set(keys))
    unit = "lesion-disjoint" if any(ids) else "image-level (no lesion ids: images of one lesion may straddle folds)"
    notes = [
        "Out-of-sample figures come from thresholds fitted on the other folds; the saved policy is fitted on all "
        "the data, so expect figures like the out-of-sample ones on new lesions from the same source. Intervals "
        "are Wilson's with the lesion-clustered effective sample size.",
        HUMAN_REVIEW,
    ]
    if not any(ids):
        notes.insert(0, "No lesion ids: folds are image-level, which overstates held-out sensitivity when a lesion "
                     "has several images.")  # fmt: skip
    return HoldoutEvaluation(
        method="cross-fitting",
        description=f"{folds}-fold cross-fitting, {unit}, over {n_lesions} lesions / {len(y)} images (seed {seed})",
        n_fit=len(y),
        n_evaluated=len(y),
        points=points,
        notes=notes,
    )


def calibration_split_referral(
    predictions: Sequence[Prediction],
    labels: Sequence[str],
    calibrate: Sequence[bool],
    lesion_ids: Sequence[str | None] | None = None,
    *,
    target_sensitivity: float = 0.95,
    base_policy: ReferralPolicy | None = None,
    split_name: str = "calibration",
) -> HoldoutEvaluation:
    """Fit on the images flagged in `calibrate` and evaluate on the others.

    Raises:
        ConfigError: either side is empty, or the inputs are malformed.
    """
    score, base, y, _ = referral_scores(predictions, labels, base_policy)
    fit = np.asarray(calibrate, dtype=bool)
    if fit.shape != y.shape:
        raise ConfigError(f"calibrate has {fit.size} flags for {y.size} images")
    if not fit.any() or fit.all():
        raise ConfigError(
            f"the calibration split {split_name!r} holds {int(fit.sum())} of {y.size} images; it needs some images "
            "and must leave some to evaluate on (check the manifest's split column)"
        )
    held_keys = [k for k, f in zip(lesion_keys(lesion_ids, len(y)), fit, strict=True) if not f]
    points = {}
    for target, codes in TARGETS.items():
        positive = np.isin(y, codes)
        referred, t = fit_and_apply(score, base, positive, fit, ~fit, target_sensitivity)
        fitted = fit_and_apply(score, base, positive, fit, fit, target_sensitivity)[0]
        in_sample = (float((fitted & positive[fit]).sum() / max(1, positive[fit].sum())), float(fitted.mean()))
        points[target] = held_out_point(target, target_sensitivity, referred, positive[~fit], [t], held_keys, in_sample)
    notes = [HUMAN_REVIEW]
    if lesion_ids is not None:
        fit_lesions = {lid for lid, f in zip(lesion_ids, fit, strict=True) if lid and f}
        shared = {lid for lid, f in zip(lesion_ids, fit, strict=True) if lid and not f and lid in fit_lesions}
        if shared:
            notes.insert(0, f"{len(shared)} lesions have images on both sides of the split: the held-out figures "
                         "are optimistic; split by lesion.")  # fmt: skip
    return HoldoutEvaluation(
        method="calibration split",
        description=f"fitted on split {split_name!r} ({int(fit.sum())} images), evaluated on the other "
        f"{int((~fit).sum())} images",
        n_fit=int(fit.sum()),
        n_evaluated=int((~fit).sum()),
        points=points,
        notes=notes,
    )


def evaluate_saved_policy(
    policy: ReferralPolicy,
    predictions: Sequence[Prediction],
    labels: Sequence[str],
    lesion_ids: Sequence[str | None] | None = None,
) -> HoldoutEvaluation:
    """Apply a saved policy unchanged (every rule it holds) to labelled predictions.

    This applies the rules only; `check_saved_policy` first checks that a
    saved `policy.json` belongs to the model and metadata mode of the predictions.

    Example:
        >>> ev = evaluate_saved_policy(ReferralPolicy.load("policy.json"), preds, labels)  # doctest: +SKIP
    """
    y = referral_scores(predictions, labels, None).labels
    referred = np.array([policy.evaluate(p).refer for p in predictions])
    keys = lesion_keys(lesion_ids, len(y))
    points = {
        target: held_out_point(target, None, referred, np.isin(y, codes), [], keys) for target, codes in TARGETS.items()
    }
    return HoldoutEvaluation(
        method="saved policy",
        description=f"saved policy ({policy.describe()}) applied unchanged to {len(y)} images",
        n_fit=0,
        n_evaluated=len(y),
        points=points,
        notes=[HUMAN_REVIEW],
    )
