"""The `[decision]` constraints, and how one backend's figures are judged against each: meets, misses, cannot tell.

Every judgement uses the figure's 95% interval, so that a backend is never said to meet a limit that its own
measurement cannot vouch for:

* a **minimum** (melanoma sensitivity, balanced accuracy) is *met* when the interval's lower bound reaches it
  (`low >= threshold`), *missed* when even the upper bound falls short (`high < threshold`), and *cannot tell*
  when the interval straddles it;
* a **maximum** (p95 or p99 latency) is *met* when the upper bound is within it (`high <= limit`), *missed* when
  the lower bound exceeds it (`low > limit`), else *cannot tell*. Latency measured against a derm-cloud
  emulator is the emulator's on this machine, never the provider's: it is always *cannot tell*;
* the **monthly budget** is judged on the cost figure at the population's monthly volume (a point figure from
  the price catalogue: no interval); an unknown price is *cannot tell*;
* **data handling** (`no_image_storage`, `allowed_regions`) is judged on the backend's own facts
  (`BackendInfo.stores_images`, `region`, `data_leaves_machine`); unknown facts are *cannot tell*.

A figure that is not there (no labels, a scenario not run) is *cannot tell*, with the reason.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from derm_cloud.compare.analysis.latency import bootstrap_ci, percentile

__all__ = ["MEETS", "MISSES", "UNSURE", "constraint_list", "judge_backend", "judge_max", "judge_min"]

MEETS, MISSES, UNSURE = "meets", "misses", "cannot tell"

_QUALITY = {
    "min_melanoma_sensitivity": (
        "melanoma_sensitivity",
        "melanoma sensitivity",
        "lower bound of the 95% CI (lesion-resampled bootstrap) of melanoma sensitivity at the top-1 (argmax) "
        "operating point: a melanoma is found when mel is the image's highest-probability class",
    ),
    "min_balanced_accuracy": (
        "balanced_accuracy",
        "balanced accuracy",
        "lower bound of the 95% CI (lesion-resampled bootstrap) of balanced accuracy (top-1, argmax)",
    ),
}
_SCENARIO_TEXT = {
    "single_stream": "single-stream (one request at a time, no queueing)",
    "server": "server scenario (Poisson arrivals at the stated target rate, queueing counted)",
}


def constraint_list(decision: Mapping[str, Any], *, volume: int, latency_load: str) -> list[dict[str, Any]]:
    """The stated constraints in a fixed order, each with its label and what it is judged on."""
    out: list[dict[str, Any]] = []
    for key, (_metric, label, judged_on) in _QUALITY.items():
        if decision.get(key) is not None:
            out.append(
                {
                    "key": key,
                    "label": f"{label} >= {decision[key]:g}",
                    "threshold": decision[key],
                    "judged_on": judged_on,
                }
            )
    for q in (95, 99):
        key = f"max_p{q}_ms"
        if decision.get(key) is not None:
            out.append(
                {
                    "key": key,
                    "label": f"p{q} latency <= {decision[key]:g} ms",
                    "threshold": decision[key],
                    "judged_on": f"upper bound of the 95% bootstrap CI of p{q}, {latency_load}",
                }
            )
    if decision.get("max_monthly_usd") is not None:
        out.append(
            {
                "key": "max_monthly_usd",
                "label": f"cost <= ${decision['max_monthly_usd']:,.2f}/month",
                "threshold": decision["max_monthly_usd"],
                "judged_on": f"monthly cost at {volume:,} predictions a month (price catalogue; a point figure)",
            }
        )
    if decision.get("no_image_storage"):
        out.append(
            {
                "key": "no_image_storage",
                "label": "provider keeps no image",
                "threshold": True,
                "judged_on": "the backend's stores_images fact",
            }
        )
    if decision.get("allowed_regions"):
        regions = list(decision["allowed_regions"])
        out.append(
            {
                "key": "allowed_regions",
                "label": f"region in {', '.join(regions)} (or this machine)",
                "threshold": regions,
                "judged_on": "the backend's region and data_leaves_machine facts",
            }
        )
    return out


def judge_min(value: float | None, interval: Sequence[float | None] | None, threshold: float) -> dict[str, Any]:
    """A minimum judged on the interval: meets when `low >= threshold`, misses when `high < threshold`."""
    if value is None or not interval or interval[0] is None or interval[1] is None:
        return {"status": UNSURE, "value": value, "reason": "no interval for this figure"}
    lo, hi = float(interval[0]), float(interval[1])
    status = MEETS if lo >= threshold else MISSES if hi < threshold else UNSURE
    out = {
        "status": status,
        "value": value,
        "interval": [lo, hi],
        "judged": lo,
        "margin": lo - threshold,
        "margin_interval": [lo - threshold, hi - threshold],
    }
    if status == UNSURE:
        out["reason"] = f"the 95% interval [{lo:.3f}, {hi:.3f}] straddles {threshold:g}"
    return out


def judge_max(value: float | None, interval: Sequence[float | None] | None, limit: float) -> dict[str, Any]:
    """A maximum judged on the interval: meets when `high <= limit`, misses when `low > limit`."""
    if value is None or not interval or interval[0] is None or interval[1] is None:
        return {"status": UNSURE, "value": value, "reason": "no interval for this figure"}
    lo, hi = float(interval[0]), float(interval[1])
    status = MEETS if hi <= limit else MISSES if lo > limit else UNSURE
    out = {
        "status": status,
        "value": value,
        "interval": [lo, hi],
        "judged": hi,
        "margin": limit - hi,
        "margin_interval": [limit - hi, limit - lo],
    }
    if status == UNSURE:
        out["reason"] = f"the 95% interval [{lo:.1f}, {hi:.1f}] ms straddles {limit:g} ms"
    return out


def judge_backend(
    constraints: Sequence[Mapping[str, Any]],
    *,
    facts: Mapping[str, Any],
    quality: Mapping[str, Any],
    latency: Mapping[str, Any],
    samples: Sequence[float],
    cost: Mapping[str, Any],
    scenario: str,
    n_boot: int,
    seed: int,
    method: str,
) -> dict[str, dict[str, Any]]:
    """Every constraint judged for one backend: `{key: {status, value, interval, margin, ... reason}}`."""
    out: dict[str, dict[str, Any]] = {}
    for c in constraints:
        key, thr = c["key"], c["threshold"]
        if key in _QUALITY:
            out[key] = _judge_quality(key, thr, quality)
        elif key.startswith("max_p"):
            q = int(key[5:7])
            out[key] = _judge_latency(q, thr, facts, latency, samples, scenario, n_boot, seed, method)
        elif key == "max_monthly_usd":
            out[key] = _judge_cost(thr, cost)
        elif key == "no_image_storage":
            out[key] = _judge_storage(facts)
        else:
            out[key] = _judge_region(thr, facts)
    return out


def _judge_quality(key: str, threshold: float, quality: Mapping[str, Any]) -> dict[str, Any]:
    metric = _QUALITY[key][0]
    if not quality.get("n"):
        reason = quality.get("skipped") or "no quality figures (unlabelled images or no answers)"
        return {"status": UNSURE, "value": None, "reason": reason}
    value = quality["melanoma"]["sensitivity"] if metric == "melanoma_sensitivity" else quality[metric]
    return judge_min(value, (quality.get("ci") or {}).get(metric), threshold)


def _judge_latency(
    q: int,
    limit: float,
    facts: Mapping[str, Any],
    latency: Mapping[str, Any],
    samples: Sequence[float],
    scenario: str,
    n_boot: int,
    seed: int,
    method: str,
) -> dict[str, Any]:
    if facts.get("emulated"):
        return {
            "status": UNSURE,
            "value": _latency_figure(q, latency, samples, scenario, 0, seed, method)[0],
            "reason": "emulated: this latency is a derm-cloud emulator's on this machine, not the provider's "
            "endpoint; it is never judged against a real limit",
        }
    value, interval = _latency_figure(q, latency, samples, scenario, n_boot, seed, method)
    if value is None:
        return {"status": UNSURE, "value": None, "reason": f"p{q} of the {scenario} scenario was not measured"}
    return judge_max(value, interval, limit)


def _latency_figure(
    q: int, latency: Mapping[str, Any], samples: Sequence[float], scenario: str, n_boot: int, seed: int, method: str
) -> tuple[float | None, list[float] | None]:
    """pXX and its 95% CI: computed from the single-stream samples, else read from the scenario's summary."""
    if scenario == "single_stream" and len(samples):
        value = percentile(samples, q, method)
        lo, hi = bootstrap_ci(samples, q, method=method, n_boot=n_boot, seed=seed)
        return value, (None if np.isnan(lo) else [lo, hi])
    summary = latency.get(scenario) or {}
    return summary.get(f"p{q}_ms"), summary.get(f"p{q}_ci_ms")


def _judge_cost(budget: float, cost: Mapping[str, Any]) -> dict[str, Any]:
    monthly = cost.get("monthly")
    if not cost.get("known") or monthly is None:
        return {"status": UNSURE, "value": None, "reason": "cost unknown (no price in the catalogue)"}
    status = MEETS if monthly <= budget else MISSES
    return {"status": status, "value": monthly, "judged": monthly, "margin": budget - monthly}


def _judge_storage(facts: Mapping[str, Any]) -> dict[str, Any]:
    stores = facts.get("stores_images")
    if stores is None:
        return {"status": UNSURE, "value": None, "reason": "the backend does not say whether images are kept"}
    return {"status": MISSES if stores else MEETS, "value": bool(stores)}


def _judge_region(allowed: Sequence[str], facts: Mapping[str, Any]) -> dict[str, Any]:
    region = facts.get("region")
    if not facts.get("data_leaves_machine"):
        return {"status": MEETS, "value": "this machine"}
    if not region:
        return {"status": UNSURE, "value": None, "reason": "images leave the machine to an unstated region"}
    return {"status": MEETS if region in allowed else MISSES, "value": region}
