"""The selection algorithm behind `build_validation_set`.

Lesions are the unit: a greedy, seeded pick that first fills every group and every class-within-group to its
minimum, then fills each class to its image quota with a seeded random draw (so groups keep their natural mix
once the minimums are met), never exceeding the requested number of images.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from derm_cloud.taxonomy import CLASS_CODES

__all__ = ["UNKNOWN", "CellCoverage", "class_quota", "lesion_units", "select_units"]

UNKNOWN = "unknown"
_STRATA_ORDER = ("label", "sex", "age_band", "site", "skin_tone")
# Greedy weights: a missing group outranks a missing class-within-group, which outranks class balance.
_W_GROUP, _W_CELL, _W_QUOTA = 1000.0, 100.0, 10.0


@dataclass(frozen=True)
class CellCoverage:
    """How well one cell of the stratification was filled.

    Attributes:
        stratum: `"label"`, `"sex"`, ..., or `"label x site"` for a class within a group.
        value: the group (`"female"`, `"mel | back"`...).
        available: images (classes) or lesions (groups, cells) in the source data that fall in the cell.
        chosen: how many of those are in the validation set.
        target: how many were wanted (the class quota, or the minimum per group / cell).
        reason: why the cell is short (`None` when filled).
        unit: `"images"` for classes, `"lesions"` for groups and classes within groups.
    """

    stratum: str
    value: str
    available: int
    chosen: int
    target: int
    reason: str | None = None
    unit: str = "lesions"

    @property
    def filled(self) -> bool:
        return self.chosen >= self.target


def lesion_units(groups: Any, images_per_lesion: int | None, seed: int) -> dict[str, Any]:
    """One unit per lesion (images without a lesion id are their own unit), with its strata values."""
    rng = np.random.default_rng(seed)
    key = [
        lid if isinstance(lid, str) and lid else f"~{iid}" for lid, iid in zip(groups["lesion_id"], groups["image_id"])
    ]
    by_unit: dict[str, list[int]] = {}
    for row, k in enumerate(key):
        by_unit.setdefault(k, []).append(row)
    names = sorted(by_unit)  # sorted, so the seed alone decides the outcome, not the row order
    keep, drop, first = [], [], []
    for name in names:
        rows = by_unit[name]
        if images_per_lesion is not None and len(rows) > images_per_lesion:
            picked = sorted(int(r) for r in rng.permutation(rows)[:images_per_lesion])
        else:
            picked = rows
        keep.append([groups["image_id"].iat[r] for r in picked])
        drop.append([groups["image_id"].iat[r] for r in rows if r not in picked])
        first.append(picked[0])
    return {"names": names, "keep": keep, "drop": drop, "rows": groups.iloc[first].reset_index(drop=True)}


def class_quota(available: dict[str, int], size: int, allocation: str) -> dict[str, int]:
    """Images per class: water-filling for `balanced`, largest remainder for `proportional`."""
    present = [c for c in CLASS_CODES if available.get(c, 0) > 0]
    if allocation == "proportional":
        total = sum(available[c] for c in present)
        raw = {c: size * available[c] / total for c in present}
        quota = {c: int(raw[c]) for c in present}
        for c in sorted(present, key=lambda c: -(raw[c] - quota[c]))[: size - sum(quota.values())]:
            quota[c] += 1
        return {c: max(1, q) for c, q in quota.items()} if size >= len(present) else quota
    quota = {c: 0 for c in present}
    left, open_classes = size, list(present)
    while left > 0 and open_classes:
        share = max(1, left // len(open_classes))
        for c in list(open_classes):
            add = min(share, available[c] - quota[c], left)
            quota[c] += add
            left -= add
            if quota[c] >= available[c]:
                open_classes.remove(c)
            if left == 0:
                break
    return quota


def select_units(
    units: dict[str, Any],
    strata: Sequence[str],
    size: int,
    allocation: str,
    min_per_group: int,
    min_per_cell: int,
    seed: int,
) -> tuple[list[int], list[CellCoverage]]:
    rows = units["rows"]
    n_units = len(rows)
    n_images = np.array([len(k) for k in units["keep"]])
    labels = list(rows["label"])
    """Greedy, seeded pick of lesion units; returns the chosen unit indices and the coverage of every cell.

    Cells: `("label", c)` (counted in images against the class quota), `(stratum, group)` for the other
    strata (at least `min_per_group` lesions) and `("label x stratum", "c / group")` (at least
    `min_per_cell` lesions). Each step takes the unit that fills the most missing cells per image, then the
    most under-quota class; the seeded jitter breaks the remaining ties.
    """
    cell_keys: list[tuple[str, str]] = []
    cell_index: dict[tuple[str, str], int] = {}
    membership: list[list[int]] = [[] for _ in range(n_units)]

    def cell(key: tuple[str, str], unit: int) -> None:
        if key not in cell_index:
            cell_index[key] = len(cell_keys)
            cell_keys.append(key)
        membership[unit].append(cell_index[key])

    for u in range(n_units):
        cell(("label", labels[u]), u)
        for s in strata:
            if s == "label":
                continue
            value = rows[s].iat[u]
            if value == UNKNOWN:
                continue  # "unknown" is not a group to represent
            cell((s, value), u)
            if min_per_cell > 0:
                cell((f"label x {s}", f"{labels[u]} / {value}"), u)
    if min_per_cell > 0:
        # Classes absent from a group are cells too: "no df on the scalp" is worth reporting for a fairness study.
        present = sorted(set(labels), key=CLASS_CODES.index)
        for stratum, value in list(cell_keys):
            if stratum != "label" and " x " not in stratum:
                for lab in present:
                    key = (f"label x {stratum}", f"{lab} / {value}")
                    if key not in cell_index:
                        cell_index[key] = len(cell_keys)
                        cell_keys.append(key)
    m = np.zeros((n_units, len(cell_keys)), dtype=np.float64)
    for u, cells_u in enumerate(membership):
        m[u, cells_u] = 1.0
    available = m.sum(axis=0).astype(int)
    images_per_class = {c: int(n_images[[i for i, lab in enumerate(labels) if lab == c]].sum()) for c in set(labels)}
    quota_images = class_quota(images_per_class, size, allocation)
    target = np.zeros(len(cell_keys), dtype=int)
    weight = np.zeros(len(cell_keys))
    for k, (stratum, _value) in enumerate(cell_keys):
        if stratum == "label":
            weight[k] = 0.0  # classes are steered by the quota term, not by coverage
        elif " x " in stratum:
            target[k], weight[k] = min_per_cell, _W_CELL
        else:
            target[k], weight[k] = min_per_group, _W_GROUP
    label_of = np.array([CLASS_CODES.index(lab) for lab in labels])
    quota_vec = np.array([quota_images.get(c, 0) for c in CLASS_CODES], dtype=np.float64)

    rng = np.random.default_rng(seed)
    jitter = rng.random(n_units) * 1e-3
    chosen = np.zeros(n_units, dtype=bool)
    chosen_cells = np.zeros(len(cell_keys))
    class_images = np.zeros(len(CLASS_CODES))
    room = size
    while room > 0:
        fits = (~chosen) & (n_images <= room)
        if not fits.any():
            break
        deficit = (chosen_cells < target).astype(np.float64) * weight
        coverage = (m @ deficit) / n_images
        under = (quota_vec - class_images) / np.maximum(quota_vec, 1.0)
        quota_term = _W_QUOTA * under[label_of]
        # Once the minimums are met, the jitter makes the pick a seeded random draw within each class, so groups
        # keep their natural mix instead of being flattened (which would over-sample rare sites).
        score = np.where(fits, coverage + quota_term + jitter, -np.inf)
        u = int(np.argmax(score))
        chosen[u] = True
        chosen_cells += m[u]
        class_images[label_of[u]] += n_images[u]
        room -= int(n_images[u])

    cells: list[CellCoverage] = []
    for k, (stratum, value) in enumerate(cell_keys):
        if stratum == "label":
            # Classes are counted in images, the unit of the quota; groups and cells in lesions.
            code = CLASS_CODES.index(value)
            have, got, want = images_per_class[value], int(class_images[code]), int(quota_vec[code])
            unit = "images"
        else:
            have, got, want, unit = int(available[k]), int(chosen_cells[k]), int(target[k]), "lesions"
        reason = None
        if got < want:
            if have == 0:
                reason = f"no {unit[:-1]} in the data"
            elif have < want:
                reason = f"only {have} {unit if have > 1 else unit[:-1]} in the data"
            elif stratum == "label":
                reason = "whole lesions did not fit the quota exactly"
            else:
                reason = f"size {size} too small to cover it alongside the other cells"
        cells.append(CellCoverage(stratum, value, have, got, want, reason, unit))
    order = {s: i for i, s in enumerate(_STRATA_ORDER)}
    cells.sort(key=lambda c: (" x " in c.stratum, order.get(c.stratum.split(" x ")[-1], 9), c.stratum, c.value))
    return [int(u) for u in np.flatnonzero(chosen)], cells
