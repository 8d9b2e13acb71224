"""The report's quality sections: per-backend figures with intervals, per-class figures, PPV/NPV at a prevalence.

A figure fitted on the data it is measured on (the sensitivity at a fixed specificity picks its threshold on
the same images) carries `IN_SAMPLE_MARK` in its column header, and the section's text says why.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from derm_cloud.compare.report.cells import Section, Table, fmt, fmt_ci
from derm_cloud.compare.report.model_groups import model_labels, model_notes

__all__ = ["IN_SAMPLE_MARK", "PER_CLASS_RULE_NAMES", "min_group_size", "quality_sections"]

#: Appended to the header of every in-sample figure (its reason is in the section's text and in report.json).
IN_SAMPLE_MARK = " [in-sample]"
#: How the text names each per-class rule of `per_class_definitions` (a key is not a name: `p_over_0_5`).
PER_CLASS_RULE_NAMES = {"argmax": "argmax (top-1)", "p_over_0_5": "p > 0.5 (ISIC 2018 rule)"}

_HEADERS = [
    "backend",
    "answered",
    "accuracy",
    "balanced acc.",
    "macro AUC",
    "mel. sensitivity",
    "mel. sens. @ spec 0.90" + IN_SAMPLE_MARK,
    "ECE",
]
_PER_CLASS_HEADERS = [
    "backend: class",
    "positives",
    "few positives",
    "sens. (argmax)",
    "spec. (argmax)",
    "sens. (p > 0.5)",
    "spec. (p > 0.5)",
    "PPV (argmax)",
    "NPV (argmax)",
    "AUC (one-vs-rest)",
]


def min_group_size(summary: Mapping[str, Any]) -> int:
    """The config's `fairness.min_group_size`: below it a class or group is flagged as barely measured."""
    return int(summary.get("run", {}).get("config", {}).get("fairness", {}).get("min_group_size", 30))


def quality_sections(summary: Mapping[str, Any], table: Table) -> list[Section]:
    """The quality section, and PPV/NPV at the stated prevalence when any backend has them."""
    quality = summary["quality"]
    if not quality.get("available"):
        return [("Quality", quality.get("how_to", ""), [])]
    minimum = min_group_size(summary)
    rows: list[list[Any]] = []
    per_class: list[list[Any]] = []
    labels = model_labels(summary)  # one model, one row: backends with identical answers share theirs
    for backend, q in quality["backends"].items():
        if (name := labels.get(backend, backend)) is None:
            continue
        if not q.get("n"):
            rows.append([name, q.get("skipped", "no answers")] + [""] * 6)
            continue
        rows.append(_backend_row(name, q))
        per_class += _per_class_rows(name, q, minimum)
    scored = [q for q in quality["backends"].values() if q.get("n")]
    defs = next((q.get("per_class_definitions") for q in scored), None)
    definitions = " ".join(f"Per class, {PER_CLASS_RULE_NAMES.get(k, k)}: {v}." for k, v in (defs or {}).items())
    reason = next((r for q in scored for r in (q.get("in_sample") or {}).values()), None)
    in_sample = f" Figures marked{IN_SAMPLE_MARK} are {reason}." if reason else ""
    intro = (
        f"{quality['labelled_images']} labelled images; 95% CIs in brackets. "
        + summary["methods"]["quality"]
        + f" {definitions}{in_sample} Classes with fewer than {minimum} positives are flagged "
        "(fairness.min_group_size). " + model_notes(summary)
    ).strip()
    out: list[Section] = [("Quality", intro, [table(_HEADERS, rows), table(_PER_CLASS_HEADERS, per_class)])]
    prev = _prevalence_rows(quality, labels)
    if prev:
        out.append(
            (
                "PPV and NPV at the stated prevalence",
                "Bayes' rule with the measured sensitivity and specificity; the dataset's own mix is in report.json.",
                [table(["backend", "class", "prevalence", "PPV", "NPV"], prev)],
            )
        )
    return out


def _answered_cell(q: Mapping[str, Any]) -> str:
    """`answered / attempted` (the backend's own coverage) plus the common-set size when it differs."""
    own = q.get("answered_own", q["answered"])
    cell = f"{own} / {q['attempted']}"
    return cell if own == q["answered"] else f"{cell} (scored on common {q['answered']})"


def _backend_row(name: str, q: Mapping[str, Any]) -> list[Any]:
    ci = q["ci"]
    spec = {round(e["target_specificity"], 2): e for e in q["melanoma"].get("at_specificity", [])}
    at90 = spec.get(0.9, {}).get("sensitivity")
    return [
        name,
        _answered_cell(q),
        fmt_ci(q["accuracy"], ci.get("accuracy"), "pct"),
        fmt_ci(q["balanced_accuracy"], ci.get("balanced_accuracy"), "pct"),
        fmt_ci(q["macro_auc"], ci.get("macro_auc")),
        fmt_ci(q["melanoma"]["sensitivity"], ci.get("melanoma_sensitivity"), "pct"),
        fmt(at90, "pct"),
        fmt(q["calibration"]["ece"]),
    ]


def _per_class_rows(name: str, q: Mapping[str, Any], minimum: int) -> list[list[Any]]:
    rows = []
    for code, c in q["per_class"].items():
        half = c.get("p_over_0_5") or {}
        rows.append(
            [
                f"{name}: {code}",
                c["support"],
                f"yes (< {minimum})" if c["support"] < minimum else "",
                fmt(c["sensitivity"], "pct"),
                fmt(c["specificity"], "pct"),
                fmt(half.get("sensitivity"), "pct"),
                fmt(half.get("specificity"), "pct"),
                fmt(c["ppv"], "pct"),
                fmt(c["npv"], "pct"),
                fmt(c.get("auc")),
            ]
        )
    return rows


def _prevalence_rows(quality: Mapping[str, Any], labels: Mapping[str, str | None]) -> list[list[Any]]:
    prev = []
    for backend, q in quality["backends"].items():
        if (name := labels.get(backend, backend)) is None:
            continue
        stated = (q.get("prevalence") or {}).get("at_stated_prevalence") or {}
        for key, v in stated.items():
            prev.append(
                [name, key, fmt(v.get("prevalence"), "pct"), fmt(v.get("ppv"), "pct"), fmt(v.get("npv"), "pct")]
            )
    return prev
