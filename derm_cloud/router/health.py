"""Configuration faults: a deployment that cannot authenticate or does not exist, said loudly.

Falling back is right for an outage, and wrong as the only sign of a primary that was never set up right
(no credentials, a role without the permission, a misspelt endpoint): every answer would come from the
fallback while the service looks healthy. So the router

* logs an authentication, permission or not-found error at WARNING, with its cause, once per cooldown per
  deployment (and again at once when the cause changes);
* counts it in a metric of its own (`config_faults` in `RouterMetrics.snapshot()`,
  `derm_cloud_router_config_faults_total` in Prometheus) and marks the call's span (`derm_cloud.config_fault`);
* shows it in `Router.status()` until the deployment answers again;
* offers `check_deployments` (`Router.check()`) for start-up: one tiny probe per deployment, raising
  `DeploymentCheckError` naming every deployment that cannot authenticate or is not found.
"""

from __future__ import annotations

import io
import logging
import threading
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from derm_cloud.errors import AuthenticationError, DeploymentCheckError
from derm_cloud.images import ImageLimits, PreparedImage, prepare_payload
from derm_cloud.observability import RouterMetrics
from derm_cloud.router.calls import CONFIG_FAULTS
from derm_cloud.router.outcomes import describe_error
from derm_cloud.types import PatientMetadata

if TYPE_CHECKING:
    from derm_cloud.base import Classifier
    from derm_cloud.router.core import Router

__all__ = ["ConfigFaults", "DeploymentCheck", "check_deployments", "probe_image"]

logger = logging.getLogger("derm_cloud.router")

#: Side of the probe image: small enough to cost next to nothing, large enough for every provider's minimum.
PROBE_SIDE = 64


def _fix_for(exc: BaseException) -> str:
    if isinstance(exc, AuthenticationError):
        return "check its credentials, role and permission to call the model"
    return "check its endpoint, model or deployment name, project and region"


class ConfigFaults:
    """Per deployment: the current configuration fault, logged at WARNING once per `warn_every_s`."""

    def __init__(self, router: str, metrics: RouterMetrics, warn_every_s: float) -> None:
        self.router = router
        self.metrics = metrics
        self.warn_every_s = warn_every_s
        self._lock = threading.Lock()
        self._faults: dict[str, dict[str, Any]] = {}
        self._warned: dict[str, tuple[str, float]] = {}  # deployment -> (error class, when warned)

    def record(self, deployment: str, exc: BaseException, *, during: str = "a routed call") -> None:
        """One configuration fault of `deployment`: status, metric, and a WARNING unless one was just logged."""
        cls = type(exc).__name__
        now = time.monotonic()
        with self._lock:
            fault = self._faults.get(deployment)
            if fault is None or fault["error"] != cls:
                fault = {"error": cls, "since": datetime.now(UTC).isoformat(timespec="seconds"), "count": 0}
                self._faults[deployment] = fault
            fault["count"] += 1
            fault["detail"] = describe_error(exc)
            last = self._warned.get(deployment)
            warn = last is None or last[0] != cls or now - last[1] >= self.warn_every_s
            if warn:
                self._warned[deployment] = (cls, now)
        self.metrics.config_fault(deployment, cls)
        if warn:
            logger.warning(
                "router %s: deployment %r is misconfigured, %s failed with %s; %s. Other deployments answer "
                "meanwhile; Router.check() at start-up fails fast on this (next warning in %.0f s at most).",
                self.router,
                deployment,
                during,
                fault["detail"],
                _fix_for(exc),
                self.warn_every_s,
            )

    def clear(self, deployment: str) -> None:
        """The deployment answered: whatever was wrong has been fixed."""
        if deployment in self._faults:  # read without the lock first: the common case costs one dict lookup
            with self._lock:
                self._faults.pop(deployment, None)
                self._warned.pop(deployment, None)

    def status(self, deployment: str) -> dict[str, Any] | None:
        """`{"error", "detail", "since", "count"}` of the current fault, or `None`."""
        with self._lock:
            fault = self._faults.get(deployment)
            return dict(fault) if fault else None


