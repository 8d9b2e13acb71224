"""Turn a run's stored results into the report data: quality, agreement, fairness, latency, cost, Pareto.

Everything is computed from the run store, never from memory of the run, so a resumed run and an uninterrupted
one give the same figures from the same stored predictions. The result is one JSON-compatible dict that
:mod:`derm_cloud.compare.report` renders (HTML, Markdown, JSON, CSV).
"""

from __future__ import annotations

import importlib.metadata
import platform
import sys
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from derm_cloud.compare.context import evidence_line, overlap_in_context, stated_test_figures
from derm_cloud.compare.cost import Measured, PriceCatalogue, cost_section
from derm_cloud.compare.export_parity import export_parity_report
from derm_cloud.compare.metadata_modes import metadata_summary
from derm_cloud.compare.same_model import same_model_report
from derm_cloud.compare.scenarios import (
    METHOD_TEXT,
    cold_start_summary,
    latency_summary,
    offline_summary,
    server_summary,
)
from derm_cloud.compare.shared import redact_config
from derm_cloud.taxonomy import CLASS_CODES, MALIGNANT_CODES

if TYPE_CHECKING:
    from derm_cloud.compare.config import ComparisonConfig
    from derm_cloud.compare.store import ResultRow, RunStore
    from derm_cloud.data import Dataset, Sample

__all__ = ["DISCLAIMER", "HAM10000_ATTRIBUTION", "HOW_TO_LABEL", "analyse", "pareto_front", "versions"]

DISCLAIMER = (
    "This comparison supports triage and research only; it is not a diagnosis and no result here is fit to "
    "diagnose anyone. A clinician reviews every result."
)
HAM10000_ATTRIBUTION = (
    "HAM10000 images: Tschandl, Rosendahl & Kittler, The HAM10000 dataset, Sci. Data 5, 180161 (2018), "
    "doi:10.7910/DVN/DBW86T, CC BY-NC 4.0 (non-commercial)."
)
HOW_TO_LABEL = (
    "Quality and fairness figures need labelled images. Pass a CSV manifest with --dataset (or [dataset] "
    "source): a path column (file/path/image) relative to the CSV and a label column (label or dx: akiec, bcc, "
    "bkl, df, mel, nv, vasc or their full names), optionally age, sex, site, fitzpatrick and lesion_id; or a "
    "HAM10000 folder (HAM10000_metadata.csv beside the images)."
)
_SDKS = (
    "derm-cloud",
    "numpy",
    "onnxruntime",
    "boto3",
    "botocore",
    "azure-cognitiveservices-vision-customvision",
    "azure-ai-ml",
    "requests",
    "google-cloud-aiplatform",
    "google-cloud-vision",
    "grpcio",
    "openai",
    "scikit-learn",
    "matplotlib",
    "pillow",
    "ray",
    "tqdm",
)


def versions() -> dict[str, str | None]:
    """Python, platform and installed versions of derm-cloud and every SDK the backends use."""
    out: dict[str, str | None] = {"python": sys.version.split()[0], "platform": platform.platform()}
    for dist in _SDKS:
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = None
    return out


def _rows(store: RunStore, run_id: str, backend: str, scenario: str) -> list[ResultRow]:
    return list(store.results(run_id, backend, scenario))


def _error_text(rows: Sequence[ResultRow]) -> str:
    counts = Counter(r.error_type for r in rows if not r.ok)
    return ", ".join(f"{k} x{v}" for k, v in counts.most_common())


def _answered(rows: Mapping[str, ResultRow], image_id: str) -> bool:
    row = rows.get(image_id)
    return row is not None and row.ok and bool(row.probs)


