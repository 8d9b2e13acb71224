"""Progress for long commands: tqdm bars in a terminal, periodic plain lines elsewhere (CI logs, `| tee`).

A bar redraws itself with carriage returns, which a log file turns into one unreadable line (or nothing, as tqdm
stays silent when stderr is not a terminal); so when stderr is not a terminal each task prints a plain line when
it starts, at most every `LINE_INTERVAL_S` seconds while it runs, and when it ends, each with its count,
elapsed time and ETA. `-q` silences both.

Example:
    >>> tracker = Progress(mode_for(quiet=False))  # doctest: +SKIP
    >>> tick = tracker("local-onnx", total=120)  # doctest: +SKIP
    >>> tick(1)  # doctest: +SKIP
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, Literal, TextIO

__all__ = ["LINE_INTERVAL_S", "Mode", "Progress", "format_seconds", "mode_for"]

Mode = Literal["bars", "lines", "off"]

#: Seconds between two plain progress lines of one task; ``$DERM_CLOUD_PROGRESS_INTERVAL`` overrides it.
LINE_INTERVAL_S = 15.0


def mode_for(quiet: bool = False, enabled: bool | None = None, stream: TextIO | None = None) -> Mode:
    """How to show progress: `off` when quiet or disabled, bars in a terminal, plain lines otherwise.

    Args:
        quiet: the command's `-q`.
        enabled: `False` forces `off`, `True` forces bars, `None` decides from the stream.
        stream: where progress goes (default `sys.stderr`).
    """
    if quiet or enabled is False:
        return "off"
    if enabled:
        return "bars"
    return "bars" if (stream or sys.stderr).isatty() else "lines"


def format_seconds(seconds: float) -> str:
    """`75.2` -> `'1m15s'`; under a minute, `'42s'`."""
    seconds = max(0, round(seconds))
    minutes, secs = divmod(seconds, 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


class _LineTask:
    """One task's counter, printing a line at start, every interval and at the end."""

    def __init__(self, owner: Progress, name: str, total: int) -> None:
        self._owner, self._name, self._total = owner, name, total
        self._done = 0
        self._start = self._last = time.monotonic()
        self._lock = threading.Lock()
        owner.emit(f"{name}: 0/{total} {owner.unit} ...")

    def update(self, n: int = 1) -> None:
        with self._lock:
            self._done += n
            now = time.monotonic()
            finished = self._done >= self._total
            if not finished and now - self._last < self._owner.interval:
                return
            self._last = now
            elapsed = now - self._start
            if finished:
                self._owner.emit(
                    f"{self._name}: {self._done}/{self._total} {self._owner.unit}, done in {format_seconds(elapsed)}"
                )
                return
            rate = self._done / elapsed if elapsed > 0 else 0.0
            eta = f"ETA {format_seconds((self._total - self._done) / rate)}" if rate > 0 else "ETA unknown"
            percent = 100.0 * self._done / self._total
            self._owner.emit(
                f"{self._name}: {self._done}/{self._total} {self._owner.unit} ({percent:.0f}%), "
                f"{format_seconds(elapsed)} elapsed, {eta}"
            )


class Progress:
    """Creates one progress counter per task (a backend, a stage), shown as `mode_for` decided.

    Args:
        mode: `bars`, `lines` or `off`.
        prefix: the start of every plain line (`derm-cloud: compare`).
        unit: what is counted (`req`, `images`).
        stream: where to write (default `sys.stderr`).
    """

    def __init__(self, mode: Mode, prefix: str = "derm-cloud", unit: str = "req", stream: TextIO | None = None):
        self.mode: Mode = mode
        self.prefix = prefix
        self.unit = unit
        self.interval = float(os.environ.get("DERM_CLOUD_PROGRESS_INTERVAL", LINE_INTERVAL_S))
        self._stream = stream
        self._bars: list[Any] = []
        self._tqdm: Any = None
        if mode == "bars":
            try:
                from tqdm import tqdm
            except ImportError:  # tqdm is optional: fall back to lines rather than to silence
                self.mode = "lines"
            else:
                self._tqdm = tqdm

    def emit(self, line: str) -> None:
        """Write one plain progress line (flushed, so a log shows it at once)."""
        print(f"{self.prefix}: {line}", file=self._stream or sys.stderr, flush=True)

    def __call__(self, name: str, total: int) -> Callable[[int], None]:
        """A counter for task `name` of `total` units; call it with how many finished."""
        if self.mode == "off" or total <= 0:
            return lambda _n: None
        if self.mode == "lines":
            return _LineTask(self, name, total).update
        bar = self._tqdm(
            total=total, desc=f"{name:<22}", unit=self.unit, position=len(self._bars), file=self._stream or sys.stderr
        )
        self._bars.append(bar)
        return bar.update  # type: ignore[no-any-return]

    def close(self) -> None:
        """Close the bars (plain lines need no closing)."""
        for bar in self._bars:
            bar.close()
        self._bars.clear()
