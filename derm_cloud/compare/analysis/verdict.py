"""The verdict: each backend judged against the `[decision]` constraints, a ranked table and one recommendation.

Pure functions of the figures the analysis already made (quality with its lesion-resampled intervals, the
single-stream latency samples, the cost at the stated volume, each backend's facts) and of the per-image answers
(for the paired quality test). The constraint rules are in `derm_cloud.compare.analysis.constraints`, the
pairwise tests in `derm_cloud.compare.analysis.paired`.

**Ranking rule** (`RANKING_RULE`, also in the docs):

1. *Constraints*: backends that meet every constraint first; then those that miss none but cannot tell some
   (fewest "cannot tell" first); then those that miss some (fewest misses first).
2. *Quality*: within that tier, by balanced accuracy, where a backend whose paired test cannot separate it from
   the best one above it shares that one's quality group (indistinguishable quality is a tie, not an order).
3. *Cost*: within a quality group, the lower monthly cost at the stated volume first (an unknown cost after
   every known one: it cannot be shown to be cheaper).
4. *Latency*: then the lower single-stream p50.

Backends serving one model file that gave the same probabilities on every image (the same-model check) form a
*model group*: their quality and fairness are one, and the verdict says the choice between them is latency, cost
and operations.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from derm_cloud.compare.analysis.constraints import MEETS, MISSES, UNSURE, constraint_list, judge_backend
from derm_cloud.compare.analysis.metric_inputs import as_indices
from derm_cloud.compare.analysis.paired import latency_difference, quality_difference
from derm_cloud.taxonomy import CLASS_CODES

__all__ = ["RANKING_RULE", "model_groups", "verdict_section"]

RANKING_RULE = (
    "Ranked by: (1) constraints: meets all first, then misses none but cannot tell some, then misses some "
    "(fewest first); (2) quality: balanced accuracy, where backends the paired lesion-resampled test cannot "
    "separate share a quality group; (3) within a quality group, lower monthly cost at the stated volume (unknown "
    "cost last); (4) then lower single-stream p50 latency."
)


def verdict_section(
    decision: Mapping[str, Any],
    *,
    backends: Mapping[str, Mapping[str, Any]],
    quality: Mapping[str, Any],
    latency: Mapping[str, Any],
    latency_samples: Mapping[str, Sequence[float]],
    cost: Mapping[str, Any],
    same_model: Mapping[str, Any],
    predictions: Sequence[Mapping[str, Any]],
    volume: int,
    n_boot: int,
    seed: int,
    method: str = "linear",
) -> dict[str, Any]:
    """The verdict as report.json holds it (key `verdict`): constraints, judgements, pairs, ranking, sentence.

    Args:
        decision: the config's `[decision]` table (with the command line's overrides).
        backends: each backend's facts (`emulated`, `stores_images`, `region`, `model_fingerprint` ...).
        quality, latency, cost, same_model: the summary's sections of those names.
        latency_samples: single-stream latencies per backend (ms).
        predictions: the per-image answers (`prediction_rows`): the paired quality test reads them.
        volume: the population's monthly volume the cost is stated at.
        n_boot, seed, method: bootstrap resamples, seed and percentile method of the run.
    """
    scenario = str(decision.get("latency_scenario", "single_stream"))
    load = _load_text(scenario, latency)
    constraints = constraint_list(decision, volume=volume, latency_load=load)
    names = list(backends)
    judged = {
        n: judge_backend(
            constraints,
            facts=backends[n],
            quality=quality.get("backends", {}).get(n, {}),
            latency=latency.get(n, {}),
            samples=latency_samples.get(n, []),
            cost=cost.get("backends", {}).get(n, {}),
            scenario=scenario,
            n_boot=n_boot,
            seed=seed,
            method=method,
        )
        for n in names
    }
    pairs = _pairs(names, backends, predictions, latency_samples, n_boot, seed, method)
    models = model_groups(same_model, backends)
    ranking = _ranking(names, judged, quality, cost, latency_samples, pairs, method)
    meets_all = [r["backend"] for r in ranking if r["tier"] == "meets all"]
    out: dict[str, Any] = {
        "constraints": constraints,
        "latency_load": load,
        "volume": volume,
        "judgements": judged,
        "pairs": pairs,
        "models": models,
        "ranking": ranking,
        "meets_all": meets_all,
        "rule": RANKING_RULE,
    }
    out.update(_recommend(constraints, ranking, judged, pairs, models, backends))
    return out


def model_groups(same_model: Mapping[str, Any], backends: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Backends that serve one model and gave the same probabilities on every image (the same-model check)."""
    out = []
    for group in same_model.get("groups", []):
        pairs = group.get("pairs", [])
        if not pairs:
            continue
        ref = pairs[0]["reference"]
        same = [ref, *(p["backend"] for p in pairs if p.get("mismatch") is False)]
        if len(same) < 2:
            continue
        facts = backends.get(ref, {})
        model = (facts.get("hosted_model") or {}).get("model_id") or facts.get("model_id") or "one model"
        out.append(
            {
                "fingerprint": group["fingerprint"],
                "model": model,
                "backends": same,
                "differ": [p["backend"] for p in pairs if p.get("mismatch") is not False],
                "note": f"{', '.join(same)} serve {model} (fingerprint {str(group['fingerprint'])[:12]}) and gave "
                "the same probabilities on every image: one model, one set of quality and fairness figures; "
                "between them the choice is latency, cost and operations",
            }
        )
    return out


