"""`derm-cloud compare`: run a comparison config (or the embedded default) and write the report."""

from __future__ import annotations

import argparse
import sys
from typing import Any

DISCLAIMER = "For triage and research: a clinician reviews every result; nothing here is a diagnosis."


def register(sub: Any) -> None:
    p = sub.add_parser(
        "compare",
        help="compare backends on quality, latency and cost, and write a report",
        description=(
            "Run a comparison config (TOML or YAML) and write report.html, report.md, report.json and figures/ "
            "into its output folder. Without CONFIG, runs the embedded default: the sklesion model on this "
            "machine and behind each cloud's local emulator, on an example image fetched from PyPI. "
            "An interrupted run resumes when rerun with the same config and dataset. " + DISCLAIMER
        ),
    )
    p.add_argument("config", nargs="?", metavar="CONFIG", help="config file (.toml, .yaml); default: embedded")
    p.add_argument("--dataset", metavar="PATH", help="override the dataset (folder, CSV manifest, HAM10000, parquet)")
    p.add_argument("--limit", type=int, metavar="N", help="a seeded, class-stratified subset of N images")
    p.add_argument("--output", "-o", metavar="DIR", help="override the output folder")
    p.add_argument("--resume", metavar="RUN_ID", help="resume this run (same config and dataset)")
    p.add_argument("--fresh", action="store_true", help="start a new run even if an unfinished one matches")
    p.add_argument("--executor", choices=["local", "ray"], help="override the executor")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bars")
    p.add_argument("--check", action="store_true", help="validate the config and its dataset, then exit")
    p.add_argument(
        "--repair",
        action="store_true",
        help="salvage a damaged run store first: keep every intact row, report what was dropped, then resume",
    )
    _decision_flags(p)
    p.set_defaults(handler=run_compare)


def _decision_flags(p: argparse.ArgumentParser) -> None:
    """Flags that override the config's [decision] table (docs/verdict.md explains the rules)."""
    g = p.add_argument_group("decision constraints (override the config's [decision] table)")
    g.add_argument(
        "--min-mel-sensitivity",
        type=float,
        metavar="S",
        help="melanoma sensitivity at top-1 (argmax) whose 95%% lower bound must reach S (0-1)",
    )
    g.add_argument("--min-balanced-accuracy", type=float, metavar="B", help="95%% lower bound must reach B (0-1)")
    g.add_argument("--max-p95-ms", type=float, metavar="MS", help="p95 latency whose 95%% upper bound must be <= MS")
    g.add_argument("--max-p99-ms", type=float, metavar="MS", help="p99 latency whose 95%% upper bound must be <= MS")
    g.add_argument(
        "--latency-scenario",
        choices=["single_stream", "server"],
        help="the measured load the latency limits are judged at (default single_stream)",
    )
    g.add_argument("--max-monthly-usd", type=float, metavar="USD", help="budget at [population] monthly_volume")
    g.add_argument("--no-image-storage", action="store_true", default=None, help="the provider must not keep images")
    g.add_argument("--allowed-regions", metavar="R1,R2", help="regions images may go to (this machine always may)")
    g.add_argument(
        "--fail-on-unmet",
        action="store_true",
        help="exit 1 (reason on stderr) when no backend meets every constraint: a CI gate",
    )


def _decision_overrides(args: argparse.Namespace) -> dict[str, Any]:
    flags = {
        "min_melanoma_sensitivity": args.min_mel_sensitivity,
        "min_balanced_accuracy": args.min_balanced_accuracy,
        "max_p95_ms": args.max_p95_ms,
        "max_p99_ms": args.max_p99_ms,
        "latency_scenario": args.latency_scenario,
        "max_monthly_usd": args.max_monthly_usd,
        "no_image_storage": args.no_image_storage,
        "allowed_regions": [r.strip() for r in args.allowed_regions.split(",")] if args.allowed_regions else None,
    }
    return {k: v for k, v in flags.items() if v is not None}


