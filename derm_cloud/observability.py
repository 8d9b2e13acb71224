"""Traces, logs and metrics for routed calls, in the forms the ecosystem's tools read.

* **Spans** (OpenTelemetry) when `opentelemetry-api` is installed: one `derm_cloud.route` span per request
  and one `derm_cloud.backend_call` child per deployment attempt, with the backend, model, deployment,
  attempts, outcome, error class and latency. The app's own `TracerProvider` decides where they go.
* **Logs** (standard `logging`, logger `derm_cloud.router`) otherwise: one line per request.
* **Metrics** kept in-process (calls, errors by class, a latency histogram, per deployment), readable with
  `RouterMetrics.snapshot` and exported to Prometheus with `RouterMetrics.register_prometheus`
  when the app runs `prometheus-client`.

Nothing recorded here holds image bytes or patient fields (age, sex, site, skin type): only names, counts,
outcomes and timings. That is a rule of the attribute builders below, and the tests check it on real spans.
"""

from __future__ import annotations

import bisect
import logging
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from derm_cloud.errors import MissingDependencyError

__all__ = ["LATENCY_BUCKETS_S", "RouterMetrics", "Telemetry"]

logger = logging.getLogger("derm_cloud.router")

#: Upper bounds (seconds) of the latency histogram: local models answer in milliseconds, clouds in 0.1-10 s.
LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

# The only span attribute keys we ever set; a test checks recorded spans against this list.
SPAN_ATTRIBUTES = frozenset(
    {
        "derm_cloud.router",
        "derm_cloud.deployment",
        "derm_cloud.backend",
        "derm_cloud.model",
        "derm_cloud.attempts",
        "derm_cloud.outcome",
        "derm_cloud.latency_ms",
        "derm_cloud.skipped",
        "derm_cloud.hedged",
        "derm_cloud.config_fault",
        "error.type",
    }
)


@dataclass
class _Histogram:
    counts: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS_S) + 1))
    total: float = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(LATENCY_BUCKETS_S, seconds)] += 1
        self.total += seconds


class RouterMetrics:
    """Thread-safe counters and a latency histogram per deployment.

    Example:
        >>> m = RouterMetrics()
        >>> m.observe("sagemaker", "ok", 0.12)
        >>> m.observe("sagemaker", "error", 0.5, error_class="ThrottledError")
        >>> m.snapshot()["calls"]
        {'sagemaker': {'ok': 1, 'error': 1}}
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: dict[str, dict[str, int]] = {}
        self._errors: dict[str, dict[str, int]] = {}
        self._latency: dict[str, _Histogram] = {}
        self._billed: dict[str, int] = {}
        self._config_faults: dict[str, dict[str, int]] = {}

    def observe(self, deployment: str, outcome: str, seconds: float, *, error_class: str | None = None) -> None:
        """Count one call of `deployment` with `outcome` (`ok`, `error`, `deadline`, `cooldown`,
        `hedge_lost`)."""
        with self._lock:
            by_outcome = self._calls.setdefault(deployment, {})
            by_outcome[outcome] = by_outcome.get(outcome, 0) + 1
            if error_class:
                by_class = self._errors.setdefault(deployment, {})
                by_class[error_class] = by_class.get(error_class, 0) + 1
            # A skipped deployment took no time, and a hedge loser's time is only when it was cut: both stay out.
            if outcome not in ("cooldown", "hedge_lost"):
                self._latency.setdefault(deployment, _Histogram()).observe(seconds)

    def bill(self, deployment: str, calls: int) -> None:
        """Count `calls` requests sent to `deployment`'s provider (retries and hedges included)."""
        if calls:
            with self._lock:
                self._billed[deployment] = self._billed.get(deployment, 0) + calls

    def config_fault(self, deployment: str, error_class: str) -> None:
        """Count one configuration fault (authentication, permission, not found) of `deployment`."""
        with self._lock:
            by_class = self._config_faults.setdefault(deployment, {})
            by_class[error_class] = by_class.get(error_class, 0) + 1

    def snapshot(self) -> dict[str, Any]:
        """Calls by outcome, errors by class, latency histograms (cumulative bucket counts), billed calls and
        configuration faults by class, per deployment."""
        with self._lock:
            latency = {}
            for name, h in self._latency.items():
                cumulative, running = [], 0
                for c in h.counts:
                    running += c
                    cumulative.append(running)
                latency[name] = {
                    "buckets_s": [*LATENCY_BUCKETS_S, "+Inf"],
                    "cumulative_counts": cumulative,
                    "count": running,
                    "sum_s": h.total,
                }
            return {
                "calls": {k: dict(v) for k, v in self._calls.items()},
                "errors": {k: dict(v) for k, v in self._errors.items()},
                "latency": latency,
                "billed_calls": dict(self._billed),
                "config_faults": {k: dict(v) for k, v in self._config_faults.items()},
            }

    def register_prometheus(self, registry: Any | None = None, *, prefix: str = "derm_cloud_router") -> Any:
        """Expose these metrics to a Prometheus exporter: `<prefix>_calls_total`, `<prefix>_errors_total`,
        `<prefix>_latency_seconds`, `<prefix>_billed_calls_total` and `<prefix>_config_faults_total`,
        labelled by `deployment` (and `outcome` / `error_class`).

        Args:
            registry: a `prometheus_client.CollectorRegistry`; default: the global `REGISTRY`.
            prefix: metric name prefix.

        Returns:
            The registered collector (pass it to `registry.unregister` to remove it).

        Raises:
            MissingDependencyError: `prometheus-client` is not installed.
        """
        try:
            from prometheus_client import REGISTRY
            from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
        except ImportError as exc:
            raise MissingDependencyError(
                "Prometheus export needs prometheus-client: pip install 'derm-cloud[observability]'"
            ) from exc
        metrics = self

        class _Collector:
            def collect(self) -> Iterator[Any]:
                snap = metrics.snapshot()
                calls = CounterMetricFamily(
                    f"{prefix}_calls", "Routed calls by outcome", labels=["deployment", "outcome"]
                )
                for dep, by_outcome in snap["calls"].items():
                    for outcome, n in by_outcome.items():
                        calls.add_metric([dep, outcome], n)
                yield calls
                errors = CounterMetricFamily(
                    f"{prefix}_errors", "Failed calls by error class", labels=["deployment", "error_class"]
                )
                for dep, by_class in snap["errors"].items():
                    for cls, n in by_class.items():
                        errors.add_metric([dep, cls], n)
                yield errors
                billed = CounterMetricFamily(
                    f"{prefix}_billed_calls",
                    "Requests sent to the provider (retries and hedges included)",
                    labels=["deployment"],
                )
                for dep, n in snap["billed_calls"].items():
                    billed.add_metric([dep], n)
                yield billed
                faults = CounterMetricFamily(
                    f"{prefix}_config_faults",
                    "Calls refused for a configuration fault (authentication, permission, not found)",
                    labels=["deployment", "error_class"],
                )
                for dep, by_class in snap["config_faults"].items():
                    for cls, n in by_class.items():
                        faults.add_metric([dep, cls], n)
                yield faults
                hist = HistogramMetricFamily(f"{prefix}_latency_seconds", "Call latency", labels=["deployment"])
                for dep, h in snap["latency"].items():
                    bounds = [str(b) for b in LATENCY_BUCKETS_S] + ["+Inf"]
                    hist.add_metric([dep], list(zip(bounds, h["cumulative_counts"], strict=True)), h["sum_s"])
                yield hist

        collector = _Collector()
        (registry if registry is not None else REGISTRY).register(collector)
        return collector


