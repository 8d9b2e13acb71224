"""Render referral evaluations: Markdown tables and the referral-rate / sensitivity plot."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from derm_cloud.governance.referral.conservative import ConservativeReferral
    from derm_cloud.governance.referral.evaluation import ReferralEvaluation
    from derm_cloud.governance.referral.holdout import HoldoutEvaluation

__all__ = ["plot_referral", "referral_markdown"]


def referral_markdown(
    evaluation: ReferralEvaluation,
    *,
    title: str | None = None,
    held: HoldoutEvaluation | None = None,
    conservative: ConservativeReferral | None = None,
) -> str:
    """The evaluation as Markdown: the shipped policy's out-of-sample figures, operating points, groups, caveats."""
    e = evaluation
    lines = [f"# {title or f'Referral trade-off: {e.backend} / {e.model_id}'}", ""]
    if conservative is not None:
        c = conservative
        lines += [
            f"**Conservative fit (the policy saved)**: {c.held_out.description}.",
            "",
            f"- {c.headline()}",
            *[f"- {c.held_out.headline(t)}" for t in c.held_out.points if t != c.target],
            "",
        ]
        if held is not None and c.threshold is not None:
            p, q = held.points[c.target], c.held_out.points[c.target]
            lines += [
                f"Cost: out-of-sample referral rate {q.referral_rate:.3f} against {p.referral_rate:.3f} for the point "
                f"fit below ({q.referral_rate - p.referral_rate:+.3f}).",
                "",
            ]
    if held is not None:
        lines += [
            f"**Out of sample{' (point fit)' if conservative is not None else ''}**, target sensitivity "
            f"{e.target_sensitivity:.2f}: {held.description}.",
            "",
            *[f"- {held.headline(target)}" for target in held.points],
            "",
            "**In sample** (fitted and measured on the same images; optimistic):",
            "",
        ]
    lines += [
        f"{e.n} images ({', '.join(f'{c} {n}' for c, n in e.class_counts.items())}). Rule swept: refer when "
        f"{e.rule}" + (f", plus fixed rule: {e.base_rules}" if e.base_rules else "") + ".",
        "",
        *[f"- {line}" for line in e.summary_lines()],
        "",
    ]
    if e.groups:
        lines += [
            "## Per group at the melanoma threshold",
            "",
            "| attribute | group | images | melanomas | sensitivity (95% CI) | referral rate | own threshold | note |",
            "|---|---|---:|---:|---|---:|---:|---|",
        ]
        for g in e.groups:
            sens = "n/a" if g.sensitivity is None else f"{g.sensitivity:.3f}"
            if g.sensitivity_ci:
                sens += f" ({g.sensitivity_ci[0]:.3f}-{g.sensitivity_ci[1]:.3f})"
            own = "n/a" if g.own_threshold is None else f"{g.own_threshold:.4f}"
            note = "too small to judge" if g.too_small else ""
            lines.append(
                f"| {g.attribute} | {g.group} | {g.n} | {g.positives} | {sens} | {g.referral_rate:.3f} | {own} "
                f"| {note} |"
            )
        lines.append("")
    notes = [*(held.notes[:-1] if held is not None else []), *e.notes]  # held's last note is the human-review one
    lines += ["## Caveats", "", *[f"- {n}" for n in notes], ""]
    return "\n".join(lines)


def plot_referral(evaluations: Sequence[ReferralEvaluation]) -> bytes:
    """Referral rate (x) against melanoma and malignant sensitivity (y), one pair of curves per backend (PNG)."""
    import io

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.5, 4.5), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for e in evaluations:
        who = f"{e.backend} / {e.model_id}"
        for key, style in (("mel", "-"), ("malignant", "--")):
            p = e.points[key]
            what = "melanoma" if key == "mel" else "malignant"
            label = f"{who}: {what}" + (f" (t = {p.threshold:.3g})" if p.threshold is not None else "")
            (line,) = ax.plot(e.curve["referral_rate"], e.curve[f"sensitivity_{key}"], style, label=label)
            if p.threshold is not None and p.sensitivity is not None:
                ax.plot([p.referral_rate], [p.sensitivity], "o", color=line.get_color())
    if evaluations:
        ax.axhline(evaluations[0].target_sensitivity, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("referral rate (share of images referred)")
    ax.set_ylabel("sensitivity")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_title("Referral when max(p_mel, p_bcc, p_akiec) >= t (fitted in-sample)")
    ax.legend(fontsize=7, loc="lower right")
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()
