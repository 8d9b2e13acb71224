"""Cost per backend from the price catalogue: per 1,000 predictions, per month, break-even volumes.

The catalogue and its file format: `derm_cloud.compare.run.prices`.

A backend names its price through `describe().billing["sku"]` (or the config's `billing` table). A sku
without a catalogue entry is **unknown**: every figure is `None` and a warning says how to add it. Nothing
is ever priced at 0 by default.

Formulas (V = predictions per month, H = 730 hours, t = seconds per prediction, q = measured throughput):

* `instance_hour` / `node_hour` (always on): `monthly = rate x instances x H` whatever the traffic, with
  `instances = max(configured, ceil(V / (q x utilisation x 3600 x H)))`; idle cost = the same at V = 0.
* `serverless_gb_second`: `per prediction = t x memory_GB x price (+ per-request price)`.
* `per_request`: `price` per prediction.
* `per_token`: `input_tokens x in_price + output_tokens x out_price` per prediction (measured token usage
  when the backend reports it, else the billing keys `input_tokens` / `output_tokens`).
* `per_1000_units`: tiered price per 1,000 units (image x feature), free tier included.

What each figure assumes, whether the compared prices are on like bases (class, region) and how old they are:
`derm_cloud.compare.analysis.cost_basis`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from derm_cloud.compare.analysis.cost_basis import MAX_PRICE_AGE_DAYS, assumptions, catalogue_age, like_bases

if TYPE_CHECKING:
    from derm_cloud.compare.run.config import ComparisonConfig
    from derm_cloud.compare.run.prices import PriceCatalogue, PriceEntry
    from derm_cloud.compare.run.results import RunResults
    from derm_cloud.compare.run.store import ResultRow

__all__ = [
    "HOURS_PER_MONTH",
    "Measured",
    "backend_cost",
    "break_even_volumes",
    "cost_section",
    "costs",
]

HOURS_PER_MONTH = 730.0


@dataclass
class Measured:
    """What the run measured for one backend (`None` when not measured)."""

    throughput_qps: float | None = None
    mean_latency_s: float | None = None
    input_tokens: float | None = None
    output_tokens: float | None = None
    melanoma_referral_sensitivity: float | None = None
    # An emulated backend's throughput is this machine's, not the cloud endpoint's: never size instances from it.
    emulated: bool = False


@dataclass
class _Model:
    entry: PriceEntry
    billing: dict[str, Any]
    measured: Measured
    utilisation: float
    notes: list[str] = field(default_factory=list)

    def instances(self, volume: float) -> int:
        configured = int(self.billing.get("instances", 1))
        q = self.measured.throughput_qps
        if not q or self.measured.emulated:
            return configured
        capacity = q * self.utilisation * 3600 * HOURS_PER_MONTH
        return max(configured, math.ceil(volume / capacity)) if volume > 0 else configured

    def per_prediction(self) -> float | None:
        e, b, m = self.entry, self.billing, self.measured
        if e.basis == "per_request":
            return e.price
        if e.basis == "serverless_gb_second":
            mem = b.get("memory_gb")
            if mem is None or m.mean_latency_s is None or e.price is None:
                return None
            return float(mem) * m.mean_latency_s * e.price + (e.per_request or 0.0)
        if e.basis == "per_token":
            tin = m.input_tokens if m.input_tokens is not None else b.get("input_tokens")
            tout = m.output_tokens if m.output_tokens is not None else b.get("output_tokens")
            if tin is None or tout is None or e.input_per_million is None or e.output_per_million is None:
                return None
            return (float(tin) * e.input_per_million + float(tout) * e.output_per_million) / 1e6
        return None

    def monthly(self, volume: float) -> float | None:
        e = self.entry
        if e.basis in ("instance_hour", "node_hour") and e.price is not None:
            return e.price * self.instances(volume) * HOURS_PER_MONTH
        if e.basis == "per_1000_units":
            units = self.billing.get("units_per_prediction", self.billing.get("units_per_call", 1))
            return _tiered(volume * float(units), e.tiers)
        per = self.per_prediction()
        return None if per is None else per * volume


def _tiered(units: float, tiers: Sequence[tuple[float | None, float]]) -> float:
    cost, lower = 0.0, 0.0
    for up_to, price in tiers:
        top = units if up_to is None else min(units, up_to)
        if top > lower:
            cost += (top - lower) / 1000 * price
        if up_to is None or units <= up_to:
            break
        lower = up_to
    return cost


def _known_billing_keys(billing: Mapping[str, Any], entry: PriceEntry) -> list[str]:
    need = {"serverless_gb_second": ["memory_gb"], "per_token": ["input_tokens", "output_tokens"]}
    return [k for k in need.get(entry.basis, []) if billing.get(k) is None]


def backend_cost(
    name: str,
    *,
    billing: Mapping[str, Any],
    provider: str | None,
    catalogue: PriceCatalogue,
    measured: Measured,
    volume: int,
    melanoma_prevalence: float | None,
    utilisation: float = 0.5,
) -> dict[str, Any]:
    """Cost figures for one backend; every figure is `None` (with a warning) when the price is unknown."""
    sku = billing.get("sku")
    entry = catalogue.lookup(sku, provider)
    out: dict[str, Any] = {"backend": name, "sku": sku, "billing": dict(billing), "known": False, "warnings": []}
    for key in ("monthly", "per_1k_at_volume", "per_1k_at_throughput", "idle_monthly", "instances", "per_correct_mel"):
        out[key] = None
    if entry is None:
        out["warnings"].append(
            f"{name}: price unknown: no catalogue entry for sku {sku!r}"
            + (" (the backend reports no sku; set billing = { sku = ... } in the config)" if not sku else "")
            + ". Figures are left blank, not 0; add the price to a [cost] prices file with its source and date."
        )
        return out
    model = _Model(entry, dict(billing), measured, utilisation)
    out["entry"] = {k: v for k, v in asdict(entry).items() if v not in (None, (), "")}
    monthly = model.monthly(volume)
    if monthly is None:
        missing = _known_billing_keys(billing, entry)
        why = f"billing keys {missing} missing" if missing else "a measurement it needs was not taken"
        out["warnings"].append(f"{name}: cannot price {entry.id} ({entry.basis}): {why}; cost left unknown")
        return out
    out["known"] = True
    out["monthly"] = monthly
    out["per_1k_at_volume"] = monthly / volume * 1000 if volume else None
    if entry.always_on:
        _always_on(out, model, volume)
    else:
        out["idle_monthly"] = 0.0 if entry.basis != "per_1000_units" else _tiered(0, entry.tiers)
        per = model.per_prediction()
        out["per_1k_at_throughput"] = per * 1000 if per is not None else out["per_1k_at_volume"]
    out["assumptions"] = assumptions(entry, billing, out, volume)
    if entry.alternatives:
        out["warnings"].append(
            f"{name}: sources disagree on {entry.id}: {entry.price} used, alternatives {list(entry.alternatives)}"
        )
    sens = measured.melanoma_referral_sensitivity
    if melanoma_prevalence and sens:
        out["per_correct_mel"] = monthly / (volume * melanoma_prevalence * sens)
    out["curve_fn"] = model.monthly
    return out


def _always_on(out: dict[str, Any], model: _Model, volume: int) -> None:
    """Idle cost and instance count of an always-on endpoint, and its cost per 1,000 at measured throughput."""
    name, measured = out["backend"], model.measured
    out["idle_monthly"] = model.monthly(0)
    out["instances"] = model.instances(volume)
    q = measured.throughput_qps
    if measured.emulated:
        out["warnings"].append(
            f"{name}: throughput-based sizing skipped because the backend was emulated (its throughput is "
            f"this machine's, not the cloud's): {out['instances']} configured instance(s) priced and no cost "
            "per 1,000 at throughput; set billing = { instances = N } for the real deployment"
        )
    elif q:
        out["per_1k_at_throughput"] = (model.entry.price or 0.0) / (q * 3600) * 1000
    else:
        out["warnings"].append(f"{name}: no throughput measured; instance count not checked against volume")


def break_even_volumes(
    monthly_fns: Mapping[str, Callable[[float], float | None]],
    bases: Mapping[str, str] | None = None,
    lo: float = 100,
    hi: float = 1e9,
) -> list[dict[str, Any]]:
    """Volumes where the monthly costs of two backends with different billing bases cross.

    A log grid from `lo` to `hi` is scanned and each sign change refined by bisection. Only the first
    crossing is returned per pair (always-on prices step up with the instance count, which can add more; the
    count is given). Pairs on the same billing basis are skipped: their order does not change with volume
    except through instance steps.
    """
    names = sorted(monthly_fns)
    grid = [lo * (hi / lo) ** (i / 400) for i in range(401)]
    out = []
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            if bases is not None and bases.get(a) == bases.get(b):
                continue

            def diff(v: float, a: str = a, b: str = b) -> float | None:
                ca, cb = monthly_fns[a](v), monthly_fns[b](v)
                return None if ca is None or cb is None else ca - cb

            crossings: list[float] = []
            first_sign = 0.0
            prev_v, prev_d = grid[0], diff(grid[0])
            for v in grid[1:]:
                d = diff(v)
                if d is not None and prev_d is not None and prev_d != 0 and (prev_d < 0) != (d < 0):
                    left, right = prev_v, v
                    for _ in range(60):
                        mid = math.sqrt(left * right)
                        dm = diff(mid)
                        if dm is not None and (dm < 0) == (prev_d < 0):
                            left = mid
                        else:
                            right = mid
                    crossings.append(right)
                    if len(crossings) == 1:
                        first_sign = prev_d
                prev_v, prev_d = v, d
            if crossings:
                out.append(
                    {
                        "a": a,
                        "b": b,
                        "volume": round(crossings[0]),
                        "cheaper_below": a if first_sign < 0 else b,
                        "cheaper_above": b if first_sign < 0 else a,
                        "crossings": len(crossings),
                    }
                )
    return out


def cost_section(
    backends: Sequence[tuple[str, Mapping[str, Any], str | None, Measured]],
    *,
    catalogue: PriceCatalogue,
    volume: int,
    melanoma_prevalence: float | None,
    utilisation: float = 0.5,
    max_price_age_days: int = MAX_PRICE_AGE_DAYS,
) -> dict[str, Any]:
    """Costs of every backend, curves, break-even volumes, like-basis warnings and the prices used with their age."""
    per: dict[str, dict[str, Any]] = {}
    fns: dict[str, Callable[[float], float | None]] = {}
    bases: dict[str, str] = {}
    for name, billing, provider, measured in backends:
        c = backend_cost(
            name,
            billing=billing,
            provider=provider,
            catalogue=catalogue,
            measured=measured,
            volume=volume,
            melanoma_prevalence=melanoma_prevalence,
            utilisation=utilisation,
        )
        fn = c.pop("curve_fn", None)
        if fn is not None:
            fns[name] = fn
            bases[name] = c["entry"]["basis"]
        per[name] = c
    volumes = [round(10 ** (2 + i * 0.125)) for i in range(49)]  # 100 .. 1e8
    curves = {name: [[v, fn(v)] for v in volumes] for name, fn in fns.items()}
    used = {c["entry"]["id"]: c["entry"] for c in per.values() if "entry" in c}
    basis_warnings, alternatives = like_bases(per, catalogue)
    for name, found in alternatives.items():
        per[name]["like_for_like"] = found
    age = catalogue_age(catalogue, {k: catalogue.entries[k] for k in used}, max_price_age_days)
    return {
        "volume": volume,
        "melanoma_prevalence": melanoma_prevalence,
        "utilisation": utilisation,
        "hours_per_month": HOURS_PER_MONTH,
        "backends": per,
        "curves": curves,
        "break_even": break_even_volumes(fns, bases),
        "prices_used": {
            k: {
                **{x: e.get(x) for x in _USED_FIELDS},
                "age_days": age["ages"][k],
                "stale": k in age["stale"],
            }
            for k, e in used.items()
        },
        "catalogue": {x: age[x] for x in ("layers", "max_age_days", "stale")},
        "warnings": [w for c in per.values() for w in c["warnings"]] + basis_warnings + age["warnings"],
    }


_USED_FIELDS = (
    "as_of",
    "source",
    "status",
    "region",
    "currency",
    "origin",
    "price_class",
    "sku",
    "sku_id",
    "source_kind",
)


def costs(
    config: ComparisonConfig, results: RunResults, latency: Mapping[str, Any], quality: Mapping[str, Any]
) -> dict[str, Any]:
    """The summary's cost section: every backend priced from what the run measured of it."""
    prevalence = config.melanoma_prevalence
    melanoma = prevalence.get("mel") if isinstance(prevalence, Mapping) else prevalence
    measured = [
        (
            name,
            _billing(facts),
            facts.get("provider"),
            _measured(facts, latency[name], quality.get("backends", {}).get(name, {}), results.answers(name)),
        )
        for name, facts in results.backends.items()
    ]
    return cost_section(
        measured,
        catalogue=results.prices,
        volume=config.monthly_volume,
        melanoma_prevalence=melanoma,
        utilisation=config.utilisation,
    )


