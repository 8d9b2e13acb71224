"""Dataset audit: what a dataset holds, how it was labelled, who is in it, and what is wrong with it.

:func:`audit_dataset` counts, from the rows as stored: class balance, images per lesion, rows per image id
(repeated rows), metadata completeness, how diagnoses were confirmed (``dx_type``), age / sex / site coverage,
Fitzpatrick types when recorded; and from the images that exist locally: duplicate images by perceptual hash
and the skin-tone (ITA) distribution, with its caveats. :func:`compare_audits` puts two datasets side by side
and explains, in words computed from the data, differences such as a export with more rows than images.
:func:`write_audit_report` writes Markdown, HTML (plots embedded) and JSON.

Metadata-only audits work: ``HAM10000_metadata.csv`` has no file column, and the image sections then cover
only the images found beside it (and say how many).

Example:
    >>> a = audit_dataset("../shared/data/ham10000/dev.csv")  # doctest: +SKIP
    >>> b = audit_dataset("../shared/data/ham10000/HAM10000_metadata.csv", images=False)  # doctest: +SKIP
    >>> write_audit_report([a, b], "audit/", comparison=compare_audits(a, b))  # doctest: +SKIP
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from derm_cloud.errors import ConfigError
from derm_cloud.governance._records import AGE_BANDS, Table, age_band, load_table
from derm_cloud.governance.skin_tone import fitzpatrick_label
from derm_cloud.taxonomy import CLASS_CODES

__all__ = ["AuditComparison", "DatasetAudit", "audit_dataset", "compare_audits", "write_audit_report"]

#: Hamming distance (of 64-bit pHashes) at or below which two images count as duplicates.
DEFAULT_HASH_DISTANCE = 4
_FIELDS = ("lesion_id", "label", "dx_type", "age", "sex", "site", "fitzpatrick")


@dataclass
class DatasetAudit:
    """Everything :func:`audit_dataset` found; every count is over unique image ids unless it says rows.

    Attributes:
        name, source: the dataset.
        rows: rows as stored; ``unique_images`` distinct image ids; ``duplicate_rows`` rows repeating an id.
        rows_per_image: ``{rows: number of image ids stored that many times}``.
        lesions: distinct lesion ids (``None`` without a lesion column).
        images_per_lesion: mean, median, max and ``{images: lesions}`` distribution.
        class_counts, class_share: images per class (canonical order) and their share of labelled images.
        class_lesions: lesions per class.
        dx_type: ``{dx_type: images}``; ``dx_type_by_class``: ``{class: {dx_type: images}}``.
        completeness: share of images with each metadata field known (``unknown`` counts as missing).
        age: known count, mean, median, min, max and ``bands``.
        sex, site, fitzpatrick: group counts.
        splits: images per split when the data has splits; ``split_leaks``: ids/lesions found in several splits.
        images_available: images readable here; ``images_checked`` how many the image sections used.
        duplicates: perceptual-hash duplicate groups (image ids) and how many cross lesions or labels.
        ita: skin-tone estimate counts per ITA band, undefined estimates, the values, and the caveat.
        findings: plain-language statements computed from the figures above.
    """

    name: str
    source: str
    rows: int
    unique_images: int
    duplicate_rows: int
    rows_per_image: dict[int, int]
    lesions: int | None
    images_per_lesion: dict[str, Any]
    class_counts: dict[str, int]
    class_share: dict[str, float]
    class_lesions: dict[str, int]
    unlabelled: int
    dx_type: dict[str, int]
    dx_type_by_class: dict[str, dict[str, int]]
    completeness: dict[str, float]
    age: dict[str, Any]
    sex: dict[str, int]
    site: dict[str, int]
    fitzpatrick: dict[str, int]
    splits: dict[str, int]
    split_leaks: dict[str, int]
    images_available: int
    images_checked: int
    duplicates: dict[str, Any]
    ita: dict[str, Any]
    findings: list[str] = field(default_factory=list)
    table: Table | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible (dict keys as strings); the source rows are not included."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "table"}
        out["rows_per_image"] = {str(k): v for k, v in self.rows_per_image.items()}
        return out


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
        dataset: a :class:`~derm_cloud.data.Dataset`, a CSV / parquet path, a HAM10000 folder or a ``DataFrame``.
        name: name for the report.
        images: run the image sections (duplicates, ITA) on the images available locally.
        max_images: check at most this many images (a seeded random sample; duplicates are then only found
            within the sample, which the findings say).
        hash_distance: Hamming distance within which both the pHash and the dHash of two images must fall for
            them to count as duplicates (0 = identical hashes only).
        seed: seed of the image sample.
        cache: shared ``{path: facts}`` so that auditing overlapping datasets hashes each image once.
        progress: ``progress(task, total)`` returns a counter called once per image checked (the CLI passes a
            :class:`derm_cloud.progress.Progress`).

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
        from derm_cloud.governance._audit_images import image_sections

        image_sections(audit, frame, max_images, hash_distance, seed, cache if cache is not None else {}, progress)
    audit.findings = _findings(audit)
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


# --- findings and comparison -----------------------------------------------------------------------------------------


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _findings(a: DatasetAudit) -> list[str]:
    out = []
    if a.duplicate_rows:
        most = max(a.rows_per_image)
        out.append(
            f"{a.rows:,} rows for {a.unique_images:,} unique image ids: {a.duplicate_rows:,} rows repeat an image id "
            f"(up to {most} rows for one id); counts below are over unique ids."
        )
    top = max(a.class_share, key=lambda c: a.class_share[c])
    low = min((c for c in CLASS_CODES if a.class_counts[c]), key=lambda c: a.class_counts[c], default=None)
    if low is not None:
        out.append(
            f"Class balance: largest {top} {_pct(a.class_share[top])}, smallest {low} {a.class_counts[low]:,} images "
            f"({_pct(a.class_share[low])}); report balanced accuracy and per-class recall, not accuracy."
        )
    ipl = a.images_per_lesion
    if ipl.get("mean"):
        out.append(
            f"{a.unique_images:,} images of {a.lesions:,} lesions ({ipl['mean']:.3f} images per lesion, up to "
            f"{ipl['max']}; {ipl['lesions_with_several']:,} lesions have several images): split and count by lesion."
        )
    elif a.lesions is None:
        out.append("No lesion ids: images of the same lesion cannot be kept in one split.")
    histo = a.dx_type.get("histo", 0)
    if a.dx_type and set(a.dx_type) != {"unknown"}:
        out.append(f"{_pct(histo / max(1, a.unique_images))} of labels are histopathology-confirmed (dx_type histo).")
    if a.fitzpatrick and set(a.fitzpatrick) != {"unknown"}:
        dark = a.fitzpatrick.get("FST V", 0) + a.fitzpatrick.get("FST VI", 0)
        out.append(f"Fitzpatrick V-VI: {dark:,} images ({_pct(dark / max(1, a.unique_images))}).")
    else:
        out.append("No Fitzpatrick skin type recorded: skin-tone groups can only come from ITA estimates.")
    for key, value in a.split_leaks.items():
        if value:
            out.append(f"{value:,} {key.replace('_', ' ')}: evaluation on one split is contaminated by another.")
    if a.images_checked < a.unique_images:
        out.append(
            f"Image checks (duplicates, ITA) cover {a.images_checked:,} of {a.unique_images:,} images "
            f"({a.images_available:,} available locally)."
        )
    dup = a.duplicates
    if dup and not dup.get("groups"):
        out.append(f"No duplicate images among the {dup['checked']:,} checked ({dup['method']}).")
    if dup.get("groups"):
        out.append(
            f"{len(dup['groups'])} groups of near-identical images ({dup['images_in_groups']} images); "
            f"{dup['groups_across_lesions']} span different lesion ids, {dup['groups_with_label_conflict']} carry "
            "different labels."
        )
    if a.ita.get("estimated") or a.ita.get("undefined"):
        cats = a.ita["categories"]
        darker = cats.get("brown", 0) + cats.get("dark", 0)
        undefined = sum(a.ita["undefined"].values())
        why = ", ".join(f"{n:,} {reason}" for reason, n in a.ita["undefined"].items())
        out.append(
            f"ITA estimates: {a.ita['estimated']:,} images, {darker:,} in the brown/dark bands; {undefined:,} not "
            f"estimable{f' ({why})' if why else ''}. These are estimates of image colour, not skin types."
        )
    return out


@dataclass
class AuditComparison:
    """Two audits side by side.

    Attributes:
        left, right: the dataset names.
        class_share_diff: ``{class: right share - left share}`` in percentage points.
        total_variation: half the sum of absolute share differences (0 = same mix, 1 = disjoint).
        images_per_lesion: ``{"left": mean, "right": mean}``.
        overlap: image ids and lesion ids in both.
        findings: plain-language differences, including why one has more rows than the other has images.
    """

    left: str
    right: str
    class_share_diff: dict[str, float]
    total_variation: float
    images_per_lesion: dict[str, float | None]
    overlap: dict[str, int]
    findings: list[str]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def compare_audits(
    left: DatasetAudit, right: DatasetAudit, *, tables: tuple[Any, Any] | None = None
) -> AuditComparison:
    """Compare two audits (class mix, images per lesion, overlap, rows vs images).

    Args:
        left, right: audits from :func:`audit_dataset`.
        tables: the two sources again (paths, datasets or frames) to count shared image and lesion ids; when
            omitted, the overlap is computed from the sources recorded in the audits.
    """
    diff = {c: 100 * (right.class_share[c] - left.class_share[c]) for c in CLASS_CODES}
    tv = 0.5 * sum(abs(d) for d in diff.values()) / 100
    lt, rt = (load_table(t) for t in tables) if tables else (left.table, right.table)
    overlap: dict[str, int] = {}
    if lt is not None and rt is not None:
        li, ri = set(lt.frame["image_id"]), set(rt.frame["image_id"])
        ll, rl = set(lt.frame["lesion_id"].dropna()), set(rt.frame["lesion_id"].dropna())
        overlap = {
            "image_ids_in_both": len(li & ri),
            f"image_ids_only_in_{left.name}": len(li - ri),
            f"image_ids_only_in_{right.name}": len(ri - li),
            "lesion_ids_in_both": len(ll & rl),
        }
    findings = []
    biggest = sorted(CLASS_CODES, key=lambda c: -abs(diff[c]))[:3]
    findings.append(
        f"Class mix differs by {tv:.1%} (total variation); largest gaps: "
        + ", ".join(
            f"{c} {_pct(left.class_share[c])} in {left.name} vs {_pct(right.class_share[c])} in {right.name}"
            for c in biggest
        )
        + "."
    )
    lm, rm = left.images_per_lesion.get("mean"), right.images_per_lesion.get("mean")
    if lm and rm:
        findings.append(f"Images per lesion: {lm:.3f} in {left.name} vs {rm:.3f} in {right.name}.")
    for a, b in ((left, right), (right, left)):
        a_only = overlap.get(f"image_ids_only_in_{a.name}", 0)
        b_only = overlap.get(f"image_ids_only_in_{b.name}")
        if b_only == 0 and overlap.get("image_ids_in_both"):
            findings.append(
                f"Every image id of {b.name} is in {a.name}" + (f", which has {a_only:,} more." if a_only else ".")
            )
        if a.rows > b.unique_images and (a.duplicate_rows or b_only != 0):
            # A superset without repeated rows needs no explanation beyond the line above.
            reasons = []
            if a.duplicate_rows:
                reasons.append(
                    f"{a.duplicate_rows:,} of its rows repeat an image id (up to {max(a.rows_per_image)} rows per id)"
                )
            if a_only:
                reasons.append(f"{a_only:,} image ids are not in {b.name}")
            if a.split_leaks.get("image_ids_in_several_splits"):
                reasons.append(f"{a.split_leaks['image_ids_in_several_splits']:,} image ids appear in several splits")
            findings.append(
                f"{a.name} has {a.rows:,} rows but {b.name} has {b.unique_images:,} images: "
                + ("; ".join(reasons) if reasons else "no repeated or extra ids explain it")
                + f". Deduplicated, {a.name} has {a.unique_images:,} unique images."
            )
    if overlap.get("image_ids_in_both"):
        findings.append(
            f"{overlap['image_ids_in_both']:,} image ids and {overlap['lesion_ids_in_both']:,} lesion ids are in both: "
            "do not train on one and evaluate on the other without removing them."
        )
    return AuditComparison(left.name, right.name, diff, tv, {"left": lm, "right": rm}, overlap, findings)


def write_audit_report(audits: list[DatasetAudit], out_dir: Any, comparison: AuditComparison | None = None) -> Any:
    """Write ``audit.md``, ``audit.html`` (plots embedded) and ``audit.json`` into ``out_dir``.

    Returns:
        ``{"markdown": path, "html": path, "json": path, "plots": [paths]}``.
    """
    from derm_cloud.governance._audit_report import write_report

    return write_report(audits, out_dir, comparison)
