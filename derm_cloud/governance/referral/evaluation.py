"""How many referrals a sensitivity target costs: the referral-rate / sensitivity trade-off on labelled data.

The malignant-probability rule refers an image when `max(p_mel, p_bcc, p_akiec) >= t`. Lowering `t` catches
more melanomas and refers more patients. `evaluate_referral` draws that curve for melanoma and for all
malignant classes, finds the largest `t` whose sensitivity reaches a target (for example 0.95: the fewest
referrals that meet it), and reports the same operating point per group (sex, age band, site, skin tone) with
Wilson confidence intervals and a flag for groups too small to judge.

A threshold fitted on a set is optimistic on that set; confirm it on held-out data before relying on it. The
referral rate depends on the class mix: the dev set's mix is not a clinic's, so a rate at a stated class
prevalence is reported too when one is given.

Example:
    >>> ev = evaluate_referral(predictions, labels, target_sensitivity=0.95)  # doctest: +SKIP
    >>> ev.points["mel"].threshold, ev.points["mel"].referral_rate  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from derm_cloud.errors import ConfigError
from derm_cloud.governance.referral.policy import HUMAN_REVIEW, MALIGNANT, ReferralPolicy
from derm_cloud.governance.referral.prevalence import prevalence_weights
from derm_cloud.governance.referral.scores import TARGETS, fit_threshold, referral_scores, wilson_interval
from derm_cloud.taxonomy import CLASS_CODES
from derm_cloud.types import Prediction

__all__ = ["GroupReferral", "OperatingPoint", "ReferralEvaluation", "evaluate_referral"]


@dataclass(frozen=True)
class OperatingPoint:
    """The threshold that reaches a sensitivity target, and what it costs.

    Attributes:
        target: `"mel"` or `"malignant"`.
        target_sensitivity: the sensitivity asked for.
        threshold: refer when the top malignant probability is >= this; `None` when the target cannot be
            reached (no positives) or other rules already reach it.
        sensitivity, sensitivity_ci: achieved sensitivity and its Wilson 95% interval.
        detected, positives: referred positives and all positives.
        referred, n, referral_rate: referrals among all images and their share.
        benign_referred: share of benign images referred (1 - specificity of the rule).
        referral_rate_at_prevalence: the rate re-weighted to a stated class prevalence (`None` if none given).
    """

    target: str
    target_sensitivity: float
    threshold: float | None
    sensitivity: float | None
    sensitivity_ci: tuple[float, float] | None
    detected: int
    positives: int
    referred: int
    n: int
    referral_rate: float
    benign_referred: float | None
    referral_rate_at_prevalence: float | None = None


@dataclass(frozen=True)
class GroupReferral:
    """One group at the overall operating point, plus the threshold the group alone would need."""

    attribute: str
    group: str
    n: int
    positives: int
    detected: int
    sensitivity: float | None
    sensitivity_ci: tuple[float, float] | None
    referral_rate: float
    own_threshold: float | None
    too_small: bool


@dataclass
class ReferralEvaluation:
    """The referral trade-off of one backend on one labelled set.

    Attributes:
        backend, model_id: whose predictions these are.
        n: images evaluated; `class_counts` their labels.
        target_sensitivity: the target the points were fitted to.
        rule: the rule swept (`max(p_akiec, p_bcc, p_mel) >= t`), plus fixed `base_rules` if any.
        curve: `threshold`, `referral_rate`, `sensitivity_mel`, `sensitivity_malignant` (same length).
        points: the operating point per target (`"mel"`, `"malignant"`).
        groups: per group at the melanoma operating point.
        prevalence: the class prevalence used for re-weighted rates (`None` = none given).
        notes: caveats (fitted on the data it is reported on; class mix; small groups).
    """

    backend: str
    model_id: str
    n: int
    class_counts: dict[str, int]
    target_sensitivity: float
    rule: str
    base_rules: str | None
    curve: dict[str, list[float]]
    points: dict[str, OperatingPoint]
    groups: list[GroupReferral] = field(default_factory=list)
    prevalence: dict[str, float] | None = None
    notes: list[str] = field(default_factory=list)

    def policy(self, target: str = "mel", base: ReferralPolicy | None = None) -> ReferralPolicy:
        """The fitted policy: `base`'s other rules with the threshold of `target`'s operating point."""
        point = self.points[target]
        if point.threshold is None:
            raise ConfigError(f"no threshold was fitted for {target!r} (no positives, or base rules reach it)")
        return (base or ReferralPolicy(refer_on_disagreement=False)).with_threshold(point.threshold)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["human_review"] = HUMAN_REVIEW
        return out

    def summary_lines(self) -> list[str]:
        """The printout of `derm-cloud governance referral`: one line per target."""
        lines = []
        for target, p in self.points.items():
            what = "melanoma" if target == "mel" else "malignant (mel, bcc, akiec)"
            if p.threshold is None:
                lines.append(
                    f"{what} sensitivity >= {p.target_sensitivity:.2f}: not reachable ({p.positives} positives)"
                )
                continue
            ci = f" (95% CI {p.sensitivity_ci[0]:.3f}-{p.sensitivity_ci[1]:.3f})" if p.sensitivity_ci else ""
            line = (
                f"{what} sensitivity >= {p.target_sensitivity:.2f}: threshold t = {p.threshold:.4f} -> sensitivity "
                f"{p.sensitivity:.3f}{ci} ({p.detected}/{p.positives}), referral rate {p.referral_rate:.3f} "
                f"({p.referred}/{p.n} images referred"
                + (f"; {p.benign_referred:.3f} of benign images)" if p.benign_referred is not None else ")")
            )
            if p.referral_rate_at_prevalence is not None:
                line += f"; {p.referral_rate_at_prevalence:.3f} at the stated prevalence"
            lines.append(line)
        return lines


def evaluate_referral(
    predictions: Sequence[Prediction],
    labels: Sequence[str],
    *,
    target_sensitivity: float = 0.95,
    groups: Mapping[str, Sequence[str]] | None = None,
    base_policy: ReferralPolicy | None = None,
    prevalence: Mapping[str, float] | None = None,
    min_group_positives: int = 10,
) -> ReferralEvaluation:
    """Fit the malignant threshold to a sensitivity target and report what it costs.

    Args:
        predictions: one backend's predictions, aligned with `labels`.
        labels: canonical class codes.
        target_sensitivity: e.g. 0.95.
        groups: `{attribute: group per image}` (`{"sex": [...], "skin_tone": [...]}`) for per-group figures.
        base_policy: other rules applied on top (its confidence rule refers regardless of `t`); its own
            malignant thresholds are ignored, since `t` is what is being fitted.
        prevalence: `{class: share}` to re-weight referral rates to a stated mix (for example a clinic's).
        min_group_positives: groups with fewer melanomas than this are flagged too small to judge.

    Raises:
        ConfigError: mismatched lengths, unknown labels, unmapped predictions, or a bad target.
    """
    if not 0 < target_sensitivity <= 1:
        raise ConfigError(f"target_sensitivity must be in (0, 1], got {target_sensitivity}")
    score, base, y, base_desc = referral_scores(predictions, labels, base_policy)
    weights = prevalence_weights(y, prevalence)
    benign = ~np.isin(y, MALIGNANT)
    points = {
        target: _operating_point(target, score, base, np.isin(y, codes), benign, target_sensitivity, weights)
        for target, codes in TARGETS.items()
    }
    curve = _curve(score, base, y)
    mel_t = points["mel"].threshold
    group_rows = []
    for attribute, values in (groups or {}).items():
        if len(values) != len(y):
            raise ConfigError(f"groups[{attribute!r}] has {len(values)} values for {len(y)} images")
        vals = np.array([str(v) for v in values])
        for g in sorted(set(vals.tolist()), key=_group_order):
            idx = vals == g
            group_rows.append(
                _group(
                    attribute, g, score[idx], base[idx], y[idx] == "mel", mel_t, target_sensitivity, min_group_positives
                )
            )
    notes = [
        "Thresholds are fitted on the images they are reported on: expect lower sensitivity on new data; confirm "
        "on a held-out set.",
        "Referral rates depend on the class mix of this set, which is not a clinic's prevalence unless sampled as one.",
        HUMAN_REVIEW,
    ]
    small = [f"{g.attribute}={g.group}" for g in group_rows if g.too_small]
    if small:
        notes.append(f"Too few melanomas (< {min_group_positives}) to judge: {', '.join(small)}.")
    first = predictions[0]
    return ReferralEvaluation(
        backend=first.backend,
        model_id=first.model_id,
        n=len(y),
        class_counts={c: int((y == c).sum()) for c in CLASS_CODES},
        target_sensitivity=target_sensitivity,
        rule=f"max(p_{', p_'.join(MALIGNANT)}) >= t",
        base_rules=base_desc,
        curve=curve,
        points=points,
        groups=group_rows,
        prevalence=dict(prevalence) if prevalence else None,
        notes=notes,
    )


_NATURAL_ORDER = (
    "<30",
    "30-44",
    "45-59",
    "60-74",
    "75+",
    "very light",
    "light",
    "intermediate",
    "tan",
    "brown",
    "dark",
)


def _group_order(group: str) -> tuple[int, int, str]:
    """Age bands and ITA bands in their natural order, other groups alphabetically, `unknown` last."""
    if group == "unknown":
        return (2, 0, group)
    if group in _NATURAL_ORDER:
        return (0, _NATURAL_ORDER.index(group), group)
    return (1, 0, group)


def _operating_point(
    target: str,
    score: np.ndarray,
    base: np.ndarray,
    positive: np.ndarray,
    benign: np.ndarray,
    goal: float,
    weights: np.ndarray | None,
) -> OperatingPoint:
    t = fit_threshold(score, base, positive, goal)
    referred = base | (score >= t) if t is not None else base.copy()
    detected, n_pos = int((referred & positive).sum()), int(positive.sum())
    return OperatingPoint(
        target=target,
        target_sensitivity=goal,
        threshold=t,
        sensitivity=detected / n_pos if n_pos else None,
        sensitivity_ci=wilson_interval(detected, n_pos),
        detected=detected,
        positives=n_pos,
        referred=int(referred.sum()),
        n=len(score),
        referral_rate=float(referred.mean()),
        benign_referred=float(referred[benign].mean()) if benign.any() else None,
        referral_rate_at_prevalence=float((weights * referred).sum()) if weights is not None else None,
    )


def _curve(score: np.ndarray, base: np.ndarray, y: np.ndarray) -> dict[str, list[float]]:
    thresholds = np.unique(np.concatenate([score, [np.inf]]))[::-1]
    out: dict[str, list[float]] = {
        "threshold": [],
        "referral_rate": [],
        "sensitivity_mel": [],
        "sensitivity_malignant": [],
    }
    mel, mal = y == "mel", np.isin(y, MALIGNANT)
    for t in thresholds:
        referred = base | (score >= t)
        out["threshold"].append(float(min(t, 1.0 + 1e-9)) if np.isfinite(t) else 1.0 + 1e-9)
        out["referral_rate"].append(float(referred.mean()))
        out["sensitivity_mel"].append(float((referred & mel).sum() / max(1, mel.sum())))
        out["sensitivity_malignant"].append(float((referred & mal).sum() / max(1, mal.sum())))
    return out


def _group(
    attribute: str,
    group: str,
    score: np.ndarray,
    base: np.ndarray,
    positive: np.ndarray,
    threshold: float | None,
    goal: float,
    min_positives: int,
) -> GroupReferral:
    referred = base | (score >= threshold) if threshold is not None else base
    n_pos, detected = int(positive.sum()), int((referred & positive).sum())
    return GroupReferral(
        attribute=attribute,
        group=group,
        n=len(score),
        positives=n_pos,
        detected=detected,
        sensitivity=detected / n_pos if n_pos else None,
        sensitivity_ci=wilson_interval(detected, n_pos),
        referral_rate=float(referred.mean()) if len(score) else 0.0,
        own_threshold=fit_threshold(score, base, positive, goal),
        too_small=n_pos < min_positives,
    )
