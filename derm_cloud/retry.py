"""One retry and deadline policy for every remote backend.

Each SDK has its own retry defaults (boto3 3 attempts, azure-core 4, msrest none, Vertex none, openai 2), so the
same fault costs a different number of calls and seconds per provider and comparisons would measure SDK
defaults. Backends switch SDK retries off and call `RetryPolicy.call` instead: exponential backoff with
full jitter, `Retry-After` honoured, a total wall-clock deadline per call, and a circuit breaker per backend.
Backends read the header with `retry_after_seconds`, so every provider's `Retry-After` means the same.

The rules, the same for every backend whatever its SDK does:

- **Deadline**: a call returns within `deadline` (plus a grace of 2 %, at most 1 s). Each attempt gets the
  seconds left as its socket timeout, and runs on a worker thread (parked between calls, see
  `derm_cloud.call_threads`) that is abandoned at the deadline, because not every SDK has a per-call
  timeout (boto3 only has its read timeout, 70 s by default).
- **Retry-After**: the server's delay is honoured even beyond `max_delay` (which caps our own backoff) as long
  as the deadline leaves room for it; otherwise the call fails at once with `ThrottledError` saying how
  long the service asked to wait.
"""

from __future__ import annotations

import contextvars
import email.utils
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from derm_cloud.call_threads import run_in_worker
from derm_cloud.errors import CircuitOpenError, DeadlineExceededError, RemoteError, ThrottledError

__all__ = ["CircuitBreaker", "RetryPolicy", "call_timeout", "retry_after_seconds"]

T = TypeVar("T")


@dataclass
class CircuitBreaker:
    """Opens after `failure_threshold` consecutive retryable failures; lets one probe through after
    `reset_after` seconds (half-open) and closes again when it succeeds.
    """

    failure_threshold: int = 5
    reset_after: float = 30.0
    _failures: int = 0
    _opened_at: float | None = None
    _first_cause: str | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def first_cause(self) -> str | None:
        """`"ErrorType: message"` of the first failure of the current streak (what opened the circuit)."""
        return self._first_cause

    def before_call(self, backend: str) -> None:
        with self._lock:
            if self._opened_at is None:
                return
            waited = time.monotonic() - self._opened_at
            if waited < self.reset_after:
                cause = f"; first failure: {self._first_cause}" if self._first_cause else ""
                error = CircuitOpenError(
                    f"{self._failures} consecutive failures; calls paused for another "
                    f"{self.reset_after - waited:.1f} s to let the service recover{cause}",
                    backend=backend,
                    retryable=False,
                )
                error.first_cause = self._first_cause
                raise error
            self._opened_at = time.monotonic()  # half-open: this call is the probe; others still wait

    def record(self, ok: bool, error: BaseException | None = None) -> None:
        """Count a call's outcome; `error` (the failure, when not `ok`) is kept if it starts a streak."""
        with self._lock:
            if ok:
                self._failures = 0
                self._opened_at = None
                self._first_cause = None
            else:
                if self._failures == 0 and error is not None:
                    # Only the streak's first failure says why the service went wrong; later ones echo it.
                    self._first_cause = f"{type(error).__name__}: {error}"
                self._failures += 1
                if self._failures >= self.failure_threshold:
                    self._opened_at = time.monotonic()

    @property
    def is_open(self) -> bool:
        return self._opened_at is not None

    def cooldown_remaining(self) -> float:
        """Seconds before this breaker lets a call through; 0.0 when closed or due for its half-open probe.

        Reads the state without changing it (unlike `before_call`, which turns a due breaker half-open),
        so a router can pass over a cooling-down deployment without spending its probe.

        Example:
            >>> CircuitBreaker().cooldown_remaining()
            0.0
        """
        with self._lock:
            if self._opened_at is None:
                return 0.0
            return max(0.0, self.reset_after - (time.monotonic() - self._opened_at))


