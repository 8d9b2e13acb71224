"""Cost, latency and quality side by side: which backends no other backend beats on all three (the Pareto front)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["PARETO_AXES", "pareto_front", "pareto_section"]

PARETO_AXES = {
    "cost": "cost per 1,000 predictions at the configured monthly volume (USD)",
    "latency": "single-stream p90 latency (ms)",
    "quality": "balanced multiclass accuracy",
}


def pareto_front(points: Sequence[Mapping[str, Any]]) -> list[str]:
    """Names of the points no other point beats on cost (low), latency (low) and quality (high).

    Only the dimensions some point has are compared (no labels: cost and latency); points missing one of
    those dimensions are left out.
    """
    signs = {"cost": 1.0, "latency": 1.0, "quality": -1.0}  # lower is better after the sign
    dims = [d for d in signs if any(p.get(d) is not None for p in points)]
    full = [p for p in points if dims and all(p.get(d) is not None for d in dims)]

    def beats(q: Mapping[str, Any], p: Mapping[str, Any]) -> bool:
        pairs = [(signs[d] * q[d], signs[d] * p[d]) for d in dims]
        return all(a <= b for a, b in pairs) and any(a < b for a, b in pairs)

    return [str(p["name"]) for p in full if not any(beats(q, p) for q in full if q is not p)]


def pareto_section(
    backends: Mapping[str, Mapping[str, Any]],
    latency: Mapping[str, Any],
    quality: Mapping[str, Any],
    cost: Mapping[str, Any],
) -> dict[str, Any]:
    """One point per backend (cost per 1,000 at volume, single-stream p90, balanced accuracy) and the front."""
    points = [
        {
            "name": name,
            "cost": cost["backends"][name]["per_1k_at_volume"],
            "latency": latency[name].get("single_stream", {}).get("p90_ms"),
            "quality": quality.get("backends", {}).get(name, {}).get("balanced_accuracy"),
            "emulated": bool(facts.get("emulated")),
        }
        for name, facts in backends.items()
    ]
    return {"points": points, "front": pareto_front(points), "axes": PARETO_AXES}
