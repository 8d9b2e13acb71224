"""`audit_dataset`: count what one dataset holds, from its rows as stored and the images found locally."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from derm_cloud.data.fields import fitzpatrick_label
from derm_cloud.errors import ConfigError
from derm_cloud.governance._records import AGE_BANDS, age_band, load_table
from derm_cloud.governance.audit.findings import findings
from derm_cloud.governance.audit.images import image_sections
from derm_cloud.governance.audit.results import DatasetAudit
from derm_cloud.taxonomy import CLASS_CODES

__all__ = ["DEFAULT_HASH_DISTANCE", "audit_dataset"]

#: Hamming distance (of 64-bit pHashes) at or below which two images count as duplicates.
DEFAULT_HASH_DISTANCE = 4
_FIELDS = ("lesion_id", "label", "dx_type", "age", "sex", "site", "fitzpatrick")


def audit_dataset(
    dataset: Any,
    *,
    name: str | None = None,
    images: bool = True,
    max_images: int | None = None,
    hash_distance: int = DEFAULT_HASH_DISTANCE,
    seed: int = 0,
    cache: dict[str, Any] | None = None,
    progress: Callable[[str, int], Callable[[int], None]] | None = None,
) -> DatasetAudit:
    """Audit one dataset.

    Args:
        dataset: a `Dataset`, a CSV / parquet path, a HAM10000 folder or a `DataFrame`.
        name: name for the report.
        images: run the image sections (duplicates, ITA) on the images available locally.
        max_images: check at most this many images (a seeded random sample; duplicates are then only found
            within the sample, which the findings say).
        hash_distance: Hamming distance within which both the pHash and the dHash of two images must fall for
            them to count as duplicates (0 = identical hashes only).
        seed: seed of the image sample.
        cache: shared `{path: facts}` so that auditing overlapping datasets hashes each image once.
        progress: `progress(task, total)` returns a counter called once per image checked (the CLI passes a
            `derm_cloud.progress.Progress`).

    Example:
        >>> audit = audit_dataset("../shared/data/ham10000/dev.csv", images=False)  # doctest: +SKIP
        >>> audit.class_counts["mel"], round(audit.images_per_lesion["mean"], 3)  # doctest: +SKIP
        (304, 1.016)
    """
    table = load_table(dataset, name=name)
    raw = table.frame
    if raw.empty:
        raise ConfigError(f"{table.name}: no rows to audit")
    per_id = raw.groupby("image_id", sort=False).size()
    frame = raw.drop_duplicates("image_id").reset_index(drop=True)
    labelled = frame[frame["label"].notna()]
    counts = labelled["label"].value_counts()
    class_counts = {c: int(counts.get(c, 0)) for c in CLASS_CODES}
    n_lab = max(1, len(labelled))
    lesion_known = frame["lesion_id"].notna()
    audit = DatasetAudit(
        name=table.name,
        source=table.source,
        rows=len(raw),
        unique_images=len(frame),
        duplicate_rows=len(raw) - len(frame),
        rows_per_image={int(k): int(v) for k, v in sorted(Counter(per_id.tolist()).items())},
        lesions=int(frame.loc[lesion_known, "lesion_id"].nunique()) if lesion_known.any() else None,
        images_per_lesion=_images_per_lesion(frame),
        class_counts=class_counts,
        class_share={c: class_counts[c] / n_lab for c in CLASS_CODES},
        class_lesions=_class_lesions(labelled),
        unlabelled=int(frame["label"].isna().sum()),
        dx_type=_counts(frame["dx_type"]),
        dx_type_by_class={
            c: _counts(labelled.loc[labelled["label"] == c, "dx_type"]) for c in CLASS_CODES if class_counts[c]
        },
        completeness=_completeness(frame),
        age=_age(frame),
        sex=_counts(frame["sex"]),
        site=_counts(frame["site"]),
        fitzpatrick=_counts(frame["fitzpatrick"].map(lambda v: fitzpatrick_label(None if v != v else v))),
        splits=_counts(raw["split"]) if raw["split"].notna().any() else {},
        split_leaks=_split_leaks(raw),
        images_available=int(frame["ref"].notna().sum()),
        images_checked=0,
        duplicates={},
        ita={},
        table=table,
    )
    if images:
        image_sections(audit, frame, max_images, hash_distance, seed, cache if cache is not None else {}, progress)
    audit.findings = findings(audit)
    return audit


# --- metadata sections ----------------------------------------------------------------------------------------------


def _counts(series: Any) -> dict[str, int]:
    values = ["unknown" if v is None or v != v or v == "" else str(v) for v in series]
    return dict(Counter(values).most_common())


def _images_per_lesion(frame: Any) -> dict[str, Any]:
    known = frame[frame["lesion_id"].notna()]
    if known.empty:
        return {"mean": None, "median": None, "max": None, "distribution": {}, "lesions_with_several": 0}
    sizes = known.groupby("lesion_id").size()
    return {
        "mean": float(len(known) / len(sizes)),
        "median": float(sizes.median()),
        "max": int(sizes.max()),
        "distribution": {str(k): int(v) for k, v in sorted(Counter(sizes.tolist()).items())},
        "lesions_with_several": int((sizes > 1).sum()),
        "label_conflicts": int((known.groupby("lesion_id")["label"].nunique() > 1).sum()),
    }


def _class_lesions(labelled: Any) -> dict[str, int]:
    known = labelled[labelled["lesion_id"].notna()]
    counts = known.groupby("label")["lesion_id"].nunique() if not known.empty else {}
    return {c: int(counts.get(c, 0)) if len(counts) else 0 for c in CLASS_CODES}


def _completeness(frame: Any) -> dict[str, float]:
    n = max(1, len(frame))
    out = {}
    for f in _FIELDS:
        col = frame[f]
        known = col.notna() & (col.astype(str) != "unknown") if f == "sex" else col.notna()
        out[f] = float(known.sum() / n)
    return out


def _age(frame: Any) -> dict[str, Any]:
    ages = frame["age"].dropna().astype(float)
    bands = Counter(age_band(a) for a in frame["age"])
    return {
        "known": len(ages),
        "mean": float(ages.mean()) if len(ages) else None,
        "median": float(ages.median()) if len(ages) else None,
        "min": float(ages.min()) if len(ages) else None,
        "max": float(ages.max()) if len(ages) else None,
        "bands": {b: bands.get(b, 0) for b in [*(name for name, _, _ in AGE_BANDS), "unknown"]},
    }


def _split_leaks(raw: Any) -> dict[str, int]:
    if raw["split"].nunique() < 2:
        return {}
    ids = raw.groupby("image_id")["split"].nunique()
    out = {"image_ids_in_several_splits": int((ids > 1).sum())}
    lesions = raw[raw["lesion_id"].notna()].groupby("lesion_id")["split"].nunique()
    out["lesions_in_several_splits"] = int((lesions > 1).sum())
    return out