def _common_set(
    labelled: Sequence[Sample],
    mapped: Sequence[str],
    by_backend: Mapping[str, Mapping[str, ResultRow]],
    warn: list[str],
) -> list[Sample]:
    """The labelled images every label-mapped backend answered: the one set all quality figures are computed on.

    Scoring each backend on its own answers would reward a backend that fails on hard images and compare
    backends on unlike sets. A backend that answered nothing is left out of the intersection (it would empty
    it) and reported as skipped instead.
    """
    scored = [n for n in mapped if any(_answered(by_backend[n], s.image_id) for s in labelled)]
    common = [s for s in labelled if all(_answered(by_backend[n], s.image_id) for n in scored)]
    dropped = len(labelled) - len(common)
    if scored and dropped:
        why = []
        for n in scored:
            missed = [s.image_id for s in labelled if not _answered(by_backend[n], s.image_id)]
            if missed:
                rows = [by_backend[n][i] for i in missed if i in by_backend[n]]
                reason = _error_text(rows) or "no answer"
                if len(rows) < len(missed):
                    reason += f"{', ' if rows else ''}{len(missed) - len(rows)} not attempted"
                why.append(f"{n} failed on {len(missed)} ({reason})")
        warn.append(
            f"quality and fairness are computed on the {len(common)} labelled images every backend answered: "
            f"{dropped} of {len(labelled)} dropped from the common set because {'; '.join(why)}; each backend's "
            "own coverage is shown beside its figures"
        )
    return common


def _quality(
    store: RunStore, run_id: str, config: ComparisonConfig, ds: Dataset, infos: Mapping[str, Any], warn: list[str]
) -> tuple[dict[str, Any], dict[str, dict[str, ResultRow]], list[Sample]]:
    from derm_cloud.compare.metrics import quality_report

    by_backend = {name: {r.image_id: r for r in _rows(store, run_id, name, "quality")} for name in infos}
    labelled = [s for s in ds.samples if s.label is not None]
    out: dict[str, Any] = {"available": bool(labelled), "labelled_images": len(labelled), "backends": {}}
    if not labelled:
        out["how_to"] = HOW_TO_LABEL
        return out, by_backend, []
    if len(labelled) < len(ds):
        warn.append(f"{len(ds) - len(labelled)} of {len(ds)} images have no label and are left out of quality")
    mapped = [n for n, f in infos.items() if f.get("labels_mapped", True)]
    common = _common_set(labelled, mapped, by_backend, warn)
    out["common_set"] = len(common)
    for name, facts in infos.items():
        rows = by_backend[name]
        entry: dict[str, Any] = {"attempted": len(rows), "errors": sum(1 for r in rows.values() if not r.ok)}
        if not facts.get("labels_mapped", True):
            entry["skipped"] = "labels do not map onto the seven lesion classes (latency/cost baseline only)"
            out["backends"][name] = entry
            continue
        own = sum(1 for s in labelled if _answered(rows, s.image_id))
        tried = sum(1 for s in labelled if s.image_id in rows)
        entry["answered_own"] = own
        entry["coverage"] = own / tried if tried else None
        if entry["errors"]:
            warn.append(f"{name}: {entry['errors']} quality requests failed ({_error_text(list(rows.values()))})")
        if not own:
            entry["skipped"] = "no successful answers"
            out["backends"][name] = entry
            continue
        if not common:
            entry["skipped"] = "no image was answered by every backend (no common set to compare on)"
            out["backends"][name] = entry
            continue
        y = [str(s.label) for s in common]
        probs = np.asarray([rows[s.image_id].probs for s in common], dtype=np.float64)
        report = quality_report(
            y,
            probs,
            prevalence=config.melanoma_prevalence,
            n_boot=config.scenario_defaults["bootstrap"],
            seed=config.seed,
            clusters=[s.lesion_id for s in common],
        )
        mel = [i for i, label in enumerate(y) if label == "mel"]
        referred = [CLASS_CODES[int(np.argmax(probs[i]))] in MALIGNANT_CODES for i in mel]
        report["melanoma_referral_sensitivity"] = float(np.mean(referred)) if mel else None
        report["melanoma_referral_definition"] = (
            "share of true melanomas whose top class is malignant (mel, bcc or akiec), i.e. referred"
        )
        report["answered"] = len(common)
        entry.update(report)
        out["backends"][name] = entry
        warn.extend(f"{name}: {w}" for w in report.get("warnings", []))
    return out, by_backend, common


