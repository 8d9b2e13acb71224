"""The part every batch-job emulator shares: a job that runs a hosted model over its inputs in a thread.

The SageMaker Batch Transform, Vertex AI batch prediction and Azure ML batch endpoint emulators each turn a
create call into an `EmulatedJob` and map its neutral state (`queued`, `running`, `succeeded`, `failed`,
`stopped`) to their cloud's names. Faults for jobs (`JobFault`) sit beside the HTTP faults of
`derm_cloud.testing.emulators.base.Fault`: a start-up delay, a delay per input, a job that fails as a whole
after N inputs (a crashed container, a lost node). Per-input failures need no fault: an input the model cannot
read fails on its own, with the model server's message, as it would in the cloud.

Every job created is counted (`BatchJobs.submissions`), so a test can prove a re-attached client did not submit
again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

__all__ = ["BatchJobs", "EmulatedJob", "JobFault"]

NeutralState = Literal["queued", "running", "succeeded", "failed", "stopped"]


@dataclass(frozen=True)
class JobFault:
    """A fault applied to the next `times` jobs created.

    Attributes:
        kind: `delay` (the job waits `delay` s before it starts, and `per_item` s per input), or `fail` (the
            job fails as a whole after `after` inputs, with `message`).
        times: how many jobs it applies to.
        delay, per_item: seconds, for `delay`.
        after: inputs handled before a `fail` fault stops the job.
        message: the failure reason the job reports.
    """

    kind: Literal["delay", "fail"]
    times: int = 1
    delay: float = 1.0
    per_item: float = 0.0
    after: int = 0
    message: str = "AlgorithmError: the serving container exited unexpectedly (injected fault)"


@dataclass
class EmulatedJob:
    """One job: its inputs, progress, per-input failures and state."""

    job_id: str
    inputs: list[str]
    state: NeutralState = "queued"
    created: float = field(default_factory=time.time)
    started: float | None = None
    ended: float | None = None
    done: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    message: str = ""
    stop_requested: bool = False
    fault: JobFault | None = None
    #: the job ends `failed` when any input failed (SageMaker Batch Transform); otherwise `succeeded` with
    #: the failures listed (Vertex AI, Azure ML with the default error threshold).
    fail_if_any: bool = False


class BatchJobs:
    """The jobs of one emulator: create (start a thread), look up, stop; faults and a submission count."""

    def __init__(self) -> None:
        self.jobs: dict[str, EmulatedJob] = {}
        self.submissions = 0
        self._faults: list[list[object]] = []  # [JobFault, remaining]
        self._lock = threading.Lock()

    def inject(self, fault: JobFault) -> None:
        """Queue a job fault for the next jobs created."""
        with self._lock:
            self._faults.append([fault, fault.times])

    def _take_fault(self) -> JobFault | None:
        with self._lock:
            if not self._faults:
                return None
            entry = self._faults[0]
            entry[1] = int(entry[1]) - 1  # type: ignore[call-overload]
            if int(entry[1]) <= 0:  # type: ignore[call-overload]
                self._faults.pop(0)
            fault = entry[0]
            assert isinstance(fault, JobFault)
            return fault

    def create(
        self,
        job_id: str,
        inputs: Sequence[str],
        work: Callable[[EmulatedJob, str], str | None],
        finish: Callable[[EmulatedJob], None] | None = None,
        *,
        fail_if_any: bool = False,
    ) -> EmulatedJob:
        """Start a job over `inputs`; `work(job, input)` returns `None` on success or the input's failure cause.

        `finish(job)` runs once after the last input (writing a summary object, say), before the state turns
        terminal, so a client that sees the terminal state finds every output in place.
        """
        job = EmulatedJob(job_id, list(inputs), fault=self._take_fault(), fail_if_any=fail_if_any)
        with self._lock:
            self.jobs[job_id] = job
            self.submissions += 1
        threading.Thread(target=self._run, args=(job, work, finish), name=f"batch-{job_id}", daemon=True).start()
        return job

    def get(self, job_id: str) -> EmulatedJob | None:
        with self._lock:
            return self.jobs.get(job_id)

    def stop(self, job_id: str) -> None:
        job = self.get(job_id)
        if job is not None:
            job.stop_requested = True

    def _run(
        self,
        job: EmulatedJob,
        work: Callable[[EmulatedJob, str], str | None],
        finish: Callable[[EmulatedJob], None] | None,
    ) -> None:
        fault = job.fault
        if fault is not None and fault.kind == "delay":
            time.sleep(fault.delay)
        job.started = time.time()
        job.state = "running"
        for i, item in enumerate(job.inputs):
            if job.stop_requested:
                job.state, job.message, job.ended = "stopped", "stopped by request", time.time()
                return
            if fault is not None and fault.kind == "fail" and i >= fault.after:
                job.state, job.message, job.ended = "failed", fault.message, time.time()
                return
            if fault is not None and fault.kind == "delay" and fault.per_item:
                time.sleep(fault.per_item)
            try:
                cause = work(job, item)
            except Exception as exc:  # an emulator bug fails the job visibly instead of hanging it
                cause = f"emulator error: {type(exc).__name__}: {exc}"
            if cause is not None:
                job.failed[item] = cause
            job.done += 1
        if finish is not None:
            finish(job)
        job.ended = time.time()
        job.state = "failed" if (job.fail_if_any and job.failed) else "succeeded"
