"""Latency statistics of the MLPerf Inference scenarios the run stage measured (`derm_cloud.compare.run.plans`).

* **single_stream**: latency percentiles p50/p90/p99.
* **server**: latency counts from the scheduled arrival time, so queueing shows; p99 is compared with
  `latency_bound_ms`; achieved QPS is reported.
* **offline**: throughput = successful answers / wall time, per concurrency level.
* **cold_start**: the first request after creating a backend against warm requests; an emulated backend gets
  the cloud's "model not ready" answer for its first calls, as a cold endpoint gives.

Warm-up queries run at the start of every latency scenario in every process and are not recorded. Percentiles
use `numpy.percentile` with the configured method (`linear` = Hyndman & Fan type 7, numpy's default;
`inverted_cdf` = nearest rank); confidence intervals are 95 % percentile-bootstrap intervals (seeded).
Errors and client-side timeouts are counted, and excluded from the latency percentiles.

Every backend's latency carries its basis (`derm_cloud.compare.run.latency_basis`): an emulated backend's
is the 127.0.0.1 emulator's, not the provider's. `machine_summary` gives the cores, CPU model and load average
the run recorded, and the warning when the load exceeded the cores while latency was timed.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from derm_cloud.compare.run.latency_basis import LATENCY_BASES, latency_basis

if TYPE_CHECKING:
    from derm_cloud.compare.run.config import ComparisonConfig
    from derm_cloud.compare.run.results import RunResults

__all__ = [
    "METHOD_TEXT",
    "bootstrap_ci",
    "cold_start_summary",
    "latency_section",
    "latency_summary",
    "machine_summary",
    "offline_summary",
    "percentile",
    "server_summary",
]


METHOD_TEXT = (
    "Latency follows MLPerf Inference scenarios. single-stream: one query at a time, latency per query from "
    "issue to answer. server: Poisson arrivals at the target rate (seeded exponential gaps, open loop), latency "
    "from the scheduled arrival so queueing counts; p99 is compared with the stated bound. offline: all queries "
    "available, sent with a fixed number in flight for each level of a concurrency sweep; throughput = "
    "successful answers / wall time. cold start: a new backend instance per trial; the first request (for "
    "emulated clouds answered 'model not ready' first, then retried by the shared retry policy) against warm "
    "requests. Latency is client-observed wall time (numpy percentile, method '{method}'): the backend call "
    "(for clouds the SDK, the request and the answer; for local models the decode of the payload and the model "
    "run). Each image is prepared once, before the timer starts, and that one payload goes to every backend. "
    "Warm-up queries ({warmup} per "
    "scenario and process) are excluded. 95% confidence intervals: percentile bootstrap, {n_boot} resamples, "
    "seed {seed}. Errors and timeouts are counted and excluded from percentiles; a scenario with fewer than "
    "{min_samples} successful queries is flagged. Per-backend rate limits are enforced with a token bucket "
    "before a query is issued (in server mode the wait counts as latency)."
)


def percentile(values: Sequence[float] | np.ndarray, q: float, method: str = "linear") -> float:
    """The `q`-th percentile (0-100) with numpy's `method`; NaN for no values."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.size == 0:
        return math.nan
    return float(np.percentile(arr, q, method=method))  # type: ignore[call-overload]