def _agreement(
    ds: Dataset, infos: Mapping[str, Any], by_backend: Mapping[str, Mapping[str, ResultRow]]
) -> dict[str, Any]:
    from derm_cloud.compare.agreement import agreement_report

    mapped = [n for n, f in infos.items() if f.get("labels_mapped", True)]
    if len(mapped) < 2:
        return {"available": False, "reason": "needs at least two backends whose labels map to the lesion classes"}
    ids = [s.image_id for s in ds.samples]

    def label(name: str, image_id: str) -> str | None:
        row = by_backend[name].get(image_id)
        return row.label if row is not None and row.ok and row.label in CLASS_CODES else None

    labels = {n: [label(n, i) for i in ids] for n in mapped}
    truth = [s.label for s in ds.samples] if any(s.label for s in ds.samples) else None
    report = agreement_report(labels, ids, truth, max_disagreements=200)
    report["available"] = True
    return report


def _fairness(
    config: ComparisonConfig,
    infos: Mapping[str, Any],
    by_backend: Mapping[str, Mapping[str, ResultRow]],
    common: Sequence[Sample],
) -> dict[str, Any]:
    """Per-group figures of every label-mapped backend, on the common set (see :func:`_common_set`)."""
    try:
        from derm_cloud.compare import fairness
    except ImportError as exc:  # the module ships with derm-cloud; this only guards partial installs
        return {"available": False, "reason": f"fairness module unavailable: {exc}"}

    labelled = list(common)
    if not labelled:
        return {"available": False, "reason": "no labelled image was answered by every backend"}
    # Skin tone may need an ITA estimate per image: computed once for all backends.
    tone = config.fairness["skin_tone"]
    columns = fairness.group_columns(labelled, skin_tone=None if tone == "none" else tone)
    descriptions = dict(getattr(columns, "descriptions", {}))
    position = {s.image_id: i for i, s in enumerate(labelled)}
    out: dict[str, Any] = {"available": True, "descriptions": descriptions, "backends": {}}
    for name, facts in infos.items():
        if not facts.get("labels_mapped", True):
            continue
        rows = by_backend[name]
        answered = [s for s in labelled if _answered(rows, s.image_id)]
        if not answered:
            continue
        idx = [position[s.image_id] for s in answered]
        groups = {attr: [values[i] for i in idx] for attr, values in columns.items()}
        y = [str(s.label) for s in answered]
        probs = np.asarray([rows[s.image_id].probs for s in answered], dtype=np.float64)
        out["backends"][name] = fairness.group_report(
            y,
            probs,
            groups,
            clusters=[s.lesion_id for s in answered],
            min_group_size=config.fairness["min_group_size"],
            n_boot=min(500, config.scenario_defaults["bootstrap"]),
            seed=config.seed,
            descriptions=descriptions,
        )
    return out


def _latency(store: RunStore, run_id: str, config: ComparisonConfig, name: str) -> tuple[dict[str, Any], list[float]]:
    d = config.scenario_defaults
    common = {
        "method": d["percentile_method"],
        "n_boot": d["bootstrap"],
        "seed": config.seed,
        "min_samples": d["min_samples"],
    }
    sc = config.scenarios
    out: dict[str, Any] = {}
    samples: list[float] = []
    if sc["single_stream"].enabled:
        rows = _rows(store, run_id, name, "single_stream")
        out["single_stream"] = latency_summary(rows, **common)
        samples = [r.latency_ms for r in rows if r.ok and r.latency_ms is not None]
    if sc["server"].enabled:
        s = sc["server"]
        out["server"] = server_summary(
            _rows(store, run_id, name, "server"), bound_ms=s["latency_bound_ms"], target_qps=s["target_qps"], **common
        )
    if sc["offline"].enabled:
        levels: dict[int, Sequence[Any]] = {
            c: _rows(store, run_id, name, f"offline/c={c}") for c in sc["offline"]["concurrency"]
        }
        out["offline"] = offline_summary(levels, **{k: v for k, v in common.items()})
    if sc["cold_start"].enabled:
        out["cold_start"] = cold_start_summary(_rows(store, run_id, name, "cold_start"))
    return out, samples


