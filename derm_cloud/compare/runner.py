"""Run a comparison end to end: config -> dataset -> backends (and emulators) -> run store -> report.

:func:`run_comparison` is what ``derm-cloud compare`` calls. A run is identified by the fingerprint of its
config and dataset: rerunning the same config on the same images resumes the newest unfinished run with that
fingerprint (``fresh=True`` starts over), and ``resume=RUN_ID`` resumes a given one; results already in the
store are never requested again.

Example:
    >>> from derm_cloud.compare import run_comparison
    >>> result = run_comparison("compare.toml", limit=50)  # doctest: +SKIP
    >>> result.html  # doctest: +SKIP
    PosixPath('derm-cloud-report/report.html')
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from derm_cloud.compare.config import ComparisonConfig, DatasetConfig, load_config, parse_config
from derm_cloud.compare.shared import planned_units, redact_config
from derm_cloud.errors import ConfigError, DermCloudError

if TYPE_CHECKING:
    from derm_cloud.compare.executors import BackendRuntime
    from derm_cloud.data import Dataset

__all__ = ["ComparisonResult", "planned_units", "redact_config", "run_comparison"]


@dataclass(frozen=True)
class ComparisonResult:
    """What a finished comparison produced.

    Attributes:
        run_id: the run's id in the store (pass it to ``--resume`` to rebuild the report).
        output_dir: the folder holding the report and the run store.
        html, markdown, json: the report files.
        figures_dir: JSON and CSV data of every figure.
        summary: the full report data (what ``json`` holds).
        resumed: whether results of an earlier, interrupted session were reused.
        warnings: everything the report warns about.
    """

    run_id: str
    output_dir: Path
    html: Path
    markdown: Path
    json: Path
    figures_dir: Path
    summary: dict[str, Any]
    resumed: bool
    warnings: list[str] = field(default_factory=list)


def _as_config(config_or_path: Any) -> ComparisonConfig:
    if config_or_path is None:
        from derm_cloud.compare.defaults import default_config

        return default_config()
    if isinstance(config_or_path, ComparisonConfig):
        return config_or_path
    if isinstance(config_or_path, Mapping):
        return parse_config(config_or_path)
    if isinstance(config_or_path, (str, os.PathLike)):
        return load_config(config_or_path)
    raise TypeError(f"expected a config path, dict or ComparisonConfig, got {type(config_or_path).__name__}")


def load_comparison_dataset(cfg: DatasetConfig, seed: int) -> Dataset:
    """The dataset a config names (the embedded example image when it names none), subset to ``limit``."""
    from derm_cloud.data import load_dataset

    if cfg.source in (None, "default", "dermapred-example"):
        from derm_cloud.compare.defaults import example_image_dir

        ds = load_dataset(example_image_dir(), kind="folder", name="dermapred 0.0.3 example image")
    elif cfg.source == "ham10000:dev":  # wherever this machine has it: $DERM_CLOUD_DATA, a fetch, ../shared/data
        from derm_cloud.compare.defaults import require_labelled_data

        ds = load_dataset(require_labelled_data(), **cfg.options)
    else:
        ds = load_dataset(cfg.source, **cfg.options)
    if len(ds) == 0:
        raise ConfigError(f"dataset {cfg.source!r} holds no images; point [dataset] source at images or a manifest")
    if cfg.limit is not None and cfg.limit < len(ds):
        ds = ds.subset(cfg.limit, seed)
    return ds


def _open_runtimes(config: ComparisonConfig, skip_unavailable: bool, warnings: list[str]) -> list[BackendRuntime]:
    from derm_cloud.compare.executors import prepare
    from derm_cloud.compare.metadata_modes import apply_metadata_plan

    runtimes: list[BackendRuntime] = []
    timeout = config.scenario_defaults["request_timeout_s"]
    opened: list[BackendRuntime] = []  # every runtime opened, variants included: closed if a later one fails

    def open_variant(original: BackendRuntime, name: str) -> BackendRuntime:
        variant = prepare(replace(original.cfg, name=name), timeout)
        variant.variant_of = original.name
        opened.append(variant)
        return variant

    try:
        for b in config.backends:
            try:
                runtimes.append(prepare(b, timeout))
            except (DermCloudError, ImportError) as exc:
                if not skip_unavailable:
                    raise
                from derm_cloud.redaction import redact

                warnings.append(redact(f"backend {b.name!r} skipped: {type(exc).__name__}: {exc}", limit=None))
        opened.extend(runtimes)
        meta = config.metadata
        runtimes = apply_metadata_plan(runtimes, meta["mode"], meta["variants"], open_variant)
    except BaseException:
        for rt in {id(r): r for r in [*runtimes, *opened]}.values():
            rt.close()
        raise
    if not runtimes:
        raise ConfigError("no backend could be started; see the errors above")
    return runtimes


def _executor(config: ComparisonConfig) -> Any:
    from derm_cloud.compare.executors import LocalExecutor, RayExecutor

    if config.executor == "ray":
        ray = dict(config.ray)
        return RayExecutor(
            address=ray.pop("address", None),
            actors=int(ray.pop("actors", 2)),
            shard_size=int(ray.pop("shard_size", 32)),
            init=ray,
        )
    return LocalExecutor()


def run_comparison(
    config_or_path: str | os.PathLike[str] | Mapping[str, Any] | ComparisonConfig | None = None,
    *,
    dataset: str | os.PathLike[str] | None = None,
    limit: int | None = None,
    output: str | os.PathLike[str] | None = None,
    resume: str | None = None,
    fresh: bool = False,
    executor: str | None = None,
    progress: bool | None = None,
) -> ComparisonResult:
    """Run (or resume) a comparison and write its report.

    Args:
        config_or_path: a config file, a dict in the config schema, a :class:`ComparisonConfig`, or ``None``
            for the embedded default (sklesion locally and on every cloud emulator, on the example image).
        dataset: override ``[dataset] source`` (a folder, CSV manifest, HAM10000 layout or parquet).
        limit: override ``[dataset] limit`` (a seeded, class-stratified subset).
        output: override the output folder.
        resume: a run id to resume (it must have the same config and dataset fingerprint).
        fresh: start a new run even if an unfinished one with the same fingerprint exists.
        executor: override the executor (``"local"`` or ``"ray"``).
        progress: ``True`` progress bars, ``False`` none, ``None`` (default) bars when stderr is a terminal and
            periodic plain lines (count, elapsed, ETA) when it is not.

    Returns:
        A :class:`ComparisonResult` with the report paths and data.

    Raises:
        ConfigError: a bad config, dataset or resume id; the message names the fix.
    """
    from derm_cloud.compare.analysis import analyse
    from derm_cloud.compare.report import write_report
    from derm_cloud.compare.store import RunStore

    is_default = config_or_path is None
    config = _as_config(config_or_path)
    changes: dict[str, Any] = {}
    if dataset is not None or limit is not None:
        src = os.fspath(dataset) if dataset is not None else config.dataset.source
        opts = {} if dataset is not None else config.dataset.options
        changes["dataset"] = replace(config.dataset, source=src, limit=limit or config.dataset.limit, options=opts)
    if output is not None:
        changes["output"] = Path(output)
    if executor is not None:
        if executor not in ("local", "ray"):
            raise ConfigError(f"executor must be 'local' or 'ray', got {executor!r}")
        changes["executor"] = executor
    if changes:
        config = replace(config, **changes)
    warnings: list[str] = []
    ds = load_comparison_dataset(config.dataset, config.seed)
    fingerprint = config.fingerprint(ds.fingerprint())
    store = RunStore(Path(config.output) / "runs.sqlite")
    try:
        if resume:
            info = store.run(resume)
            if info.fingerprint != fingerprint:
                raise ConfigError(
                    f"run {resume!r} was made with a different config or dataset (fingerprint "
                    f"{info.fingerprint[:12]} vs {fingerprint[:12]} now); resume it with its original config, "
                    "or drop --resume to start a new run"
                )
            run_id = resume
        else:
            found = None if fresh else store.latest_incomplete(fingerprint)
            run_id = found or store.create_run(
                fingerprint=fingerprint,
                config=redact_config(config.to_dict()),
                dataset_fingerprint=ds.fingerprint(),
            )
        from derm_cloud.compare.executors import PAYLOADS

        PAYLOADS.clear()  # payloads are shared within a run, never carried over from an earlier one
        retried = store.drop_retryable_failures(run_id)
        if retried:
            warnings.append(
                f"resumed run: {retried} results that had failed with a retryable error (throttling, model not "
                "ready, deadline, service error, open circuit or client timeout) were deleted and run again"
            )
        resumed = store.count(run_id) > 0
        store.start_session(run_id)
        clock = [time.perf_counter()]
        runtimes = _open_runtimes(config, skip_unavailable=is_default, warnings=warnings)
        clock.append(time.perf_counter())
        from derm_cloud.progress import Progress, mode_for

        # Bars in a terminal, periodic plain lines in a log (CI, `| tee`), nothing when progress=False (-q).
        progress_bars = Progress(mode_for(enabled=progress), prefix="derm-cloud: compare")
        try:
            infos = {rt.name: _backend_facts(rt) for rt in runtimes}
            for name, facts in infos.items():
                store.set_fact(run_id, name, "describe", facts)
            from derm_cloud.compare.executors import Job

            job = Job(run_id, store, config, ds.samples, runtimes, progress_bars)
            _executor(config).run(job)
            clock.append(time.perf_counter())
        finally:
            for rt in runtimes:
                rt.close()
            progress_bars.close()
        store.finish_run(run_id)
        summary = analyse(store, run_id, config, ds, infos, extra_warnings=warnings, default_run=is_default)
        from derm_cloud.compare.defaults import quality_headline
        from derm_cloud.compare.exports import write_exports

        summary["exports"] = write_exports(store, run_id, ds, infos, Path(config.output))
        # The summary's first line when the run has no quality figures: say so, and how to get them.
        summary["headline"] = quality_headline(summary)
        clock.append(time.perf_counter())
        summary["run"]["timings_s"] = {
            "setup (emulators, backends)": clock[1] - clock[0],
            "requests": clock[2] - clock[1],
            "analysis": clock[3] - clock[2],
        }
    finally:
        store.close()
    paths = write_report(summary, Path(config.output))
    return ComparisonResult(
        run_id=run_id,
        output_dir=Path(config.output),
        html=paths["html"],
        markdown=paths["markdown"],
        json=paths["json"],
        figures_dir=paths["figures"],
        summary=summary,
        resumed=resumed,
        warnings=list(summary.get("warnings", [])),
    )


def _backend_facts(rt: BackendRuntime) -> dict[str, Any]:
    """``describe()`` as a dict plus what the report needs: emulation, the hosted model's facts."""
    from dataclasses import asdict

    facts = asdict(rt.classifier.describe())
    facts["name"] = rt.name
    facts["type"] = rt.cfg.type
    facts["emulated"] = bool(facts.get("emulated") or rt.cfg.emulate)
    facts["billing"] = {**facts.get("billing", {}), **rt.cfg.billing}
    facts["rate_limit"] = rt.cfg.rate_limit
    facts["options"] = redact_config(rt.cfg.options)
    facts["uses_metadata"] = rt.classifier.uses_metadata
    facts["metadata_used"] = rt.recipe.use_metadata and rt.classifier.uses_metadata
    facts["variant_of"] = rt.variant_of
    facts["export_of"] = rt.cfg.export_of
    if rt.cfg.emulate and rt.cfg.model_dir:
        from derm_cloud.models.cache import resolve_model_dir
        from derm_cloud.models.spec import ModelSpec

        model_dir = resolve_model_dir(rt.cfg.model_dir)
        spec = ModelSpec.load(model_dir)
        facts["hosted_model"] = {"model_id": spec.model_id, "model_dir": str(model_dir), **spec.facts}
        facts["model_facts"] = {**spec.facts, **facts.get("model_facts", {})}
    from derm_cloud.compare.same_model import model_fingerprint

    # The model file a backend serves (emulators: the hosted one; local-onnx: its own) for the same-model check.
    served = (facts.get("hosted_model") or {}).get("model_dir") or getattr(
        getattr(rt.classifier, "model", None), "directory", None
    )
    facts["model_fingerprint"] = model_fingerprint(served)
    # describe() may name the endpoint by a URL that carries its key (an Azure Functions ``?code=``).
    return dict(redact_config(facts))
