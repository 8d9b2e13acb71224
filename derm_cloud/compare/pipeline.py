"""A comparison end to end: config -> run (images in, rows out) -> analysis (rows to `Summary`) -> report.

`run_comparison` is what `derm-cloud compare` calls, and the one place that knows all three stages:

* **run** (`derm_cloud.compare.run.execute.execute_run`): starts the backends (and emulators), sends every
  scenario's requests, stores each result as it arrives and reads the run back as `RunResults`;
* **analysis** (`derm_cloud.compare.analysis.analyse.analyse`): pure functions from those rows to a `Summary`;
* **report** (`derm_cloud.compare.report.write.write_report`): the `Summary` as HTML, Markdown, JSON, figures
  and per-image exports.

A run is identified by the fingerprint of its config and dataset: rerunning the same config on the same images
resumes the newest unfinished run with that fingerprint (`fresh=True` starts over), and `resume=RUN_ID`
resumes a given one; results already in the store are never requested again.

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
from typing import Any

from derm_cloud.compare.analysis.analyse import analyse
from derm_cloud.compare.report.write import write_report
from derm_cloud.compare.run.config import ComparisonConfig
from derm_cloud.compare.run.config_file import load_config, parse_config, with_decision
from derm_cloud.compare.run.execute import execute_run
from derm_cloud.errors import ConfigError

__all__ = ["ComparisonResult", "run_comparison"]


@dataclass(frozen=True)
class ComparisonResult:
    """What a finished comparison produced.

    Attributes:
        run_id: the run's id in the store (pass it to `--resume` to rebuild the report).
        output_dir: the folder holding the report and the run store.
        html, markdown, json: the report files.
        figures_dir: JSON and CSV data of every figure.
        summary: the full report data (what `json` holds).
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
        from derm_cloud.compare.run.defaults import default_config

        return default_config()
    if isinstance(config_or_path, ComparisonConfig):
        return config_or_path
    if isinstance(config_or_path, Mapping):
        return parse_config(config_or_path)
    if isinstance(config_or_path, (str, os.PathLike)):
        return load_config(config_or_path)
    raise TypeError(f"expected a config path, dict or ComparisonConfig, got {type(config_or_path).__name__}")


def _with_overrides(
    config: ComparisonConfig,
    dataset: str | os.PathLike[str] | None,
    limit: int | None,
    output: str | os.PathLike[str] | None,
    executor: str | None,
) -> ComparisonConfig:
    """The config with the command line's overrides applied."""
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
    return replace(config, **changes) if changes else config


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
    decision: Mapping[str, Any] | None = None,
) -> ComparisonResult:
    """Run (or resume) a comparison and write its report.

    Args:
        config_or_path: a config file, a dict in the config schema, a `ComparisonConfig`, or `None`
            for the embedded default (sklesion locally and on every cloud emulator, on the example image).
        dataset: override `[dataset] source` (a folder, CSV manifest, HAM10000 layout or parquet).
        limit: override `[dataset] limit` (a seeded, class-stratified subset).
        output: override the output folder.
        resume: a run id to resume (it must have the same config and dataset fingerprint).
        fresh: start a new run even if an unfinished one with the same fingerprint exists.
        executor: override the executor (`"local"` or `"ray"`).
        progress: `True` progress bars, `False` none, `None` (default) bars when stderr is a terminal and
            periodic plain lines (count, elapsed, ETA) when it is not.
        decision: `[decision]` keys that replace the config's (`{"min_melanoma_sensitivity": 0.95}`); they
            judge the results without changing them, so the same stored run is judged again.

    Returns:
        A `ComparisonResult` with the report paths and data.

    Raises:
        ConfigError: a bad config, dataset or resume id; the message names the fix.
    """
    config = _with_overrides(_as_config(config_or_path), dataset, limit, output, executor)
    if decision:
        config = with_decision(config, decision)
    results, resumed = execute_run(
        config, resume=resume, fresh=fresh, default_run=config_or_path is None, progress=progress
    )
    started = time.perf_counter()
    try:
        summary = analyse(results, config)
        timings = {**results.timings_s, "analysis": time.perf_counter() - started}
        summary = replace(summary, run={**summary.run, "timings_s": timings})
        files = write_report(summary, Path(config.output))
    except Exception as exc:
        # The run is complete in the store: a rerun would start a new one and measure it all again.
        exc.add_note(
            f"derm-cloud: the measurements are saved (run {results.run_id} in {Path(config.output) / 'runs.sqlite'}); "
            f"once fixed, `derm-cloud compare ... --resume {results.run_id}` writes the report without measuring again"
        )
        raise
    return ComparisonResult(
        run_id=results.run_id,
        output_dir=Path(config.output),
        html=files.html,
        markdown=files.markdown,
        json=files.json,
        figures_dir=files.figures_dir,
        summary=files.data,
        resumed=resumed,
        warnings=list(summary.warnings),
    )
