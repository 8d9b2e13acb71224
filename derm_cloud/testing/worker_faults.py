"""Faults inside a Ray worker of the comparator: a worker killed mid-shard, a held shard, a log of what ran.

`WorkerFaults` is the `on_sample` hook of `derm_cloud.compare.run.ray_executor.RayExecutor`: the executor
calls it in the worker just before each sample is classified. Its state lives in files of one folder, since
the process it kills forgets everything: the kill happens once (a marker file says it did), and the log shows
which images each attempt classified.

Example:
    >>> faults = WorkerFaults(tmp_path, kill_at="img-0042")  # doctest: +SKIP
    >>> RayExecutor(actors=2, shard_size=16, on_sample=faults).run(job)  # doctest: +SKIP
    >>> faults.classified().count("img-0040")  # doctest: +SKIP
    2
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from derm_cloud.data import Sample

__all__ = ["WorkerFaults"]


@dataclass(frozen=True)
class WorkerFaults:
    """What to do to the worker before each sample (picklable: it travels to every actor).

    Attributes:
        directory: where the log and the kill marker are kept (shared by the driver and the workers).
        kill_at: SIGKILL the worker process the first time it reaches this image (before classifying it).
        hold_at: hold this image (and so its shard) until another worker has classified `until` (a shard that
            finishes after one sent later), or for `hold_s` seconds when `until` is `None`.
        until: the image to wait for.
        hold_s: the longest hold.
    """

    directory: Path
    kill_at: str | None = None
    hold_at: str | None = None
    until: str | None = None
    hold_s: float = 60.0

    def __call__(self, sample: Sample) -> None:
        if sample.image_id == self.kill_at:
            try:  # O_EXCL: exactly one worker, once, even if two reach the image at the same instant
                os.close(os.open(self.directory / "killed", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                pass
            else:
                os.kill(os.getpid(), signal.SIGKILL)
        if sample.image_id == self.hold_at:
            deadline = time.monotonic() + self.hold_s
            while time.monotonic() < deadline and (self.until is None or self.until not in self.classified()):
                time.sleep(0.05)
        # One short O_APPEND write per line: lines from several processes never interleave.
        fd = os.open(self.directory / "classified.log", os.O_CREAT | os.O_APPEND | os.O_WRONLY)
        try:
            os.write(fd, f"{sample.image_id}\t{os.getpid()}\n".encode())
        finally:
            os.close(fd)

    def classified(self) -> list[str]:
        """Every image id a worker went on to classify, in order, once per attempt."""
        log = self.directory / "classified.log"
        return [line.split("\t")[0] for line in log.read_text().splitlines()] if log.exists() else []

    def killed(self) -> bool:
        """Whether the kill happened."""
        return (self.directory / "killed").exists()
