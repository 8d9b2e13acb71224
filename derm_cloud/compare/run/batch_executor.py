"""The `batch` scenario: each emulated SageMaker, Vertex AI and Azure ML backend's images again, as one batch job.

For every backend of type `sagemaker`, `vertex` or `azure-ml` with `emulate = true`, the same model directory is
hosted by that cloud's batch-job emulator (`derm_cloud.batch.start_emulated`) and one job classifies the run's
images: the same payload bytes the real-time requests sent (`PAYLOADS`), no patient metadata (a batch input is
an image file). Each answer is stored in the run store like a real-time one, with scenario `batch`, so the
analysis compares it with the same backend's real-time answers and the same-model check covers it.

Resumable like the rest of the run: the job record lives at `<output>/batch-jobs/<run id>/<backend>.json`; a
killed comparison re-attaches to the running job instead of submitting another, and images already stored are
not sent again. The job's figures (turnaround, instance seconds, submissions, failures) are stored as the
backend's `batch` fact.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from derm_cloud.compare.run.calls import PAYLOADS
from derm_cloud.errors import BatchJobFailedError, DermCloudError
from derm_cloud.taxonomy import CLASS_CODES

if TYPE_CHECKING:
    from derm_cloud.batch.jobs import BatchImage, BatchResult
    from derm_cloud.compare.run.backends import BackendRuntime
    from derm_cloud.compare.run.local_executor import Job

__all__ = ["BATCH_SCENARIO", "run_batch_scenario"]

BATCH_SCENARIO = "batch"


def run_batch_scenario(job: Job, warnings: list[str]) -> None:
    """Run one batch job per eligible backend and store its answers as `batch` rows."""
    from derm_cloud.batch import BATCH_KINDS

    eligible = [rt for rt in job.runtimes if rt.cfg.emulate and rt.cfg.type in BATCH_KINDS and rt.variant_of is None]
    skipped = sorted(rt.name for rt in job.runtimes if rt not in eligible and rt.variant_of is None)
    if skipped:
        warnings.append(
            f"batch scenario: {', '.join(skipped)} ran real-time only (batch jobs run for emulated sagemaker, "
            "vertex and azure-ml backends)"
        )
    for rt in eligible:
        try:
            _one_backend(job, rt, warnings)
        except DermCloudError as exc:  # one backend's failed job must not lose the others' rows
            warnings.append(f"batch scenario: {rt.name}: {type(exc).__name__}: {exc}")


def _one_backend(job: Job, rt: BackendRuntime, warnings: list[str]) -> None:
    from derm_cloud.batch import start_emulated
    from derm_cloud.compare.run.backends import _resolve_model

    done = {i for i, _ in job.store.done_keys(job.run_id, rt.name, BATCH_SCENARIO)}
    record = Path(job.config.output) / "batch-jobs" / job.run_id / f"{_safe(rt.name)}.json"
    todo = [s for s in job.samples if s.image_id not in done]
    if not todo:
        return
    emulator, provider = start_emulated(rt.cfg.type, _resolve_model(str(rt.cfg.model_dir)))
    try:
        started = time.time()
        result = _run(job, rt, provider, todo, record, warnings)
        _store(job, rt, result, started)
        facts = {
            "job_id": result.job_id,
            "state": result.status.provider_state,
            "turnaround_s": result.turnaround_s,
            "images": len(result.predictions) + len(result.failures),
            "failed": len(result.failures),
            "submissions": emulator.batch.submissions,
            **_resource_facts(record),
        }
        job.store.set_fact(job.run_id, rt.name, BATCH_SCENARIO, facts)
    finally:
        emulator.stop()
    if rt.recipe.use_metadata:
        warnings.append(
            f"batch scenario: {rt.name}'s real-time requests carried patient metadata and its batch job did not "
            "(a batch input is an image file): the two are not compared as the same model"
        )


def _run(job: Job, rt: BackendRuntime, provider: Any, todo: list[Any], record: Path, warnings: list[str]) -> Any:
    """Re-attach to the recorded job, or submit one; a failed job's partial result is kept."""
    from derm_cloud.batch import run_batch
    from derm_cloud.errors import NotFoundError

    name = f"derm-{job.run_id[:8]}-{_safe(rt.name)}-{int(time.time())}"
    try:
        if record.exists():
            try:
                return run_batch(provider, [], record_path=record, job_name=name)
            except NotFoundError:
                # An emulated job lives in the process that ran it: a killed comparison's job is gone with it.
                warnings.append(f"batch scenario: {rt.name}: the recorded job no longer exists; submitted again")
                record.unlink()
        return run_batch(provider, _images(job, rt, todo), record_path=record, job_name=name)
    except BatchJobFailedError as exc:
        warnings.append(f"batch scenario: {rt.name}: {exc}")
        return exc.partial


def _images(job: Job, rt: BackendRuntime, todo: list[Any]) -> list[BatchImage]:
    from derm_cloud.batch import BatchImage

    images = []
    for sample in todo:
        try:
            payload = PAYLOADS.get(sample)
        except Exception as exc:  # a bad image is a result to count, as in the real-time pass
            now = time.time()
            job.store.add_result(
                job.run_id, backend=rt.name, image_id=sample.image_id, scenario=BATCH_SCENARIO, repeat=0, ok=False,
                t_start=now, t_end=now, error_type=type(exc).__name__, error_message=str(exc),
            )  # fmt: skip
            continue
        images.append(BatchImage(sample.image_id, payload.data, payload.mime))
    return images


def _store(job: Job, rt: BackendRuntime, result: BatchResult, started: float) -> None:
    ended = time.time()
    order = [result.labels.index(code) if code in result.labels else None for code in CLASS_CODES]
    for image_id, probs in result.predictions.items():
        vector = None if None in order else [probs[i] for i in order if i is not None]
        label = CLASS_CODES[max(range(len(vector)), key=vector.__getitem__)] if vector else None
        job.store.add_result(
            job.run_id, backend=rt.name, image_id=image_id, scenario=BATCH_SCENARIO, repeat=0, ok=True,
            t_start=started, t_end=ended, probs=vector, label=label, request_id=result.job_id,
        )  # fmt: skip
    for image_id, cause in result.failures.items():
        job.store.add_result(
            job.run_id, backend=rt.name, image_id=image_id, scenario=BATCH_SCENARIO, repeat=0, ok=False,
            t_start=started, t_end=ended, request_id=result.job_id, error_type="BatchImageFailed",
            error_message=cause,
        )  # fmt: skip


def _resource_facts(record: Path) -> dict[str, Any]:
    from derm_cloud.batch.jobs import JobRecord

    extra = JobRecord.load(record).extra
    keys = ("instance_type", "instance_count", "machine_type", "replica_count", "instance_seconds", "node_seconds")
    return {k: extra[k] for k in keys if k in extra}


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9-]+", "-", name).strip("-")[:40] or "backend"