def _load_text(scenario: str, latency: Mapping[str, Any]) -> str:
    if scenario == "server":
        qps = next((s["server"].get("target_qps") for s in latency.values() if "server" in s), None)
        return f"server scenario at {qps:g} requests/s (Poisson arrivals, queueing counted)" if qps else "server"
    return "single-stream load (one request at a time, no queueing)"


def _by_backend(predictions: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, tuple[str, Any, list[float]]]]:
    out: dict[str, dict[str, tuple[str, Any, list[float]]]] = {}
    for row in predictions:
        if row.get("truth") is None or row.get("p_mel") is None:
            continue
        probs = [float(row[f"p_{c}"]) for c in CLASS_CODES]
        out.setdefault(row["backend"], {})[row["image_id"]] = (row["truth"], row.get("lesion_id"), probs)
    return out


def _pairs(
    names: Sequence[str],
    backends: Mapping[str, Mapping[str, Any]],
    predictions: Sequence[Mapping[str, Any]],
    samples: Mapping[str, Sequence[float]],
    n_boot: int,
    seed: int,
    method: str,
) -> list[dict[str, Any]]:
    """Every pair of backends: the paired quality test and the latency test (labelled when not comparable)."""
    answers = _by_backend(predictions)
    out = []
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            pair: dict[str, Any] = {"a": a, "b": b, "quality": None, "latency": None}
            shared = sorted(set(answers.get(a, {})) & set(answers.get(b, {})))
            if shared and backends[a].get("labels_mapped", True) and backends[b].get("labels_mapped", True):
                y = as_indices([answers[a][k][0] for k in shared])
                pa = np.asarray([answers[a][k][2] for k in shared])
                pb = np.asarray([answers[b][k][2] for k in shared])
                lesions = [answers[a][k][1] for k in shared]
                pair["quality"] = quality_difference(y, pa, pb, lesions, n_boot=n_boot, seed=seed)
            if len(samples.get(a, [])) and len(samples.get(b, [])):
                pair["latency"] = latency_difference(samples[a], samples[b], n_boot=n_boot, seed=seed, method=method)
                emulated = [n for n in (a, b) if backends[n].get("emulated")]
                if len(emulated) == 1:
                    pair["latency"]["not_comparable"] = (
                        f"{emulated[0]}'s latency is an emulator's on this machine, the other's is not: their "
                        "latencies are not compared"
                    )
                    pair["latency"]["faster"] = None
                elif emulated:
                    pair["latency"]["note"] = "both emulated: an emulator-to-emulator comparison on this machine"
            out.append(pair)
    return out


def _pair(pairs: Sequence[Mapping[str, Any]], a: str, b: str) -> tuple[Mapping[str, Any] | None, bool]:
    """The pair entry of a and b, and whether a is its `a` side."""
    for p in pairs:
        if (p["a"], p["b"]) == (a, b):
            return p, True
        if (p["a"], p["b"]) == (b, a):
            return p, False
    return None, True


def _same_quality(pairs: Sequence[Mapping[str, Any]], a: str, b: str) -> bool:
    p, _ = _pair(pairs, a, b)
    return bool(p and p["quality"] and p["quality"].get("indistinguishable"))


