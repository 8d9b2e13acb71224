"""The config file's schema: every key, the check its value must pass and its default.

Each key maps to `(checker, default)`. A checker returns the normalised value or raises `BadValueError` with a
message that `derm_cloud.compare.run.config_file` prefixes with the key and its line. The comparator guide and
`examples/compare.toml` show the keys in use.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

__all__ = [
    "DATASET_SHORT_NAMES",
    "EMULATORS_WITHOUT_MODEL",
    "HAM10000_MELANOMA_SHARE",
    "SCENARIOS",
    "SCHEMA",
    "TOP_TABLES",
    "BadValueError",
]


class BadValueError(Exception):
    """A value breaks its key's rule; the message says which rule."""


Checker = Callable[[Any], Any]


def _num(lo: float | None = None, hi: float | None = None, *, integer: bool = False) -> Checker:
    def check(v: Any) -> Any:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or (integer and not isinstance(v, int)):
            raise BadValueError(f"must be {'an integer' if integer else 'a number'}, got {v!r}")
        if lo is not None and v < lo:
            raise BadValueError(f"must be >= {lo}, got {v!r}")
        if hi is not None and v > hi:
            raise BadValueError(f"must be <= {hi}, got {v!r}")
        return int(v) if integer else float(v)

    return check


def _opt(check: Checker) -> Checker:
    return lambda v: None if v is None else check(v)


def _str(v: Any) -> str:
    if not isinstance(v, str) or not v.strip():
        raise BadValueError(f"must be a non-empty string, got {v!r}")
    return v


def _bool(v: Any) -> bool:
    if not isinstance(v, bool):
        raise BadValueError(f"must be true or false, got {v!r}")
    return v


def _bool_or_auto(v: Any) -> bool | str:
    if v != "auto" and not isinstance(v, bool):
        raise BadValueError(f'must be true, false or "auto", got {v!r}')
    return v  # type: ignore[no-any-return]


def _table(v: Any) -> dict[str, Any]:
    if not isinstance(v, Mapping):
        raise BadValueError(f"must be a table of key = value pairs, got {v!r}")
    return {str(k): val for k, val in v.items()}


def _choice(*options: str) -> Checker:
    def check(v: Any) -> str:
        if v not in options:
            raise BadValueError(f"must be one of {', '.join(repr(o) for o in options)}, got {v!r}")
        return str(v)

    return check


def _share(v: Any) -> float:
    if not isinstance(v, bool) and isinstance(v, (int, float)) and 1 < v <= 100:
        raise BadValueError(f"is a share between 0 and 1, got {v!r}: write {v / 100:g} for {v:g}%")
    return float(_num(0.0, 1.0)(v))


def _regions(v: Any) -> tuple[str, ...]:
    if isinstance(v, str):
        v = [v]
    if not isinstance(v, list) or not all(isinstance(x, str) and x.strip() for x in v):
        raise BadValueError(f"must be a region name or a list of region names (e.g. ['eu-west-1']), got {v!r}")
    return tuple(v)


def _int_list(v: Any) -> tuple[int, ...]:
    if not isinstance(v, list) or not v or not all(isinstance(x, int) and not isinstance(x, bool) for x in v):
        raise BadValueError(f"must be a non-empty list of integers, got {v!r}")
    if any(x < 1 for x in v):
        raise BadValueError(f"concurrency levels must be >= 1, got {v!r}")
    return tuple(sorted(set(v)))


def _prevalence(v: Any) -> Any:
    if isinstance(v, Mapping):
        from derm_cloud.taxonomy import CLASS_CODES

        bad = sorted(set(v) - set(CLASS_CODES))
        if bad:
            raise BadValueError(f"unknown class code(s) {bad}; use {', '.join(CLASS_CODES)}")
        out = {str(k): _num(0.0, 1.0)(x) for k, x in v.items()}
        if sum(out.values()) > 1.0 + 1e-9:
            raise BadValueError(f"class prevalences sum to {sum(out.values()):.3f}, more than 1")
        return out
    return _num(0.0, 1.0)(v)


def _paths(v: Any) -> tuple[str, ...]:
    if isinstance(v, str):
        v = [v]
    if not isinstance(v, list) or not all(isinstance(x, str) and x for x in v):
        raise BadValueError(f"must be a file path or a list of file paths, got {v!r}")
    return tuple(v)


#: Melanoma share of HAM10000 (1,113 of 10,015 images; Tschandl et al. 2018): the default stated prevalence.
HAM10000_MELANOMA_SHARE = round(1113 / 10015, 4)

_SCENARIO_COMMON: dict[str, tuple[Checker, Any]] = {"enabled": (_bool, True)}