@dataclass
class RetryPolicy:
    """Retry transient remote failures within a deadline.

    Attributes:
        max_attempts: attempts in total (1 = no retry).
        base_delay: first backoff in seconds; doubles each attempt up to `max_delay`.
        max_delay: cap of one backoff of our own; a server's `Retry-After` beyond it is honoured while the
            deadline allows.
        deadline: total seconds for one call including all retries; `None` = no deadline.
        breaker: circuit breaker shared by all calls of one backend instance.
        sleep: injectable for tests.

    Example:
        >>> policy = RetryPolicy(max_attempts=3, deadline=10.0)
        >>> policy.call(lambda timeout: "ok", backend="demo")
        ('ok', 1)
    """

    max_attempts: int = 4
    base_delay: float = 0.2
    max_delay: float = 10.0
    deadline: float | None = 60.0
    breaker: CircuitBreaker = field(default_factory=CircuitBreaker)
    seed: int | None = None
    sleep: Callable[[float], None] = time.sleep

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    @classmethod
    def for_timeout(cls, timeout: float) -> RetryPolicy:
        """The backends' default policy when one call may take `timeout` seconds: a deadline with room for
        two full-length attempts, and never under a minute.

        Example:
            >>> RetryPolicy.for_timeout(45.0).deadline
            90.0
        """
        return cls(deadline=max(timeout * 2, 60.0))

    def backoff(self, attempt: int, retry_after: float | None) -> float:
        """Seconds to wait before attempt `attempt + 1`: full jitter, or the server's Retry-After (uncapped)."""
        if retry_after is not None:
            return max(retry_after, 0.0)
        cap = min(self.max_delay, self.base_delay * (2 ** (attempt - 1)))
        return self._rng.uniform(0, cap)

    def call(
        self,
        fn: Callable[[float | None], T],
        *,
        backend: str,
        sdk_deadline: bool = False,
        attempt_timeout: float | None = None,
    ) -> tuple[T, int]:
        """Run `fn(remaining_seconds)` with retries; returns `(result, attempts)`.

        `fn` receives the seconds left before the deadline (or `None`) so it can set its socket timeout.
        `sdk_deadline=True` says that the SDK enforces that timeout as a deadline on the whole call (gRPC
        does; HTTP clients' timeouts bound each socket read only): the attempt then runs on the caller's
        thread, without the watchdog. `attempt_timeout` bounds each attempt as well (a backend's per-attempt
        timeout that its SDK cannot enforce: an injected client keeps its own, and an answer trickling in a
        byte at a time never lets a socket read time out); an attempt cut by it is retried like any timeout.

        Raises:
            RemoteError: the last error when it is not retryable or attempts run out.
            DeadlineExceededError: the deadline passed before a call succeeded.
            CircuitOpenError: the breaker is open.
        """
        start = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            self.breaker.before_call(backend)
            remaining = None if self.deadline is None else self.deadline - (time.monotonic() - start)
            if remaining is not None and remaining <= 0:
                raise DeadlineExceededError(
                    f"no answer within the {self.deadline:.1f} s deadline after {attempt - 1} attempt(s)",
                    backend=backend,
                )
            per_attempt = attempt_timeout is not None and (remaining is None or attempt_timeout < remaining)
            budget = attempt_timeout if per_attempt else remaining
            try:
                if sdk_deadline:
                    result = fn(budget)
                else:
                    result = self._attempt(fn, budget, backend, attempt_timeout if per_attempt else None)
            except RemoteError as exc:
                if not exc.backend:
                    exc.backend = backend
                self.breaker.record(ok=not exc.retryable, error=exc)
                if not exc.retryable or attempt >= self.max_attempts:
                    raise
                delay = self.backoff(attempt, exc.retry_after)
                if self.deadline is not None:
                    left = self.deadline - (time.monotonic() - start)
                    if delay >= left and exc.retry_after is not None:
                        raise ThrottledError(
                            f"the service asked to wait {exc.retry_after:g} s before retrying, more than the "
                            f"{max(left, 0.0):.1f} s left of the {self.deadline:g} s deadline; last error: {exc}",
                            backend=backend,
                            status=exc.status,
                            request_id=exc.request_id,
                            retry_after=exc.retry_after,
                        ) from exc
                    if delay >= left:
                        raise DeadlineExceededError(
                            f"gave up: the next retry (in {delay:.2f} s) would pass the {self.deadline:.1f} s "
                            f"deadline; last error: {exc}",
                            backend=backend,
                            status=exc.status,
                            request_id=exc.request_id,
                        ) from exc
                self.sleep(delay)
                continue
            self.breaker.record(ok=True)
            return result, attempt

    def _attempt(
        self,
        fn: Callable[[float | None], T],
        remaining: float | None,
        backend: str,
        attempt_timeout: float | None = None,
    ) -> T:
        """One attempt, abandoned when the deadline (or `attempt_timeout`, when that comes first) passes even
        if the SDK under `fn` keeps waiting.

        The SDK gets `remaining` as its own timeout and normally stops first with its own (translated) error;
        the watchdog only fires for SDKs without a per-call timeout. The abandoned thread ends when its SDK's
        own timeout does; its result is dropped.
        """
        limit = self.deadline if attempt_timeout is None else attempt_timeout
        if remaining is None or limit is None:
            return fn(remaining)
        context = contextvars.copy_context()  # re-encode notes made by the SDK call reach the caller's Prediction
        job = run_in_worker(lambda: context.run(fn, remaining))
        if not job.wait(remaining + min(1.0, 0.02 * limit)):
            if attempt_timeout is not None:
                raise DeadlineExceededError(
                    f"no answer within {attempt_timeout:g} s, the backend's limit for one attempt; the attempt was "
                    "abandoned",
                    backend=backend,
                )
            raise DeadlineExceededError(
                f"no answer within the {limit:g} s deadline; the call was abandoned", backend=backend
            )
        if job.error is not None:
            raise job.error
        return job.result  # type: ignore[return-value]


def call_timeout(configured: float, remaining: float | None) -> float:
    """Seconds one SDK/HTTP call may take: the backend's `timeout`, cut to what the retry deadline has left.

    Every remote backend uses this, so a call never outlives the policy deadline and never gets a zero or
    negative timeout (which some SDKs read as "no timeout" and others reject).

    Args:
        configured: the backend's per-call `timeout` option, in seconds.
        remaining: seconds left before the `RetryPolicy` deadline; `None` when there is no deadline.

    Example:
        >>> call_timeout(30.0, None), call_timeout(30.0, 2.5), call_timeout(30.0, -1.0)
        (30.0, 2.5, 0.001)
    """
    if remaining is None:
        return configured
    return max(0.001, min(configured, remaining))


def retry_after_seconds(value: str | None) -> float | None:
    """Seconds from a `Retry-After` header: delta-seconds or an HTTP date; `None` when absent or invalid.

    Negative values and dates in the past give 0 (retry now).

    Example:
        >>> retry_after_seconds("2.5"), retry_after_seconds(None), retry_after_seconds("soon")
        (2.5, None, None)
    """
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
