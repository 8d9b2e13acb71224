"""Download progress: a tqdm bar in a terminal, periodic plain lines otherwise, and a watch on a silent host.

Used by `derm_cloud.data.download`; `Progress` is importable from there too.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any

__all__ = ["Progress"]


class Progress:
    """Byte progress: a tqdm bar in a terminal, periodic plain lines otherwise, nothing when quiet.

    Args:
        label: what is downloading (the file name).
        total: expected bytes, if known.
        quiet: print nothing.
        interval: seconds between plain lines.
        stream: where to write (default stderr).
    """

    def __init__(
        self, label: str, total: int | None, *, quiet: bool = False, interval: float = 10.0, stream: Any = None
    ) -> None:
        self.label, self.total, self.quiet, self.interval = label, total, quiet, interval
        self.stream = stream or sys.stderr
        self.done = 0
        self._start = self._last = time.monotonic()
        self.last_byte = self._start  # when a byte last arrived (read by the stall watch)
        self._bar: Any = None
        if not quiet and getattr(self.stream, "isatty", lambda: False)():
            try:
                from tqdm import tqdm

                self._bar = tqdm(total=total, unit="B", unit_scale=True, desc=label, file=self.stream, leave=False)
            except ImportError:  # tqdm is optional: fall back to plain lines
                self._bar = None

    def set_total(self, total: int | None) -> None:
        """The expected size, once the server has stated it."""
        self.total = total
        if self._bar is not None:
            self._bar.total = total
            self._bar.refresh()

    def note(self, text: str) -> None:
        """A line beside the progress (above the bar in a terminal); nothing when quiet."""
        if self.quiet:
            return
        if self._bar is not None:
            self._bar.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def start_at(self, offset: int) -> None:
        """Count bytes already on disk (a resumed download)."""
        self.done = offset
        if self._bar is not None:
            self._bar.update(offset)

    def update(self, n: int) -> None:
        self.done += n
        self.last_byte = time.monotonic()
        if self.quiet:
            return
        if self._bar is not None:
            self._bar.update(n)
            return
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            print(self.line(now), file=self.stream, flush=True)

    def line(self, now: float | None = None) -> str:
        """The plain progress line: bytes, percentage, rate and ETA when the size is known."""
        elapsed = max(1e-6, (now or time.monotonic()) - self._start)
        rate = self.done / elapsed
        text = f"{self.label}: {self.done / 1e6:.1f} MB"
        if self.total:
            eta = (self.total - self.done) / rate if rate > 0 else float("inf")
            text += f" / {self.total / 1e6:.1f} MB ({100 * self.done / self.total:.0f}%), ETA {eta:.0f} s"
        return text + f", {rate / 1e6:.2f} MB/s"

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


class _Silence:
    """Prints "waiting for data" every `interval` s while no byte arrives, so a stalled host is visible."""

    def __init__(self, progress: Progress, host: str, stall_timeout: float, interval: float) -> None:
        self.progress, self.host, self.stall_timeout = progress, host, stall_timeout
        self.interval = max(0.05, interval)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="derm-cloud-download-watch", daemon=True)

    def __enter__(self) -> _Silence:
        if not self.progress.quiet:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _watch(self) -> None:
        while not self._stop.wait(self.interval):
            silent = time.monotonic() - self.progress.last_byte
            if silent >= self.interval:
                self.progress.note(f"{self.progress.label}: waiting for data from {self.host}: nothing for "
                                   f"{silent:.0f} s (gives up after {self.stall_timeout:g} s)")  # fmt: skip
