"""Cost, latency and quality side by side: which backends no other backend beats on all three (the Pareto front).

Every backend is a point, none is dropped. A point is ranked only on the axes it has on a comparable basis:

* **cost** when its price is known (an unknown price is not zero);
* **latency** when it is the backend's own: a local model's, or an endpoint's. An emulated backend's latency
  is the 127.0.0.1 emulator's, not the provider's, so it is shown but never used to rank;
* **quality** when labelled images were scored.

Points with the same ranked axes form a band (`known cost, measured latency`, `cost unknown`, ...), and each
band has its own front: a backend is never ranked against another on an axis one of them lacks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["PARETO_AXES", "pareto_bands", "pareto_front", "pareto_section"]

PARETO_AXES = {
    "cost": "cost per 1,000 predictions at the configured monthly volume (USD)",
    "latency": "single-stream p90 latency (ms)",
    "quality": "balanced multiclass accuracy",
}

_SIGNS = {"cost": 1.0, "latency": 1.0, "quality": -1.0}  # lower is better after the sign


def pareto_front(points: Sequence[Mapping[str, Any]], dims: Sequence[str] | None = None) -> list[str]:
    """Names of the points no other point beats on the `dims` (default: cost low, latency low, quality high).

    Without `dims`, only the dimensions some point has are compared; either way points missing one of those
    dimensions are left out.
    """
    if dims is None:
        dims = [d for d in _SIGNS if any(p.get(d) is not None for p in points)]
    full = [p for p in points if dims and all(p.get(d) is not None for d in dims)]

    def beats(q: Mapping[str, Any], p: Mapping[str, Any]) -> bool:
        pairs = [(_SIGNS[d] * q[d], _SIGNS[d] * p[d]) for d in dims]
        return all(a <= b for a, b in pairs) and any(a < b for a, b in pairs)

    return [str(p["name"]) for p in full if not any(beats(q, p) for q in full if q is not p)]


def _ranked_on(point: Mapping[str, Any]) -> tuple[str, ...]:
    """The axes a point can be ranked on: present, and (for latency) the backend's own."""
    axes = [d for d in ("cost", "latency", "quality") if point.get(d) is not None]
    if point.get("emulated") and "latency" in axes:
        axes.remove("latency")
    return tuple(axes)


def _band_name(point: Mapping[str, Any], axes: Sequence[str]) -> str:
    cost = "known cost" if "cost" in axes else "cost unknown"
    if point.get("emulated") and point.get("latency") is not None:
        latency = "emulator latency (not ranked)"
    else:
        latency = "measured latency" if "latency" in axes else "no latency"
    return f"{cost}, {latency}" + ("" if "quality" in axes else ", no quality")


def pareto_bands(points: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The points grouped by the axes they can be ranked on, each group with its own front."""
    bands: dict[str, dict[str, Any]] = {}
    for p in points:
        axes = _ranked_on(p)
        band = bands.setdefault(_band_name(p, axes), {"name": _band_name(p, axes), "ranked_on": list(axes)})
        band.setdefault("backends", []).append(p["name"])
        band.setdefault("_points", []).append(p)
    out = []
    for band in bands.values():
        members = band.pop("_points")
        band["front"] = pareto_front(members, band["ranked_on"]) if band["ranked_on"] else []
        out.append(band)
    return out


def pareto_section(
    backends: Mapping[str, Mapping[str, Any]],
    latency: Mapping[str, Any],
    quality: Mapping[str, Any],
    cost: Mapping[str, Any],
) -> dict[str, Any]:
    """Every backend as a point (cost per 1,000 at volume, single-stream p90, balanced accuracy), in bands.

    Returns:
        `points` (each with its `band`, the axes it is `ranked_on`, `pareto_optimal` within its band and
        `latency_basis`), `bands`, `front` (every band's front) and `axes`.
    """
    points: list[dict[str, Any]] = []
    for name, facts in backends.items():
        known = cost["backends"][name].get("known", True)
        basis = latency[name].get("basis", {})
        points.append(
            {
                "name": name,
                "cost": cost["backends"][name]["per_1k_at_volume"] if known else None,
                "latency": latency[name].get("single_stream", {}).get("p90_ms"),
                "quality": quality.get("backends", {}).get(name, {}).get("balanced_accuracy"),
                "emulated": bool(facts.get("emulated")),
                "latency_basis": basis.get("label"),
            }
        )
    bands = pareto_bands(points)
    for band in bands:
        for p in points:
            if p["name"] in band["backends"]:
                p.update(band=band["name"], ranked_on=band["ranked_on"], pareto_optimal=p["name"] in band["front"])
    front = [name for band in bands for name in band["front"]]
    return {"points": points, "bands": bands, "front": front, "axes": PARETO_AXES}