SCHEMA: dict[str, dict[str, tuple[Checker, Any]]] = {
    "": {
        "title": (_str, "derm-cloud comparison"),
        "output": (_str, "derm-cloud-report"),
        "seed": (_num(0, integer=True), 0),
        "executor": (_choice("local", "ray"), "local"),
        "backends_in_parallel": (_bool, True),
        "ray": (_table, {}),
    },
    "dataset": {
        "source": (_opt(_str), None),
        "limit": (_opt(_num(1, integer=True)), None),
        "options": (_table, {}),
    },
    "population": {
        "monthly_volume": (_num(1, integer=True), 100_000),
        # Default: the melanoma share of HAM10000 (1,113 / 10,015 images), a referral-centre mix; reports say so.
        "melanoma_prevalence": (_prevalence, HAM10000_MELANOMA_SHARE),
    },
    "fairness": {
        "skin_tone": (_choice("auto", "fitzpatrick", "ita", "none"), "auto"),
        "min_group_size": (_num(1, integer=True), 30),
    },
    "metadata": {
        # auto: every backend gets patient metadata only if all can use it, else image-only plus a with-metadata
        # row for each capable backend; blind: none; each: each that can. See compare/run/metadata_modes.py.
        "mode": (_choice("auto", "blind", "each"), "auto"),
        "variants": (_bool_or_auto, "auto"),
    },
    "cost": {
        "prices": (_paths, ()),
        "utilisation": (_num(0.01, 1.0), 0.5),
    },
    # Decision constraints the verdict judges each backend against (derm_cloud.compare.analysis.verdict);
    # None: not a constraint. The figures' 95% intervals decide, so a straddled threshold is "cannot tell".
    "decision": {
        "min_melanoma_sensitivity": (_opt(_share), None),
        "min_balanced_accuracy": (_opt(_share), None),
        "max_p95_ms": (_opt(_num(0.001)), None),
        "max_p99_ms": (_opt(_num(0.001)), None),
        "latency_scenario": (_choice("single_stream", "server"), "single_stream"),
        "max_monthly_usd": (_opt(_num(0.0)), None),
        "no_image_storage": (_bool, False),
        "allowed_regions": (_regions, ()),
    },
    "scenarios": {
        "warmup": (_num(0, integer=True), 5),
        "min_samples": (_num(1, integer=True), 100),
        "percentile_method": (_choice("linear", "inverted_cdf"), "linear"),
        "bootstrap": (_num(0, integer=True), 1000),
        "request_timeout_s": (_num(0.001), 60.0),
    },
    "scenarios.quality": {**_SCENARIO_COMMON, "concurrency": (_num(1, integer=True), 4)},
    "scenarios.single_stream": {**_SCENARIO_COMMON, "queries": (_num(1, integer=True), 200)},
    "scenarios.server": {
        **_SCENARIO_COMMON,
        "queries": (_num(1, integer=True), 200),
        "target_qps": (_num(0.001), 10.0),
        "latency_bound_ms": (_num(0.001), 500.0),
        "max_inflight": (_num(1, integer=True), 64),
    },
    "scenarios.offline": {
        **_SCENARIO_COMMON,
        "queries": (_num(1, integer=True), 100),
        "concurrency": (_int_list, (1, 2, 4, 8)),
    },
    "scenarios.cold_start": {
        **_SCENARIO_COMMON,
        "trials": (_num(1, integer=True), 3),
        "warm_queries": (_num(1, integer=True), 3),
        "not_ready_calls": (_num(0, integer=True), 1),
    },
    # Off unless asked for: one cloud batch job per emulated sagemaker / vertex / azure-ml backend (issue 23).
    "scenarios.batch": {"enabled": (_bool, False), "startup_s": (_num(0.0), 0.0)},
    "backends": {
        "name": (_str, None),
        "type": (_str, None),
        "options": (_table, {}),
        "emulate": (_bool, False),
        "model_dir": (_opt(_str), None),
        "emulator": (_table, {}),
        "rate_limit": (_opt(_num(0.001)), None),
        "burst": (_num(1, integer=True), 1),
        "max_concurrency": (_num(1, integer=True), 8),
        "timeout_s": (_opt(_num(0.001)), None),
        "billing": (_table, {}),
        "export_of": (_opt(_str), None),
    },
    "backends.emulator": {
        "delay_ms": (_num(0.0), 0.0),
        "transport": (_opt(_str), None),
    },
}
TOP_TABLES = ("dataset", "population", "fairness", "metadata", "cost", "decision", "scenarios", "backends")
SCENARIOS = ("quality", "single_stream", "server", "offline", "cold_start", "batch")
# Emulators that host no model (generic label services).
# A probe's or zero-shot's embedding emulator hosts sklesion's stand-in encoder unless model_dir names another.
EMULATORS_WITHOUT_MODEL = frozenset({"google-vision", "probe", "zero-shot"})
# Dataset sources that are names, not paths ("ham10000:dev": the labelled HAM10000 dev split this machine has).
DATASET_SHORT_NAMES = frozenset({"default", "dermapred-example", "ham10000:dev"})
