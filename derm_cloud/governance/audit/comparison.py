"""Two dataset audits side by side: class mix, images per lesion, shared ids, and why row counts differ."""

from __future__ import annotations

from typing import Any

from derm_cloud.governance._records import load_table
from derm_cloud.governance.audit.findings import pct
from derm_cloud.governance.audit.results import AuditComparison, DatasetAudit
from derm_cloud.taxonomy import CLASS_CODES

__all__ = ["compare_audits"]


def compare_audits(
    left: DatasetAudit, right: DatasetAudit, *, tables: tuple[Any, Any] | None = None
) -> AuditComparison:
    """Compare two audits (class mix, images per lesion, overlap, rows vs images).

    Args:
        left, right: audits from `audit_dataset`.
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
            f"{c} {pct(left.class_share[c])} in {left.name} vs {pct(right.class_share[c])} in {right.name}"
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