def _billing(facts: Mapping[str, Any]) -> dict[str, Any]:
    billing = dict(facts.get("billing") or {})
    if "memory_gb" not in billing and billing.get("memory_mb") is not None:
        billing["memory_gb"] = float(billing["memory_mb"]) / 1024
    if "instances" not in billing and billing.get("nodes") is not None:
        billing["instances"] = billing["nodes"]
    return billing


def _tokens(rows: Mapping[str, ResultRow]) -> tuple[float | None, float | None]:
    ins, outs = [], []
    for r in rows.values():
        nested = r.extra.get("usage")
        usage: Mapping[str, Any] = nested if isinstance(nested, Mapping) else r.extra
        tin = usage.get("prompt_tokens", usage.get("input_tokens"))
        tout = usage.get("completion_tokens", usage.get("output_tokens"))
        if isinstance(tin, (int, float)) and isinstance(tout, (int, float)):
            ins.append(float(tin))
            outs.append(float(tout))
    return (float(np.mean(ins)), float(np.mean(outs))) if ins else (None, None)


def pareto_front(points: Sequence[Mapping[str, Any]]) -> list[str]:
    """Names of the points no other point beats on cost (low), latency (low) and quality (high).

    Only the dimensions some point has are compared (no labels: cost and latency); points missing one of
    those dimensions are left out.
    """
    signs = {"cost": 1.0, "latency": 1.0, "quality": -1.0}  # lower is better after the sign
    dims = [d for d in signs if any(p.get(d) is not None for p in points)]
    full = [p for p in points if dims and all(p.get(d) is not None for d in dims)]

    def beats(q: Mapping[str, Any], p: Mapping[str, Any]) -> bool:
        pairs = [(signs[d] * q[d], signs[d] * p[d]) for d in dims]
        return all(a <= b for a, b in pairs) and any(a < b for a, b in pairs)

    return [str(p["name"]) for p in full if not any(beats(q, p) for q in full if q is not p)]


