"""The report's probe section and learning-curve figure: quality against the number of labelled images.

A probe backend (`probe`: an embedder plus a head trained by `derm-cloud probe fit`) carries in its facts
the out-of-fold figures and learning curve measured when it was fitted (nested lesion-disjoint folds of its
training data). The section puts them beside what this run measured for every backend, and the figure draws
each probe's curve with its 95% intervals and every other backend's balanced accuracy on this run as a
horizontal line: whether labelling more images would close the gap to a trained model is read off it.

A zero-shot backend (`zero-shot`: the same kind of embedder scoring text prompts, no labels) is the curve's "no
labels" point: drawn at 0 labelled images with this run's balanced accuracy, so the figure reads "zero-shot, then a
probe with 50, 100 ... labels". Its scores are uncalibrated, and through an emulator its text tower is a stand-in
built from the stand-in model's own classifier weights: the section says both.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from derm_cloud.compare.report.cells import Section, Table, fmt, fmt_ci
from derm_cloud.compare.report.plots import _COLOURS, Figure, _label, _new, _png

__all__ = ["learning_curve_figure", "probe_section"]

TITLE = "Probes: foundation-model embeddings with a trained head"


def _probes(summary: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    return {
        name: facts["model_facts"]
        for name, facts in summary.get("backends", {}).items()
        if isinstance(facts, Mapping) and (facts.get("model_facts") or {}).get("learning_curve")
    }


def _zero_shots(summary: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """Backends scoring text-prompt embeddings (`zero-shot`): their `zero_shot` fact is a mapping of prompts etc.

    A general multimodal model says `zero_shot: True` as well; it is not embedding-based and stays a reference.
    """
    return {
        name: facts["model_facts"]
        for name, facts in summary.get("backends", {}).items()
        if isinstance(facts, Mapping) and isinstance((facts.get("model_facts") or {}).get("zero_shot"), Mapping)
    }


def _measured(summary: Mapping[str, Any], name: str) -> tuple[float | None, list[float] | None]:
    q = (summary.get("quality") or {}).get("backends", {}).get(name)
    if not isinstance(q, Mapping) or "balanced_accuracy" not in q:
        return None, None
    return q["balanced_accuracy"], (q.get("ci") or {}).get("balanced_accuracy")


def probe_section(summary: Mapping[str, Any], table: Table) -> Section | None:
    """The probes' fitting figures beside this run's, or `None` when no backend is a probe or zero-shot."""
    probes, zero_shots = _probes(summary), _zero_shots(summary)
    if not probes and not zero_shots:
        return None
    rows = []
    curve_rows = []
    for name, facts in probes.items():
        oof = facts.get("out_of_fold") or {}
        data = facts.get("probe_data") or {}
        embedder = facts.get("embedder") or {}
        here, here_ci = _measured(summary, name)
        rows.append(
            [
                _label(name, summary),
                f"{embedder.get('model_id', '?')} ({embedder.get('backend', '?')})",
                fmt(data.get("images"), "int"),
                fmt_ci(oof.get("balanced_accuracy"), oof.get("balanced_accuracy_ci"), "pct"),
                fmt_ci(oof.get("melanoma_sensitivity"), oof.get("melanoma_sensitivity_ci"), "pct"),
                fmt_ci(here, here_ci, "pct"),
            ]
        )
        for point in facts["learning_curve"]:
            curve_rows.append(
                [name, fmt(point.get("n"), "int"), fmt_ci(point.get("balanced_accuracy"), point.get("ci"), "pct")]
            )
    intro = (
        "A probe embeds each image with a foundation model (or a local encoder) and classifies the embedding with "
        "a small head trained on labelled images (`derm-cloud probe fit`). Its cost per prediction is the "
        "embedding's (the endpoint's price in the cost section); the head runs on this machine and is counted as "
        "nil. 'Out of fold' is measured when the probe was fitted: nested, lesion-disjoint folds of its own "
        "training images (95% lesion-bootstrap intervals); 'this run' is the quality table's figure on this "
        "run's images. The learning curve refits the head on fewer labelled images per fold and measures it on "
        "the same held-out images: a curve still rising at its right end says more labels would help. Where the "
        "embedder itself was trained on these images (the overlap warning says so), every figure is optimistic."
    )
    tables = []
    if zero_shots:
        intro += (
            " A zero-shot row scores each image against text prompts per class (no labelled images): it is the "
            "curve's point at 0 labels, measured on this run's images. Its scores are uncalibrated (a softmax of "
            "scaled similarities). Through an emulated endpoint its text embeddings come from a stand-in text tower "
            "built from the stand-in image model's own classifier weights: the figure measures the plumbing "
            "(requests, prompts, scoring), never the provider's zero-shot quality."
        )
        tables.append(
            table(
                ["Zero-shot (no labels)", "Embedder", "Prompts", "Temperature", "Balanced acc. (this run)", "Stand-in"],
                [_zero_shot_row(name, facts, summary) for name, facts in zero_shots.items()],
            )
        )
    if not probes:
        return TITLE, intro, tables
    return (
        TITLE,
        intro,
        [
            *tables,
            table(
                [
                    "Probe",
                    "Embedder",
                    "Labelled images",
                    "Balanced acc. (out of fold)",
                    "Melanoma sens. (out of fold)",
                    "Balanced acc. (this run)",
                ],
                rows,
            ),
            table(["Probe", "Labelled images per fold", "Balanced accuracy (95% CI)"], curve_rows),
        ],
    )


def _zero_shot_row(name: str, facts: Mapping[str, Any], summary: Mapping[str, Any]) -> list[str]:
    zs, embedder = facts["zero_shot"], facts.get("embedder") or {}
    here, here_ci = _measured(summary, name)
    prompts = zs.get("prompts") or {}
    return [
        _label(name, summary),
        f"{embedder.get('model_id', '?')} ({embedder.get('backend', '?')})",
        f"{sum(len(v) for v in prompts.values())} ({zs.get('prompts_version', '?')})",
        f"{fmt(zs.get('temperature'), 'num')} ({zs.get('temperature_source', '?')})",
        fmt_ci(here, here_ci, "pct"),
        "yes: text tower built from the stand-in model's own weights" if facts.get("stand_in_text") else "no",
    ]


def learning_curve_figure(summary: Mapping[str, Any]) -> Figure | None:
    """Balanced accuracy against labelled images per probe (zero-shot rows at 0), this run's others as lines."""
    probes, zero_shots = _probes(summary), _zero_shots(summary)
    if not probes and not zero_shots:
        return None
    fig = _new(7.0, 4.2)
    ax = fig.add_subplot(1, 1, 1)
    rows: list[dict[str, Any]] = []
    for k, (name, facts) in enumerate(probes.items()):
        points = [p for p in facts["learning_curve"] if p.get("balanced_accuracy") is not None]
        xs = [float(p["n"]) for p in points]
        ys = [float(p["balanced_accuracy"]) for p in points]
        low = [y - (p["ci"][0] if p.get("ci") else y) for p, y in zip(points, ys, strict=True)]
        high = [(p["ci"][1] if p.get("ci") else y) - y for p, y in zip(points, ys, strict=True)]
        colour, label = _COLOURS[k % len(_COLOURS)], f"{_label(name, summary)} (out of fold)"
        ax.errorbar(xs, ys, yerr=[low, high], marker="o", capsize=3, color=colour, label=label)
        rows += [{"backend": name, "kind": "probe", **p} for p in points]
    sizes = sorted({round(float(r["n"])) for r in rows if r.get("kind") == "probe"})
    x0 = sizes[0] / 2 if sizes else 1.0  # "0 labelled images" on a log axis: one step left of the first size
    for k, name in enumerate(zero_shots):
        value, ci = _measured(summary, name)
        if value is None:
            continue
        colour = _COLOURS[(len(probes) + k) % len(_COLOURS)]
        yerr = [[value - ci[0]], [ci[1] - value]] if ci else None
        stand_in = "; stand-in text tower" if zero_shots[name].get("stand_in_text") else ""
        label = f"{_label(name, summary)} (zero-shot, no labels; this run{stand_in})"
        ax.errorbar([x0], [value], yerr=yerr, marker="*", markersize=12, capsize=3, color=colour, label=label)
        ax.axhline(value, linestyle=":", linewidth=1.0, color=colour)
        rows.append({"backend": name, "kind": "zero-shot", "n": 0, "balanced_accuracy": value, "ci": ci})
    others = [n for n in summary.get("backends", {}) if n not in probes and n not in zero_shots]
    for j, name in enumerate(others):
        value, ci = _measured(summary, name)
        if value is None:
            continue
        colour = _COLOURS[(len(probes) + len(zero_shots) + j) % len(_COLOURS)]
        ax.axhline(value, linestyle="--", linewidth=1.2, color=colour, label=f"{_label(name, summary)} (this run)")
        if ci:
            ax.axhspan(ci[0], ci[1], color=colour, alpha=0.08)
        rows.append({"backend": name, "kind": "reference", "balanced_accuracy": value, "ci": ci})
    ax.set_xscale("log")
    ticks = ([x0] if zero_shots else []) + [float(n) for n in sizes]
    ax.set_xticks(ticks, (["0"] if zero_shots else []) + [str(n) for n in sizes])  # the sizes, not powers of ten
    ax.minorticks_off()
    ax.set_xlabel("labelled images the head was trained on (per fold, log scale; 0: zero-shot from prompts)")
    ax.set_ylabel("balanced accuracy")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title("Learning curve: quality against the number of labelled images (95% CIs)", fontsize=9)
    caption = "Probe learning curves (zero-shot at 0 labels) against this run's other backends"
    return Figure("learning_curve", caption, _png(fig), rows)
