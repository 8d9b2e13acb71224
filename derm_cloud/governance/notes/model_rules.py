"""Register rules about the model: clinical performance, calibration, fairness, training data, model card.

Each rule reads figures from the comparator report (format `derm-cloud-comparison/1`), compares them with the
stated levels, and cites the JSON path of every figure it used.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from derm_cloud.governance.notes.context import Context, fmt_ci
from derm_cloud.governance.notes.entries import HUMAN_REVIEW, RiskEntry

__all__ = ["MODEL_RULES"]

_METRIC_WORDS = {"melanoma_sensitivity": "melanoma sensitivity", "malignant_sensitivity": "malignant sensitivity"}


def _quality(ctx: Context) -> Iterator[RiskEntry]:
    quality = ctx.report.get("quality") or {}
    if not quality.get("available"):
        yield ctx.entry(
            "evidence gap",
            None,
            "medium",
            "No labelled evaluation in this run",
            "The run has no quality figures, so clinical performance cannot be judged from it.",
            "Re-run the comparison on a labelled set (a CSV manifest with labels, or the HAM10000 layout).",
            [ctx.ev("quality.available", quality.get("available"))],
        )
        return
    for name, q in (quality.get("backends") or {}).items():
        base = f"quality.backends.{name}"
        if "skipped" in q:
            yield ctx.entry(
                "evidence gap",
                name,
                "low",
                f"{name}: no quality figures",
                f"{name} was not scored: {q['skipped']}.",
                "Treat it as a latency/cost baseline only; never use it for triage.",
                [ctx.ev(f"{base}.skipped", q["skipped"])],
            )
            continue
        n = q.get("n")
        for key, what, ci_key in (("melanoma", "melanoma", "melanoma_sensitivity"), ("malignant", "malignant", None)):
            sens = (q.get(key) or {}).get("sensitivity")
            if sens is None or sens >= ctx.min_sensitivity:
                continue
            ci = (q.get("ci") or {}).get(ci_key) if ci_key else None
            support = (q.get(key) or {}).get("support")
            yield ctx.entry(
                "clinical performance",
                name,
                "high",
                f"{name} misses {what} lesions: sensitivity {sens:.3f} < {ctx.min_sensitivity}",
                f"At its top-class call, {name} finds {sens:.1%}{fmt_ci(ci)} of {support} {what} lesions in {n} "
                f"images, below the required {ctx.min_sensitivity:.0%}. {HUMAN_REVIEW}",
                "Do not use its top-class call to rule lesions out; use a referral threshold fitted to the target "
                "sensitivity (derm-cloud governance referral) and confirm it on held-out data.",
                [ctx.ev(f"{base}.{key}.sensitivity", sens)]
                + ([ctx.ev(f"{base}.ci.{ci_key}", ci)] if ci else [])
                + [ctx.ev(f"{base}.{key}.support", support)],
            )
        ece = (q.get("calibration") or {}).get("ece")
        if ece is not None and ece > ctx.max_ece:
            yield ctx.entry(
                "calibration",
                name,
                "medium",
                f"{name} probabilities are miscalibrated: ECE {ece:.3f} > {ctx.max_ece}",
                f"Its stated confidence differs from its accuracy by {ece:.3f} on average (top-label ECE), so "
                "probability thresholds do not mean what they say.",
                "Fit thresholds on measured sensitivity, not on the probabilities' face value; consider recalibration.",
                [ctx.ev(f"{base}.calibration.ece", ece)],
            )


def _fairness(ctx: Context) -> Iterator[RiskEntry]:
    fairness = ctx.report.get("fairness") or {}
    for name, fr in (fairness.get("backends") or {}).items():
        for attr, a in (fr.get("attributes") or {}).items():
            base = f"fairness.backends.{name}.attributes.{attr}"
            desc = a.get("description") or ""
            small = []
            below: dict[str, list[tuple[str, dict[str, Any], dict[str, Any]]]] = {m: [] for m in _METRIC_WORDS}
            for group, g in (a.get("groups") or {}).items():
                if group == "unknown":
                    continue
                if g.get("small_group") or (g.get("n_melanoma") or 0) < ctx.min_group_positives:
                    small.append((group, g))
                    continue
                for metric in _METRIC_WORDS:
                    m = (g.get("metrics") or {}).get(metric) or {}
                    if m.get("value") is not None and m["value"] < ctx.min_sensitivity:
                        below[metric].append((group, g, m))
            # One entry per attribute and metric: when a model is below the level overall, every group is, and
            # one line per group would bury the register.
            for metric, rows in below.items():
                if not rows:
                    continue
                words = _METRIC_WORDS[metric]
                listed = ", ".join(
                    f"{grp} {m['value']:.3f}{fmt_ci(m.get('ci'))} (n = {g.get('n')})" for grp, g, m in rows
                )
                yield ctx.entry(
                    "fairness",
                    name,
                    "high",
                    f"{name}: {words} below {ctx.min_sensitivity} for {attr} = " + ", ".join(r[0] for r in rows),
                    f"{words.capitalize()} by {attr}: {listed}; the level is {ctx.min_sensitivity}. "
                    + (f"Groups: {desc.rstrip('.')}. " if desc else "")
                    + HUMAN_REVIEW,
                    f"Refer these {attr} groups to a clinician until a model reaches the level in each of them on "
                    "held-out data.",
                    [ctx.ev(f"{base}.groups.{grp}.metrics.{metric}.value", m["value"]) for grp, _g, m in rows],
                )
            if small:
                yield ctx.entry(
                    "evidence gap",
                    name,
                    "medium",
                    f"{name}: {attr} groups too small to judge",
                    f"Too few melanomas (< {ctx.min_group_positives}) to judge sensitivity for {attr} = "
                    + ", ".join(f"{g} ({v.get('n_melanoma')} of {v.get('n')})" for g, v in small)
                    + ". Absence of evidence is not evidence of equal performance."
                    + (f" Groups: {desc.rstrip('.')}." if desc else ""),
                    "Collect labelled images of these groups (for skin tone, Fitzpatrick-labelled data such as DDI "
                    "or Fitzpatrick17k) before relying on the model for them.",
                    [ctx.ev(f"{base}.groups.{g}.n_melanoma", v.get("n_melanoma")) for g, v in small],
                )
            for metric, words in _METRIC_WORDS.items():
                gap = ((a.get("gaps") or {}).get(metric) or {}).get("gap")
                if gap is None or gap <= ctx.max_gap:
                    continue
                gi = a["gaps"][metric]
                yield ctx.entry(
                    "fairness",
                    name,
                    "medium",
                    f"{name}: {words} differs by {gap:.3f} across {attr}",
                    f"{words.capitalize()} is {gi.get('max_value', float('nan')):.3f} for {gi.get('max_group')} "
                    f"but {gi.get('min_value', float('nan')):.3f} for {gi.get('min_group')} "
                    f"(gap {gap:.3f} > {ctx.max_gap}).",
                    f"Investigate the {attr} = {gi.get('min_group')} group; review its cases manually.",
                    [ctx.ev(f"{base}.gaps.{metric}.gap", gap)],
                )


def _training(ctx: Context) -> Iterator[RiskEntry]:
    warnings = ctx.report.get("warnings") or []
    backends = ctx.report.get("backends") or {}
    for i, text in enumerate(warnings):
        prefix, sep, finding = str(text).partition(":")
        # The comparator names every backend a warning concerns before the colon ("local-onnx, sagemaker: ...").
        names = [n.strip() for n in prefix.split(",") if n.strip() in backends] if sep else []
        if not names or "train" not in finding.lower():
            continue
        for name in names:
            training = (backends[name].get("model_facts") or {}).get("training_data")
            yield ctx.entry(
                "training data",
                name,
                "medium",
                f"{name}: training data overlaps the evaluation data",
                finding.strip(),
                "Report these figures as optimistic; evaluate on lesions the model cannot have seen (another "
                "clinic, ISIC 2018 test images) before any deployment decision.",
                [ctx.ev(f"warnings[{i}]", text)]
                + ([ctx.ev(f"backends.{name}.model_facts.training_data", training)] if training else []),
            )


def _model_card(ctx: Context) -> Iterator[RiskEntry]:
    from derm_cloud.governance.model_cards import model_card

    for name, info in (ctx.report.get("backends") or {}).items():
        facts = dict(info.get("hosted_model") or info.get("model_facts") or {})
        if not facts:
            continue
        card = model_card({"model_id": info.get("model_id"), **facts})
        # Training overlap has its own entry, computed by the comparator from the images themselves.
        flags = [f for f in card.flags if "overlaps the evaluation data" not in f]
        if not flags:
            continue
        key = "hosted_model" if info.get("hosted_model") else "model_facts"
        yield ctx.entry(
            "model card",
            name,
            "medium" if any("licence" in f for f in flags) else "low",
            f"{name}: open questions in its model card",
            "; ".join(flags) + ".",
            "Resolve each point (licence review, intended use, published limitations) before deployment.",
            [
                ctx.ev(f"backends.{name}.{key}.{field}", facts.get(field))
                for field in ("licence", "training_data", "intended_use")
            ],
        )


#: In the order their entries are gathered (the register then sorts them by severity).
MODEL_RULES = (_quality, _fairness, _training, _model_card)