def bootstrap_ci(
    values: Sequence[float] | np.ndarray,
    q: float,
    *,
    method: str = "linear",
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile-bootstrap confidence interval of the `q`-th percentile."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.size < 2 or n_boot <= 0:
        return (math.nan, math.nan)
    rng = np.random.default_rng([seed, int(q * 100)])
    stats = np.empty(n_boot)
    # Chunked so that 5,000 samples x 1,000 resamples never needs a 5M-element index matrix at once.
    chunk = max(1, 2_000_000 // arr.size)
    for lo in range(0, n_boot, chunk):
        hi = min(n_boot, lo + chunk)
        idx = rng.integers(0, arr.size, size=(hi - lo, arr.size))
        stats[lo:hi] = np.percentile(arr[idx], q, axis=1, method=method)  # type: ignore[call-overload]
    alpha = (1 - level) / 2
    return (float(np.quantile(stats, alpha)), float(np.quantile(stats, 1 - alpha)))


def _errors(rows: Iterable[Any]) -> tuple[Counter[str], int]:
    errors: Counter[str] = Counter()
    timeouts = 0
    for r in rows:
        if not r.ok:
            errors[r.error_type or "Error"] += 1
            if r.error_type in ("ClientTimeout", "DeadlineExceededError"):
                timeouts += 1
    return errors, timeouts


def latency_summary(
    rows: Sequence[Any],
    *,
    method: str = "linear",
    n_boot: int = 1000,
    seed: int = 0,
    min_samples: int = 100,
    percentiles: Sequence[float] = (50, 90, 99),
) -> dict[str, Any]:
    """Percentiles with bootstrap CIs, mean, errors and timeouts for a list of stored result rows."""
    lat = np.asarray([r.latency_ms for r in rows if r.ok and r.latency_ms is not None], dtype=np.float64)
    errors, timeouts = _errors(rows)
    out: dict[str, Any] = {
        "queries": len(rows),
        "ok": int(lat.size),
        "errors": dict(sorted(errors.items())),
        "error_count": sum(errors.values()),
        "timeouts": timeouts,
        "mean_ms": float(lat.mean()) if lat.size else None,
        "min_ms": float(lat.min()) if lat.size else None,
        "max_ms": float(lat.max()) if lat.size else None,
        "percentile_method": method,
        "sessions": len({r.session for r in rows}),
    }
    for q in percentiles:
        value = percentile(lat, q, method)
        lo, hi = bootstrap_ci(lat, q, method=method, n_boot=n_boot, seed=seed)
        out[f"p{q:g}_ms"] = None if math.isnan(value) else value
        out[f"p{q:g}_ci_ms"] = None if math.isnan(lo) else [lo, hi]
    out["below_min_samples"] = bool(lat.size < min_samples)
    if lat.size < min_samples:
        out["warning"] = (
            f"only {lat.size} successful queries (minimum {min_samples}): percentiles, p99 above all, are "
            "unreliable; raise the scenario's queries"
        )
    return out


def _throughput(rows: Sequence[Any]) -> float | None:
    """Successful answers per second, summing the active span of each process session (resumes excluded)."""
    ok_total, span_total = 0, 0.0
    for session in sorted({r.session for r in rows}):
        part = [r for r in rows if r.session == session and r.t_start is not None and r.t_end is not None]
        if not part:
            continue
        span_total += max(r.t_end for r in part) - min(r.t_start for r in part)
        ok_total += sum(1 for r in part if r.ok)
    return ok_total / span_total if span_total > 0 else None


def server_summary(rows: Sequence[Any], *, bound_ms: float, target_qps: float, **kw: Any) -> dict[str, Any]:
    """Latency summary plus p99 against the bound and the achieved query rate."""
    out = latency_summary(rows, **kw)
    p99 = out.get("p99_ms")
    out["target_qps"] = target_qps
    out["latency_bound_ms"] = bound_ms
    out["achieved_qps"] = _throughput(rows)
    out["meets_bound"] = bool(p99 is not None and p99 <= bound_ms and out["error_count"] == 0)
    return out


def offline_summary(rows_by_level: dict[int, Sequence[Any]], **kw: Any) -> dict[str, Any]:
    """Throughput for each concurrency level and the best level."""
    levels: dict[str, Any] = {}
    for c, rows in sorted(rows_by_level.items()):
        summary = latency_summary(rows, percentiles=(50, 99), **kw)
        summary["throughput_qps"] = _throughput(rows)
        summary["concurrency"] = c
        levels[str(c)] = summary
    best = max(
        (v for v in levels.values() if v["throughput_qps"] is not None),
        key=lambda v: v["throughput_qps"],
        default=None,
    )
    return {
        "levels": levels,
        "best_throughput_qps": best["throughput_qps"] if best else None,
        "best_concurrency": best["concurrency"] if best else None,
    }


def cold_start_summary(rows: Sequence[Any]) -> dict[str, Any]:
    """First-request latency after creating a backend, against the same instance's warm requests."""
    trials = []
    for r in rows:
        warm = [float(x) for x in r.extra.get("warm_ms", [])]
        trials.append(
            {
                "trial": r.repeat,
                "ok": r.ok,
                "create_ms": r.extra.get("create_ms"),
                "first_ms": r.latency_ms if r.ok else None,
                "warm_median_ms": float(np.median(warm)) if warm else None,
                "attempts": r.attempts,
                "not_ready_injected": r.extra.get("not_ready_injected", 0),
                "error": r.error_type,
            }
        )
    firsts = [t["first_ms"] for t in trials if t["first_ms"] is not None]
    warms = [t["warm_median_ms"] for t in trials if t["warm_median_ms"] is not None]
    return {
        "trials": trials,
        "first_median_ms": float(np.median(firsts)) if firsts else None,
        "warm_median_ms": float(np.median(warms)) if warms else None,
        "cold_penalty_ms": float(np.median(firsts) - np.median(warms)) if firsts and warms else None,
        "create_median_ms": (
            float(np.median([t["create_ms"] for t in trials if t["create_ms"] is not None]))
            if any(t["create_ms"] is not None for t in trials)
            else None
        ),
    }


def latency_section(
    config: ComparisonConfig, results: RunResults, warn: list[str]
) -> tuple[dict[str, Any], dict[str, list[float]]]:
    """Every backend's scenario summaries, and its single-stream latencies (the distribution figure draws them).

    Errors per scenario, and scenarios with fewer successful queries than `min_samples`, are added to `warn`.
    """
    latency: dict[str, Any] = {}
    samples: dict[str, list[float]] = {}
    small: dict[str, list[str]] = {}
    for name, facts in results.backends.items():
        latency[name], samples[name] = _backend_latency(config, results, name)
        basis = latency_basis(facts)
        # What the figures measure, beside them: an emulator's latency is never read as the provider's.
        latency[name]["basis"] = {"key": basis, "label": LATENCY_BASES[basis], "timed_alone": basis != "remote"}
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
    return latency, samples


def _backend_latency(config: ComparisonConfig, results: RunResults, name: str) -> tuple[dict[str, Any], list[float]]:
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
        rows = results.rows_of(name, "single_stream")
        out["single_stream"] = latency_summary(rows, **common)
        samples = [r.latency_ms for r in rows if r.ok and r.latency_ms is not None]
    if sc["server"].enabled:
        s = sc["server"]
        out["server"] = server_summary(
            results.rows_of(name, "server"), bound_ms=s["latency_bound_ms"], target_qps=s["target_qps"], **common
        )
    if sc["offline"].enabled:
        levels: dict[int, Sequence[Any]] = {
            c: results.rows_of(name, f"offline/c={c}") for c in sc["offline"]["concurrency"]
        }
        out["offline"] = offline_summary(levels, **common)
    if sc["cold_start"].enabled:
        out["cold_start"] = cold_start_summary(results.rows_of(name, "cold_start"))
    return out, samples


def machine_summary(sessions: Sequence[Mapping[str, Any]]) -> tuple[dict[str, Any], list[str]]:
    """The machine that timed the run, its load while timing, and the warning when that load exceeded its cores.

    Args:
        sessions: per process session, what the run stage recorded (`RunResults.machine`): `cores`,
            `usable_cores`, `cpu_model`, `before` and `after` readings (`{"at": epoch s, "load": [1, 5, 15]}`)
            and `windows` (each phase's backends, `timed` flag and `start` and `end` readings).

    Returns:
        `(facts, warnings)`: the facts for report.json (`max_timing_load` is the highest 1-minute load read at
        the start or end of a timed window) and at most one warning for the top of the report.
    """
    if not sessions:
        return {"recorded": False}, []
    last = sessions[-1]
    cores = last.get("usable_cores") or last.get("cores")
    worst: tuple[float, Mapping[str, Any]] | None = None
    for session in sessions:
        for window in session.get("windows", []):
            if not window.get("timed"):
                continue
            for reading in (window.get("start"), window.get("end")):
                load = (reading or {}).get("load")
                if load and (worst is None or load[0] > worst[0]):
                    worst = (float(load[0]), window)
    facts: dict[str, Any] = {
        "recorded": True,
        "cores": last.get("cores"),
        "usable_cores": last.get("usable_cores"),
        "cpu_model": last.get("cpu_model"),
        "platform": last.get("platform"),
        "max_timing_load": worst[0] if worst else None,
        "load_exceeded_cores": bool(worst and cores and worst[0] > cores),
        "sessions": list(sessions),
    }
    if not facts["load_exceeded_cores"] or worst is None:
        return facts, []
    window = worst[1]
    # The load average counts this comparison's own threads too (the model's and the emulator's while a request
    # is timed), so the reading before the run is what says how much *other* work there was.
    before = (sessions[0].get("before") or {}).get("load")
    at_start = f"; {before[0]:.1f} before the run started" if before else ""
    return facts, [
        f"MACHINE LOADED WHILE TIMING: the 1-minute load average reached {worst[0]:.1f} on {cores} cores (during "
        f"{window['phase']} of {', '.join(window['backends'])}{at_start}). The figure includes this comparison's "
        "own work (the model's threads behind each timed request); beyond that, other work competed for the CPU, "
        "so latency of the backends computing on this machine includes that contention and may differ between "
        "them by more than they do; rerun when `uptime` shows a load below the core count"
    ]
