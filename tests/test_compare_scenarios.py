"""Latency scenario building blocks: plans, arrivals, rate limiting, percentiles, summaries."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from derm_cloud.compare.analysis.latency import (
    bootstrap_ci,
    cold_start_summary,
    latency_summary,
    offline_summary,
    percentile,
    server_summary,
)
from derm_cloud.compare.run.plans import TokenBucket, poisson_offsets, query_plan


def row(latency: float | None, ok: bool = True, session: int = 1, t0: float = 0.0, **kw: Any) -> SimpleNamespace:
    t_end = t0 + (latency or 0) / 1000
    base = {"error_type": None, "repeat": 0, "attempts": 1, "extra": {}}
    return SimpleNamespace(ok=ok, latency_ms=latency, session=session, t_start=t0, t_end=t_end, **{**base, **kw})


def test_query_plan_is_seeded_covers_images_and_repeats() -> None:
    plan = query_plan(7, 20, seed=3, stream="single_stream")
    assert plan == query_plan(7, 20, seed=3, stream="single_stream")
    assert plan != query_plan(7, 20, seed=4, stream="single_stream")
    assert plan != query_plan(7, 20, seed=3, stream="server")
    assert sorted(plan[:7]) == list(range(7)) and sorted(plan[7:14]) == list(range(7))
    assert query_plan(0, 5, 0, "x") == []


def test_poisson_offsets_have_the_target_rate_and_seed() -> None:
    offsets = poisson_offsets(4000, qps=20.0, seed=1)
    gaps = np.diff(offsets)
    assert offsets[0] == 0.0 and np.all(gaps >= 0)
    assert abs(gaps.mean() - 1 / 20) < 0.004  # mean inter-arrival 50 ms
    assert abs(gaps.std() / gaps.mean() - 1.0) < 0.08  # exponential: coefficient of variation 1
    assert offsets == poisson_offsets(4000, qps=20.0, seed=1)


def test_token_bucket_enforces_the_rate() -> None:
    async def burst(bucket: TokenBucket, n: int) -> float:
        start = time.perf_counter()
        for _ in range(n):
            await bucket.acquire()
        return time.perf_counter() - start

    elapsed = asyncio.run(burst(TokenBucket(rate=50, burst=1), 11))
    assert elapsed >= 10 / 50 * 0.95  # 10 waits of 20 ms after the first token
    assert asyncio.run(burst(TokenBucket(rate=50, burst=10), 10)) < 0.05  # a full bucket does not wait
    with pytest.raises(ValueError, match="positive"):
        TokenBucket(rate=0)


def test_percentile_methods_and_bootstrap_ci() -> None:
    values = np.arange(1, 101, dtype=float)
    assert percentile(values, 99, "linear") == pytest.approx(np.percentile(values, 99))
    assert percentile(values, 99, "inverted_cdf") == 99.0  # nearest rank
    assert np.isnan(percentile([], 50))
    rng = np.random.default_rng(0)
    sample = rng.lognormal(3, 0.5, size=400)
    lo, hi = bootstrap_ci(sample, 90, n_boot=500, seed=2)
    assert lo < percentile(sample, 90) < hi
    assert (lo, hi) == bootstrap_ci(sample, 90, n_boot=500, seed=2)
    assert all(np.isnan(bootstrap_ci([1.0], 50)))


def test_latency_summary_counts_errors_timeouts_and_flags_small_samples() -> None:
    rows = [row(float(v)) for v in range(1, 51)]
    rows += [row(None, ok=False, error_type="ClientTimeout"), row(None, ok=False, error_type="ThrottledError")]
    s = latency_summary(rows, min_samples=100, n_boot=200)
    assert s["queries"] == 52 and s["ok"] == 50 and s["error_count"] == 2 and s["timeouts"] == 1
    assert s["errors"] == {"ClientTimeout": 1, "ThrottledError": 1}
    assert s["p50_ms"] == pytest.approx(25.5) and s["p99_ci_ms"][0] <= s["p99_ms"] <= s["p99_ci_ms"][1]
    assert s["below_min_samples"] and "only 50 successful" in s["warning"]
    assert not latency_summary(rows, min_samples=50, n_boot=0)["below_min_samples"]


def test_server_and_offline_throughput_per_session() -> None:
    # 10 answers spread over 1 s in session 1 and 10 over 1 s in session 2 (a resume): 20 / 2 s = 10 QPS.
    rows = [row(100.0, session=1, t0=i * 0.1) for i in range(10)] + [
        row(100.0, session=2, t0=1000 + i * 0.1) for i in range(10)
    ]
    s = server_summary(rows, bound_ms=150, target_qps=10, n_boot=0, min_samples=1)
    assert s["achieved_qps"] == pytest.approx(20 / 2.0)
    assert s["meets_bound"] and s["sessions"] == 2
    assert not server_summary(rows, bound_ms=50, target_qps=10, n_boot=0, min_samples=1)["meets_bound"]
    off = offline_summary({1: rows[:10], 4: [row(100.0, t0=0.0) for _ in range(8)]}, n_boot=0, min_samples=1)
    assert off["levels"]["1"]["throughput_qps"] == pytest.approx(10 / 1.0)
    assert off["levels"]["4"]["throughput_qps"] == pytest.approx(8 / 0.1)
    assert off["best_concurrency"] == 4


def test_cold_start_summary() -> None:
    rows = [
        row(300.0, repeat=0, attempts=2, extra={"create_ms": 50.0, "warm_ms": [20.0, 22.0], "not_ready_injected": 1}),
        row(200.0, repeat=1, attempts=2, extra={"create_ms": 40.0, "warm_ms": [18.0], "not_ready_injected": 1}),
    ]
    s = cold_start_summary(rows)
    assert s["first_median_ms"] == 250.0 and s["warm_median_ms"] == pytest.approx((21.0 + 18.0) / 2)
    assert s["cold_penalty_ms"] == pytest.approx(250.0 - 19.5) and s["create_median_ms"] == 45.0
    assert [t["not_ready_injected"] for t in s["trials"]] == [1, 1]