@dataclass(frozen=True)
class DeploymentCheck:
    """What `Router.check` found for one deployment (or the shadow).

    Attributes:
        deployment: its name (the shadow's is prefixed `shadow:`).
        ok: the probe got an answer.
        latency_ms: how long the probe took.
        error: `"ErrorType: message"` when it failed.
        config_fault: the failure is an authentication, permission or not-found error.
    """

    deployment: str
    ok: bool
    latency_ms: float
    error: str | None = None
    config_fault: bool = False


def probe_image(limits: ImageLimits) -> PreparedImage:
    """A tiny, plain JPEG (a skin-toned square, no patient data) every deployment accepts."""
    from PIL import Image

    side = max(PROBE_SIDE, limits.min_side)
    buf = io.BytesIO()
    Image.new("RGB", (side, side), (200, 150, 130)).save(buf, "JPEG", quality=90)
    return prepare_payload(buf.getvalue(), limits=limits)


def check_deployments(router: Router, *, timeout_s: float, strict: bool) -> list[DeploymentCheck]:
    """Send the probe image to every deployment (and the shadow) at once; see `Router.check`."""
    probe = probe_image(router.image_limits)
    targets: list[tuple[str, Classifier]] = [(d.name, d.classifier) for d in router.deployments]
    if router.shadow is not None:
        targets.append((f"shadow:{router.shadow.name}", router.shadow.shadow))
    futures = [(name, router._pool.submit(_probe, clf, probe, timeout_s)) for name, clf in targets]
    give_up_at = time.monotonic() + timeout_s + 1.0  # an HTTP SDK may overrun its timeout: do not wait on it
    outcomes = [_outcome(name, fut, timeout_s, give_up_at) for name, fut in futures]
    failures: dict[str, str] = {}
    for result, error in outcomes:
        if result.config_fault and error is not None:
            router.config_faults.record(result.deployment, error, during="the start-up check")
        elif result.ok:
            router.config_faults.clear(result.deployment)
        if result.error and (result.config_fault or strict):
            failures[result.deployment] = result.error
    if failures:
        lines = "; ".join(f"{name}: {error}" for name, error in failures.items())
        kind = "failed the start-up check" if strict else "misconfigured (cannot authenticate, or not found)"
        raise DeploymentCheckError(
            f"router {router.name}: {len(failures)} of {len(targets)} deployment(s) {kind}: {lines}. "
            "Fix the configuration (credentials, role, endpoint or model name, region) and start again.",
            failures,
        )
    return [result for result, _ in outcomes]


def _probe(clf: Classifier, probe: PreparedImage, timeout_s: float) -> tuple[float, BaseException | None]:
    """One request, no retry (the check must stay cheap); returns its milliseconds and its error, if any."""
    start = time.perf_counter()
    try:
        clf._predict_one(probe, PatientMetadata(), timeout_s)
    except Exception as exc:  # judged by _outcome: a broken custom backend is reported, not raised here
        return (time.perf_counter() - start) * 1000, exc
    return (time.perf_counter() - start) * 1000, None


def _outcome(
    name: str, fut: Future[tuple[float, BaseException | None]], timeout_s: float, give_up_at: float
) -> tuple[DeploymentCheck, BaseException | None]:
    try:
        ms, error = fut.result(timeout=max(0.0, give_up_at - time.monotonic()))
    except FutureTimeout:
        return DeploymentCheck(name, False, timeout_s * 1000, f"no answer within {timeout_s:g} s"), None
    if error is None:
        return DeploymentCheck(name, True, ms), None
    fault = isinstance(error, CONFIG_FAULTS)
    return DeploymentCheck(name, False, ms, describe_error(error), fault), error
