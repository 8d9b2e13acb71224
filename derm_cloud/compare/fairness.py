"""Subgroup performance: is a model as good for every skin tone, sex, age band and body site?

:func:`group_report` computes, per attribute and group, accuracy, balanced accuracy, melanoma sensitivity and
malignant sensitivity with bootstrap confidence intervals, flags groups too small to compare, and gives the
largest gap between groups per metric (``max - min`` over the comparable groups, as fairlearn's
``MetricFrame.difference(method="between_groups")``). :func:`group_columns` builds the groups from
:class:`~derm_cloud.data.Sample` metadata.

Skin tone: a Fitzpatrick type recorded in the metadata is used where present; otherwise the Individual
Typology Angle (ITA) estimated from the image, labelled "ITA estimate (not Fitzpatrick)". HAM10000 records no
skin type and holds few dark-skin images, so on it this section can only describe estimated colour groups; a
real skin-type analysis needs a dataset labelled for it (DDI, Fitzpatrick17k).

Figures describe a model on a dataset for research and triage support; a clinician reviews every result.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from derm_cloud.compare.bootstrap import bootstrap_ci
from derm_cloud.compare.metrics import (
    MALIGNANT_INDICES,
    MEL,
    accuracy,
    as_indices,
    as_probs,
    balanced_accuracy,
    malignant_sensitivity,
    melanoma_sensitivity,
)
from derm_cloud.errors import ConfigError, InvalidImageError

if TYPE_CHECKING:
    from derm_cloud.data.dataset import Sample

__all__ = ["AGE_BANDS", "ITA_LABEL", "METRICS", "GroupColumns", "age_band", "group_columns", "group_report"]

AGE_BANDS: tuple[str, ...] = ("<30", "30-44", "45-59", "60-74", "75+")
ITA_LABEL = "ITA estimate (not Fitzpatrick)"
UNKNOWN = "unknown"
METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float | None]] = {
    "accuracy": accuracy,
    "balanced_accuracy": balanced_accuracy,
    "melanoma_sensitivity": melanoma_sensitivity,
    "malignant_sensitivity": malignant_sensitivity,
}
_ITA_ORDER = ("very light", "light", "intermediate", "tan", "brown", "dark")
_ROMAN = ("I", "II", "III", "IV", "V", "VI")


def age_band(age: float | None) -> str | None:
    """The age band of an age in years (``"<30"``, ``"30-44"``, ``"45-59"``, ``"60-74"``, ``"75+"``), or ``None``.

    Example:
        >>> age_band(29.9), age_band(45), age_band(75.0), age_band(None)
        ('<30', '45-59', '75+', None)
    """
    if age is None or (isinstance(age, float) and math.isnan(age)):
        return None
    for upper, band in zip((30, 45, 60, 75), AGE_BANDS, strict=False):
        if age < upper:
            return band
    return AGE_BANDS[-1]


class GroupColumns(dict[str, list[str | None]]):
    """Attribute -> group per sample, plus ``descriptions`` (attribute -> how the groups were made)."""

    def __init__(self, columns: Mapping[str, list[str | None]], descriptions: Mapping[str, str]) -> None:
        super().__init__(columns)
        self.descriptions: dict[str, str] = dict(descriptions)


def _category(result: object) -> str | None:
    if result is None or isinstance(result, str):
        return result
    value = getattr(result, "category", None)
    return str(value) if value is not None else None


def group_columns(
    samples: Sequence[Sample],
    *,
    skin_tone: str | None = "auto",
    skin_tone_fn: Callable[[bytes], object] | None = None,
) -> GroupColumns:
    """Group columns ``skin_tone``, ``sex``, ``age_band`` and ``site`` from sample metadata.

    Args:
        samples: the dataset's samples (a :class:`~derm_cloud.data.Dataset` works).
        skin_tone: ``"auto"`` (Fitzpatrick type where recorded, ITA estimate otherwise), ``"fitzpatrick"``
            (recorded types only), ``"ita"`` (ITA estimate for every image) or ``None`` (no skin-tone column).
        skin_tone_fn: called with an image's bytes, returns an ITA category (``"light"``...) or an object with
            ``.category`` (default :func:`derm_cloud.governance.skin_tone.estimate_ita`); ``None`` = unknown.

    Returns:
        A :class:`GroupColumns`; unknown values are ``None``. Skin-tone groups are ``"FST III"`` for recorded
        types and ``"ITA light"`` for estimates.

    Example:
        >>> from pathlib import Path
        >>> from derm_cloud.data import Sample
        >>> from derm_cloud.types import PatientMetadata
        >>> s = Sample("a", Path("a.jpg"), "nv", PatientMetadata(age=50, sex="male", fitzpatrick=2))
        >>> dict(group_columns([s]))
        {'skin_tone': ['FST II'], 'sex': ['male'], 'age_band': ['45-59'], 'site': [None]}
    """
    if skin_tone not in ("auto", "fitzpatrick", "ita", None):
        raise ConfigError(f"skin_tone must be 'auto', 'fitzpatrick', 'ita' or None, got {skin_tone!r}")
    columns: dict[str, list[str | None]] = {}
    descriptions: dict[str, str] = {}
    if skin_tone is not None:
        tones: list[str | None] = []
        n_fst = n_ita = n_failed = 0
        estimate = skin_tone_fn
        for sample in samples:
            fst = sample.metadata.fitzpatrick
            if fst is not None and skin_tone != "ita":
                tones.append(f"FST {_ROMAN[fst - 1]}")
                n_fst += 1
                continue
            if skin_tone == "fitzpatrick":
                tones.append(None)
                continue
            if estimate is None:
                from derm_cloud.governance.skin_tone import estimate_ita

                estimate = estimate_ita  # type: ignore[assignment]
            try:
                category = _category(estimate(sample.read_bytes()))  # type: ignore[misc]
            except InvalidImageError:
                category = None
            n_ita += category is not None
            n_failed += category is None
            tones.append(f"ITA {category}" if category else None)
        columns["skin_tone"] = tones
        parts = [f"Fitzpatrick type from metadata for {n_fst} images"] if n_fst else []
        if n_ita or n_failed:
            parts.append(f"{ITA_LABEL} for {n_ita} images ({n_failed} without a usable estimate)")
            from derm_cloud.governance.skin_tone import ITA_CAVEAT

            parts.append(ITA_CAVEAT)
        descriptions["skin_tone"] = "; ".join(parts) if parts else "no skin type recorded"
    columns["sex"] = [s.metadata.sex if s.metadata.sex in ("female", "male") else None for s in samples]
    descriptions["sex"] = "sex from metadata"
    columns["age_band"] = [age_band(s.metadata.age) for s in samples]
    descriptions["age_band"] = "age from metadata, bands " + ", ".join(AGE_BANDS)
    columns["site"] = [s.metadata.site for s in samples]
    descriptions["site"] = "anatomical site from metadata"
    return GroupColumns(columns, descriptions)


def _order(group: str) -> tuple[int, int, str]:
    if group == UNKNOWN:
        return (9, 0, group)
    if group in AGE_BANDS:
        return (0, AGE_BANDS.index(group), group)
    if group.startswith("FST ") and group[4:] in _ROMAN:
        return (1, _ROMAN.index(group[4:]), group)
    if group.startswith("ITA ") and group[4:] in _ITA_ORDER:
        return (2, _ITA_ORDER.index(group[4:]), group)
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
        probs: ``(n, 7)`` probabilities in ``CLASS_CODES`` order.
        groups: attribute -> group value per image (``None`` = unknown); e.g. from :func:`group_columns`.
        min_group_size: a group's metric is compared only when its denominator (images for accuracy and
            balanced accuracy, melanomas or malignant lesions for the sensitivities) reaches this; smaller groups
            are flagged and left out of that metric's gap.
        n_boot: bootstrap resamples per group (stratified by true class within the group; 0 skips CIs).
        seed: bootstrap seed.
        descriptions: attribute -> how its groups were made (default: ``groups.descriptions`` if present).
        clusters: one lesion id per image (``None`` where unknown): CIs resample lesions (cluster bootstrap).

    Returns:
        ``{"attributes": {attr: {"description", "groups": {group: {"n", "n_melanoma", "n_malignant",
        "small_group", "metrics": {metric: {"value", "ci", "denominator", "comparable"}}}},
        "gaps": {metric: {...}}, "warnings": [...]}},
        "metrics", "min_group_size", "method"}``. The ``unknown`` group is reported but never compared.

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
    out: dict[str, Any] = {}
    for attr, values in groups.items():
        if len(values) != len(y):
            raise ConfigError(f"group column {attr!r} has {len(values)} values for {len(y)} images")
        names = np.array([UNKNOWN if v is None else str(v) for v in values], dtype=object)
        per_group: dict[str, Any] = {}
        warnings: list[str] = []
        for group in sorted(set(names.tolist()), key=_order):
            mask = names == group
            gy, gp = y[mask], p[mask]
            gc = list(lesions[mask]) if lesions is not None else None
            small = int(mask.sum()) < min_group_size
            n_mel, n_mal = int(np.sum(gy == MEL)), int(np.sum(np.isin(gy, MALIGNANT_INDICES)))
            denominators = {"melanoma_sensitivity": n_mel, "malignant_sensitivity": n_mal}
            metrics = {}
            for metric, fn in METRICS.items():
                value = fn(gy, gp)
                ci = (
                    bootstrap_ci(fn, gy, gp, n_boot=n_boot, seed=seed, clusters=gc)
                    if n_boot and value is not None
                    else None
                )
                denominator = denominators.get(metric, int(mask.sum()))
                metrics[metric] = {
                    "value": value,
                    "ci": list(ci) if ci else [None, None],
                    "denominator": denominator,
                    "comparable": value is not None and group != UNKNOWN and denominator >= min_group_size,
                }
            per_group[group] = {
                "n": int(mask.sum()),
                "n_lesions": _lesion_count(gc) if gc is not None else int(mask.sum()),
                "n_melanoma": n_mel,
                "n_malignant": n_mal,
                "small_group": small,
                "few_melanomas": n_mel < min_group_size,
                "metrics": metrics,
            }
            if small and group != UNKNOWN:
                warnings.append(
                    f"{attr}={group}: only {int(mask.sum())} images (< {min_group_size}); too few to compare, "
                    "left out of the gaps"
                )
        if UNKNOWN in per_group:
            warnings.append(f"{attr}: {per_group[UNKNOWN]['n']} images with unknown {attr} are not compared")
        gaps = {m: _gap(per_group, m) for m in METRICS}
        for metric in ("melanoma_sensitivity", "malignant_sensitivity"):
            thin = [g for g in gaps[metric]["groups_too_small"] if not per_group[g]["small_group"]]
            if thin:
                cases = "melanomas" if metric.startswith("melanoma") else "malignant lesions"
                shown = ", ".join(f"{g} ({per_group[g]['metrics'][metric]['denominator']})" for g in thin)
                warnings.append(
                    f"{attr}: {metric} left out of the gap for groups with < {min_group_size} {cases}: {shown}"
                )
        out[attr] = {
            "description": notes.get(attr, ""),
            "groups": per_group,
            "gaps": gaps,
            "group_sizes": dict(Counter(names.tolist())),
            "warnings": warnings,
        }
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
