"""Subgroup performance: is a model as good for every skin tone, sex, age band and body site?

`group_report` computes, per attribute and group, accuracy, balanced accuracy, melanoma sensitivity and
malignant sensitivity with bootstrap confidence intervals, flags groups too small to compare, and gives the
largest gap between groups per metric (`max - min` over the comparable groups, as fairlearn's
`MetricFrame.difference(method="between_groups")`). The groups come from the run stage
(`derm_cloud.compare.run.groups.group_columns`, which estimates skin tone from the pixels where no Fitzpatrick
type is recorded); `fairness_section` scores every label-mapped backend on the comparison's common set.

Figures describe a model on a dataset for research and triage support; a clinician reviews every result.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from derm_cloud.compare.analysis.bootstrap import bootstrap_ci
from derm_cloud.compare.analysis.metric_inputs import as_indices, as_probs
from derm_cloud.compare.analysis.metrics import (
    MALIGNANT_INDICES,
    MEL,
    accuracy,
    balanced_accuracy,
    malignant_sensitivity,
    melanoma_sensitivity,
)
from derm_cloud.compare.analysis.quality import answered
from derm_cloud.compare.run.groups import AGE_BANDS, FITZPATRICK_TYPES, ITA_CATEGORIES
from derm_cloud.errors import ConfigError

if TYPE_CHECKING:
    from derm_cloud.compare.run.config import ComparisonConfig
    from derm_cloud.compare.run.results import RunResults
    from derm_cloud.data.dataset import Sample

__all__ = ["METRICS", "UNKNOWN", "fairness_section", "group_report"]

UNKNOWN = "unknown"
METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float | None]] = {
    "accuracy": accuracy,
    "balanced_accuracy": balanced_accuracy,
    "melanoma_sensitivity": melanoma_sensitivity,
    "malignant_sensitivity": malignant_sensitivity,
}


@dataclass(frozen=True)
class _Rules:
    min_group_size: int
    n_boot: int
    seed: int


def _order(group: str) -> tuple[int, int, str]:
    if group == UNKNOWN:
        return (9, 0, group)
    if group in AGE_BANDS:
        return (0, AGE_BANDS.index(group), group)
    if group.startswith("FST ") and group[4:] in FITZPATRICK_TYPES:
        return (1, FITZPATRICK_TYPES.index(group[4:]), group)
    if group.startswith("ITA ") and group[4:] in ITA_CATEGORIES:
        return (2, ITA_CATEGORIES.index(group[4:]), group)
    return (3, 0, group)


def group_report(
    y_true: Sequence[str],
    probs: np.ndarray,
    groups: Mapping[str, Sequence[str | None]],
    *,
    min_group_size: int = 30,
    n_boot: int = 500,
    seed: int = 0,
    descriptions: Mapping[str, str] | None = None,
    clusters: Sequence[str | None] | None = None,
) -> dict[str, Any]:
    """Per-group quality with bootstrap CIs, small-group warnings and the largest gap per metric.

    Args:
        y_true: canonical codes, one per image.
        probs: `(n, 7)` probabilities in `CLASS_CODES` order.
        groups: attribute -> group value per image (`None` = unknown); e.g. from `group_columns`.
        min_group_size: a group's metric is compared only when its denominator (images for accuracy and
            balanced accuracy, melanomas or malignant lesions for the sensitivities) reaches this; smaller groups
            are flagged and left out of that metric's gap.
        n_boot, seed: bootstrap resamples per group (stratified by true class within the group; 0 skips CIs), seed.
        descriptions: attribute -> how its groups were made (default: `groups.descriptions` if present).
        clusters: one lesion id per image (`None` where unknown): CIs resample lesions (cluster bootstrap).

    Returns:
        `{"attributes": {attr: {"description", "groups": {group: {"n", "n_melanoma", "n_malignant",
        "small_group", "metrics": {metric: {"value", "ci", "denominator", "comparable"}}}}, "gaps": {metric:
        {...}}, "warnings": [...]}}, "metrics", "min_group_size", "method"}`. The `unknown` group is reported
        but never compared.

    Example:
        >>> y = ["mel", "nv", "mel", "nv"]; p = np.eye(7)[[4, 5, 5, 5]]
        >>> r = group_report(y, p, {"sex": ["male", "male", "female", "female"]}, min_group_size=1, n_boot=0)
        >>> r["attributes"]["sex"]["gaps"]["melanoma_sensitivity"]["gap"]
        1.0
    """
    y = as_indices(y_true)
    p, _ = as_probs(probs, len(y))
    if clusters is not None and len(clusters) != len(y):
        raise ConfigError(f"clusters has {len(clusters)} lesion ids for {len(y)} images")
    lesions = np.array(list(clusters), dtype=object) if clusters and any(c for c in clusters) else None
    notes = dict(descriptions if descriptions is not None else getattr(groups, "descriptions", {}))
    rules = _Rules(min_group_size, n_boot, seed)
    out: dict[str, Any] = {}
    for attr, values in groups.items():
        if len(values) != len(y):
            raise ConfigError(f"group column {attr!r} has {len(values)} values for {len(y)} images")
        out[attr] = {"description": notes.get(attr, ""), **_attribute(attr, values, y, p, lesions, rules)}
    return {
        "attributes": out,
        "metrics": list(METRICS),
        "min_group_size": min_group_size,
        "resampled": "lesions" if lesions is not None else "images",
        "method": f"point estimates at argmax; 95% percentile bootstrap CIs ({n_boot} resamples of "
        f"{'lesions (cluster bootstrap)' if lesions is not None else 'images'} within each "
        f"group, stratified by true class, seed {seed}); gap = max - min over the groups whose metric has a "
        f"denominator of at least {min_group_size} (images, melanomas or malignant lesions). A percentile "
        "interval collapses to a point when every resample agrees (e.g. 100% sensitivity on a few cases): "
        "read such groups as barely measured, not as perfect",
    }


def _attribute(
    attr: str, values: Sequence[str | None], y: np.ndarray, p: np.ndarray, lesions: np.ndarray | None, rules: _Rules
) -> dict[str, Any]:
    """Groups, gaps and warnings of one attribute (sex, age band ...)."""
    names = np.array([UNKNOWN if v is None else str(v) for v in values], dtype=object)
    per_group: dict[str, Any] = {}
    warnings: list[str] = []
    for group in sorted(set(names.tolist()), key=_order):
        mask = names == group
        gc = list(lesions[mask]) if lesions is not None else None
        per_group[group] = _group(group, y[mask], p[mask], gc, rules)
        if per_group[group]["small_group"] and group != UNKNOWN:
            warnings.append(
                f"{attr}={group}: only {int(mask.sum())} images (< {rules.min_group_size}); too few to compare, "
                "left out of the gaps"
            )
    if UNKNOWN in per_group:
        warnings.append(f"{attr}: {per_group[UNKNOWN]['n']} images with unknown {attr} are not compared")
    gaps = {m: _gap(per_group, m) for m in METRICS}
    warnings += _thin_case_warnings(attr, per_group, gaps, rules.min_group_size)
    return {"groups": per_group, "gaps": gaps, "group_sizes": dict(Counter(names.tolist())), "warnings": warnings}


def _group(group: str, gy: np.ndarray, gp: np.ndarray, gc: list[Any] | None, rules: _Rules) -> dict[str, Any]:
    """One group's size, case counts and metrics with their intervals."""
    n = len(gy)
    n_mel, n_mal = int(np.sum(gy == MEL)), int(np.sum(np.isin(gy, MALIGNANT_INDICES)))
    denominators = {"melanoma_sensitivity": n_mel, "malignant_sensitivity": n_mal}
    metrics = {}
    for metric, fn in METRICS.items():
        value = fn(gy, gp)
        ci = (
            bootstrap_ci(fn, gy, gp, n_boot=rules.n_boot, seed=rules.seed, clusters=gc)
            if rules.n_boot and value is not None
            else None
        )
        denominator = denominators.get(metric, n)
        metrics[metric] = {
            "value": value,
            "ci": list(ci) if ci else [None, None],
            "denominator": denominator,
            "comparable": value is not None and group != UNKNOWN and denominator >= rules.min_group_size,
        }
    return {
        "n": n,
        "n_lesions": _lesion_count(gc) if gc is not None else n,
        "n_melanoma": n_mel,
        "n_malignant": n_mal,
        "small_group": n < rules.min_group_size,
        "few_melanomas": n_mel < rules.min_group_size,
        "metrics": metrics,
    }


