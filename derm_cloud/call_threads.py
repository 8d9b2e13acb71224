"""Daemon threads reused from call to call, so the deadline watchdog costs a hand-off, not a thread start.

`derm_cloud.retry.RetryPolicy.call` runs each attempt on another thread so that it can give up at the
deadline even when the SDK keeps waiting. Starting a thread per attempt cost 0.2-0.8 ms a call against the
emulators (`benchmarks/backend_overhead.py`), more than the 0.3 ms the library may add; a parked worker takes
a job through a queue instead. Workers are daemons, so a call abandoned at its deadline never blocks the
interpreter's exit; a worker idle for a minute ends, and a forked child starts with no workers.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["Job", "run_in_worker"]

T = TypeVar("T")

#: seconds a parked worker waits for a job before it ends.
IDLE_SECONDS = 60.0


class Job(Generic[T]):
    """One function handed to a worker; `wait` is the caller's side."""

    __slots__ = ("_done", "_fn", "error", "result")

    def __init__(self, fn: Callable[[], T]) -> None:
        self._fn = fn
        self._done = threading.Lock()
        self._done.acquire()  # released by the worker when the function has returned or raised
        self.result: T | None = None
        self.error: BaseException | None = None

    def wait(self, timeout: float) -> bool:
        """Whether the job finished within `timeout` seconds."""
        return self._done.acquire(timeout=max(timeout, 0.0))

    def _run(self) -> None:
        try:
            self.result = self._fn()
        except BaseException as exc:  # handed to the caller's thread by the caller
            self.error = exc


class _Worker(threading.Thread):
    def __init__(self, pool: _Pool, name: str) -> None:
        super().__init__(name=name, daemon=True)
        self.jobs: queue.SimpleQueue[Job[object]] = queue.SimpleQueue()
        self._pool = pool

    def run(self) -> None:
        while True:
            try:
                job = self.jobs.get(timeout=IDLE_SECONDS)
            except queue.Empty:
                if self._pool.retire(self):
                    return
                continue  # a caller took this worker just now: its job is on the way
            job._run()
            # Parked before the caller wakes, so the caller's next call finds this worker instead of starting one.
            self._pool.park(self)
            job._done.release()


class _Pool:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle: list[_Worker] = []
        self._started = 0

    def submit(self, job: Job[T], name: str) -> None:
        with self._lock:
            worker = self._idle.pop() if self._idle else None
            if worker is None:
                self._started += 1
                worker = _Worker(self, f"{name}-{self._started}")
                worker.start()
        worker.jobs.put(job)  # type: ignore[arg-type]

    def park(self, worker: _Worker) -> None:
        with self._lock:
            self._idle.append(worker)

    def retire(self, worker: _Worker) -> bool:
        with self._lock:
            if worker in self._idle:
                self._idle.remove(worker)
                return True
            return False

    def reset(self) -> None:
        # After fork only the forking thread exists in the child: the parked workers are gone with their queues.
        self._lock = threading.Lock()
        self._idle = []


_POOL = _Pool()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_POOL.reset)


def run_in_worker(fn: Callable[[], T], *, name: str = "derm-cloud-call") -> Job[T]:
    """Start `fn()` on a parked worker thread (a new one when none is free) and return its `Job`."""
    job = Job(fn)
    _POOL.submit(job, name)
    return job
