"""Remove uploads the demo never processed: refused by gradio, abandoned, or empty temp files.

Gradio writes every upload into its upload folder before any handler runs. The demo's handler deletes each
upload it reads, but some never reach it: a file gradio itself refuses, a client that uploads and never sends the
event, a parse aborted half-way (gradio's empty `NamedTemporaryFile` placeholders). Gradio's own sweep
(`delete_cache`) runs every 60 s and skips files it does not track, so such a photo, EXIF included, stayed
downloadable for a minute or more. `UploadReaper` checks the folder every `interval` seconds and deletes
anything not written to for `ttl` seconds: an upload the browser sends on for classification is read within
milliseconds, and a file still being written keeps a fresh modification time.
"""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path

__all__ = ["UploadReaper"]


class UploadReaper:
    """A daemon thread deleting stale files (and emptied folders) under `root`.

    Args:
        root: gradio's upload folder (the demo's private folder).
        ttl: seconds since the last write after which an unread upload is deleted.
        interval: seconds between checks.

    Example:
        >>> reaper = UploadReaper(Path("/tmp/derm-cloud-demo-x"), ttl=10).start()  # doctest: +SKIP
        >>> reaper.stop()  # doctest: +SKIP
    """

    def __init__(self, root: Path, *, ttl: float = 10.0, interval: float = 1.0) -> None:
        self.root = root
        self.ttl = ttl
        self.interval = interval
        self.removed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="derm-cloud-upload-reaper", daemon=True)

    def start(self) -> UploadReaper:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def sweep(self, now: float | None = None) -> int:
        """Delete every file under `root` untouched for `ttl` seconds; returns how many were deleted."""
        now = time.time() if now is None else now
        removed = 0
        for path in sorted(self.root.rglob("*"), key=lambda p: len(p.parts), reverse=True):
            with contextlib.suppress(OSError):  # gone already (read by the handler), or being moved by gradio
                if path.is_file() and now - path.stat().st_mtime >= self.ttl:
                    path.unlink()
                    removed += 1
                elif path.is_dir() and not any(path.iterdir()) and now - path.stat().st_mtime >= self.ttl:
                    path.rmdir()
        self.removed += removed
        return removed

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            with contextlib.suppress(OSError):
                self.sweep()