def _thin_case_warnings(
    attr: str, per_group: Mapping[str, Any], gaps: Mapping[str, Any], min_group_size: int
) -> list[str]:
    """Groups big enough in images but with too few melanomas (or malignant lesions) for a sensitivity gap."""
    out = []
    for metric in ("melanoma_sensitivity", "malignant_sensitivity"):
        thin = [g for g in gaps[metric]["groups_too_small"] if not per_group[g]["small_group"]]
        if thin:
            cases = "melanomas" if metric.startswith("melanoma") else "malignant lesions"
            shown = ", ".join(f"{g} ({per_group[g]['metrics'][metric]['denominator']})" for g in thin)
            out.append(f"{attr}: {metric} left out of the gap for groups with < {min_group_size} {cases}: {shown}")
    return out


def fairness_section(config: ComparisonConfig, results: RunResults, common: Sequence[Sample]) -> dict[str, Any]:
    """Per-group figures of every label-mapped backend, on the common set (see `quality.common_set`)."""
    if not common:
        return {"available": False, "reason": "no labelled image was answered by every backend"}
    position = {image_id: i for i, image_id in enumerate(results.group_image_ids)}
    columns = results.groups.subset([position[s.image_id] for s in common])
    descriptions = dict(columns.descriptions)
    at = {s.image_id: i for i, s in enumerate(common)}
    out: dict[str, Any] = {"available": True, "descriptions": descriptions, "backends": {}}
    for name, facts in results.backends.items():
        if not facts.get("labels_mapped", True):
            continue
        rows = results.answers(name)
        scored = [s for s in common if answered(rows, s.image_id)]
        if not scored:
            continue
        idx = [at[s.image_id] for s in scored]
        out["backends"][name] = group_report(
            [str(s.label) for s in scored],
            np.asarray([rows[s.image_id].probs for s in scored], dtype=np.float64),
            {attr: [values[i] for i in idx] for attr, values in columns.items()},
            clusters=[s.lesion_id for s in scored],
            min_group_size=config.fairness["min_group_size"],
            n_boot=min(500, config.scenario_defaults["bootstrap"]),
            seed=config.seed,
            descriptions=descriptions,
        )
    return out


def _lesion_count(lesions: Sequence[str | None]) -> int:
    """Distinct lesions; an image without a lesion id counts as a lesion of its own."""
    return len({c for c in lesions if c}) + sum(1 for c in lesions if not c)


def _gap(per_group: Mapping[str, Any], metric: str) -> dict[str, Any]:
    eligible = {g: v["metrics"][metric]["value"] for g, v in per_group.items() if v["metrics"][metric]["comparable"]}
    excluded = [
        g
        for g, v in per_group.items()
        if g != UNKNOWN and v["metrics"][metric]["value"] is not None and not v["metrics"][metric]["comparable"]
    ]
    if len(eligible) < 2:
        return {
            "gap": None,
            "reason": f"{len(eligible)} comparable group(s); need 2",
            "groups_compared": list(eligible),
            "groups_too_small": excluded,
        }
    hi = max(eligible, key=lambda g: eligible[g])
    lo = min(eligible, key=lambda g: eligible[g])
    return {
        "gap": float(eligible[hi] - eligible[lo]),
        "max_group": hi,
        "max_value": eligible[hi],
        "min_group": lo,
        "min_value": eligible[lo],
        "groups_compared": list(eligible),
        "groups_too_small": excluded,
    }
