"""The router's parts: deployments, the routing policy, hedging, and per-deployment live state.

A `Deployment` is one backend behind the router, with its own circuit breaker (the cooldown). Deployments
that share a `group` are equivalent (the same model on two endpoints, two regions ...): the router balances
load across a group, and falls back from group to group in the order they were given.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from typing import Literal

from derm_cloud.base import Classifier
from derm_cloud.errors import ConfigError
from derm_cloud.retry import CircuitBreaker
from derm_cloud.router.latency import LatencyWindow

__all__ = ["Balance", "Deployment", "HedgePolicy", "RouterPolicy"]

Balance = Literal["round_robin", "least_in_flight"]


@dataclass
class Deployment:
    """One backend behind a router.

    Attributes:
        name: unique name in the router (shown in `Prediction.route` and in metrics).
        classifier: the backend. Inside the router only its single-attempt primitive is called, so its own
            `RetryPolicy` never runs there: the router's policy is the only retry loop.
        group: deployments with the same group are equivalent and load-balanced; default: the name (alone).
        breaker: the deployment's cooldown: after `failure_threshold` consecutive failures it is skipped for
            `reset_after` seconds, then one probe call decides. Default: from `RouterPolicy`.

    Example:
        >>> Deployment("sagemaker-eu", clf, group="sagemaker")  # doctest: +SKIP
    """

    name: str
    classifier: Classifier
    group: str | None = None
    breaker: CircuitBreaker | None = None

    def __post_init__(self) -> None:
        if not self.name or not isinstance(self.name, str):
            raise ConfigError(f"a deployment needs a non-empty name, got {self.name!r}")
        if not isinstance(self.classifier, Classifier):
            raise ConfigError(
                f"deployment {self.name!r}: classifier must be a derm_cloud.Classifier, "
                f"not {type(self.classifier).__name__}"
            )


@dataclass(frozen=True)
class RouterPolicy:
    """When to give up on a deployment and move on.

    Attributes:
        deadline_s: seconds for one request, every fallback included; past it the router raises
            `DeadlineExceededError`.
        share: each deployment but the last one tried gets this share of the time left; the last gets all of
            it. With 0.6 and 5 s: 3 s for the first, 1.2 s for the second, 0.8 s for a third.
        attempts_per_deployment: calls to one deployment before moving on (retryable errors only, with
            backoff and `Retry-After` inside its share). 1 = fall back at once.
        base_delay, max_delay: backoff between those attempts, in seconds.
        cooldown_failures: consecutive failures that put a deployment into cooldown.
        cooldown_s: how long a deployment cools down before one probe call is let through.
        balance: how to order equivalent deployments: `round_robin` or `least_in_flight`.
    """

    deadline_s: float = 10.0
    share: float = 0.6
    attempts_per_deployment: int = 1
    base_delay: float = 0.05
    max_delay: float = 1.0
    cooldown_failures: int = 3
    cooldown_s: float = 30.0
    balance: Balance = "round_robin"

    def __post_init__(self) -> None:
        if not (self.deadline_s > 0 and math.isfinite(self.deadline_s)):
            raise ConfigError(f"deadline_s must be a positive number of seconds, got {self.deadline_s!r}")
        if not 0 < self.share <= 1:
            raise ConfigError(f"share must be in (0, 1], got {self.share!r}")
        if self.attempts_per_deployment < 1:
            raise ConfigError(f"attempts_per_deployment must be at least 1, got {self.attempts_per_deployment!r}")
        if self.cooldown_failures < 1 or self.cooldown_s < 0:
            raise ConfigError("cooldown_failures must be >= 1 and cooldown_s >= 0")
        if self.balance not in ("round_robin", "least_in_flight"):
            raise ConfigError(f"balance must be 'round_robin' or 'least_in_flight', got {self.balance!r}")


@dataclass(frozen=True)
class HedgePolicy:
    """Send the same payload to the next deployment when the first is slower than usual.

    Hedging costs money: every hedged request is billed by two providers. It is off unless a router is given
    a `HedgePolicy`.

    Attributes:
        percentile: the hedge fires after this percentile of the first deployment's latency, estimated from its
            own recent calls as the router saw them: a call cut short (by a hedge that answered first, or at
            its share of the deadline) counts as "longer than the time it was cut", never as its late answer
            (see `derm_cloud.router.latency.LatencyWindow`).
        min_samples: calls observed before the percentile is trusted; until then `initial_delay_s`.
        initial_delay_s: hedge delay while there are too few observations.
        window: how many recent calls are kept per deployment.
    """

    percentile: float = 95.0
    min_samples: int = 20
    initial_delay_s: float = 1.0
    window: int = 256

    def __post_init__(self) -> None:
        if not 0 < self.percentile <= 100:
            raise ConfigError(f"percentile must be in (0, 100], got {self.percentile!r}")
        if self.min_samples < 1 or self.window < self.min_samples:
            raise ConfigError("min_samples must be >= 1 and window >= min_samples")
        if self.initial_delay_s < 0:
            raise ConfigError(f"initial_delay_s must be >= 0, got {self.initial_delay_s!r}")


@dataclass
class DeploymentState:
    """A deployment with its live counters: calls in flight and recent latencies (see `LatencyWindow`).

    `keeps_deadline`: a call to it needs no watchdog thread (its SDK enforces the timeout as a deadline, or the
    model runs in this process); see `keeps_own_deadline()`.
    """

    deployment: Deployment
    breaker: CircuitBreaker
    window: int = 256
    keeps_deadline: bool = False
    in_flight: int = 0
    latency: LatencyWindow = field(init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        self.latency = LatencyWindow(self.window)

    @property
    def name(self) -> str:
        return self.deployment.name

    def started(self) -> None:
        with self._lock:
            self.in_flight += 1

    def finished(self) -> None:
        with self._lock:
            self.in_flight -= 1

    def observe(self, seconds: float) -> None:
        """A call that answered after `seconds` while the router waited for it."""
        self.latency.answered(seconds)

    def cut(self, seconds: float) -> None:
        """A call the router stopped waiting for after `seconds` (hedge won, share spent, request answered)."""
        self.latency.cut(seconds)

    def hedge_delay(self, hedge: HedgePolicy) -> float:
        """Seconds to wait before hedging a call to this deployment: the `hedge.percentile` of its latency,
        calls cut short counted as "longer than that" (Kaplan-Meier), not as their late answers."""
        if len(self.latency) < hedge.min_samples:
            return hedge.initial_delay_s
        estimate = self.latency.quantile(hedge.percentile)
        return hedge.initial_delay_s if estimate is None else estimate


class Balancer:
    """Orders deployments: groups in the order given, equivalent deployments by the balance rule."""

    def __init__(self, states: list[DeploymentState], balance: Balance) -> None:
        self.balance = balance
        self.groups: dict[str, list[DeploymentState]] = {}
        for st in states:
            self.groups.setdefault(st.deployment.group or st.name, []).append(st)
        self._turn = dict.fromkeys(self.groups, 0)
        self._lock = threading.Lock()

    def order(self) -> list[DeploymentState]:
        """Every deployment once, in the order this request should try them."""
        out: list[DeploymentState] = []
        for group, members in self.groups.items():
            if len(members) == 1:
                out.extend(members)
                continue
            with self._lock:
                turn = self._turn[group]
                self._turn[group] = turn + 1
            k = turn % len(members)
            rotated = members[k:] + members[:k]
            if self.balance == "least_in_flight":
                rotated = sorted(rotated, key=lambda st: st.in_flight)  # stable: ties keep the rotation
            out.extend(rotated)
        return out
