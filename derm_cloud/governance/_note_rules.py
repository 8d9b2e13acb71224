"""The rules behind :func:`derm_cloud.governance.notes.risk_register`: one function per kind of entry.

Each rule reads figures from the comparator report (format ``derm-cloud-comparison/1``) or a referral
evaluation, compares them with the stated levels, and cites the JSON path of every figure it used.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from derm_cloud.errors import ConfigError
from derm_cloud.governance.notes import HUMAN_REVIEW, Evidence, RiskEntry

__all__ = ["Context", "all_entries", "load_referral"]

_METRIC_WORDS = {"melanoma_sensitivity": "melanoma sensitivity", "malignant_sensitivity": "malignant sensitivity"}


@dataclass
class Context:
    report: dict[str, Any]
    run_id: str
    source: str
    day: str
    min_sensitivity: float
    max_ece: float
    max_gap: float
    min_group_positives: int
    budget: float | None
    referrals: list[dict[str, Any]] = field(default_factory=list)

    def ev(self, figure: str, value: Any, source: str | None = None) -> Evidence:
        # File names keep citations short; the register's header gives the full path of the run's report.
        return Evidence(figure, value, Path(source or self.source).name, self.run_id)

    def entry(
        self,
        category: str,
        backend: str | None,
        severity: str,
        title: str,
        finding: str,
        action: str,
        evidence: list[Evidence],
        dpia: bool = False,
    ) -> RiskEntry:
        return RiskEntry("", self.day, category, backend, severity, title, finding, action, tuple(evidence), dpia)

    def currency(self) -> str | None:
        for entry in (self.report.get("cost", {}).get("prices_used") or {}).values():
            if entry.get("currency"):
                return str(entry["currency"])
        return None


def load_referral(item: Any) -> dict[str, Any]:
    """A referral evaluation as a dict with its ``_source``: accepts the object, its dict or a JSON path."""
    if hasattr(item, "to_dict"):
        return {**item.to_dict(), "_source": "referral evaluation (in memory)"}
    if isinstance(item, Mapping):
        return {"_source": "referral evaluation (in memory)", **dict(item)}
    path = Path(item)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read referral figures from {path}: {exc}") from exc
    if "points" not in data:
        raise ConfigError(
            f"{path} has no referral operating points; write it with `derm-cloud governance referral --out`"
        )
    return {**data, "_source": str(path)}


def all_entries(ctx: Context) -> list[RiskEntry]:
    out: list[RiskEntry] = []
    for rule in (_quality, _fairness, _training, _model_card, _data_protection, _cost, _referral, _oversight):
        out.extend(rule(ctx))
    return out


def _fmt_ci(ci: Any) -> str:
    if isinstance(ci, (list, tuple)) and len(ci) == 2 and None not in ci:
        return f" (95% CI {ci[0]:.3f}-{ci[1]:.3f})"
    return ""


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
                f"At its top-class call, {name} finds {sens:.1%}{_fmt_ci(ci)} of {support} {what} lesions in {n} "
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
                    f"{grp} {m['value']:.3f}{_fmt_ci(m.get('ci'))} (n = {g.get('n')})" for grp, g, m in rows
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


def _data_protection(ctx: Context) -> Iterator[RiskEntry]:
    for name, info in (ctx.report.get("backends") or {}).items():
        base = f"backends.{name}"
        leaves = info.get("data_leaves_machine")
        stores = info.get("stores_images")
        where = f"{info.get('provider')} {info.get('service')}".strip()
        region = info.get("region")
        ev = [ctx.ev(f"{base}.data_leaves_machine", leaves), ctx.ev(f"{base}.stores_images", stores)]
        if not leaves:
            yield ctx.entry(
                "data protection",
                name,
                "info",
                f"{name}: images stay on this machine",
                f"{name} runs on this machine ({info.get('service') or 'local runtime'}); no image leaves it.",
                "No transfer to record; keep access to the machine controlled.",
                ev,
                dpia=True,
            )
            continue
        stored = {True: "keeps the images", False: "does not keep the images", None: "may keep the images (unknown)"}
        emulated = info.get("emulated")
        ev.append(ctx.ev(f"{base}.region", region))
        yield ctx.entry(
            "data protection",
            name,
            "high" if stores is not False else "medium",
            f"{name}: images leave the organisation ({info.get('provider')}, {region or 'region not set'})",
            f"{name} sends each image to {where} in region {region or 'unknown'}; the provider "
            f"{stored.get(stores, stored[None])}. EXIF/GPS metadata is stripped before upload."
            + (
                " Measured against a local emulator: this describes the real service it stands in for."
                if emulated
                else ""
            ),
            "Record the transfer in the DPIA: legal basis, data processing agreement, region within the permitted "
            "jurisdiction, retention switched off where the service allows; send no patient identifiers.",
            ev,
            dpia=True,
        )


def _cost(ctx: Context) -> Iterator[RiskEntry]:
    cost = ctx.report.get("cost") or {}
    currency = ctx.currency() or ""
    for name, c in (cost.get("backends") or {}).items():
        base = f"cost.backends.{name}"
        if not c.get("known"):
            yield ctx.entry(
                "cost",
                name,
                "low",
                f"{name}: cost unknown",
                "No price in the catalogue for this backend; its cost is unknown, not zero.",
                "Add the price (with source and date) to a prices file and re-run the report.",
                [ctx.ev(f"{base}.known", c.get("known"))],
            )
            continue
        monthly = c.get("monthly")
        volume = cost.get("volume")
        over = ctx.budget is not None and monthly is not None and monthly > ctx.budget
        if ctx.budget is None and not over:
            continue
        yield ctx.entry(
            "cost",
            name,
            "medium" if over else "info",
            f"{name}: {monthly:,.2f} {currency}/month " + ("over" if over else "within") + f" budget {ctx.budget:,}",
            f"At {volume:,} predictions a month {name} costs {monthly:,.2f} {currency}"
            + (f" (idle {c['idle_monthly']:,.2f})" if c.get("idle_monthly") else "")
            + f"; the budget is {ctx.budget:,} {currency}.",
            "Choose a cheaper billing basis or volume, or raise the budget." if over else "No action.",
            [ctx.ev(f"{base}.monthly", monthly), ctx.ev("cost.volume", volume)],
        )


def _referral(ctx: Context) -> Iterator[RiskEntry]:
    for r in ctx.referrals:
        src = r["_source"]
        who = f"{r.get('backend')} / {r.get('model_id')}"
        # Name the run's backend when the referral was measured on the same model (the run names its backends).
        backend = next(
            (n for n, info in (ctx.report.get("backends") or {}).items() if info.get("model_id") == r.get("model_id")),
            r.get("backend"),
        )
        for target, p in (r.get("points") or {}).items():
            what = "melanoma" if target == "mel" else "malignant"
            base = f"points.{target}"
            if p.get("threshold") is None:
                continue
            rate = p["referral_rate"]
            yield ctx.entry(
                "human oversight",
                backend,
                "medium" if rate > 0.5 else "info",
                f"{who}: {what} sensitivity >= {p['target_sensitivity']} costs a referral rate of {rate:.3f}",
                f"Referring when max(p_mel, p_bcc, p_akiec) >= {p['threshold']:.4f} reaches {what} sensitivity "
                f"{p['sensitivity']:.3f}{_fmt_ci(p.get('sensitivity_ci'))} ({p['detected']}/{p['positives']}) and "
                f"refers {p['referred']} of {p['n']} images ({rate:.1%}) on this set's class mix; the threshold was "
                "fitted on the same images (optimistic). " + HUMAN_REVIEW,
                "Adopt the threshold only after confirming it on held-out data; staff the referral rate it implies.",
                [
                    ctx.ev(f"{base}.threshold", p["threshold"], src),
                    ctx.ev(f"{base}.sensitivity", p["sensitivity"], src),
                    ctx.ev(f"{base}.referral_rate", rate, src),
                ],
            )
        by_attr: dict[str, list[tuple[int, dict[str, Any]]]] = {}
        for i, g in enumerate(r.get("groups") or []):
            sens = g.get("sensitivity")
            if g.get("too_small") or g.get("group") == "unknown" or sens is None or sens >= ctx.min_sensitivity:
                continue
            by_attr.setdefault(g["attribute"], []).append((i, g))
        for attribute, rows in by_attr.items():
            listed = ", ".join(
                f"{g['group']} {g['sensitivity']:.3f}{_fmt_ci(g.get('sensitivity_ci'))} "
                f"({g['detected']}/{g['positives']})"
                for _i, g in rows
            )
            yield ctx.entry(
                "fairness",
                backend,
                "high",
                f"{who}: at the melanoma threshold, {attribute} = {', '.join(g['group'] for _i, g in rows)} "
                f"stays below {ctx.min_sensitivity}",
                f"The threshold fitted on all images detects, by {attribute}: {listed} of melanomas; the level is "
                f"{ctx.min_sensitivity}. {HUMAN_REVIEW}",
                "Use a group-aware review rule or a lower threshold for these groups; confirm on held-out data.",
                [ctx.ev(f"groups[{i}].sensitivity", g["sensitivity"], src) for i, g in rows],
            )


def _oversight(ctx: Context) -> Iterator[RiskEntry]:
    emulated = ctx.report.get("emulated") or []
    if emulated:
        yield ctx.entry(
            "evidence gap",
            None,
            "low",
            "Some backends were measured against emulators",
            f"{', '.join(emulated)} ran against local emulators: their quality is the hosted model's, but latency and "
            "availability are this machine's, not the cloud's.",
            "Repeat the latency scenarios against the real endpoints before sizing or signing up.",
            [ctx.ev("emulated", emulated)],
        )
    yield ctx.entry(
        "human oversight",
        None,
        "info",
        "Human review remains mandatory",
        f"{HUMAN_REVIEW} The comparison itself says: {ctx.report.get('disclaimer') or 'triage and research only'}",
        "Keep a clinician in the loop for every result, referred or not; log overrides.",
        [ctx.ev("disclaimer", ctx.report.get("disclaimer"))],
    )
