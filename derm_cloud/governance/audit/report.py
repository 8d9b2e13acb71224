"""Write dataset audits as Markdown, self-contained HTML (plots as base64 PNG) and JSON.

Plots use matplotlib's object API (`Figure` + Agg canvas), never `pyplot`, so a library call does not touch
the caller's global figure state or backend.
"""

from __future__ import annotations

import base64
import html
import io
import json
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

from derm_cloud.governance.referral import HUMAN_REVIEW
from derm_cloud.governance.skin_tone import ITA_BANDS, ITA_CATEGORIES, ITA_CAVEAT
from derm_cloud.taxonomy import CLASS_CODES

if TYPE_CHECKING:
    from derm_cloud.governance.audit.results import AuditComparison, DatasetAudit

__all__ = ["write_audit_report"]

ATTRIBUTION = "HAM10000: Tschandl, Rosendahl & Kittler, Sci. Data 5, 180161 (2018), CC BY-NC 4.0."


def write_audit_report(
    audits: list[DatasetAudit], out_dir: str | Path, comparison: AuditComparison | None = None
) -> dict[str, Any]:
    """Write `audit.md`, `audit.html` (plots embedded) and `audit.json` into `out_dir`.

    Returns:
        `{"markdown": path, "html": path, "json": path, "plots": [paths]}`.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plots = _plots(audits)
    paths = []
    for name, png in plots:
        path = out / f"audit_{name}.png"
        path.write_bytes(png)
        paths.append(path)
    md = _markdown(audits, comparison, [p.name for p in paths])
    (out / "audit.md").write_text(md)
    (out / "audit.html").write_text(_html(audits, comparison, plots))
    payload = {
        "generated": date.today().isoformat(),
        "datasets": [a.to_dict() for a in audits],
        "comparison": comparison.to_dict() if comparison else None,
        "ita_caveat": ITA_CAVEAT,
    }
    (out / "audit.json").write_text(json.dumps(payload, indent=2, default=str) + "\n")
    return {"markdown": out / "audit.md", "html": out / "audit.html", "json": out / "audit.json", "plots": paths}


# --- tables -------------------------------------------------------------------------------------------------------


def _rows(audits: list[DatasetAudit]) -> list[tuple[str, list[str]]]:
    """(label, one cell per dataset) for the summary table."""

    def per(fn: Any) -> list[str]:
        return [fn(a) for a in audits]

    rows: list[tuple[str, list[str]]] = [
        ("rows as stored", per(lambda a: f"{a.rows:,}")),
        ("unique image ids", per(lambda a: f"{a.unique_images:,}")),
        ("rows repeating an image id", per(lambda a: f"{a.duplicate_rows:,}")),
        ("lesions", per(lambda a: "n/a" if a.lesions is None else f"{a.lesions:,}")),
        (
            "images per lesion (mean / max)",
            per(
                lambda a: (
                    "n/a"
                    if not a.images_per_lesion.get("mean")
                    else f"{a.images_per_lesion['mean']:.3f} / {a.images_per_lesion['max']}"
                )
            ),
        ),
    ]
    for c in CLASS_CODES:
        rows.append((f"class {c}", per(lambda a, c=c: f"{a.class_counts[c]:,} ({100 * a.class_share[c]:.1f}%)")))
    rows.append(("unlabelled", per(lambda a: f"{a.unlabelled:,}")))
    for f in ("age", "sex", "site", "dx_type", "lesion_id", "fitzpatrick"):
        rows.append((f"{f} known", per(lambda a, f=f: f"{100 * a.completeness[f]:.1f}%")))
    rows.append(("histopathology (dx_type histo)", per(lambda a: f"{a.dx_type.get('histo', 0):,}")))
    rows.append(("images available here", per(lambda a: f"{a.images_available:,}")))
    rows.append(("images checked (hash, ITA)", per(lambda a: f"{a.images_checked:,}")))
    rows.append(
        (
            "duplicate-image groups (pHash + dHash)",
            per(lambda a: f"{len(a.duplicates.get('groups', [])):,}" if a.duplicates else "-"),
        )
    )
    for cat in ITA_CATEGORIES:
        rows.append((f"ITA {cat}", per(lambda a, cat=cat: f"{a.ita['categories'][cat]:,}" if a.ita else "-")))
    rows.append(("ITA not estimable", per(lambda a: f"{sum(a.ita['undefined'].values()):,}" if a.ita else "-")))
    return rows


def _markdown(audits: list[DatasetAudit], comparison: AuditComparison | None, plot_files: list[str]) -> str:
    names = [a.name for a in audits]
    lines = [
        f"# Dataset audit: {' vs '.join(names)}",
        "",
        f"Generated {date.today().isoformat()} by `derm-cloud dataset audit`. Counts are over unique image ids.",
        "",
        "| | " + " | ".join(names) + " |",
        "|---|" + "---:|" * len(names),
    ]
    lines += [f"| {label} | " + " | ".join(cells) + " |" for label, cells in _rows(audits)]
    if comparison is not None:
        lines += ["", "## Differences", "", *[f"- {f}" for f in comparison.findings]]
    for a in audits:
        lines += ["", f"## {a.name}", "", f"Source: `{a.source}`", "", *[f"- {f}" for f in a.findings]]
        lines += ["", "Sites: " + ", ".join(f"{k} {v:,}" for k, v in a.site.items())]
        lines += ["", "Age bands: " + ", ".join(f"{k} {v:,}" for k, v in a.age["bands"].items())]
        lines += [
            "",
            "dx_type by class: "
            + "; ".join(f"{c}: " + ", ".join(f"{k} {v}" for k, v in d.items()) for c, d in a.dx_type_by_class.items()),
        ]
        if a.splits:
            lines += ["", "Splits: " + ", ".join(f"{k} {v:,} rows" for k, v in a.splits.items())]
        groups = a.duplicates.get("groups") or []
        if groups:
            lines += ["", f"Duplicate groups ({a.duplicates['method']}), first 10:"]
            lines += [f"- {', '.join(g)}" for g in groups[:10]]
    lines += ["", "## Plots", "", *[f"![{f}]({f})" for f in plot_files]]
    lines += ["", "## Skin tone caveat", "", ITA_CAVEAT, "", *_footer(audits), ""]
    return "\n".join(lines)


def _footer(audits: list[DatasetAudit]) -> list[str]:
    """The human-review statement, plus HAM10000's attribution only when HAM10000 data was audited."""
    out = [HUMAN_REVIEW]
    if any("ham10000" in f"{a.name} {a.source}".lower() for a in audits):
        out.append(ATTRIBUTION)
    return out


