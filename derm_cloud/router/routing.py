"""One routed request: launch deployment calls, wait for the first answer, cut calls at their share, hedge.

`RoutedRequest` holds what happens to one request inside `Router.predict` (steps 3 to 6 of the
`derm_cloud.router.core` docstring): the calls launched and still pending, the deployments skipped and why, the
failures and the winner. The router builds the answer (or the error) from it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from derm_cloud.errors import CircuitOpenError
from derm_cloud.router.calls import Call, CallingRouter, run_call
from derm_cloud.router.outcomes import describe_error, failure_reason
from derm_cloud.types import SkippedDeployment

if TYPE_CHECKING:
    from derm_cloud.images import PreparedImage
    from derm_cloud.router.policy import DeploymentState, HedgePolicy
    from derm_cloud.types import PatientMetadata

__all__ = ["RoutedRequest", "RoutingRouter"]


class RoutingRouter(CallingRouter, Protocol):
    """What a routed request needs of its `Router` (a protocol, so this module needs nothing from the router's)."""

    @property
    def hedge(self) -> HedgePolicy | None: ...

    @property
    def _pool(self) -> ThreadPoolExecutor: ...


class _Launched(NamedTuple):
    """One deployment call of a request: its state, its handle, when it started and when its share ends."""

    state: DeploymentState
    call: Call
    at: float
    ends: float


class RoutedRequest:
    """The deployment calls of one request, from the first launch until one answers or the deadline passes.

    Args:
        router: the router the request goes through (its policy, hedge, telemetry and worker threads).
        prepared, meta: the image and patient metadata every deployment receives.
        queue: the deployments in the order to try them (consumed as they are launched).
        deadline_at: `time.monotonic()` when the request's deadline passes.
        parent: the tracing context of the request's span, parent of each call's span.
    """

    def __init__(
        self,
        router: RoutingRouter,
        prepared: PreparedImage,
        meta: PatientMetadata,
        queue: list[DeploymentState],
        deadline_at: float,
        parent: Any,
    ) -> None:
        self.router = router
        self.prepared = prepared
        self.meta = meta
        self.queue = queue
        self.deadline_at = deadline_at
        self.parent = parent
        self.skipped: list[SkippedDeployment] = []
        self.failures: list[BaseException] = []
        self.pending: dict[Future[Call], _Launched] = {}
        self.launched: list[_Launched] = []
        self.winner: tuple[DeploymentState, Call] | None = None
        self.hedged = False

    def launch(self) -> bool:
        """Start the next deployment not in cooldown; False when none is left or time is up."""
        router, queue, pending = self.router, self.queue, self.pending
        prepared, meta, parent = self.prepared, self.meta, self.parent
        while queue:
            st = queue.pop(0)
            try:
                st.breaker.before_call(st.name)
            except CircuitOpenError as exc:
                self.skipped.append(SkippedDeployment(st.name, "cooldown", describe_error(exc)))
                router.telemetry.metrics.observe(st.name, "cooldown", 0.0)
                continue
            now = time.monotonic()
            left = self.deadline_at - now
            if left <= 0:
                queue.insert(0, st)
                return False
            others = any(_can_launch(q) for q in queue)  # a fallback, or a hedge, could follow
            budget = left * router.policy.share if others else left
            handle = Call()
            st.started()
            if others or pending or not st.keeps_deadline:
                fut = router._pool.submit(run_call, router, st, prepared, meta, budget, parent, handle)
            else:
                # Nothing to fall back to or hedge with, and a call that keeps its deadline itself (or
                # could not be stopped anyway): a worker thread would only add a hand-off.
                fut = Future()
                try:
                    fut.set_result(run_call(router, st, prepared, meta, budget, parent, handle))
                except BaseException as exc:  # re-raised by fut.result(), as from a worker
                    fut.set_exception(exc)
            fut.add_done_callback(_finished_callback(st))
            pending[fut] = _Launched(st, handle, now, now + budget)
            self.launched.append(pending[fut])
            return True
        return False

    def run(self) -> None:
        """Launch, wait, cut and hedge until a deployment answers or none is left; then drop the losers."""
        pending = self.pending
        self.launch()
        while pending:
            now = time.monotonic()
            wake = min(min(c.ends for c in pending.values()), self.deadline_at)
            hedge_at = self._hedge_at()
            if hedge_at is not None:
                wake = min(wake, hedge_at)
            # A call run on this thread is done already: no need to wait (wait() costs a lock dance per future).
            done = {f for f in pending if f.done()} or wait(
                list(pending), timeout=max(0.0, wake - now), return_when=FIRST_COMPLETED
            ).done
            self._collect(done)
            if self.winner is not None:
                break
            now = time.monotonic()
            self._cut_overdue(now)
            hedge_at = self._hedge_at()
            if hedge_at is not None and now >= hedge_at and self.launch():
                self.hedged = True
            elif not pending:
                self.launch()
        self._drop_losers()

    def _collect(self, done: set[Future[Call]]) -> None:
        """Record the calls that finished: the first good answer wins, failures are listed."""
        for fut in done:
            st = self.pending.pop(fut).state
            attempt = fut.result()
            if attempt.prediction is not None and self.winner is None:
                self.winner = (st, attempt)
            elif attempt.error is not None:
                self.failures.append(attempt.error)
                self.skipped.append(
                    SkippedDeployment(st.name, failure_reason(attempt.error), describe_error(attempt.error))
                )
            else:  # a second good answer in the same instant: the first one won
                self.skipped.append(SkippedDeployment(st.name, "hedge_lost", "answered after the winner"))

    def _cut_overdue(self, now: float) -> None:
        """Stop waiting for calls past their share or the deadline: each counts as a failure of its deployment."""
        for fut, c in list(self.pending.items()):
            if (now >= c.ends or now >= self.deadline_at) and c.call.claim():
                del self.pending[fut]  # abandoned: no retry starts; a request in flight is ignored
                _stop(fut, c)
                c.state.breaker.record(ok=False)
                c.state.cut(now - c.at)
                self.router.telemetry.metrics.observe(c.state.name, "deadline", now - c.at, error_class="Deadline")
                self.skipped.append(
                    SkippedDeployment(c.state.name, "deadline", f"no answer within {c.ends - c.at:.2f} s")
                )

    def _drop_losers(self) -> None:
        """The losing side of a hedge, still running: its answer is ignored."""
        now = time.monotonic()
        for fut, c in self.pending.items():
            if c.call.claim():
                c.state.cut(now - c.at)  # for the hedge delay: slower than this, by how much unknown
                self.router.telemetry.metrics.observe(c.state.name, "hedge_lost", now - c.at)
            _stop(fut, c)
            self.skipped.append(SkippedDeployment(c.state.name, "hedge_lost", "another deployment answered first"))

    def billed(self) -> tuple[tuple[str, int], ...]:
        """Requests sent per deployment, in the order first called; every launched call is stopped first, so
        no retry of a call the router no longer waits for can start after it was counted."""
        billed: dict[str, int] = {}
        for c in self.launched:
            billed[c.state.name] = billed.get(c.state.name, 0) + c.call.stop()
        for name, n in billed.items():
            self.router.telemetry.metrics.bill(name, n)
        return tuple(billed.items())

    def _hedge_at(self) -> float | None:
        """When to hedge the one call in flight, or `None` (hedging off, already hedged, nothing to hedge to)."""
        hedge, pending = self.router.hedge, self.pending
        if hedge is None or self.hedged or len(pending) != 1 or not any(_can_launch(q) for q in self.queue):
            return None
        c = next(iter(pending.values()))
        return c.at + c.state.hedge_delay(hedge)


def _stop(fut: Future[Call], c: _Launched) -> None:
    """The router no longer waits for this call: it sends no further request, and never starts if queued."""
    c.call.stop()
    fut.cancel()


def _finished_callback(st: DeploymentState) -> Callable[[Future[Call]], None]:
    return lambda _future: st.finished()


def _can_launch(st: DeploymentState) -> bool:
    return st.breaker.cooldown_remaining() <= 0
