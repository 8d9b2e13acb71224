"""Router telemetry: OpenTelemetry spans (in-memory exporter), the logging fallback, Prometheus metrics.

None of them may hold image bytes or patient fields. Images: HAM10000 dev set (Tschandl et al. 2018,
CC BY-NC 4.0), read from ../shared/data.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests_helpers import dev_image, dev_rows

import derm_cloud
from derm_cloud import Deployment, Router
from derm_cloud.observability import SPAN_ATTRIBUTES, RouterMetrics, Telemetry
from derm_cloud.testing.emulators.base import Fault
from derm_cloud.testing.emulators.sagemaker import SageMakerRuntimeEmulator, sagemaker_backend_for

# Patient fields chosen so that any leak into a span, log line or metric is recognisable.
META = {"age": 87, "sex": "female", "site": "acral"}


@pytest.fixture
def emulator(tiny_model_dir: Path) -> Iterator[SageMakerRuntimeEmulator]:
    with SageMakerRuntimeEmulator() as emu:
        emu.add_endpoint("primary", tiny_model_dir)
        yield emu


def _router(emulator: SageMakerRuntimeEmulator, model_dir: Path, telemetry: Telemetry) -> Router:
    return Router(
        [
            Deployment("sagemaker", sagemaker_backend_for(emulator, "primary")),
            Deployment("local", derm_cloud.create("local-onnx", model_dir=str(model_dir))),
        ],
        name="triage",
        telemetry=telemetry,
    )


def _no_patient_data(values: list[Any]) -> None:
    text = " ".join(str(v) for v in values).lower()
    for leaked in ("female", "acral", "age="):
        assert leaked not in text, f"patient field {leaked!r} leaked: {text}"
    assert not any(v in (87, "87", "87.0") for v in values), f"the patient's age leaked: {values}"


def test_spans_per_call_hold_backend_model_attempts_outcome_latency_and_no_patient_fields(
    emulator: SageMakerRuntimeEmulator, tiny_model_dir: Path
) -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    emulator.inject(Fault("throttle", times=1, retry_after=0.01))
    with _router(emulator, tiny_model_dir, Telemetry(tracer_provider=provider)) as router:
        pred = router.predict(dev_image(dev_rows(1)[0]), META)
    assert pred.route is not None and pred.route.deployment == "local"
    spans = exporter.get_finished_spans()
    calls = [s for s in spans if s.name == "derm_cloud.backend_call"]
    (route,) = [s for s in spans if s.name == "derm_cloud.route"]
    assert [s.attributes["derm_cloud.deployment"] for s in calls] == ["sagemaker", "local"]  # type: ignore[index]
    failed, answered = calls
    assert failed.attributes is not None and answered.attributes is not None and route.attributes is not None
    assert failed.attributes["derm_cloud.outcome"] == "error" and failed.attributes["error.type"] == "ThrottledError"
    assert (
        answered.attributes["derm_cloud.outcome"] == "ok" and answered.attributes["derm_cloud.backend"] == "local-onnx"
    )
    assert answered.attributes["derm_cloud.attempts"] == 1 and answered.attributes["derm_cloud.latency_ms"] > 0
    assert answered.attributes["derm_cloud.model"] == pred.model_id
    assert route.attributes["derm_cloud.deployment"] == "local" and route.attributes["derm_cloud.attempts"] == 2
    assert route.attributes["derm_cloud.skipped"] == 1
    for span in calls:  # children of the request's span, though they ran in worker threads
        assert span.parent is not None and span.parent.span_id == route.context.span_id
        assert span.context.trace_id == route.context.trace_id
    for span in spans:
        assert span.attributes is not None and set(span.attributes) <= SPAN_ATTRIBUTES
        _no_patient_data([*span.attributes.values(), span.name, *(e.attributes for e in span.events)])


def test_span_attributes_outside_the_allowed_list_are_refused() -> None:
    telemetry = Telemetry()
    with pytest.raises(ValueError, match="not in the allowed list"), telemetry.span("x", {"patient.age": 40}):
        pass


def test_without_opentelemetry_each_request_is_logged_without_patient_fields(
    emulator: SageMakerRuntimeEmulator,
    tiny_model_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry", None)  # import fails as if it were not installed
    telemetry = Telemetry()
    assert not telemetry.tracing
    caplog.set_level(logging.INFO, logger="derm_cloud.router")
    with _router(emulator, tiny_model_dir, telemetry) as router:
        router.predict(dev_image(dev_rows(1)[0]), META)
    (line,) = [r.getMessage() for r in caplog.records if r.name == "derm_cloud.router"]
    assert "router=triage" in line and "deployment=sagemaker" in line and "outcome=ok" in line
    _no_patient_data([line])


def test_metrics_reach_a_prometheus_registry(emulator: SageMakerRuntimeEmulator, tiny_model_dir: Path) -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry()
    telemetry = Telemetry()
    telemetry.metrics.register_prometheus(registry)
    emulator.inject(Fault("error", status=500, times=1))
    with _router(emulator, tiny_model_dir, telemetry) as router:
        for row in dev_rows(3):
            router.predict(dev_image(row), META)
    text = generate_latest(registry).decode()
    assert 'derm_cloud_router_calls_total{deployment="sagemaker",outcome="ok"} 2.0' in text
    assert 'derm_cloud_router_calls_total{deployment="sagemaker",outcome="error"} 1.0' in text
    assert 'derm_cloud_router_errors_total{deployment="sagemaker",error_class="ServiceError"} 1.0' in text
    assert 'derm_cloud_router_calls_total{deployment="local",outcome="ok"} 1.0' in text
    assert 'derm_cloud_router_latency_seconds_count{deployment="sagemaker"} 3.0' in text
    assert 'derm_cloud_router_latency_seconds_bucket{deployment="sagemaker",le="+Inf"} 3.0' in text
    _no_patient_data([text])


def test_latency_histogram_buckets_are_cumulative() -> None:
    metrics = RouterMetrics()
    for seconds in (0.001, 0.02, 0.02, 3.0, 99.0):
        metrics.observe("a", "ok", seconds)
    hist = metrics.snapshot()["latency"]["a"]
    bounds = hist["buckets_s"]
    counts = dict(zip(bounds, hist["cumulative_counts"], strict=True))
    assert counts[0.005] == 1 and counts[0.025] == 3 and counts[2.5] == 3 and counts[5.0] == 4 and counts["+Inf"] == 5
    assert hist["sum_s"] == pytest.approx(102.041)
