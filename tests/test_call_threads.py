"""The deadline watchdog's worker threads: reused between calls, never blocking a call or the interpreter."""

from __future__ import annotations

import multiprocessing
import threading
import time

import pytest

from derm_cloud.call_threads import run_in_worker
from derm_cloud.errors import DeadlineExceededError
from derm_cloud.retry import RetryPolicy


def test_a_finished_worker_takes_the_next_call() -> None:
    first = run_in_worker(threading.get_ident)
    assert first.wait(5)
    second = run_in_worker(threading.get_ident)
    assert second.wait(5)
    assert first.result == second.result != threading.get_ident()


def test_an_abandoned_call_does_not_hold_up_the_next() -> None:
    stuck = threading.Event()
    abandoned = run_in_worker(stuck.wait)
    assert not abandoned.wait(0.05)
    start = time.monotonic()
    quick = run_in_worker(lambda: "answer")
    assert quick.wait(5) and quick.result == "answer"
    assert time.monotonic() - start < 1.0
    stuck.set()
    assert abandoned.wait(5) and abandoned.result is True


def test_the_error_of_a_call_reaches_the_caller() -> None:
    def boom() -> None:
        raise KeyError("from the SDK")

    job = run_in_worker(boom)
    assert job.wait(5)
    assert isinstance(job.error, KeyError) and job.result is None


def test_the_watchdog_still_cuts_a_call_that_ignores_its_timeout_after_many_calls() -> None:
    policy = RetryPolicy(max_attempts=1, deadline=0.3)
    for _ in range(50):  # parked workers are reused, the deadline still holds afterwards
        assert policy.call(lambda t: "ok", backend="t") == ("ok", 1)
    start = time.monotonic()
    with pytest.raises(DeadlineExceededError):
        policy.call(lambda t: time.sleep(2), backend="t")
    assert time.monotonic() - start <= 0.3 * 1.05


def test_an_sdk_that_keeps_its_own_deadline_runs_on_the_callers_thread() -> None:
    policy = RetryPolicy(max_attempts=1, deadline=5.0)
    assert policy.call(lambda t: threading.get_ident(), backend="t", sdk_deadline=True)[0] == threading.get_ident()
    assert policy.call(lambda t: threading.get_ident(), backend="t")[0] != threading.get_ident()


def _call_in_child(queue: multiprocessing.Queue[str]) -> None:
    job = run_in_worker(lambda: "from the child")
    queue.put(job.result if job.wait(5) else "hung")  # type: ignore[arg-type]


def test_a_forked_child_starts_its_own_workers() -> None:
    warm = run_in_worker(lambda: None)
    assert warm.wait(5)  # a parked worker exists in the parent: the child must not wait on its copy
    context = multiprocessing.get_context("fork")
    queue: multiprocessing.Queue[str] = context.Queue()
    child = context.Process(target=_call_in_child, args=(queue,))
    child.start()
    child.join(20)
    assert queue.get(timeout=5) == "from the child"
