"""The report's figures: each returns the PNG bytes and the rows of data it draws (written as JSON and CSV).

matplotlib is used through `matplotlib.figure.Figure` with the Agg canvas: no pyplot state, no display
needed, safe from threads. Emulated backends are marked "(EMULATED)" in every legend, and in every latency
figure "(127.0.0.1 emulator, not the provider)": their latency is the emulator's on this machine. Backends of one
model group (same model, same answers) are drawn once in the quality figures, under the group's label; their data
rows are written for every backend.
"""

from __future__ import annotations

import io
import itertools
import math
from collections.abc import Mapping
from typing import Any

from derm_cloud.compare.report.model_groups import model_labels

__all__ = ["Figure", "make_figures"]

_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#17becf")


class Figure:
    """One figure: a name, a caption, PNG bytes and the data rows behind it."""

    def __init__(self, name: str, caption: str, png: bytes, rows: list[dict[str, Any]]) -> None:
        self.name = name
        self.caption = caption
        self.png = png
        self.rows = rows


def _new(width: float = 7.0, height: float = 4.0) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure as MplFigure

    # Constrained layout is computed once, at save time (tight_layout would draw the figure twice).
    fig = MplFigure(figsize=(width, height), dpi=90, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _label(name: str, summary: Mapping[str, Any]) -> str:
    return f"{name} (EMULATED)" if name in summary.get("emulated", []) else name


def _latency_label(name: str, summary: Mapping[str, Any]) -> str:
    """A backend's name as a latency figure shows it: an emulated backend's latency is the emulator's."""
    if name in summary.get("emulated", []):
        return f"{name} (127.0.0.1 emulator, not the provider)"
    return name


def _reliability(summary: Mapping[str, Any]) -> Figure | None:
    backends = {
        n: q["calibration"]["reliability"]
        for n, q in summary["quality"].get("backends", {}).items()
        if isinstance(q, Mapping) and "calibration" in q
    }
    if not backends:
        return None
    labels = model_labels(summary)  # one panel per model group
    drawn = [n for n in backends if labels.get(n, n) is not None]
    cols = min(3, len(drawn))
    rows_n = math.ceil(len(drawn) / cols)
    fig = _new(4.0 * cols, 3.6 * rows_n)
    rows: list[dict[str, Any]] = []
    for name, rel in backends.items():
        edges = rel["edges"]
        for lo, hi, c, a, n in zip(
            edges[:-1], edges[1:], rel["confidence"], rel["accuracy"], rel["counts"], strict=True
        ):
            rows.append({"backend": name, "bin_low": lo, "bin_high": hi, "confidence": c, "accuracy": a, "count": n})
    for k, name in enumerate(drawn):
        rel = backends[name]
        ax = fig.add_subplot(rows_n, cols, k + 1)
        edges = rel["edges"]
        mids = [(a + b) / 2 for a, b in itertools.pairwise(edges)]
        width = edges[1] - edges[0]
        acc = [a if a is not None else 0.0 for a in rel["accuracy"]]
        ax.bar(mids, acc, width=width * 0.9, color=_COLOURS[k % len(_COLOURS)], alpha=0.8, label="accuracy")
        ax.plot([0, 1], [0, 1], "k--", linewidth=1, label="perfect calibration")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("confidence (top class)")
        ax.set_ylabel("accuracy")
        ece = summary["quality"]["backends"][name]["calibration"]["ece"]
        ax.set_title(f"{_label(labels.get(name) or name, summary)}\nECE {ece:.3f}", fontsize=8)
    return Figure("reliability", "Reliability diagrams (top-label confidence vs accuracy)", _png(fig), rows)


def _latency(summary: Mapping[str, Any]) -> Figure | None:
    samples = {n: v for n, v in summary.get("latency_samples", {}).items() if v}
    if not samples:
        return None
    fig = _new(8.0, 0.6 * len(samples) + 2.0)
    ax = fig.add_subplot(1, 1, 1)
    names = list(samples)
    ax.boxplot([samples[n] for n in names], vert=False, whis=(1, 99), showfliers=True)
    ax.set_yticks(range(1, len(names) + 1), [_latency_label(n, summary) for n in names], fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel("single-stream latency per request (ms, log scale; whiskers p1-p99)")
    rows = [{"backend": n, "query": i, "latency_ms": v} for n in names for i, v in enumerate(samples[n])]
    return Figure("latency_distribution", "Single-stream latency distribution per backend", _png(fig), rows)


def _throughput(summary: Mapping[str, Any]) -> Figure | None:
    rows = []
    for name, lat in summary["latency"].items():
        for c, level in (lat.get("offline") or {}).get("levels", {}).items():
            rows.append({"backend": name, "concurrency": int(c), "throughput_qps": level.get("throughput_qps")})
    if not rows:
        return None
    fig = _new()
    ax = fig.add_subplot(1, 1, 1)
    for k, name in enumerate(dict.fromkeys(r["backend"] for r in rows)):
        pts = [(r["concurrency"], r["throughput_qps"]) for r in rows if r["backend"] == name and r["throughput_qps"]]
        if pts:
            colour = _COLOURS[k % len(_COLOURS)]
            ax.plot(*zip(*pts, strict=True), marker="o", color=colour, label=_latency_label(name, summary))
    ax.set_xlabel("requests in flight (offline scenario)")
    ax.set_ylabel("throughput (successful answers / s)")
    ax.legend(fontsize=8)
    return Figure("offline_throughput", "Offline throughput by concurrency", _png(fig), rows)


def _cost(summary: Mapping[str, Any]) -> Figure | None:
    curves = summary["cost"].get("curves", {})
    if not curves:
        return None
    fig = _new()
    ax = fig.add_subplot(1, 1, 1)
    rows: list[dict[str, Any]] = []
    for k, (name, pts) in enumerate(curves.items()):
        good = [(v, c) for v, c in pts if c is not None and c > 0]
        rows.extend({"backend": name, "monthly_volume": v, "monthly_cost_usd": c} for v, c in pts)
        if good:
            ax.plot(*zip(*good, strict=True), color=_COLOURS[k % len(_COLOURS)], label=_label(name, summary))
    ax.axvline(summary["cost"]["volume"], color="grey", linestyle=":", label="configured volume")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("predictions per month")
    ax.set_ylabel("monthly cost (USD, log scale)")
    unknown = [n for n, c in summary["cost"]["backends"].items() if not c["known"]]
    title = "Monthly cost vs volume" + (f"  (price unknown: {', '.join(unknown)})" if unknown else "")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    return Figure("cost_vs_volume", "Monthly cost against monthly volume (known prices only)", _png(fig), rows)


def _group_rows(summary: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Balanced accuracy with its interval per backend, attribute and group (the data the figure draws)."""
    rows: list[dict[str, Any]] = []
    for name, rep in (summary.get("fairness", {}).get("backends") or {}).items():
        for attr, a in rep.get("attributes", {}).items():
            for group, g in a.get("groups", {}).items():
                m = g["metrics"].get("balanced_accuracy", {})
                ci = m.get("ci") or [None, None]
                rows.append(
                    {
                        "backend": name,
                        "attribute": attr,
                        "group": group,
                        "n": g["n"],
                        "small_group": g["small_group"],
                        "balanced_accuracy": m.get("value"),
                        "ci_low": ci[0],
                        "ci_high": ci[1],
                    }
                )
    return rows


def _groups(summary: Mapping[str, Any]) -> Figure | None:
    rows = _group_rows(summary)
    if not rows:
        return None
    attrs = list(dict.fromkeys(r["attribute"] for r in rows))
    labels = model_labels(summary)  # one set of bars per model group
    backends = [n for n in dict.fromkeys(r["backend"] for r in rows) if labels.get(n, n) is not None]
    fig = _new(10.0, 3.2 * len(attrs))
    for i, attr in enumerate(attrs):
        ax = fig.add_subplot(len(attrs), 1, i + 1)
        groups = list(dict.fromkeys(r["group"] for r in rows if r["attribute"] == attr))
        width = 0.8 / max(1, len(backends))
        for k, name in enumerate(backends):
            mine = [
                (j, r)
                for j, group in enumerate(groups)
                for r in rows
                if r["backend"] == name
                and r["attribute"] == attr
                and r["group"] == group
                and r["balanced_accuracy"] is not None
            ]
            if mine:
                _group_bars(ax, mine, k, width, _label(labels.get(name) or name, summary))
        ax.set_xticks(
            [j + width * (len(backends) - 1) / 2 for j in range(len(groups))], groups, fontsize=7, rotation=20
        )
        ax.set_ylim(0, 1)
        ax.set_ylabel("balanced accuracy")
        ax.set_title(f"{attr} (hatched: group below the minimum size)", fontsize=9)
        if i == 0:
            ax.legend(fontsize=7)
    return Figure("group_bars", "Balanced accuracy per group with 95% CIs", _png(fig), rows)


def _group_bars(ax: Any, mine: list[tuple[int, dict[str, Any]]], k: int, width: float, label: str) -> None:
    """One backend's bars on one attribute's axes, with interval whiskers; small groups hatched."""
    # One bar() call per backend and attribute: per-bar calls make large reports slow to draw.
    value = [r["balanced_accuracy"] for _, r in mine]
    low = [v - (r["ci_low"] if r["ci_low"] is not None else v) for v, (_, r) in zip(value, mine, strict=True)]
    high = [(r["ci_high"] if r["ci_high"] is not None else v) - v for v, (_, r) in zip(value, mine, strict=True)]
    bars = ax.bar(
        [j + k * width for j, _ in mine], value, width, yerr=[low, high], color=_COLOURS[k % len(_COLOURS)], label=label
    )
    for bar, (_, r) in zip(bars, mine, strict=True):
        if r["small_group"]:
            bar.set_hatch("//")


def _pareto(summary: Mapping[str, Any]) -> Figure | None:
    """Cost against latency, every backend drawn: unknown cost in a band of its own, emulated ones hollow."""
    points = summary["pareto"]["points"]
    placed = [p for p in points if p["latency"] is not None]
    if not placed:
        return None
    known = [p for p in placed if p["cost"] is not None]
    unknown = [p for p in placed if p["cost"] is None]
    fig = _new(8.5, 4.6)
    grid = fig.add_gridspec(1, 2, width_ratios=(3, 1)) if known and unknown else None
    axes: list[tuple[Any, list[dict[str, Any]]]] = []
    if known:
        axes.append((fig.add_subplot(grid[0, 0]) if grid is not None else fig.add_subplot(1, 1, 1), known))
    if unknown:
        share = axes[0][0] if axes else None
        ax_u = fig.add_subplot(grid[0, 1], sharey=share) if grid is not None else fig.add_subplot(1, 1, 1)
        axes.append((ax_u, unknown))
    colour = {p["name"]: _COLOURS[k % len(_COLOURS)] for k, p in enumerate(points)}
    for ax, members in axes:
        for k, p in enumerate(members):
            x = p["cost"] if p["cost"] is not None else k
            _pareto_point(ax, p, x, colour[p["name"]], k, summary)
    if known:
        if all(p["cost"] > 0 for p in known):  # prices span orders of magnitude: a log axis keeps them apart
            axes[0][0].set_xscale("log")
        axes[0][0].set_xlabel("USD per 1,000 predictions at the configured volume")
        axes[0][0].set_ylabel("single-stream p90 latency (ms)")
    if unknown:
        ax_u = axes[-1][0]
        ax_u.set_xticks([])
        ax_u.set_xlim(-0.5, max(1, len(unknown)) - 0.5 + 1.5)
        ax_u.set_xlabel("cost unknown (own band)")
        if not known:
            ax_u.set_ylabel("single-stream p90 latency (ms)")
    missing = [p["name"] for p in points if p["latency"] is None]
    fig.suptitle(
        "Cost / latency / quality (size = balanced accuracy; outlined = Pareto-optimal in its band; hollow = "
        "emulated: latency of the 127.0.0.1 emulator, not ranked)"
        + (f"; no latency: {', '.join(missing)}" if missing else ""),
        fontsize=8,
    )
    return Figure(
        "pareto", "Cost, latency and quality of each backend (Pareto view, by band)", _png(fig), points_rows(summary)
    )


def points_rows(summary: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The Pareto figure's data: every point with its band, the axes it is ranked on and whether it is optimal."""
    front = set(summary["pareto"]["front"])
    return [{**p, "pareto_optimal": p.get("pareto_optimal", p["name"] in front)} for p in summary["pareto"]["points"]]


def _pareto_point(ax: Any, p: Mapping[str, Any], x: float, colour: str, k: int, summary: Mapping[str, Any]) -> None:
    size = 60 + 400 * (p["quality"] or 0.0)
    optimal = bool(p.get("pareto_optimal"))
    ax.scatter(
        x,
        p["latency"],
        s=size,
        facecolors="none" if p["emulated"] else colour,
        edgecolors="black" if optimal else colour,
        linewidths=2.5 if optimal else 1.5,
        alpha=0.8,
    )
    quality = f"{p['quality']:.2f}" if p["quality"] is not None else "n/a"
    name = f"{p['name']} (127.0.0.1 emulator)" if p["emulated"] else p["name"]
    ax.annotate(
        f"{name}\nbal. acc. {quality}",
        (x, p["latency"]),
        xytext=(6, 4 + 9 * (k % 3)),
        textcoords="offset points",
        fontsize=6,
    )


def make_figures(summary: Mapping[str, Any]) -> list[Figure]:
    """Every figure the summary has data for, in report order."""
    out = []
    for fn in (_reliability, _latency, _throughput, _cost, _groups, _pareto):
        fig = fn(summary)
        if fig is not None:
            out.append(fig)
    return out