def _html(audits: list[DatasetAudit], comparison: AuditComparison | None, plots: list[tuple[str, bytes]]) -> str:
    e = html.escape
    names = [a.name for a in audits]
    head = "".join(f"<th>{e(n)}</th>" for n in names)
    body = "".join(
        f"<tr><td>{e(label)}</td>" + "".join(f"<td class=num>{e(c)}</td>" for c in cells) + "</tr>"
        for label, cells in _rows(audits)
    )
    parts = [
        "<!doctype html><html><head><meta charset=utf-8>",
        f"<title>Dataset audit: {e(' vs '.join(names))}</title>",
        "<style>body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px}.num{text-align:right}"
        ".caveat{background:#fff6e0;border-left:4px solid #e0a800;padding:.6em 1em}img{max-width:100%}</style>",
        "</head><body>",
        f"<h1>Dataset audit: {e(' vs '.join(names))}</h1>",
        f"<p>Generated {date.today().isoformat()}. Counts are over unique image ids.</p>",
        f"<table><tr><th></th>{head}</tr>{body}</table>",
    ]
    if comparison is not None:
        parts += ["<h2>Differences</h2><ul>", *[f"<li>{e(f)}</li>" for f in comparison.findings], "</ul>"]
    for a in audits:
        parts += [f"<h2>{e(a.name)}</h2><p>Source: <code>{e(a.source)}</code></p><ul>"]
        parts += [f"<li>{e(f)}</li>" for f in a.findings] + ["</ul>"]
    parts.append("<h2>Plots</h2>")
    for name, png in plots:
        parts.append(f'<p><img alt="{e(name)}" src="data:image/png;base64,{base64.b64encode(png).decode()}"></p>')
    parts += [f"<p class=caveat>{e(ITA_CAVEAT)}</p>", *[f"<p><small>{e(t)}</small></p>" for t in _footer(audits)]]
    parts.append("</body></html>")
    return "\n".join(parts)


