"""The run stage: a config and its images in, every result stored and read back as `RunResults`.

A run is identified by the fingerprint of its config and dataset: rerunning the same config on the same images
resumes the newest unfinished run with that fingerprint (`fresh=True` starts over), and `resume=RUN_ID`
resumes a given one; results already in the store are never requested again, and failures that a later
attempt may not hit (throttling, a cold model ...) are deleted and run again.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from derm_cloud.compare.run.backends import open_runtimes
from derm_cloud.compare.run.calls import PAYLOADS
from derm_cloud.compare.run.config import redact_config
from derm_cloud.compare.run.facts import MACHINE_FACT, backend_facts, load_reading, machine_facts
from derm_cloud.compare.run.local_executor import Job, LocalExecutor
from derm_cloud.compare.run.results import RunResults, collect_results
from derm_cloud.compare.run.store import RunStore
from derm_cloud.errors import ConfigError

if TYPE_CHECKING:
    from derm_cloud.compare.run.config import ComparisonConfig, DatasetConfig
    from derm_cloud.data import Dataset

__all__ = ["execute_run", "load_comparison_dataset"]


def load_comparison_dataset(cfg: DatasetConfig, seed: int) -> Dataset:
    """The dataset a config names (the embedded example image when it names none), subset to `limit`."""
    from derm_cloud.data import load_dataset

    if cfg.source in (None, "default", "dermapred-example"):
        from derm_cloud.models.example_image import example_image_dir

        ds = load_dataset(example_image_dir(), kind="folder", name="dermapred 0.0.3 example image")
    elif cfg.source == "ham10000:dev":  # wherever this machine has it: $DERM_CLOUD_DATA, a fetch, ../shared/data
        from derm_cloud.compare.run.defaults import require_labelled_data

        ds = load_dataset(require_labelled_data(), **cfg.options)
    else:
        ds = load_dataset(cfg.source, **cfg.options)
    if len(ds) == 0:
        raise ConfigError(f"dataset {cfg.source!r} holds no images; point [dataset] source at images or a manifest")
    if cfg.limit is not None and cfg.limit < len(ds):
        ds = ds.subset(cfg.limit, seed)
    return ds


def execute_run(
    config: ComparisonConfig,
    *,
    resume: str | None = None,
    fresh: bool = False,
    default_run: bool = False,
    progress: bool | None = None,
) -> tuple[RunResults, bool]:
    """Run (or resume) the comparison's requests and read every stored result back.

    Args:
        config: the comparison config.
        resume: a run id to resume (it must have the same config and dataset fingerprint).
        fresh: start a new run even if an unfinished one with the same fingerprint exists.
        default_run: the embedded default comparison (a backend that cannot start is skipped, not fatal).
        progress: progress bars (`True`), none (`False`), or bars in a terminal and lines in a log (`None`).

    Returns:
        `(results, resumed)`: the run's rows and facts, and whether results of an earlier session were reused.

    Raises:
        ConfigError: a bad dataset or resume id; the message names the fix.
    """
    warnings: list[str] = []
    ds = load_comparison_dataset(config.dataset, config.seed)
    store = RunStore(Path(config.output) / "runs.sqlite")
    try:
        run_id = _run_id(store, config, ds, resume, fresh)
        PAYLOADS.clear()  # payloads are shared within a run, never carried over from an earlier one
        retried = store.drop_retryable_failures(run_id)
        if retried:
            warnings.append(
                f"resumed run: {retried} results that had failed with a retryable error (throttling, model not "
                "ready, deadline, service error, open circuit or client timeout) were deleted and run again"
            )
        resumed = store.count(run_id) > 0
        store.start_session(run_id)
        infos, timings = _send_requests(store, run_id, config, ds, default_run, progress, warnings)
        store.finish_run(run_id)
        results = collect_results(
            store, run_id, config, ds, infos, default_run=default_run, warnings=warnings, timings_s=timings
        )
    finally:
        store.close()
    return results, resumed


def _run_id(store: RunStore, config: ComparisonConfig, ds: Dataset, resume: str | None, fresh: bool) -> str:
    """The run to work on: the one asked to resume, the newest unfinished one like it, or a new one."""
    fingerprint = config.fingerprint(ds.fingerprint())
    if resume:
        info = store.run(resume)
        if info.fingerprint != fingerprint:
            raise ConfigError(
                f"run {resume!r} was made with a different config or dataset (fingerprint "
                f"{info.fingerprint[:12]} vs {fingerprint[:12]} now); resume it with its original config, "
                "or drop --resume to start a new run"
            )
        return resume
    found = None if fresh else store.latest_incomplete(fingerprint)
    return found or store.create_run(
        fingerprint=fingerprint, config=redact_config(config.to_dict()), dataset_fingerprint=ds.fingerprint()
    )


def _send_requests(
    store: RunStore,
    run_id: str,
    config: ComparisonConfig,
    ds: Dataset,
    default_run: bool,
    progress: bool | None,
    warnings: list[str],
) -> tuple[dict[str, dict[str, Any]], dict[str, float]]:
    """Open the backends, record their facts and run every scenario; returns the facts and the timings."""
    from derm_cloud.progress import Progress, mode_for

    clock = [time.perf_counter()]
    machine = {**machine_facts(), "session": store.session, "before": load_reading()}
    runtimes = open_runtimes(config, skip_unavailable=default_run, warnings=warnings)
    clock.append(time.perf_counter())
    # Bars in a terminal, periodic plain lines in a log (CI, `| tee`), nothing when progress=False (-q).
    progress_bars = Progress(mode_for(enabled=progress), prefix="derm-cloud: compare")
    job = Job(run_id, store, config, ds.samples, runtimes, progress_bars)
    try:
        infos = {rt.name: backend_facts(rt) for rt in runtimes}
        for name, facts in infos.items():
            store.set_fact(run_id, name, "describe", facts)
        _executor(config).run(job)
        if config.scenarios["batch"].enabled:
            from derm_cloud.compare.run.batch_executor import run_batch_scenario

            run_batch_scenario(Job(run_id, store, config, ds.samples, runtimes), warnings)
            for name, facts in infos.items():  # a resumed run's job facts were stored by an earlier session
                facts.update({k: v for k, v in store.facts(run_id, name).items() if k == "batch"})
        clock.append(time.perf_counter())
    finally:
        for rt in runtimes:
            rt.close()
        progress_bars.close()
        # The machine's cores and load before and after this session, and during each phase (kept even when
        # the session stops half-way: the resumed report shows every session's).
        machine.update(after=load_reading(), windows=job.windows)
        store.set_fact(run_id, MACHINE_FACT, f"session-{store.session}", machine)
    return infos, {"setup (emulators, backends)": clock[1] - clock[0], "requests": clock[2] - clock[1]}


def _executor(config: ComparisonConfig) -> LocalExecutor:
    if config.executor == "ray":
        from derm_cloud.compare.run.ray_executor import RayExecutor

        ray = dict(config.ray)
        return RayExecutor(
            address=ray.pop("address", None),
            actors=int(ray.pop("actors", 2)),
            shard_size=int(ray.pop("shard_size", 32)),
            init=ray,
        )
    return LocalExecutor()