def run_compare(args: argparse.Namespace) -> int:
    from derm_cloud.errors import ConfigError

    if args.limit is not None and args.limit < 1:
        raise ConfigError(f"--limit must be a positive number of images, got {args.limit}")
    if args.resume and args.fresh:
        raise ConfigError("--resume and --fresh contradict each other; pass one")
    if args.check:
        from derm_cloud.compare.run.config_file import load_config, parse_config, with_decision
        from derm_cloud.compare.run.defaults import DEFAULT_CONFIG_TOML

        cfg = load_config(args.config) if args.config else parse_config(DEFAULT_CONFIG_TOML)
        if overrides := _decision_overrides(args):
            cfg = with_decision(cfg, overrides)
        where = "--dataset" if args.dataset else f"[dataset] source of {args.config}"
        dataset = _check_dataset(args.dataset or cfg.dataset.source, cfg.dataset.options, args.config, where)
        names = ", ".join(f"{b.name} ({b.type}{', emulated' if b.emulate else ''})" for b in cfg.backends)
        print(f"config OK: {len(cfg.backends)} backends: {names}; output {cfg.output}")
        print(dataset)
        return 0
    from derm_cloud.compare.pipeline import run_comparison

    if args.repair:
        _repair(args)
    try:
        result = _run(args, run_comparison)
    except KeyboardInterrupt:
        print("derm-cloud: interrupted; results so far are stored: rerun the same command to resume", file=sys.stderr)
        raise
    from derm_cloud.compare.report.parity import evidence_text

    if result.summary.get("headline"):
        print(result.summary["headline"])
    elif evidence_text(result.summary):
        print(evidence_text(result.summary))
    print(f"run {result.run_id}{' (resumed)' if result.resumed else ''}")
    if (verdict_line := (result.summary.get("verdict") or {}).get("recommendation")) is not None:
        print(verdict_line)
    for line in _headline(result.summary):
        print(line)
    if result.warnings:
        print(f"{len(result.warnings)} warning(s); the first ones:", file=sys.stderr)
        for w in result.warnings[:5]:
            print(f"  - {w}", file=sys.stderr)
    print(f"report: {result.html}\n        {result.markdown}\n        {result.json}")
    print(DISCLAIMER)
    verdict = result.summary.get("verdict") or {}
    if args.fail_on_unmet and verdict.get("unmet"):
        print(f"derm-cloud: --fail-on-unmet: {verdict['unmet']}", file=sys.stderr)
        return 1
    return 0


def _check_dataset(source: str | None, options: dict[str, Any], config: str | None, where: str) -> str:
    """Load the dataset a config names (as the run will), or raise a `ConfigError` saying what to fix."""
    from derm_cloud.compare.run.defaults import (
        DEFAULT_SUBSET_SIZE,
        FETCH_LABELLED_COMMAND,
        HAM10000_DEV_SOURCE,
        find_labelled_data,
        require_labelled_data,
    )
    from derm_cloud.data import load_dataset
    from derm_cloud.errors import ConfigError

    if source is None and config is None and (found := find_labelled_data()) is not None:
        return f"dataset OK: a seeded, class-stratified {DEFAULT_SUBSET_SIZE}-image subset of {found}"
    if source in (None, "default", "dermapred-example"):
        fix = f"`{FETCH_LABELLED_COMMAND}`" if config is None else f"[dataset] source = {HAM10000_DEV_SOURCE!r}"
        return (
            "dataset: the dermapred 0.0.3 example photo (downloaded from PyPI on the first run; unlabelled, so "
            f"quality is not measured: {fix} fixes that)"
        )
    path = require_labelled_data() if source == HAM10000_DEV_SOURCE else source
    try:
        ds = load_dataset(path, **options)
    except ConfigError as exc:
        relative = "" if where == "--dataset" else " (relative paths are relative to the config file)"
        raise ConfigError(
            f"{where}: {exc}{relative}; for HAM10000, run `{FETCH_LABELLED_COMMAND}` and use "
            f"{HAM10000_DEV_SOURCE!r}, which finds it"
        ) from exc
    labelled = sum(1 for label in ds.labels if label)
    return f"dataset OK: {len(ds)} images, {labelled} labelled ({path})"


def _run(args: argparse.Namespace, run_comparison: Any) -> Any:
    return run_comparison(
        args.config,
        dataset=args.dataset,
        limit=args.limit,
        output=args.output,
        resume=args.resume,
        fresh=args.fresh,
        executor=args.executor,
        progress=False if args.quiet else None,
        decision=_decision_overrides(args),
    )


def _repair(args: argparse.Namespace) -> None:
    """Salvage the store in the run's output folder (if there is one) before the run resumes it."""
    from pathlib import Path

    from derm_cloud.compare.run.store_repair import repair_store

    if args.output is not None:
        output = Path(args.output)
    elif args.config:
        from derm_cloud.compare.run.config_file import load_config

        output = Path(load_config(args.config).output)
    else:
        from derm_cloud.compare.run.defaults import default_config

        output = Path(default_config().output)
    store = output / "runs.sqlite"
    if not store.is_file():
        print(f"no run store at {store}; nothing to repair")
        return
    for line in repair_store(store).summary():
        print(line)


def _headline(summary: dict[str, Any]) -> list[str]:
    from derm_cloud.compare.report.summary_table import summary_table

    headers, rows = summary_table(summary)
    # Columns by name: the report's table grows, the terminal line keeps what a reader compares first.
    wanted = ("backend", "metadata", "balanced acc. [95% CI]", "p50 / p90 / p99 ms", "best QPS", "USD / month")
    keep = [headers.index(h) for h in wanted if h in headers]
    widths = [max(len(headers[i]), *(len(r[i]) for r in rows)) for i in keep]
    out = ["  ".join(headers[i].ljust(w) for i, w in zip(keep, widths, strict=True))]
    out += ["  ".join(r[i].ljust(w) for i, w in zip(keep, widths, strict=True)) for r in rows]
    return out
