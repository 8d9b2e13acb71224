"""What `derm-cloud governance referral` prints: a fit (shipped policy first) or a saved policy's check.

The shipped policy's out-of-sample figures come first, then the point fit's when a conservative one was shipped,
then the in-sample view and the groups. Every figure printed is in `referral.json` (or
`policy-evaluation.json`) too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from derm_cloud.governance.referral.holdout import HoldoutEvaluation
    from derm_cloud.governance.referral.policy_file import SavedPolicy
    from derm_cloud.governance.referral.provenance import ModelIdentity
    from derm_cloud.governance.referral.run import ReferralFit

__all__ = ["fit_lines", "saved_policy_lines"]


def fit_lines(fit: ReferralFit, *, dataset_name: str, source_note: str, identity: ModelIdentity) -> list[str]:
    """The printout of a fit, one line per entry."""
    ev, held = fit.evaluation, fit.held_out
    target = ev.target_sensitivity
    lines = [
        f"Referral on {dataset_name}: {ev.n} images ({ev.class_counts['mel']} melanoma, "
        f"{sum(ev.class_counts[c] for c in ('akiec', 'bcc', 'mel'))} malignant), {source_note}, "
        f"model {identity.describe()}",
        f"Rule: refer when {ev.rule}" + (f", or {ev.base_rules}" if ev.base_rules else ""),
    ]
    if fit.conservative is not None:
        c = fit.conservative
        p, q = held.points["mel"], c.held_out.points["mel"]
        lines += [
            f"Conservative fit (the policy saved): {c.held_out.description}",
            f"  {c.headline()}",
            *[f"  at the same thresholds: {c.held_out.headline(t)}" for t in c.held_out.points if t != c.target],
            f"  cost: out-of-sample referral rate {q.referral_rate:.3f} against {p.referral_rate:.3f} for the point "
            f"fit ({q.referral_rate - p.referral_rate:+.3f})",
        ]
    which = " (point fit)" if fit.conservative is not None else ""
    lines.append(f"Out of sample{which}, target sensitivity {target:.2f}: {held.description}")
    lines += [f"  {held.headline(t)}" for t in held.points]
    mel_ci = held.points["mel"].sensitivity_ci
    if fit.conservative is None and mel_ci is not None and mel_ci[0] < target:
        lines.append(
            f"  the lower 95% bound {mel_ci[0]:.3f} is below the target {target:.2f}: --fit conservative picks a "
            "threshold whose bound reaches it, at a higher referral rate"
        )
    lines.append("In sample (threshold fitted on all the images above, measured on the same images):")
    lines += [f"  {line}" for line in ev.summary_lines()]
    if ev.groups:
        if fit.conservative is not None:
            lines.append("(the groups below are at the point fit's threshold, not the conservative one saved)")
        lines.append(
            "Per group at the melanoma threshold (sensitivity, referral rate; * = too few melanomas to judge):"
        )
        for g in ev.groups:
            sens = "  n/a" if g.sensitivity is None else f"{g.sensitivity:.3f}"
            flag = " *" if g.too_small else ""
            lines.append(
                f"  {g.attribute:<14} {g.group:<18} n={g.n:<5} mel={g.positives:<4} sens={sens} "
                f"rate={g.referral_rate:.3f}{flag}"
            )
    lines += [f"note: {note}" for note in held.notes[:-1] + ev.notes]
    return lines


def saved_policy_lines(
    saved: SavedPolicy, held: HoldoutEvaluation, *, policy_file: str, dataset_name: str, source_note: str,
    identity: ModelIdentity,
) -> list[str]:  # fmt: skip
    """The printout of a saved policy applied to new data."""
    lines = [
        f"Saved policy {policy_file} on {dataset_name}: {held.n_evaluated} images, {source_note}, model "
        f"{identity.describe()}",
        f"Policy: {saved.policy.describe()} ({saved.method.get('name', 'unrecorded')} fit)",
        *[f"  {held.headline(t)}" for t in held.points],
    ]
    mel = saved.expected.get("mel") or {}
    if mel.get("sensitivity") is not None:
        ci = mel.get("sensitivity_ci")
        ci_text = f" (95% CI {float(ci[0]):.3f}-{float(ci[1]):.3f})" if ci else ""
        lines.append(
            f"  expected when fitted (out of sample): melanoma sensitivity {float(mel['sensitivity']):.3f}{ci_text}"
        )
    lines += [f"note: {note}" for note in held.notes]
    return lines
