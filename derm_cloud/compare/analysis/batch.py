"""The batch section: each backend's batch job beside its real-time endpoint, on the same images.

Per backend with `batch` rows (see `derm_cloud.compare.run.batch_executor`):

* turnaround: the job's submit-to-finished time as the client saw it, plus the configured start-up
  (`[scenarios.batch] startup_s`: an emulated job starts at once, a cloud job first provisions its instances);
  beside it the real-time quality pass's wall time over the same images (first request sent to last answer);
* cost of the job: instance (or node) seconds the job ran plus the start-up, at the catalogue's batch price
  (`<provider>.<service>.batch.<instance type>`), per 1,000 images answered; storage (inputs and outputs in
  S3, Cloud Storage or Blob Storage) is listed as unknown: the catalogue holds no storage prices; beside it
  the real-time cost per 1,000 from the cost section (at measured throughput and at the monthly volume);
* max |dp|: the largest probability gap between the batch and the real-time answers of the same image, which
  must stay within numeric noise when both serve the same model, and the same-model check
  (`derm_cloud.compare.analysis.same_model`) run over the two paths.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from derm_cloud.compare.analysis.same_model import same_model_report

if TYPE_CHECKING:
    from derm_cloud.compare.run.config import ComparisonConfig
    from derm_cloud.compare.run.prices import PriceCatalogue
    from derm_cloud.compare.run.results import RunResults

__all__ = ["batch_section", "batch_sku"]

_SCENARIO = "batch"


def batch_sku(backend_type: str, facts: Mapping[str, Any]) -> str | None:
    """The price-catalogue id of a batch job's compute, from what the job recorded."""
    if backend_type == "sagemaker":
        return f"aws.sagemaker.batch.{facts.get('instance_type', 'ml.m5.large')}"
    if backend_type == "vertex":
        return "gcp.vertex.automl.image_classification.batch"
    if backend_type == "azure-ml":
        return f"azure.ml.batch.{facts.get('instance_type', 'Standard_DS3_v2')}"
    return None


def batch_section(
    config: ComparisonConfig, results: RunResults, cost: Mapping[str, Any]
) -> tuple[dict[str, Any], list[str]]:
    """`(section, warnings)`: per backend, batch and real-time turnaround, cost per 1,000 and the gap."""
    scenario = config.scenarios.get(_SCENARIO)
    if scenario is None or not scenario.enabled:
        return {"enabled": False, "backends": {}}, []
    startup = float(scenario["startup_s"])
    out: dict[str, Any] = {}
    infos: dict[str, Mapping[str, Any]] = {}
    probs: dict[str, dict[str, list[float]]] = {}
    for name, facts in results.backends.items():
        rows = results.rows_of(name, _SCENARIO)
        if not rows:
            continue
        job = dict(facts.get(_SCENARIO) or {})
        batch = {r.image_id: list(r.probs) for r in rows if r.ok and r.probs}
        realtime = {i: list(r.probs) for i, r in results.answers(name).items() if r.ok and r.probs}
        entry = _price(results.prices, batch_sku(str(facts.get("type", "")), job))
        out[name] = {
            **_turnarounds(results, name, job, startup),
            **_job_cost(entry, job, startup, len(batch)),
            "images": len(rows),
            "failed": sum(1 for r in rows if not r.ok),
            "failures": sorted({(r.error_message or "")[:200] for r in rows if not r.ok})[:5],
            "submissions": job.get("submissions"),
            "state": job.get("state"),
            "realtime_per_1k_at_throughput": (cost.get("backends", {}).get(name) or {}).get("per_1k_at_throughput"),
            "realtime_per_1k_at_volume": (cost.get("backends", {}).get(name) or {}).get("per_1k_at_volume"),
            "max_abs_dp": _max_gap(batch, realtime),
        }
        infos[name] = facts
        # A batch input is an image file: no patient metadata, whatever the real-time requests carried.
        infos[f"{name} (batch)"] = {**facts, "metadata_used": False}
        probs[name], probs[f"{name} (batch)"] = realtime, batch
    same, warnings = same_model_report(infos, probs)
    return {"enabled": True, "startup_s": startup, "backends": out, "same_model": same}, warnings


def _turnarounds(results: RunResults, name: str, job: Mapping[str, Any], startup: float) -> dict[str, Any]:
    quality = [r for r in results.rows_of(name, "quality") if r.t_start is not None and r.t_end is not None]
    realtime = (max(r.t_end for r in quality) - min(r.t_start for r in quality)) if quality else None  # type: ignore[type-var, operator]
    measured = job.get("turnaround_s")
    return {
        "turnaround_s": None if measured is None else float(measured) + startup,
        "realtime_turnaround_s": realtime,
        "realtime_images": len(quality),
    }


def _price(catalogue: PriceCatalogue, sku: str | None) -> dict[str, Any] | None:
    entry = catalogue.lookup(sku)
    if entry is None:
        return None
    return {"id": entry.id, "price": entry.price, "unit": entry.unit, "status": entry.status, "source": entry.source}


def _job_cost(entry: Mapping[str, Any] | None, job: Mapping[str, Any], startup: float, answered: int) -> dict[str, Any]:
    seconds = job.get("instance_seconds", job.get("node_seconds"))
    count = int(job.get("instance_count", job.get("replica_count", 1)) or 1)
    billed = None if seconds is None else float(seconds) + startup * count
    out: dict[str, Any] = {"billed_instance_s": billed, "price": entry, "storage": "unknown (no storage prices)"}
    if entry is None or billed is None or entry.get("price") is None:
        out.update(job_usd=None, per_1k=None)
        return out
    job_usd = float(entry["price"]) * billed / 3600
    out.update(job_usd=job_usd, per_1k=job_usd / answered * 1000 if answered else None)
    return out


def _max_gap(batch: Mapping[str, list[float]], realtime: Mapping[str, list[float]]) -> float | None:
    shared = set(batch) & set(realtime)
    if not shared:
        return None
    return max(abs(a - b) for i in shared for a, b in zip(batch[i], realtime[i], strict=True))