class _NoSpan:
    """Stands in for a span when OpenTelemetry is absent, so callers set attributes the same way."""

    def set_attribute(self, key: str, value: Any) -> None:
        return

    def set_error(self, exc: BaseException) -> None:
        return


class Telemetry:
    """Where a router reports: OpenTelemetry spans when available, logging otherwise, and metrics always.

    Args:
        tracer_provider: an OpenTelemetry `TracerProvider`; default: the global one (a no-op until the app
            configures the SDK). Ignored when `opentelemetry-api` is not installed.
        metrics: where counters go; default: a fresh `RouterMetrics`.

    Example:
        >>> telemetry = Telemetry()
        >>> with telemetry.span("derm_cloud.route", {"derm_cloud.router": "triage"}) as span:
        ...     span.set_attribute("derm_cloud.outcome", "ok")
    """

    def __init__(self, *, tracer_provider: Any | None = None, metrics: RouterMetrics | None = None) -> None:
        self.metrics = metrics or RouterMetrics()
        self._tracer: Any | None = None
        self._own_provider = tracer_provider is not None
        try:
            from opentelemetry import trace
        except ImportError:
            self._trace: Any | None = None
        else:
            self._trace = trace
            self._tracer = trace.get_tracer("derm_cloud", tracer_provider=tracer_provider)

    @property
    def tracing(self) -> bool:
        """Whether spans are produced (`opentelemetry-api` is installed)."""
        return self._tracer is not None

    def _recording(self) -> bool:
        """Whether a span would go anywhere: a provider was given, or the app has set the global one.

        Asked per call (an app may configure OpenTelemetry after building its router). Until a provider is set,
        OpenTelemetry's spans are no-ops that still cost tens of microseconds each: skipped here.
        """
        if self._tracer is None or self._trace is None:
            return False
        return self._own_provider or not isinstance(self._trace.get_tracer_provider(), self._trace.ProxyTracerProvider)

    def current_context(self) -> Any | None:
        """The active trace context, to parent spans started in worker threads."""
        if not self._recording():
            return None
        from opentelemetry import context

        return context.get_current()

    @contextmanager
    def span(self, name: str, attributes: Mapping[str, Any], parent: Any | None = None) -> Iterator[Any]:
        """A span named `name`; only keys of `SPAN_ATTRIBUTES` are allowed (no patient data, ever)."""
        unknown = set(attributes) - SPAN_ATTRIBUTES
        if unknown:
            raise ValueError(f"span attributes {sorted(unknown)} are not in the allowed list")
        if self._tracer is None or not self._recording():
            yield _NoSpan()
            return
        with self._tracer.start_as_current_span(name, context=parent, attributes=dict(attributes)) as span:
            yield _CheckedSpan(span)

    @property
    def logs_requests(self) -> bool:
        """Whether `log_request()` would write anything (callers skip building the fields otherwise)."""
        return logger.isEnabledFor(logging.DEBUG if self.tracing else logging.INFO)

    def log_request(self, fields: Mapping[str, Any]) -> None:
        """One log line per routed request (INFO without OpenTelemetry, DEBUG with it)."""
        level = logging.DEBUG if self.tracing else logging.INFO
        if logger.isEnabledFor(level):
            logger.log(level, "routed %s", " ".join(f"{k}={v}" for k, v in fields.items()))


class _CheckedSpan:
    """An OpenTelemetry span that refuses attribute keys outside `SPAN_ATTRIBUTES`."""

    def __init__(self, span: Any) -> None:
        self._span = span

    def set_attribute(self, key: str, value: Any) -> None:
        if key not in SPAN_ATTRIBUTES:
            raise ValueError(f"span attribute {key!r} is not in the allowed list")
        self._span.set_attribute(key, value)

    def set_error(self, exc: BaseException) -> None:
        from opentelemetry.trace import Status, StatusCode

        self._span.set_attribute("error.type", type(exc).__name__)
        self._span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
