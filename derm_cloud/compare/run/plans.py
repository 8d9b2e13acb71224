"""What each latency scenario sends, and when: seeded query plans, Poisson arrivals and per-backend rate limits.

The scenarios follow MLPerf Inference (the analysis summarises them: `derm_cloud.compare.analysis.latency`):

* **single_stream**: one query at a time.
* **server**: queries arrive as a Poisson process at `target_qps` (open loop: a query is sent at its arrival
  time whether or not earlier ones have answered).
* **offline**: all queries available at once, sent with `c` in flight for each `c` of a concurrency sweep.
* **cold_start**: a fresh backend instance is created and its first request timed against warm requests.

Each plan has a fixed seed, so two runs (and every backend of one run) send the same images in the same order.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from derm_cloud.compare.run.config import ComparisonConfig

__all__ = ["TokenBucket", "planned_units", "poisson_offsets", "query_plan"]


def query_plan(n_images: int, n_queries: int, seed: int, stream: str) -> list[int]:
    """Image indexes for `n_queries` queries: a seeded permutation, repeated when there are fewer images.

    The same `(seed, stream)` gives the same plan for every backend, so backends answer the same images.
    """
    if n_images <= 0:
        return []
    rng = np.random.default_rng([seed, _stream_id(stream)])
    out: list[int] = []
    while len(out) < n_queries:
        out.extend(int(i) for i in rng.permutation(n_images))
    return out[:n_queries]


def poisson_offsets(n: int, qps: float, seed: int) -> list[float]:
    """Arrival times in seconds from the start: cumulative sums of seeded exponential gaps (mean 1/qps)."""
    rng = np.random.default_rng([seed, _stream_id("server")])
    gaps = rng.exponential(1.0 / qps, size=n)
    gaps[0] = 0.0  # the first query arrives at once
    return [float(x) for x in np.cumsum(gaps)]


def _stream_id(stream: str) -> int:
    return sum((i + 1) * ord(c) for i, c in enumerate(stream))


class TokenBucket:
    """Async token bucket: at most `rate` requests per second on average, bursts up to `burst`.

    Example:
        >>> bucket = TokenBucket(rate=20, burst=2)
        >>> asyncio.run(bucket.acquire())
    """

    def __init__(self, rate: float, burst: int = 1) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be positive, got {rate}")
        self.rate = float(rate)
        self.burst = max(1, int(burst))
        self._tokens = float(self.burst)
        self._last = time.monotonic()
        self._lock: asyncio.Lock | None = None
        self.waited_s = 0.0

    async def acquire(self) -> None:
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            while True:
                now = time.monotonic()
                self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
                self._last = now
                if self._tokens >= 1.0:
                    self._tokens -= 1.0
                    return
                wait = (1.0 - self._tokens) / self.rate
                self.waited_s += wait
                await asyncio.sleep(wait)


def planned_units(config: ComparisonConfig, n_samples: int, backend: str) -> int:
    """How many results a backend will store in a complete run (for progress bars)."""
    sc = config.scenarios
    total = n_samples if sc["quality"].enabled else 0
    total += sc["single_stream"]["queries"] if sc["single_stream"].enabled else 0
    total += sc["server"]["queries"] if sc["server"].enabled else 0
    if sc["offline"].enabled:
        total += sc["offline"]["queries"] * len(sc["offline"]["concurrency"])
    total += sc["cold_start"]["trials"] if sc["cold_start"].enabled else 0
    return total
