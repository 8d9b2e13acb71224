"""One deployment call inside a routed request: the router's retry loop, its span, and who records the outcome.

A call runs on the router's worker thread when the router may have to stop waiting for it (a fallback to move
to at its share of the deadline, a hedge to send, an HTTP SDK that cannot keep a deadline), and on the caller's
thread otherwise, with no hand-off. Either way only one side records its outcome (see `Call.claim`), and
every request it sends to the provider is counted (`Call.calls`), because each may be billed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from derm_cloud.base import RawResult
from derm_cloud.errors import AuthenticationError, InvalidImageError, NotFoundError, RemoteError
from derm_cloud.images import PreparedImage
from derm_cloud.retry import CircuitBreaker, RetryPolicy
from derm_cloud.types import PatientMetadata, Prediction

if TYPE_CHECKING:
    from derm_cloud.router.core import Router
    from derm_cloud.router.policy import DeploymentState, RouterPolicy

__all__ = ["CONFIG_FAULTS", "Call", "StoppedError", "run_call"]

#: Errors that say a deployment is set up wrong (credentials, role, permission, endpoint or model name), not
#: that it is having a bad minute: falling back hides them, so the router reports them loudly.
CONFIG_FAULTS: tuple[type[RemoteError], ...] = (AuthenticationError, NotFoundError)

# The router's RetryPolicy loops over attempts to ONE deployment; the cooldown is the deployment's own breaker,
# recorded once per routed call by the router. This breaker never opens, so the two never count twice.
_NEVER_OPENS = 2**31


class StoppedError(Exception):
    """The router stopped waiting for this call before its next request reached the provider."""


class Call:
    """What one deployment call produced, and how many requests it sent.

    Either the call's own code (it finished) or the router (it stopped waiting: share spent, or another
    deployment answered first) records the outcome in the breaker, the latency window and the metrics, never
    both: a call abandoned as too slow stays a failure even if it answers later.
    """

    __slots__ = ("_lock", "_settled", "_stopped", "calls", "error", "latency_s", "prediction")

    def __init__(self) -> None:
        self.calls = 0
        self.prediction: Prediction | None = None
        self.error: BaseException | None = None
        self.latency_s = 0.0
        self._settled = False
        self._stopped = False
        self._lock = threading.Lock()

    def claim(self) -> bool:
        """True for the first caller only: that one records the outcome."""
        with self._lock:
            first, self._settled = not self._settled, True
            return first

    def begin(self) -> None:
        """Count one request to the provider, or raise `StoppedError` if the router no longer wants it."""
        with self._lock:
            if self._stopped:
                raise StoppedError
            self.calls += 1

    def stop(self) -> int:
        """No further request (a retry) may start; returns the requests sent so far (final from now on)."""
        with self._lock:
            self._stopped = True
            return self.calls


def run_call(
    router: Router,
    st: DeploymentState,
    prepared: PreparedImage,
    meta: PatientMetadata,
    budget: float,
    parent: Any,
    out: Call,
) -> Call:
    """One deployment, its share of the deadline, the router's retry loop; never raises a RemoteError."""
    clf = st.deployment.classifier

    def once(remaining: float | None) -> RawResult:
        out.begin()
        return clf._predict_one(prepared, meta, remaining)

    attrs = {
        "derm_cloud.router": router.name,
        "derm_cloud.deployment": st.name,
        "derm_cloud.backend": clf.backend_name,
        "derm_cloud.model": clf.model_id,
    }
    start = time.perf_counter()
    with router.telemetry.span("derm_cloud.backend_call", attrs, parent=parent) as span:
        try:
            raw = _with_retries(router.policy, once, budget, clf.backend_name)
            out.latency_s = time.perf_counter() - start
            out.prediction = clf._to_prediction(raw, out.calls, out.latency_s * 1000)
            outcome = "ok"
        except StoppedError:
            outcome = "cancelled"  # the router has already accounted for this call
        except (RemoteError, InvalidImageError) as exc:
            out.latency_s = time.perf_counter() - start
            out.error = exc
            outcome = "error"
            span.set_error(exc)
            if isinstance(exc, CONFIG_FAULTS):
                span.set_attribute("derm_cloud.config_fault", True)
        span.set_attribute("derm_cloud.attempts", out.calls)
        span.set_attribute("derm_cloud.outcome", outcome)
        span.set_attribute("derm_cloud.latency_ms", out.latency_s * 1000)
    if outcome == "cancelled" or not out.claim():
        return out  # the router gave up on this call already and recorded it
    if out.error is None:
        st.breaker.record(ok=True)
        st.observe(out.latency_s)
        router.telemetry.metrics.observe(st.name, "ok", out.latency_s)
        router.config_faults.clear(st.name)
    else:
        if isinstance(out.error, RemoteError):  # a provider's size limit is not a sign of ill health
            st.breaker.record(ok=False)
        router.telemetry.metrics.observe(st.name, "error", out.latency_s, error_class=type(out.error).__name__)
        if isinstance(out.error, CONFIG_FAULTS):
            router.config_faults.record(st.name, out.error)
    return out


def _with_retries(
    policy: RouterPolicy, once: Callable[[float | None], RawResult], budget: float, backend: str
) -> RawResult:
    """`once` within `budget` seconds, retried on retryable errors as `policy` says.

    No watchdog thread here: the router watches the budget from its own loop (or the call keeps it itself), so
    the retry policy runs each attempt on this thread (`sdk_deadline=True`).
    """
    if policy.attempts_per_deployment == 1:  # the default: no retry loop to build per call
        try:
            return once(budget)
        except RemoteError as exc:
            if not exc.backend:
                exc.backend = backend
            raise
    retry = RetryPolicy(
        max_attempts=policy.attempts_per_deployment,
        base_delay=policy.base_delay,
        max_delay=policy.max_delay,
        deadline=budget,
        breaker=CircuitBreaker(failure_threshold=_NEVER_OPENS),
    )
    raw, _ = retry.call(once, backend=backend, sdk_deadline=True)
    return raw
