"""Register rules about the deployment: data protection (DPIA), cost, the referral workload, human oversight.

Each rule reads figures from the comparator report or a referral evaluation, compares them with the stated
levels, and cites the JSON path of every figure it used.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from derm_cloud.governance.notes.context import Context, fmt_ci
from derm_cloud.governance.notes.entries import HUMAN_REVIEW, RiskEntry

__all__ = ["DEPLOYMENT_RULES"]


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
                f"{p['sensitivity']:.3f}{fmt_ci(p.get('sensitivity_ci'))} ({p['detected']}/{p['positives']}) and "
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
                f"{g['group']} {g['sensitivity']:.3f}{fmt_ci(g.get('sensitivity_ci'))} "
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


#: In the order their entries are gathered (the register then sorts them by severity).
DEPLOYMENT_RULES = (_data_protection, _cost, _referral, _oversight)
