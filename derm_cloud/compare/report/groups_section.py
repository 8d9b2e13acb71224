"""The report's sections on how backends relate: their agreement with each other and their figures per group."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from derm_cloud.compare.report.cells import Section, Table, fmt, fmt_ci
from derm_cloud.compare.report.model_groups import model_labels, model_notes
from derm_cloud.compare.report.quality_section import min_group_size

__all__ = ["agreement_sections", "fairness_section"]

_FAIRNESS_HEADERS = [
    "backend",
    "attribute",
    "group",
    "images",
    "lesions",
    "melanomas",
    "small (images)",
    "few melanomas",
    "balanced acc.",
    "mel. sensitivity",
]


def agreement_sections(summary: Mapping[str, Any], table: Table) -> list[Section]:
    """Pairwise agreement and the first disagreements (none when fewer than two backends map their labels)."""
    agreement = summary.get("agreement", {})
    if not agreement.get("available"):
        return []
    pairs = [
        [f"{p['a']} / {p['b']}", p["n"], fmt(p["percent_agreement"], "pct"), fmt(p["cohen_kappa"])]
        for p in agreement.get("pairwise", [])
    ]
    dis = [
        [d["image_id"], ", ".join(f"{k}={v}" for k, v in d.get("labels", {}).items()), d.get("truth") or ""]
        for d in agreement.get("disagreements", [])[:50]
    ]
    intro = f"Fleiss' kappa over all mapped backends: {fmt(agreement.get('fleiss_kappa'))}."
    tables = [table(["pair", "images", "agreement", "Cohen's kappa"], pairs)]
    if dis:
        tables.append(table(["image (first 50 disagreements)", "labels", "truth"], dis))
    return [("Agreement between backends", intro, tables)]


def fairness_section(summary: Mapping[str, Any], table: Table) -> Section:
    """Balanced accuracy and melanoma sensitivity per group, with the small groups flagged."""
    fairness = summary.get("fairness", {})
    if not (fairness.get("available") and fairness.get("backends")):
        return ("Fairness by group", fairness.get("how_to") or fairness.get("reason", ""), [])
    minimum = min_group_size(summary)
    rows = []
    labels = model_labels(summary)  # one model, one set of group figures
    for backend, rep in fairness["backends"].items():
        if (name := labels.get(backend, backend)) is None:
            continue
        for attr, a in rep.get("attributes", {}).items():
            for group, g in a.get("groups", {}).items():
                m = g["metrics"]
                rows.append(
                    [
                        name,
                        attr,
                        group,
                        g["n"],
                        g.get("n_lesions", ""),
                        g["n_melanoma"],
                        "yes" if g["small_group"] else "",
                        "yes" if g["n_melanoma"] < minimum else "",
                        fmt_ci(m["balanced_accuracy"]["value"], m["balanced_accuracy"]["ci"], "pct"),
                        fmt_ci(m["melanoma_sensitivity"]["value"], m["melanoma_sensitivity"]["ci"], "pct"),
                    ]
                )
    desc = " ".join(f"{k}: {v.rstrip('.')}." for k, v in fairness.get("descriptions", {}).items())
    desc += (
        f" A group is flagged small below {minimum} images, and its melanoma sensitivity is flagged below "
        f"{minimum} melanomas (fairness.min_group_size): such figures are barely measured. {model_notes(summary)}"
    ).strip()
    return ("Fairness by group", desc, [table(_FAIRNESS_HEADERS, rows)])