def analyse(
    store: RunStore,
    run_id: str,
    config: ComparisonConfig,
    ds: Dataset,
    infos: Mapping[str, Any],
    *,
    extra_warnings: Sequence[str] = (),
    default_run: bool = False,
) -> dict[str, Any]:
    """The report data of run ``run_id`` (a JSON-compatible dict)."""
    from derm_cloud.data import dataset_overlap_warning, is_ham10000_id

    warn: list[str] = list(extra_warnings)
    run = store.run(run_id)
    sessions = store.sessions(run_id)
    if sessions > 1:
        warn.append(
            f"this run was resumed: its results come from {sessions} process sessions; latency scenarios "
            "interrupted mid-way mix measurements from different sessions (throughput is computed per session)"
        )
    emulated = sorted(n for n, f in infos.items() if f.get("emulated"))
    if emulated:
        warn.append(
            f"EMULATED backends ({', '.join(emulated)}): a derm-cloud emulator on 127.0.0.1 hosting the model "
            "stood in for the cloud; their latency is this machine's plus the real SDK's, not the cloud's"
        )
    meta_report, top_warnings = metadata_summary(infos)
    quality, by_backend, common = _quality(store, run_id, config, ds, infos, warn)
    overlaps: dict[str, list[str]] = {}
    for name, facts in infos.items():
        overlap = dataset_overlap_warning(facts.get("model_facts") or {}, ds)
        if overlap and facts.get("labels_mapped", True):
            model_facts = facts.get("model_facts") or {}
            hosted = (facts.get("hosted_model") or {}).get("model_id")
            stated = stated_test_figures(model_facts, hosted, facts.get("model_id"))
            measured = quality.get("backends", {}).get(name, {})
            overlaps.setdefault(overlap_in_context(overlap, stated, measured), []).append(name)
    # Backends hosting one model on one dataset share the warning: said once, naming all of them.
    warn.extend(f"{', '.join(names)}: {text}" for text, names in overlaps.items())
    answers = {name: {i: r.probs for i, r in rows.items() if r.ok and r.probs} for name, rows in by_backend.items()}
    same_model, mismatches = same_model_report(infos, answers)
    top_warnings += mismatches
    export_parity, export_gaps = export_parity_report(infos, answers)
    top_warnings += export_gaps
    warn[:0] = top_warnings
    agreement = _agreement(ds, infos, by_backend)
    fairness: dict[str, Any] = (
        _fairness(config, infos, by_backend, common) if quality["available"] else {"available": False}
    )
    if not quality["available"]:
        fairness["how_to"] = HOW_TO_LABEL
    latency: dict[str, Any] = {}
    latency_samples: dict[str, list[float]] = {}
    small: dict[str, list[str]] = {}
    for name in infos:
        latency[name], latency_samples[name] = _latency(store, run_id, config, name)
        for scen, summary in latency[name].items():
            if isinstance(summary, Mapping) and summary.get("below_min_samples"):
                small.setdefault(scen, []).append(f"{name} {summary['ok']}")
            if isinstance(summary, Mapping) and summary.get("error_count"):
                warn.append(f"{name} {scen}: {summary['error_count']} errors ({summary['errors']})")
    for scen, entries in small.items():
        warn.append(
            f"{scen}: fewer than {config.scenario_defaults['min_samples']} successful queries ({', '.join(entries)}): "
            "its percentiles, p99 above all, are unreliable; raise the scenario's queries"
        )
    local_cpu = [n for n, f in infos.items() if f.get("emulated") or f.get("provider") == "local"]
    if config.backends_in_parallel and len(local_cpu) > 1:
        warn.append(
            f"{len(local_cpu)} backends that compute on this machine ({', '.join(local_cpu)}) ran at the same time: "
            "their latency and throughput include contention with each other; set backends_in_parallel = false "
            "for isolated figures"
        )
    catalogue = PriceCatalogue.load(config.price_files)
    mel_prev = config.melanoma_prevalence
    mel_prev_f = mel_prev.get("mel") if isinstance(mel_prev, Mapping) else mel_prev
    measured_list = []
    for name, facts in infos.items():
        lat = latency[name]
        ss = lat.get("single_stream", {})
        q = (lat.get("offline") or {}).get("best_throughput_qps")
        if q is None and ss.get("mean_ms"):
            q = 1000.0 / ss["mean_ms"]
        tin, tout = _tokens(by_backend.get(name, {}))
        qb = quality.get("backends", {}).get(name, {})
        measured = Measured(
            throughput_qps=q,
            mean_latency_s=ss["mean_ms"] / 1000 if ss.get("mean_ms") else None,
            input_tokens=tin,
            output_tokens=tout,
            melanoma_referral_sensitivity=qb.get("melanoma_referral_sensitivity"),
            emulated=bool(facts.get("emulated")),
        )
        measured_list.append((name, _billing(facts), facts.get("provider"), measured))
    cost = cost_section(
        measured_list,
        catalogue=catalogue,
        volume=config.monthly_volume,
        melanoma_prevalence=mel_prev_f,
        utilisation=config.utilisation,
    )
    warn.extend(cost["warnings"])
    points = []
    for name in infos:
        ss = latency[name].get("single_stream", {})
        qb = quality.get("backends", {}).get(name, {})
        points.append(
            {
                "name": name,
                "cost": cost["backends"][name]["per_1k_at_volume"],
                "latency": ss.get("p90_ms"),
                "quality": qb.get("balanced_accuracy"),
                "emulated": bool(infos[name].get("emulated")),
            }
        )
    d = config.scenario_defaults
    ham = any(is_ham10000_id(s.image_id) for s in ds.samples) or "ham10000" in ds.name.lower()
    attribution = [HAM10000_ATTRIBUTION] if ham else []
    if config.dataset.source in (None, "default", "dermapred-example"):
        from derm_cloud.compare.defaults import EXAMPLE_ATTRIBUTION

        attribution.append(EXAMPLE_ATTRIBUTION)
    return {
        "format": "derm-cloud-comparison/1",
        "title": config.title,
        "disclaimer": DISCLAIMER,
        "run": {
            "run_id": run_id,
            "fingerprint": run.fingerprint,
            "created": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(run.created)),
            "report_written": time.strftime("%Y-%m-%d %H:%M:%S"),
            "sessions": sessions,
            "executor": config.executor,
            "backends_in_parallel": config.backends_in_parallel,
            "default_run": default_run,
            "config": redact_config(config.to_dict()),
            "versions": versions(),
        },
        "dataset": {**ds.describe(), "fingerprint": ds.fingerprint()},
        "evidence": evidence_line(common, len(ds)),
        "metadata": meta_report,
        "same_model": same_model,
        "export_parity": export_parity,
        "top_warnings": top_warnings,
        "backends": dict(infos),
        "emulated": emulated,
        "quality": quality,
        "agreement": agreement,
        "fairness": fairness,
        "latency": latency,
        "latency_samples": latency_samples,
        "cost": cost,
        "pareto": {"points": points, "front": pareto_front(points), "axes": _PARETO_AXES},
        "methods": {
            "latency": METHOD_TEXT.format(
                method=d["percentile_method"],
                warmup=d["warmup"],
                n_boot=d["bootstrap"],
                seed=config.seed,
                min_samples=d["min_samples"],
            ),
            "cost": _COST_METHOD,
            "timer": timer_text(),
            "quality": "Metrics from derm_cloud.compare.metrics on the quality pass (each image once per "
            "backend); predicted class = argmax (per-class figures also under the ISIC p > 0.5 rule, each "
            "named); 95% CIs by stratified percentile bootstrap "
            f"({d['bootstrap']} resamples, seed {config.seed}) resampling "
            f"{'lesions (cluster bootstrap over lesion_id)' if any(s.lesion_id for s in common) else 'images'}. "
            "Every backend is scored on the same common set: "
            "the labelled images that every label-mapped backend answered (a backend that answered none is "
            "left out of it); each backend's own coverage (answered / attempted) is shown beside its figures.",
        },
        "attribution": attribution,
        "warnings": list(dict.fromkeys(warn)),
    }