def _ranking(
    names: Sequence[str],
    judged: Mapping[str, Mapping[str, Mapping[str, Any]]],
    quality: Mapping[str, Any],
    cost: Mapping[str, Any],
    samples: Mapping[str, Sequence[float]],
    pairs: Sequence[Mapping[str, Any]],
    method: str,
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for n in names:
        statuses = {k: j["status"] for k, j in judged[n].items()}
        missed = [k for k, s in statuses.items() if s == MISSES]
        unsure = [k for k, s in statuses.items() if s == UNSURE]
        tier = "misses some" if missed else "cannot tell some" if unsure else "meets all"
        q = quality.get("backends", {}).get(n, {})
        c = cost.get("backends", {}).get(n, {})
        p50 = float(np.percentile(np.asarray(samples[n]), 50, method=method)) if len(samples.get(n, [])) else None  # type: ignore[call-overload]
        rows.append(
            {
                "backend": n,
                "tier": tier,
                "missed": missed,
                "cannot_tell": unsure,
                "balanced_accuracy": q.get("balanced_accuracy") if q.get("n") else None,
                "monthly_usd": c.get("monthly") if c.get("known") else None,
                "p50_ms": p50,
                "_tier_key": ({"meets all": 0, "cannot tell some": 1}.get(tier, 2), len(missed), len(unsure)),
            }
        )
    # Quality groups are numbered once per run, best balanced accuracy first, whatever each backend's constraint
    # tier: identical answers are one group even when a cost or a fact puts one backend in a lower tier.
    rows.sort(key=lambda r: -(r["balanced_accuracy"] if r["balanced_accuracy"] is not None else -1))
    group, leader = 0, None
    for r in rows:
        if leader is None or not _same_quality(pairs, leader, r["backend"]):
            group, leader = group + 1, r["backend"]
        r["quality_group"] = group
    rows.sort(
        key=lambda r: (
            r["_tier_key"],
            r["quality_group"],
            (0, r["monthly_usd"]) if r["monthly_usd"] is not None else (1, 0.0),
            r["p50_ms"] if r["p50_ms"] is not None else float("inf"),
            r["backend"],
        )
    )
    for rank, r in enumerate(rows, 1):
        r["rank"] = rank
        del r["_tier_key"]
    return rows


def _named(keys: Sequence[str], labels: Mapping[str, str]) -> str:
    """Constraint keys as the verdict table labels them (`melanoma sensitivity >= 0.9`, not the config key)."""
    return ", ".join(labels.get(k, k) for k in keys)


def _why_first(
    a: Mapping[str, Any], b: Mapping[str, Any], pairs: Sequence[Mapping[str, Any]], labels: Mapping[str, str]
) -> tuple[str, str]:
    """Why `a` ranks above `b`, and on what kind of evidence (`constraints`, `quality`, `cost`, `latency`)."""
    na, nb = a["backend"], b["backend"]
    if a["tier"] != b["tier"] or a["missed"] != b["missed"]:
        what = (
            f"misses {_named(b['missed'], labels)}"
            if b["missed"]
            else f"cannot tell {_named(b['cannot_tell'], labels)}"
        )
        return f"{nb} {what}", "constraints"
    if a["quality_group"] != b["quality_group"]:
        p, a_side = _pair(pairs, na, nb)
        diff = (p or {}).get("quality") or {}
        ba = diff.get("balanced_accuracy") or {}
        d, ci = ba.get("difference"), ba.get("interval")
        if d is not None and ci is not None and not a_side:
            d, ci = -d, [-ci[1], -ci[0]]
        text = (
            f" (balanced accuracy {d:+.3f}, 95% CI [{ci[0]:+.3f}, {ci[1]:+.3f}], paired)"
            if d is not None and ci
            else ""
        )
        return f"better quality than {nb}{text}", "quality"
    if a["monthly_usd"] != b["monthly_usd"]:
        if b["monthly_usd"] is None:
            return f"its cost is known (${a['monthly_usd']:,.2f}/month) and {nb}'s is not", "cost"
        return f"cheaper than {nb} (${a['monthly_usd']:,.2f} vs ${b['monthly_usd']:,.2f} a month)", "cost"
    return _latency_reason(a, b, pairs), "latency"


def _latency_reason(a: Mapping[str, Any], b: Mapping[str, Any], pairs: Sequence[Mapping[str, Any]]) -> str:
    na, nb = a["backend"], b["backend"]
    p, a_side = _pair(pairs, na, nb)
    lat = (p or {}).get("latency") or {}
    if a["p50_ms"] is None or b["p50_ms"] is None or not lat:
        return f"the same figures as {nb} (ranked by name)"
    if lat.get("not_comparable"):
        return f"p50 {a['p50_ms']:.0f} vs {b['p50_ms']:.0f} ms, not comparable ({lat['not_comparable']})"
    lower = (1 - a["p50_ms"] / b["p50_ms"]) * 100 if b["p50_ms"] else 0.0
    faster = lat.get("faster") == ("a" if a_side else "b")
    ci = lat["p50"].get("interval")
    if ci is not None and not a_side:
        ci = [-ci[1], -ci[0]]
    ci_text = f"; 95% CI of the p50 difference [{ci[0]:.0f}, {ci[1]:.0f}] ms" if ci else ""
    how = "faster" if faster else "no clear latency difference"
    return f"{how}: p50 {a['p50_ms']:.0f} vs {b['p50_ms']:.0f} ms for {nb} ({lower:.0f}% lower{ci_text})"


def _figure_text(key: str, j: Mapping[str, Any], threshold: Any) -> str:
    if "judged" not in j:
        return str(j.get("reason", "no figure"))
    if key.startswith("min_"):
        return f"lower bound {j['judged']:.3f} vs {threshold:g}"
    if key.startswith("max_p"):
        return f"upper bound {j['judged']:.0f} ms vs {threshold:g} ms"
    return f"${j['judged']:,.2f} vs ${threshold:,.2f} a month"


def _unmet(constraints: Sequence[Mapping[str, Any]], ranking: Sequence[Mapping[str, Any]], judged: Any) -> str:
    """One line: the first constraint no backend is shown to meet, and the closest backend to it."""
    for c in constraints:
        key = c["key"]
        if any(judged[r["backend"]][key]["status"] == MEETS for r in ranking):
            continue
        scored = [r["backend"] for r in ranking if "margin" in judged[r["backend"]][key]]
        if scored:
            best = max(scored, key=lambda n: judged[n][key]["margin"])
            figure = _figure_text(key, judged[best][key], c["threshold"])
            return f"No backend meets {c['label']}; closest: {best} ({figure})"
        first = ranking[0]["backend"]
        return f"No backend is shown to meet {c['label']}: cannot tell ({first}: {judged[first][key].get('reason')})"
    top = ranking[0]
    labels = {c["key"]: c["label"] for c in constraints}
    parts = [f"misses {_named(top['missed'], labels)}"] if top["missed"] else []
    parts += [f"cannot tell {_named(top['cannot_tell'], labels)}"] if top["cannot_tell"] else []
    return f"No backend meets every constraint; closest: {top['backend']} ({'; '.join(parts)})"


def _recommend(
    constraints: Sequence[Mapping[str, Any]],
    ranking: Sequence[Mapping[str, Any]],
    judged: Any,
    pairs: Sequence[Mapping[str, Any]],
    models: Sequence[Mapping[str, Any]],
    backends: Mapping[str, Mapping[str, Any]],
) -> dict[str, Any]:
    if not ranking:
        return {"recommended": None, "recommendation": "No backend answered.", "unmet": None, "certainty": ""}
    top = ranking[0]
    name = top["backend"]
    peers = [r["backend"] for r in ranking[1:] if r["quality_group"] == top["quality_group"]]
    same_model = next((m for m in models if name in m["backends"]), None)
    peer_text = ""
    if peers:
        model_peers = [p for p in peers if same_model and p in same_model["backends"]]
        peer_text = f"; quality indistinguishable from {', '.join(peers)}"
        if model_peers == peers:
            peer_text += " (same model, same answers: between them the choice is latency, cost and operations)"
        elif model_peers:
            peer_text += f" ({', '.join(model_peers)}: same model, same answers)"
    labels = {c["key"]: c["label"] for c in constraints}
    why, basis = _why_first(top, ranking[1], pairs, labels) if len(ranking) > 1 else ("the only backend", "constraints")
    emulated = " (its latency is an emulator's)" if backends[name].get("emulated") else ""
    if not constraints:
        text = (
            f"No [decision] constraints stated: by the ranking rule {name}{emulated} comes first{peer_text}; "
            f"{why}. State constraints in [decision] (or --min-mel-sensitivity ...) for a recommendation."
        )
        return {"recommended": None, "recommendation": text, "unmet": None, "certainty": _certainty(basis, top, labels)}
    if top["tier"] == "meets all":
        text = f"Recommend {name}{emulated}: meets all {len(constraints)} constraints{peer_text}; {why}."
        return {"recommended": name, "recommendation": text, "unmet": None, "certainty": _certainty(basis, top, labels)}
    unmet = _unmet(constraints, ranking, judged)
    return {
        "recommended": None,
        "recommendation": unmet + ".",
        "unmet": unmet,
        "certainty": _certainty(None, top, labels),
    }


def _certainty(basis: str | None, top: Mapping[str, Any], labels: Mapping[str, str]) -> str:
    base = "Each constraint is judged on its 95% interval (cost on the catalogue's point figure)"
    if basis is None:
        return base + "; no recommendation is made while no backend meets every constraint."
    lead = {
        "constraints": "the first place rests on the constraint judgements",
        "quality": "its quality lead is clear: the paired 95% interval of the difference excludes 0",
        "cost": "its lead is the catalogue's monthly cost (a point figure; see the price dates in the cost section)",
        "latency": "between indistinguishable-quality backends at one cost, latency decides",
    }[basis]
    unsure = f"; cannot tell: {_named(top['cannot_tell'], labels)}" if top["cannot_tell"] else ""
    return f"{base}; {lead}{unsure}."
