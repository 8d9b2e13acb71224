"""The image sections of a dataset audit: duplicate images (perceptual hashes) and skin-tone (ITA) estimates."""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np

from derm_cloud.errors import DermCloudError, MissingDependencyError
from derm_cloud.governance._records import read_image
from derm_cloud.governance.audit.results import DatasetAudit
from derm_cloud.governance.skin_tone import ITA_CATEGORIES, ITA_CAVEAT

__all__ = ["image_sections"]


def image_sections(
    audit: DatasetAudit,
    frame: Any,
    max_images: int | None,
    distance: int,
    seed: int,
    cache: dict[str, Any],
    progress: Callable[[str, int], Callable[[int], None]] | None = None,
) -> None:
    """Fill `audit.images_checked`, `audit.duplicates` and `audit.ita` from the images available locally.

    `progress(task, total)` returns a counter called once per image read (see `derm_cloud.progress`).
    """
    from derm_cloud.governance.skin_tone import estimate_ita

    have = frame[frame["ref"].notna()]
    if max_images is not None and len(have) > max_images:
        have = have.iloc[np.sort(np.random.default_rng(seed).permutation(len(have))[:max_images])]
    hashes: list[tuple[int, int]] = []
    ids: list[str] = []
    ita_values: list[float] = []
    undefined: Counter[str] = Counter()
    unreadable = 0
    tick = progress(f"{audit.name} images", len(have)) if progress is not None else None
    for image_id, ref in zip(have["image_id"], have["ref"]):
        if tick is not None:
            tick(1)
        key = str(getattr(ref, "source", ref))
        facts = cache.get(key)
        if facts is None:
            try:
                data = read_image(ref)
                facts = {"phash": _hashes(data), "ita": estimate_ita(data)}
            except (DermCloudError, OSError):
                facts = {"phash": None, "ita": None}
            cache[key] = facts
        if facts["phash"] is None:
            unreadable += 1
            continue
        hashes.append(facts["phash"])
        ids.append(image_id)
        est = facts["ita"]
        if est.ita is None:
            undefined["blue/grey colour cast" if est.reason and "cast" in est.reason else "too little skin"] += 1
        else:
            ita_values.append(est.ita)
    audit.images_checked = len(ids)
    lesion_of = dict(zip(frame["image_id"], frame["lesion_id"]))
    label_of = dict(zip(frame["image_id"], frame["label"]))
    groups = _duplicate_groups(np.array(hashes, dtype=np.uint64).reshape(-1, 2), distance)
    groups_ids = [[ids[i] for i in g] for g in groups]
    audit.duplicates = {
        "method": f"64-bit perceptual hash and difference hash (imagehash phash, dhash) both within Hamming "
        f"distance {distance}",
        "checked": len(ids),
        "unreadable": unreadable,
        "groups": groups_ids,
        "images_in_groups": sum(len(g) for g in groups_ids),
        "groups_across_lesions": sum(len({lesion_of.get(i) or i for i in g}) > 1 for g in groups_ids),
        "groups_with_label_conflict": sum(len({label_of.get(i) for i in g}) > 1 for g in groups_ids),
        "sampled": max_images is not None and audit.images_available > len(ids) + unreadable,
    }
    from derm_cloud.governance.skin_tone import ita_category

    bands = Counter(ita_category(v) for v in ita_values)
    audit.ita = {
        "estimated": len(ita_values),
        "undefined": dict(undefined),
        "categories": {c: bands.get(c, 0) for c in ITA_CATEGORIES},
        "median": float(np.median(ita_values)) if ita_values else None,
        "values": [round(v, 2) for v in ita_values],
        "caveat": ITA_CAVEAT,
    }


def _hashes(data: bytes) -> tuple[int, int]:
    """(pHash, dHash) of an image as 64-bit integers."""
    from PIL import Image

    try:
        import imagehash
    except ImportError as exc:  # pragma: no cover - CI installs it
        raise MissingDependencyError(
            "duplicate detection needs imagehash; run: pip install imagehash (or audit with images=False)"
        ) from exc
    with Image.open(io.BytesIO(data)) as img:
        rgb = img.convert("RGB")
        return _bits(imagehash.phash(rgb).hash), _bits(imagehash.dhash(rgb).hash)


def _bits(matrix: Any) -> int:
    return int("".join("1" if b else "0" for b in matrix.flatten()), 2)


def _duplicate_groups(hashes: np.ndarray, distance: int) -> list[list[int]]:
    """Connected groups of images whose pHash *and* dHash are within `distance` bits (union-find).

    pHash alone confuses dermoscopy images with the same layout (a small dark lesion centred on plain skin are
    4 bits apart, different lesions); requiring the gradient-based dHash to agree too removes those, while a
    re-encoded or resized copy stays within a bit or two on both.
    """
    n = len(hashes)
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for lo in range(0, n, 512):  # chunked, so 13k images need ~100 MB at most
        near_p = np.bitwise_count(hashes[lo : lo + 512, 0, None] ^ hashes[None, :, 0]) <= distance
        near_d = np.bitwise_count(hashes[lo : lo + 512, 1, None] ^ hashes[None, :, 1]) <= distance
        for a, b in zip(*np.nonzero(near_p & near_d)):
            i, j = lo + int(a), int(b)
            if i < j:
                parent[find(i)] = find(j)
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(find(i), []).append(i)
    return [g for g in groups.values() if len(g) > 1]