def timer_text() -> str:
    """What each latency figure measures (the report's Latency section states it)."""
    from derm_cloud.compare import executors

    prepared = bool(getattr(executors, "PREPARED_OUTSIDE_TIMER", False))
    preparation = (
        "Each image is read and prepared (validated, EXIF stripped, re-encoded only where needed) once, before "
        "the timed call: preparation is outside the timer."
        if prepared
        else "Reading the image file is outside the timer; the library's image preparation (validation, EXIF "
        "strip, any re-encode) happens inside predict() and is inside the timer."
    )
    return (
        "The latency timer starts when the comparator calls the backend's predict() and stops when the "
        "Prediction is returned (client-observed wall time): it covers the library's request building and "
        "response parsing, the provider SDK, the network round trip and the service's own time (for an emulated "
        "backend: the emulator and the model on this machine). " + preparation
    )


_PARETO_AXES = {
    "cost": "cost per 1,000 predictions at the configured monthly volume (USD)",
    "latency": "single-stream p90 latency (ms)",
    "quality": "balanced multiclass accuracy",
}
_COST_METHOD = (
    "Prices from the shipped catalogue (derm-cloud docs, reference/cloud-apis.md section 11; each with source, "
    "as-of date and status) "
    "plus any [cost] prices files. Always-on endpoints (instance-hour, node-hour) cost rate x instances x 730 h "
    "per month whatever the traffic (idle cost), with instances raised to carry the monthly volume at the "
    "measured throughput and the configured utilisation; per-request, serverless (GB-second x measured "
    "latency), per-token (measured token usage) and tiered per-1,000-unit prices scale with volume. Cost per "
    "correctly triaged melanoma = monthly cost / (volume x melanoma prevalence x share of melanomas referred). "
    "Unknown prices stay unknown (blank), never 0. Emulated backends' throughput is this machine's, so their "
    "always-on cost uses the configured instance count (default 1), not throughput-based sizing."
)
