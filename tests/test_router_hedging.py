"""Hedging that pays for itself and says what it cost: every billed call counted, a hedge delay that does not
tune itself away, and request ids that join the caller's answers to the shadow's records.

The backends here are scripted in this process (a fixed delay per call, every n-th call slow), so the latency
distribution is known exactly and the tests do not depend on a model's speed. Images: HAM10000 dev set
(Tschandl et al. 2018, CC BY-NC 4.0), read from ../shared/data.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from tests_helpers import dev_image, dev_rows

import derm_cloud
from derm_cloud import Deployment, HedgePolicy, Router, RouterPolicy, ShadowComparison
from derm_cloud.base import BackendInfo, RawResult
from derm_cloud.observability import Telemetry
from derm_cloud.taxonomy import CLASS_CODES, LabelMap


class Scripted(derm_cloud.Classifier):
    """A remote deployment whose every ``slow_every``-th call takes ``slow_s`` seconds and the others ``fast_s``."""

    backend_name = "scripted"

    def __init__(self, name: str, fast_s: float, slow_s: float = 0.0, slow_every: int = 0) -> None:
        super().__init__(label_map=LabelMap.canonical(), model_id=name)
        self.fast_s, self.slow_s, self.slow_every = fast_s, slow_s, slow_every
        self.calls = 0
        self._lock = threading.Lock()

    def _predict_one(self, image: Any, metadata: Any, timeout: float | None) -> RawResult:
        with self._lock:
            self.calls += 1
            n = self.calls
        time.sleep(self.slow_s if self.slow_every and n % self.slow_every == 0 else self.fast_s)
        return RawResult(scores=[(c, 1 / 7) for c in CLASS_CODES])

    def describe(self) -> BackendInfo:
        return BackendInfo("scripted", "aws", "scripted", self.model_id, endpoint="https://127.0.0.1/")


@pytest.fixture(scope="module")
def payload() -> derm_cloud.Payload:
    return derm_cloud.prepare_payload(dev_image(dev_rows(1)[0]))


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[max(0, round(0.99 * len(ordered)) - 1)]


def test_a_hedged_prediction_counts_both_billed_calls(payload: derm_cloud.Payload) -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    slow, fast = Scripted("slow", fast_s=0.6), Scripted("fast", fast_s=0.0)
    hedge = HedgePolicy(min_samples=50, initial_delay_s=0.05)
    telemetry = Telemetry(tracer_provider=provider)
    with Router([Deployment("slow", slow), Deployment("fast", fast)], hedge=hedge, telemetry=telemetry) as router:
        pred = router.predict(payload)
        metrics = router.telemetry.metrics.snapshot()
    assert pred.route is not None and pred.route.hedged and pred.route.deployment == "fast"
    assert slow.calls == 1 and fast.calls == 1  # both providers were called, and both bill
    assert pred.attempts == 2 and pred.route.attempts == 2
    assert pred.route.billed_calls == (("slow", 1), ("fast", 1))
    assert derm_cloud.Route.from_dict(pred.route.to_dict()) == pred.route
    (route_span,) = [s for s in exporter.get_finished_spans() if s.name == "derm_cloud.route"]
    assert route_span.attributes is not None and route_span.attributes["derm_cloud.attempts"] == 2
    assert metrics["billed_calls"] == {"slow": 1, "fast": 1}
    assert metrics["calls"]["slow"] == {"hedge_lost": 1} and metrics["calls"]["fast"] == {"ok": 1}


def test_a_call_cut_at_its_share_is_billed_too(payload: derm_cloud.Payload) -> None:
    slow, fast = Scripted("slow", fast_s=1.0), Scripted("fast", fast_s=0.0)
    policy = RouterPolicy(deadline_s=0.5, share=0.4)
    with Router([Deployment("slow", slow), Deployment("fast", fast)], policy=policy) as router:
        pred = router.predict(payload)
    assert pred.route is not None and [s.reason for s in pred.route.skipped] == ["deadline"]
    assert pred.attempts == 2 and pred.route.billed_calls == (("slow", 1), ("fast", 1))


def test_hedging_with_a_fifth_of_calls_slow_cuts_p99_and_keeps_doing_so(payload: derm_cloud.Payload) -> None:
    def run(requests: int, hedge: HedgePolicy | None) -> tuple[list[float], Router, Scripted, Scripted]:
        primary = Scripted("primary", fast_s=0.005, slow_s=0.5, slow_every=5)  # exactly 20 % slow: every 5th call
        backup = Scripted("backup", fast_s=0.005)
        router = Router(
            [Deployment("primary", primary), Deployment("backup", backup)],
            policy=RouterPolicy(deadline_s=5.0),
            hedge=hedge,
        )
        latencies = []
        for _ in range(requests):
            start = time.perf_counter()
            router.predict(payload)
            latencies.append(time.perf_counter() - start)
        return latencies, router, primary, backup

    plain, plain_router, _, _ = run(50, None)
    hedge = HedgePolicy(percentile=90, min_samples=20, initial_delay_s=0.1)
    # Long enough for the slow calls that lost their races to have answered (0.5 s later) many times over:
    # counted as answers, they would drag the p90 delay up to 0.5 s and the tail back with it. The bounds leave
    # a quarter of a second for a busy machine's scheduling.
    hedged, router, primary, backup = run(150, hedge)
    with plain_router, router:
        delay = router._states[0].hedge_delay(hedge)
    steady = hedged[75:]
    assert _p99(plain) >= 0.5
    assert _p99(steady) < 0.5 * _p99(plain), f"p99 {_p99(steady):.3f} s hedged vs {_p99(plain):.3f} s"
    assert delay < 0.25, f"the hedge delay tuned itself up to {delay:.3f} s"
    # What it costs: one extra call per slow primary call (30 of 150), and few others.
    assert primary.calls == 150 and backup.calls <= 45


def test_the_latency_window_censors_cut_calls() -> None:
    from derm_cloud.router.latency import LatencyWindow

    window = LatencyWindow(100)
    for _ in range(80):
        window.answered(0.01)
    for _ in range(20):
        window.cut(0.12)  # cut when a hedge answered first: slower than 120 ms, by how much unknown
    assert window.quantile(50) == 0.01
    assert window.quantile(90) == 0.01  # hidden past the cut calls: the longest answer stands in
    for _ in range(20):
        window.answered(0.3)  # had they been waited for
    assert window.quantile(95) == 0.3


def test_every_shadow_record_joins_a_callers_answer(
    tiny_model_dir: Path, payload: derm_cloud.Payload, caplog: pytest.LogCaptureFixture
) -> None:
    shadow = ShadowComparison(
        derm_cloud.create("local-onnx", model_dir=str(tiny_model_dir)), sample_rate=1.0, queue_size=256
    )
    live = derm_cloud.create("local-onnx", model_dir=str(tiny_model_dir))
    caplog.set_level(logging.DEBUG, logger="derm_cloud.router")
    with Router([live], shadow=shadow) as router:
        answers = [router.predict(payload) for _ in range(200)]
        assert shadow.drain(timeout=60)
        records = shadow.report(records=True)["records"]
    ids = [a.request_id for a in answers]
    assert None not in ids and len(set(ids)) == 200
    assert len(records) == 200 and {r["request_id"] for r in records} == set(ids)
    logged = " ".join(r.getMessage() for r in caplog.records if r.name == "derm_cloud.router")
    assert all(f"request_id={i}" in logged for i in ids)
