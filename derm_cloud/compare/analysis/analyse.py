"""`analyse`: a finished run's rows in, the report's `Summary` out.

Everything is computed from the rows the run stage collected from its store (`RunResults`), never from memory
of the run, so a resumed run and an uninterrupted one give the same figures from the same stored predictions.
Nothing here reads a file or the store: each section is a pure function of the rows, the config and the facts
the run recorded, in its own module (quality, agreement, fairness, latency, cost, parity, evidence).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from derm_cloud.compare.analysis.agreement import agreement_section
from derm_cloud.compare.analysis.batch import batch_section
from derm_cloud.compare.analysis.cost import costs
from derm_cloud.compare.analysis.evidence import evidence_line, overlap_warnings
from derm_cloud.compare.analysis.export_parity import export_parity_report
from derm_cloud.compare.analysis.fairness import fairness_section
from derm_cloud.compare.analysis.latency import latency_section, machine_summary
from derm_cloud.compare.analysis.metadata import metadata_summary
from derm_cloud.compare.analysis.pareto import pareto_section
from derm_cloud.compare.analysis.predictions import prediction_rows, reencoded_images
from derm_cloud.compare.analysis.quality import quality_section
from derm_cloud.compare.analysis.same_model import same_model_report
from derm_cloud.compare.analysis.summary import Summary
from derm_cloud.compare.analysis.texts import HOW_TO_LABEL, attribution, methods, quality_headline
from derm_cloud.compare.analysis.verdict import verdict_section
from derm_cloud.compare.run.config import redact_config

if TYPE_CHECKING:
    from derm_cloud.compare.run.config import ComparisonConfig
    from derm_cloud.compare.run.results import RunResults

__all__ = ["analyse"]


def analyse(results: RunResults, config: ComparisonConfig) -> Summary:
    """The report data of one run.

    Args:
        results: the run's rows and facts, from the run stage (`derm_cloud.compare.run.results`).
        config: the comparison config the run was made with.

    Returns:
        The `Summary`; its `to_dict()` is what report.json holds.
    """
    warn = [*results.warnings, *_run_warnings(results)]
    metadata, top_warnings = metadata_summary(results.backends)
    quality, common = quality_section(config, results, warn)
    warn += overlap_warnings(results, quality)
    answers = {
        name: {i: r.probs for i, r in results.answers(name).items() if r.ok and r.probs} for name in results.backends
    }
    same_model, mismatches = same_model_report(results.backends, answers, reencoded=reencoded_images(results))
    export_parity, export_gaps = export_parity_report(results.backends, answers)
    top_warnings += mismatches + export_gaps
    warn[:0] = top_warnings
    fairness: dict[str, Any] = (
        fairness_section(config, results, common) if quality["available"] else {"available": False}
    )
    if not quality["available"]:
        fairness["how_to"] = HOW_TO_LABEL
    latency, latency_samples = latency_section(config, results, warn)
    machine, load_warnings = machine_summary(results.machine)
    top_warnings += load_warnings
    warn[:0] = load_warnings
    cost = costs(config, results, latency, quality)
    warn += cost["warnings"]
    batch, batch_mismatches = batch_section(config, results, cost)
    top_warnings += batch_mismatches
    predictions = prediction_rows(results)
    defaults = config.scenario_defaults
    verdict = verdict_section(
        config.decision,
        backends=results.backends,
        quality=quality,
        latency=latency,
        latency_samples=latency_samples,
        cost=cost,
        same_model=same_model,
        predictions=predictions,
        volume=config.monthly_volume,
        n_boot=defaults["bootstrap"],
        seed=config.seed,
        method=defaults["percentile_method"],
    )
    return Summary(
        title=config.title,
        run={**_run_facts(results, config), "machine": machine},
        dataset=results.dataset_facts,
        evidence=evidence_line(common, len(results.dataset)),
        metadata=metadata,
        same_model=same_model,
        export_parity=export_parity,
        top_warnings=top_warnings,
        backends=dict(results.backends),
        emulated=_emulated(results),
        quality=quality,
        agreement=agreement_section(results),
        fairness=fairness,
        latency=latency,
        latency_samples=latency_samples,
        cost=cost,
        pareto=pareto_section(results.backends, latency, quality, cost),
        methods=methods(config, common),
        attribution=attribution(config, results.dataset),
        warnings=list(dict.fromkeys(warn)),
        headline=quality_headline(quality, results.default_run),
        predictions=predictions,
        batch=batch,
        verdict=verdict,
    )


def _emulated(results: RunResults) -> list[str]:
    return sorted(n for n, f in results.backends.items() if f.get("emulated"))


def _run_warnings(results: RunResults) -> list[str]:
    """What the reader must know about the run itself: a resumed run, emulated backends."""
    out = []
    if results.sessions > 1:
        out.append(
            f"this run was resumed: its results come from {results.sessions} process sessions; latency scenarios "
            "interrupted mid-way mix measurements from different sessions (throughput is computed per session)"
        )
    if emulated := _emulated(results):
        out.append(
            f"EMULATED backends ({', '.join(emulated)}): a derm-cloud emulator on 127.0.0.1 hosting the model "
            "stood in for the cloud; their latency is this machine's plus the real SDK's, not the cloud's"
        )
    for name, facts in sorted(results.backends.items()):  # an embedding endpoint's emulator hosts another model
        stand_in = (facts.get("model_facts") or {}).get("stand_in")
        if facts.get("emulated") and stand_in:
            out.append(f"STAND-IN MODEL ({name}): {stand_in}")
    return out


def _run_facts(results: RunResults, config: ComparisonConfig) -> dict[str, Any]:
    return {
        "run_id": results.run_id,
        "fingerprint": results.fingerprint,
        "created": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(results.created)),
        "sessions": results.sessions,
        "executor": config.executor,
        "backends_in_parallel": config.backends_in_parallel,
        "default_run": results.default_run,
        "config": redact_config(config.to_dict()),
        "versions": results.versions,
    }