def _measured(
    facts: Mapping[str, Any], latency: Mapping[str, Any], quality: Mapping[str, Any], rows: Mapping[str, ResultRow]
) -> Measured:
    """Throughput (best offline level, else 1 / mean single-stream latency), latency, tokens and referral rate."""
    ss = latency.get("single_stream", {})
    q = (latency.get("offline") or {}).get("best_throughput_qps")
    if q is None and ss.get("mean_ms"):
        q = 1000.0 / ss["mean_ms"]
    tin, tout = _tokens(rows)
    return Measured(
        throughput_qps=q,
        mean_latency_s=ss["mean_ms"] / 1000 if ss.get("mean_ms") else None,
        input_tokens=tin,
        output_tokens=tout,
        melanoma_referral_sensitivity=quality.get("melanoma_referral_sensitivity"),
        emulated=bool(facts.get("emulated")),
    )


def _billing(facts: Mapping[str, Any]) -> dict[str, Any]:
    billing = dict(facts.get("billing") or {})
    if "memory_gb" not in billing and billing.get("memory_mb") is not None:
        billing["memory_gb"] = float(billing["memory_mb"]) / 1024
    if "instances" not in billing and billing.get("nodes") is not None:
        billing["instances"] = billing["nodes"]
    return billing


def _tokens(rows: Mapping[str, ResultRow]) -> tuple[float | None, float | None]:
    """Mean input and output tokens per request, from the usage the backend reported (`None` when none)."""
    ins, outs = [], []
    for r in rows.values():
        nested = r.extra.get("usage")
        usage: Mapping[str, Any] = nested if isinstance(nested, Mapping) else r.extra
        tin = usage.get("prompt_tokens", usage.get("input_tokens"))
        tout = usage.get("completion_tokens", usage.get("output_tokens"))
        if isinstance(tin, (int, float)) and isinstance(tout, (int, float)):
            ins.append(float(tin))
            outs.append(float(tout))
    return (float(np.mean(ins)), float(np.mean(outs))) if ins else (None, None)
