"""Write a comparison's report: self-contained HTML, a Markdown summary, the full JSON, and JSON + CSV per figure.

Layout of the output folder::

    report.html          one file, figures embedded as base64 PNG (opens offline, mails as one attachment)
    report.md            the headline tables and every warning
    report.json          everything the report shows (``derm-cloud-comparison/1``)
    figures/<name>.png   each figure, with <name>.json and <name>.csv holding the data it draws
    runs.sqlite          the run store (results as they arrived)

Every report states that the comparison supports triage and research, that a clinician reviews every result,
which backends were emulated, the versions, config, dataset fingerprint and the as-of date of each price.
"""

from __future__ import annotations

import base64
import csv
import html
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from derm_cloud.compare.report_parity import evidence_text, metadata_cell, parity_section, top_warnings

__all__ = ["summary_table", "write_report"]

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;
color:#222;line-height:1.45}table{border-collapse:collapse;margin:.6em 0 1.2em;font-size:.88em}
th,td{border:1px solid #ccc;padding:.25em .55em;text-align:right}th{background:#f3f3f3}td:first-child,
th:first-child{text-align:left}.banner{background:#fff4e5;border-left:5px solid #f0a000;padding:.6em 1em}
.warn li{margin:.2em 0}.emu{background:#e8f0ff;border:1px solid #7aa0e0;border-radius:3px;padding:0 .3em;
font-size:.8em}figure{margin:1em 0}figcaption{font-size:.85em;color:#555}img{max-width:100%}
pre{background:#f7f7f7;padding:.8em;overflow:auto;font-size:.8em}.muted{color:#666;font-size:.9em}
"""


def _num(value: Any, kind: str = "num") -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "n/a"
    v = float(value)
    if kind == "pct":
        return f"{100 * v:.1f}%"
    if kind == "ms":
        return f"{v:.1f}" if v < 100 else f"{v:.0f}"
    if kind == "usd":
        if v == 0:
            return "$0"
        return f"${v:,.4f}" if v < 1 else f"${v:,.2f}"
    if kind == "int":
        return f"{v:,.0f}"
    return f"{v:.3f}"


def _ci(value: Any, ci: Sequence[Any] | None, kind: str = "num") -> str:
    text = _num(value, kind)
    if ci and ci[0] is not None and ci[1] is not None:
        text += f" [{_num(ci[0], kind)}, {_num(ci[1], kind)}]"
    return text


def summary_table(summary: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    """The headline table: one row per backend (quality, latency, throughput, cost)."""
    headers = [
        "backend",
        "service",
        "metadata",
        "balanced acc. [95% CI]",
        "macro AUC",
        "mel. sens.",
        "ECE",
        "p50 / p90 / p99 ms",
        "server p99 vs bound",
        "best QPS",
        "USD / 1k at volume",
        "USD / month",
        "idle USD / month",
    ]
    rows = []
    for name, facts in summary["backends"].items():
        q = summary["quality"].get("backends", {}).get(name, {})
        lat = summary["latency"].get(name, {})
        ss, srv = lat.get("single_stream", {}), lat.get("server", {})
        cost = summary["cost"]["backends"].get(name, {})
        qci = q.get("ci", {})
        verdict = "n/a"
        if srv.get("p99_ms") is not None:
            verdict = f"{_num(srv['p99_ms'], 'ms')} / {_num(srv['latency_bound_ms'], 'ms')} " + (
                "met" if srv.get("meets_bound") else "MISSED"
            )
        rows.append(
            [
                name + (" [EMULATED]" if facts.get("emulated") else ""),
                str(facts.get("service", "")),
                metadata_cell(summary, name),
                _ci(q.get("balanced_accuracy"), qci.get("balanced_accuracy"), "pct") if q.get("n") else "n/a",
                _num(q.get("macro_auc")),
                _num((q.get("melanoma") or {}).get("sensitivity"), "pct"),
                _num((q.get("calibration") or {}).get("ece")),
                " / ".join(_num(ss.get(k), "ms") for k in ("p50_ms", "p90_ms", "p99_ms")),
                verdict,
                _num((lat.get("offline") or {}).get("best_throughput_qps"), "num"),
                _num(cost.get("per_1k_at_volume"), "usd") if cost.get("known") else "unknown",
                _num(cost.get("monthly"), "usd") if cost.get("known") else "unknown",
                _num(cost.get("idle_monthly"), "usd") if cost.get("known") else "unknown",
            ]
        )
    return headers, rows


def _html_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _md_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(c: Any) -> str:
        return str(c).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(h) for h in headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _answered_cell(q: Mapping[str, Any]) -> str:
    """``answered / attempted`` (the backend's own coverage) plus the common-set size when it differs."""
    own = q.get("answered_own", q["answered"])
    cell = f"{own} / {q['attempted']}"
    return cell if own == q["answered"] else f"{cell} (scored on common {q['answered']})"


def _sections(
    summary: Mapping[str, Any], table: Callable[[Sequence[str], Sequence[Sequence[Any]]], str]
) -> list[tuple[str, str, list[str]]]:
    """(title, intro text, rendered tables) per section; shared by the HTML and Markdown writers."""
    out: list[tuple[str, str, list[str]]] = []
    quality = summary["quality"]
    minimum = int(summary.get("run", {}).get("config", {}).get("fairness", {}).get("min_group_size", 30))
    if quality.get("available"):
        rows = []
        per_class = []
        for name, q in quality["backends"].items():
            if not q.get("n"):
                rows.append([name, q.get("skipped", "no answers")] + [""] * 6)
                continue
            ci = q["ci"]
            spec = {round(e["target_specificity"], 2): e for e in q["melanoma"].get("at_specificity", [])}
            at90 = spec.get(0.9, {}).get("sensitivity")
            rows.append(
                [
                    name,
                    _answered_cell(q),
                    _ci(q["accuracy"], ci.get("accuracy"), "pct"),
                    _ci(q["balanced_accuracy"], ci.get("balanced_accuracy"), "pct"),
                    _ci(q["macro_auc"], ci.get("macro_auc")),
                    _ci(q["melanoma"]["sensitivity"], ci.get("melanoma_sensitivity"), "pct"),
                    _num(at90, "pct"),
                    _num(q["calibration"]["ece"]),
                ]
            )
            for code, c in q["per_class"].items():
                half = c.get("p_over_0_5") or {}
                per_class.append(
                    [
                        f"{name}: {code}",
                        c["support"],
                        f"yes (< {minimum})" if c["support"] < minimum else "",
                        _num(c["sensitivity"], "pct"),
                        _num(c["specificity"], "pct"),
                        _num(half.get("sensitivity"), "pct"),
                        _num(half.get("specificity"), "pct"),
                        _num(c["ppv"], "pct"),
                        _num(c["npv"], "pct"),
                        _num(c.get("auc")),
                    ]
                )
        headers = [
            "backend",
            "answered",
            "accuracy",
            "balanced acc.",
            "macro AUC",
            "mel. sensitivity",
            "mel. sens. @ spec 0.90",
            "ECE",
        ]
        pc_headers = [
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
        defs = next((q.get("per_class_definitions") for q in quality["backends"].values() if q.get("n")), None)
        definitions = " ".join(f"Per class, {k.replace('_', ' ')}: {v}." for k, v in (defs or {}).items())
        intro = (
            f"{quality['labelled_images']} labelled images; 95% CIs in brackets. "
            + summary["methods"]["quality"]
            + f" {definitions} Classes with fewer than {minimum} positives are flagged (fairness.min_group_size)."
        )
        out.append(("Quality", intro, [table(headers, rows), table(pc_headers, per_class)]))
        prev = []
        for name, q in quality["backends"].items():
            stated = (q.get("prevalence") or {}).get("at_stated_prevalence") or {}
            for key, v in stated.items():
                prev.append(
                    [name, key, _num(v.get("prevalence"), "pct"), _num(v.get("ppv"), "pct"), _num(v.get("npv"), "pct")]
                )
        if prev:
            out.append(
                (
                    "PPV and NPV at the stated prevalence",
                    "Bayes' rule with the measured sensitivity and "
                    "specificity; the dataset's own mix is in report.json.",
                    [table(["backend", "class", "prevalence", "PPV", "NPV"], prev)],
                )
            )
    else:
        out.append(("Quality", quality.get("how_to", ""), []))
    if "metadata" in summary:
        out.append(parity_section(summary, table))
    agreement = summary.get("agreement", {})
    if agreement.get("available"):
        pairs = [
            [f"{p['a']} / {p['b']}", p["n"], _num(p["percent_agreement"], "pct"), _num(p["cohen_kappa"])]
            for p in agreement.get("pairwise", [])
        ]
        dis = [
            [d["image_id"], ", ".join(f"{k}={v}" for k, v in d.get("labels", {}).items()), d.get("truth") or ""]
            for d in agreement.get("disagreements", [])[:50]
        ]
        intro = f"Fleiss' kappa over all mapped backends: {_num(agreement.get('fleiss_kappa'))}."
        tables = [table(["pair", "images", "agreement", "Cohen's kappa"], pairs)]
        if dis:
            tables.append(table(["image (first 50 disagreements)", "labels", "truth"], dis))
        out.append(("Agreement between backends", intro, tables))
    fairness = summary.get("fairness", {})
    if fairness.get("available") and fairness.get("backends"):
        rows = []
        for name, rep in fairness["backends"].items():
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
                            _ci(m["balanced_accuracy"]["value"], m["balanced_accuracy"]["ci"], "pct"),
                            _ci(m["melanoma_sensitivity"]["value"], m["melanoma_sensitivity"]["ci"], "pct"),
                        ]
                    )
        desc = " ".join(f"{k}: {v.rstrip('.')}." for k, v in fairness.get("descriptions", {}).items())
        desc += (
            f" A group is flagged small below {minimum} images, and its melanoma sensitivity is flagged below "
            f"{minimum} melanomas (fairness.min_group_size): such figures are barely measured."
        )
        headers = ["backend", "attribute", "group", "images", "lesions", "melanomas", "small (images)"]
        headers += ["few melanomas", "balanced acc.", "mel. sensitivity"]
        out.append(("Fairness by group", desc, [table(headers, rows)]))
    else:
        out.append(("Fairness by group", fairness.get("how_to") or fairness.get("reason", ""), []))
    lat_rows, srv_rows, off_rows, cold_rows = [], [], [], []
    for name, lat in summary["latency"].items():
        if "single_stream" in lat:
            s = lat["single_stream"]
            lat_rows.append(
                [
                    name,
                    s["ok"],
                    s["error_count"],
                    s["timeouts"],
                    _ci(s["p50_ms"], s["p50_ci_ms"], "ms"),
                    _ci(s["p90_ms"], s["p90_ci_ms"], "ms"),
                    _ci(s["p99_ms"], s["p99_ci_ms"], "ms"),
                    _num(s["mean_ms"], "ms"),
                ]
            )
        if "server" in lat:
            s = lat["server"]
            srv_rows.append(
                [
                    name,
                    _num(s["target_qps"]),
                    _num(s["achieved_qps"]),
                    s["ok"],
                    s["error_count"],
                    _ci(s["p99_ms"], s["p99_ci_ms"], "ms"),
                    _num(s["latency_bound_ms"], "ms"),
                    "met" if s["meets_bound"] else "MISSED",
                ]
            )
        for c, lv in (lat.get("offline") or {}).get("levels", {}).items():
            off_rows.append(
                [name, c, lv["ok"], lv["error_count"], _num(lv["throughput_qps"]), _num(lv["p50_ms"], "ms")]
            )
        cold = lat.get("cold_start")
        if cold:
            cold_rows.append(
                [
                    name,
                    len(cold["trials"]),
                    _num(cold["create_median_ms"], "ms"),
                    _num(cold["first_median_ms"], "ms"),
                    _num(cold["warm_median_ms"], "ms"),
                    _num(cold["cold_penalty_ms"], "ms"),
                ]
            )
    tables = []
    if lat_rows:
        tables.append(
            table(["single-stream", "ok", "errors", "timeouts", "p50 ms", "p90 ms", "p99 ms", "mean ms"], lat_rows)
        )
    if srv_rows:
        tables.append(
            table(["server", "target QPS", "achieved QPS", "ok", "errors", "p99 ms", "bound ms", "p99 bound"], srv_rows)
        )
    if off_rows:
        tables.append(table(["offline", "in flight", "ok", "errors", "throughput QPS", "p50 ms"], off_rows))
    if cold_rows:
        tables.append(
            table(["cold start", "trials", "create ms", "first request ms", "warm ms", "penalty ms"], cold_rows)
        )
    out.append(("Latency", summary["methods"]["latency"] + " " + summary["methods"].get("timer", ""), tables))
    cost = summary["cost"]
    rows = []
    for name, c in cost["backends"].items():
        e = c.get("entry", {})
        rows.append(
            [
                name,
                c.get("sku") or "none",
                e.get("basis", ""),
                c.get("instances") or "",
                _num(c.get("per_1k_at_throughput"), "usd") if c["known"] else "unknown",
                _num(c.get("per_1k_at_volume"), "usd") if c["known"] else "unknown",
                _num(c.get("monthly"), "usd") if c["known"] else "unknown",
                _num(c.get("idle_monthly"), "usd") if c["known"] else "unknown",
                _num(c.get("per_correct_mel"), "usd") if c["known"] else "unknown",
            ]
        )
    headers = [
        "backend",
        "sku",
        "basis",
        "instances",
        "USD/1k at throughput",
        "USD/1k at volume",
        "USD/month",
        "idle USD/month",
        "USD per correctly triaged melanoma",
    ]
    be = [
        [b["a"], b["b"], _num(b["volume"], "int"), b["cheaper_below"], b["cheaper_above"]] for b in cost["break_even"]
    ]
    prices = [
        [k, v.get("as_of"), v.get("status"), v.get("region"), v.get("source")] for k, v in cost["prices_used"].items()
    ]
    intro = (
        f"Monthly volume {cost['volume']:,} predictions; melanoma prevalence "
        f"{_num(cost['melanoma_prevalence'], 'pct')}. " + summary["methods"]["cost"]
    )
    tables = [table(headers, rows)]
    if be:
        tables.append(
            table(["backend A", "backend B", "break-even volume / month", "cheaper below", "cheaper above"], be)
        )
    tables.append(table(["price used", "as of", "status", "region", "source"], prices))
    out.append(("Cost", intro, tables))
    return out


def _facts_tables(
    summary: Mapping[str, Any], table: Callable[[Sequence[str], Sequence[Sequence[Any]]], str]
) -> list[str]:
    rows = []
    for name, f in summary["backends"].items():
        hosted = f.get("hosted_model", {}).get("model_id", "")
        rows.append(
            [
                name,
                f.get("type"),
                "yes" if f.get("emulated") else "no",
                f.get("provider"),
                f.get("region") or "",
                f.get("endpoint") or "",
                "yes" if f.get("data_leaves_machine") else "no",
                {True: "yes", False: "no"}.get(f.get("stores_images"), "unknown"),
                hosted or f.get("model_id"),
            ]
        )
    versions = [[k, v or "not installed"] for k, v in summary["run"]["versions"].items()]
    ds = summary["dataset"]
    run = summary["run"]
    facts = [
        ["run id", run["run_id"]],
        ["created", run["created"]],
        ["report written", run["report_written"]],
        ["process sessions", run["sessions"]],
        ["executor", run["executor"]],
        ["dataset", f"{ds['name']} ({ds['kind']}, {ds['n']} images)"],
        ["dataset fingerprint", ds["fingerprint"]],
        ["config + dataset fingerprint", run["fingerprint"]],
        *[[f"time: {k}", f"{v:.1f} s"] for k, v in run.get("timings_s", {}).items()],
    ]
    exports = summary.get("exports") or {}
    if exports:
        subs = ", ".join(exports.get("isic_submissions", {}).values())
        facts.append(["per-image exports", f"predictions.csv, predictions.jsonl; ISIC 2018 Task 3: {subs}"])
    return [
        table(["fact", "value"], facts),
        table(
            [
                "backend",
                "type",
                "emulated",
                "provider",
                "region",
                "endpoint",
                "data leaves machine",
                "stores images",
                "model",
            ],
            rows,
        ),
        table(["package", "version"], versions),
    ]


def write_report(summary: dict[str, Any], output_dir: Path) -> dict[str, Path]:
    """Write report.html, report.md, report.json and figures/ into ``output_dir``; returns their paths."""
    from derm_cloud.compare.plots import make_figures

    output_dir.mkdir(parents=True, exist_ok=True)
    figdir = output_dir / "figures"
    figdir.mkdir(exist_ok=True)
    figures = make_figures(summary)
    summary["figures"] = {
        f.name: {
            "caption": f.caption,
            "png": f"figures/{f.name}.png",
            "csv": f"figures/{f.name}.csv",
            "json": f"figures/{f.name}.json",
        }
        for f in figures
    }
    for f in figures:
        (figdir / f"{f.name}.png").write_bytes(f.png)
        (figdir / f"{f.name}.json").write_text(json.dumps(f.rows, indent=1, default=str), encoding="utf-8")
        with (figdir / f"{f.name}.csv").open("w", newline="", encoding="utf-8") as fh:
            keys = list(dict.fromkeys(k for r in f.rows for k in r))
            writer = csv.DictWriter(fh, fieldnames=keys)
            writer.writeheader()
            writer.writerows(f.rows)
    paths = {
        "json": output_dir / "report.json",
        "html": output_dir / "report.html",
        "markdown": output_dir / "report.md",
        "figures": figdir,
    }
    paths["json"].write_text(json.dumps(summary, indent=1, default=str), encoding="utf-8")
    paths["html"].write_text(_html(summary, figures), encoding="utf-8")
    paths["markdown"].write_text(_markdown(summary), encoding="utf-8")
    return paths


_FIG_SECTION = {
    "reliability": "Quality",
    "group_bars": "Fairness by group",
    "latency_distribution": "Latency",
    "offline_throughput": "Latency",
    "cost_vs_volume": "Cost",
    "pareto": "Cost, latency and quality",
}


def _html(summary: Mapping[str, Any], figures: Sequence[Any]) -> str:
    esc = html.escape
    parts = [
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{esc(summary['title'])}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>{esc(summary['title'])}</h1>",
        f"<p class='banner'><strong>{esc(summary['disclaimer'])}</strong></p>",
    ]
    if summary["emulated"]:
        parts.append(
            "<p class='banner'><span class='emu'>EMULATED</span> "
            + esc(", ".join(summary["emulated"]))
            + ": these backends talked to a derm-cloud emulator on 127.0.0.1 through the real SDK, hosting "
            "the same model; they show the client path, not the cloud's own latency.</p>"
        )
    parts += [f"<p class='banner'><strong>{esc(w)}</strong></p>" for w in top_warnings(summary)]
    headers, rows = summary_table(summary)
    parts.append("<h2>Summary</h2>")
    if summary.get("headline"):
        parts.append(f"<p class='banner'><strong>{esc(summary['headline'])}</strong></p>")
    parts += [f"<p>{esc(evidence_text(summary))}</p>", _html_table(headers, rows)]
    if summary["warnings"]:
        parts.append(
            "<h2>Warnings</h2><ul class='warn'>" + "".join(f"<li>{esc(w)}</li>" for w in summary["warnings"]) + "</ul>"
        )
    by_section: dict[str, list[Any]] = {}
    for f in figures:
        by_section.setdefault(_FIG_SECTION.get(f.name, ""), []).append(f)

    def fig_html(f: Any) -> str:
        data = base64.b64encode(f.png).decode("ascii")
        return (
            f"<figure><img alt='{esc(f.caption)}' src='data:image/png;base64,{data}'><figcaption>{esc(f.caption)}"
            f" (data: figures/{esc(f.name)}.csv, .json)</figcaption></figure>"
        )

    for title, intro, tables in _sections(summary, _html_table):
        parts += [f"<h2>{esc(title)}</h2>", f"<p class='muted'>{esc(intro)}</p>", *tables]
        parts += [fig_html(f) for f in by_section.pop(title, [])]
    for title, figs in by_section.items():
        parts.append(f"<h2>{esc(title or 'Figures')}</h2>")
        parts += [fig_html(f) for f in figs]
    parts += [
        "<h2>Run, backends and versions</h2>",
        *_facts_tables(summary, _html_table),
        "<h3>Config</h3><pre>" + esc(json.dumps(summary["run"]["config"], indent=1)) + "</pre>",
    ]
    if summary["attribution"]:
        parts.append(
            "<h2>Attribution</h2><ul>" + "".join(f"<li>{esc(a)}</li>" for a in summary["attribution"]) + "</ul>"
        )
    parts.append(f"<p class='banner'>{esc(summary['disclaimer'])}</p></body></html>")
    return "\n".join(parts)


def _markdown(summary: Mapping[str, Any]) -> str:
    lines = [f"# {summary['title']}", "", f"> {summary['disclaimer']}", ""]
    if summary["emulated"]:
        lines += [
            f"**EMULATED backends:** {', '.join(summary['emulated'])} (a derm-cloud emulator on 127.0.0.1 "
            "hosting the same model, driven through the real SDK).",
            "",
        ]
    for w in top_warnings(summary):
        lines += [f"> **{w}**", ""]
    headers, rows = summary_table(summary)
    lines += ["## Summary", ""]
    if summary.get("headline"):
        lines += [f"**{summary['headline']}**", ""]
    lines += [evidence_text(summary), "", _md_table(headers, rows), ""]
    if summary["warnings"]:
        lines += ["## Warnings", ""] + [f"- {w}" for w in summary["warnings"]] + [""]
    for title, intro, tables in _sections(summary, _md_table):
        lines += [f"## {title}", "", intro, ""]
        for t in tables:
            lines += [t, ""]
    lines += ["## Run, backends and versions", ""]
    for t in _facts_tables(summary, _md_table):
        lines += [t, ""]
    if summary.get("figures"):
        lines += (
            ["## Figures", ""]
            + [
                f"- {v['caption']}: `{v['png']}` (data `{v['csv']}`, `{v['json']}`)"
                for v in summary["figures"].values()
            ]
            + [""]
        )
    if summary["attribution"]:
        lines += ["## Attribution", ""] + [f"- {a}" for a in summary["attribution"]] + [""]
    lines += [f"_{summary['disclaimer']}_", ""]
    return "\n".join(lines)