# --- plots --------------------------------------------------------------------------------------------------------


def _figure(width: float = 8.0, height: float = 3.6) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _png(fig: Any) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _grouped_bars(ax: Any, categories: list[str], series: list[tuple[str, list[float]]], ylabel: str) -> None:
    import numpy as np

    x = np.arange(len(categories))
    width = 0.8 / max(1, len(series))
    for i, (name, values) in enumerate(series):
        ax.bar(x + (i - (len(series) - 1) / 2) * width, values, width, label=name)
    ax.set_xticks(x, categories, rotation=30, ha="right")
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)


def _plots(audits: list[DatasetAudit]) -> list[tuple[str, bytes]]:
    out = []
    fig = _figure()
    ax = fig.add_subplot()
    _grouped_bars(
        ax, list(CLASS_CODES), [(a.name, [100 * a.class_share[c] for c in CLASS_CODES]) for a in audits], "% of images"
    )
    ax.set_title("Class mix")
    out.append(("class_mix", _png(fig)))

    fig = _figure()
    ax = fig.add_subplot()
    sizes = sorted({k for a in audits for k in a.images_per_lesion.get("distribution", {})}, key=int)
    if sizes:
        series = []
        for a in audits:
            dist = a.images_per_lesion.get("distribution", {})
            total = max(1, sum(dist.values()))
            series.append((a.name, [100 * dist.get(k, 0) / total for k in sizes]))
        _grouped_bars(ax, sizes, series, "% of lesions")
    ax.set_xlabel("images per lesion")
    ax.set_title("Images per lesion")
    out.append(("images_per_lesion", _png(fig)))

    fig = _figure(9, 3.6)
    left, right = fig.subplots(1, 2, width_ratios=[1, 2])
    bands = list(audits[0].age["bands"])
    _grouped_bars(
        left,
        bands,
        [(a.name, [100 * a.age["bands"][b] / max(1, a.unique_images) for b in bands]) for a in audits],
        "% of images",
    )
    left.set_title("Age band")
    sites = sorted({s for a in audits for s in a.site}, key=lambda s: -sum(a.site.get(s, 0) for a in audits))
    _grouped_bars(
        right,
        sites,
        [(a.name, [100 * a.site.get(s, 0) / max(1, a.unique_images) for s in sites]) for a in audits],
        "% of images",
    )
    right.set_title("Anatomical site")
    out.append(("age_site", _png(fig)))

    with_ita = [a for a in audits if a.ita.get("values")]
    if with_ita:
        fig = _figure()
        ax = fig.add_subplot()
        for name, low, high in ITA_BANDS:
            lo, hi = max(low, -90.0), min(high, 90.0)
            ax.axvspan(lo, hi, alpha=0.08, color="k" if ITA_CATEGORIES.index(name) % 2 else "w")
            ax.text((lo + hi) / 2, 1.0, name, transform=ax.get_xaxis_transform(), ha="center", va="top", fontsize=7)
        for a in with_ita:
            ax.hist(
                a.ita["values"], bins=list(range(-90, 91, 5)), alpha=0.5, label=f"{a.name} (n={len(a.ita['values'])})"
            )
        ax.set_xlabel("ITA (degrees), estimated from non-lesion skin")
        ax.set_ylabel("images")
        ax.set_title("Skin-tone estimate (ITA): an estimate of image colour, not a skin type")
        ax.legend(fontsize=8)
        out.append(("ita", _png(fig)))
    return out
