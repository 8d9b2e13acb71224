"""The plain-language findings of an audit, each computed from its figures."""

from __future__ import annotations

from derm_cloud.governance.audit.results import DatasetAudit
from derm_cloud.taxonomy import CLASS_CODES

__all__ = ["findings", "pct"]


def pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def findings(a: DatasetAudit) -> list[str]:
    """Statements a reviewer should read first: repeated rows, class balance, lesions, labels, skin types."""
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
            f"Class balance: largest {top} {pct(a.class_share[top])}, smallest {low} {a.class_counts[low]:,} images "
            f"({pct(a.class_share[low])}); report balanced accuracy and per-class recall, not accuracy."
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
        out.append(f"{pct(histo / max(1, a.unique_images))} of labels are histopathology-confirmed (dx_type histo).")
    if a.fitzpatrick and set(a.fitzpatrick) != {"unknown"}:
        dark = a.fitzpatrick.get("FST V", 0) + a.fitzpatrick.get("FST VI", 0)
        out.append(f"Fitzpatrick V-VI: {dark:,} images ({pct(dark / max(1, a.unique_images))}).")
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
