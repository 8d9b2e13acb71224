"""Resumable HTTP downloads with a progress display and checksum verification.

A download goes to ``NAME.part`` beside its destination. When that file exists, the next attempt asks the server
for the rest with an HTTP ``Range`` header and appends (a server that ignores ``Range`` answers 200 and the file
starts again). A cut connection is retried from where it stopped; when the retries run out the ``.part`` file is
kept and :class:`~derm_cloud.errors.DownloadError` says that rerunning resumes. Only a complete file whose digest
matches is renamed into place.

Progress: a tqdm bar when stderr is a terminal, otherwise one plain line at most every ``interval`` seconds
(CI logs, ``| tee``); ``quiet`` silences both.
"""

from __future__ import annotations

import hashlib
import sys
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from derm_cloud.errors import ChecksumMismatchError, DownloadError, MissingDependencyError

__all__ = ["Downloaded", "Progress", "download", "file_digest", "mirror_url", "requests_module"]

_CHUNK = 1 << 20
_READ = 1 << 16
_TIMEOUT_S = (15.0, 60.0)  # connect, read: a stalled server fails the attempt instead of hanging


def file_digest(path: Path, algorithm: str = "sha256") -> str:
    """Hex digest of a file, read in chunks (archives are gigabytes)."""
    h = hashlib.new(algorithm)
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def mirror_url(url: str, mirror: str | None) -> str:
    """``https://HOST/PATH?Q`` -> ``MIRROR/HOST/PATH?Q`` (unchanged without a mirror).

    Example:
        >>> mirror_url("https://example.org/a/b.zip?x=1", "http://127.0.0.1:8000/m")
        'http://127.0.0.1:8000/m/example.org/a/b.zip?x=1'
    """
    if not mirror:
        return url
    parts = urllib.parse.urlsplit(url)
    tail = parts.path + (f"?{parts.query}" if parts.query else "")
    return f"{mirror.rstrip('/')}/{parts.netloc}{tail}"


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
        self._bar: Any = None
        if not quiet and getattr(self.stream, "isatty", lambda: False)():
            try:
                from tqdm import tqdm

                self._bar = tqdm(total=total, unit="B", unit_scale=True, desc=label, file=self.stream, leave=False)
            except ImportError:  # tqdm is optional: fall back to plain lines
                self._bar = None

    def start_at(self, offset: int) -> None:
        """Count bytes already on disk (a resumed download)."""
        self.done = offset
        if self._bar is not None:
            self._bar.update(offset)

    def update(self, n: int) -> None:
        self.done += n
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


@dataclass(frozen=True)
class Downloaded:
    """A finished download: where it is, its SHA-256, and whether it resumed a partial file."""

    path: Path
    sha256: str
    size: int
    resumed_from: int


def requests_module() -> Any:
    """The ``requests`` module, or a :class:`MissingDependencyError` naming the extra that installs it."""
    try:
        import requests
    except ImportError as exc:  # pragma: no cover - requests ships with the data extra
        raise MissingDependencyError("downloading datasets needs requests: pip install 'derm-cloud[data]'") from exc
    return requests


def download(
    url: str,
    dest: Path,
    *,
    sha256: str | None = None,
    md5: str | None = None,
    retries: int = 3,
    quiet: bool = False,
    interval: float = 10.0,
    on_retry: Callable[[int, Exception], None] | None = None,
) -> Downloaded:
    """Download ``url`` to ``dest``, resuming a ``dest.part`` left by an earlier attempt.

    Args:
        url: http(s) URL.
        dest: final path; its folder is created.
        sha256: expected SHA-256 (hex); checked before ``dest`` is written.
        md5: expected MD5, when that is all the source publishes (Dataverse).
        retries: extra attempts after a cut connection or a 5xx, each resuming where the last stopped.
        quiet: no progress output.
        interval: seconds between plain progress lines when stderr is not a terminal.
        on_retry: called with (attempt, error) before each retry.

    Raises:
        DownloadError: HTTP error or connection failure after the retries (the ``.part`` file is kept).
        ChecksumMismatchError: the complete file has another digest (the ``.part`` file is deleted, so the next
            attempt starts clean).
    """
    requests = requests_module()
    import urllib3

    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    first_offset = part.stat().st_size if part.exists() else 0
    session = requests.Session()
    attempt = 0
    try:
        while True:
            try:
                _fetch_into(session, url, part, quiet=quiet, interval=interval, label=dest.name)
                break
            except (requests.RequestException, urllib3.exceptions.HTTPError, OSError, _RetryableError) as exc:
                if isinstance(exc, _FatalError) or attempt >= retries:
                    have = part.stat().st_size if part.exists() else 0
                    raise DownloadError(
                        f"downloading {dest.name} from {url} failed: {exc}. {have} bytes are kept in {part}; "
                        "run the same command again to resume"
                    ) from exc
                attempt += 1
                if on_retry is not None:
                    on_retry(attempt, exc)
                time.sleep(min(0.5 * 2.0 ** (attempt - 1), 10.0))  # brief backoff: a cut rarely heals instantly
    finally:
        session.close()
    actual = file_digest(part)
    if sha256 and actual != sha256.lower():
        part.unlink()
        raise ChecksumMismatchError(dest, sha256.lower(), actual)
    if md5:
        seen_md5 = file_digest(part, "md5")
        if seen_md5 != md5.lower():
            part.unlink()
            raise ChecksumMismatchError(dest, f"md5:{md5.lower()}", f"md5:{seen_md5}")
    part.replace(dest)
    return Downloaded(dest, actual, dest.stat().st_size, first_offset)


class _RetryableError(Exception):
    """A failure worth another attempt (5xx, short body)."""

    wait = True


class _FatalError(_RetryableError):
    """A failure no retry fixes (4xx other than 416)."""


def _fetch_into(session: Any, url: str, part: Path, *, quiet: bool, interval: float, label: str) -> None:
    offset = part.stat().st_size if part.exists() else 0
    headers = (
        {"Range": f"bytes={offset}-", "Accept-Encoding": "identity"} if offset else {"Accept-Encoding": "identity"}
    )
    with session.get(url, headers=headers, stream=True, timeout=_TIMEOUT_S, allow_redirects=True) as resp:
        if resp.status_code == 416 and offset:
            return  # the .part file already holds the whole body
        if resp.status_code >= 500:
            raise _RetryableError(f"HTTP {resp.status_code} from {resp.url}")
        if resp.status_code >= 400:
            raise _FatalError(f"HTTP {resp.status_code} from {resp.url}")
        resumed = resp.status_code == 206 and offset > 0
        if not resumed:
            offset = 0  # the server sent the whole file: start again
        length = resp.headers.get("Content-Length")
        total = offset + int(length) if length and length.isdigit() else None
        progress = Progress(label, total, quiet=quiet, interval=interval)
        progress.start_at(offset)
        try:
            with part.open("ab" if resumed else "wb") as fh:
                # read1 hands over whatever arrived before a cut, so a resume loses nothing (iter_content drops
                # the last partial chunk when the connection breaks).
                while chunk := resp.raw.read1(_READ):
                    fh.write(chunk)
                    progress.update(len(chunk))
        finally:
            progress.close()
        if total is not None and part.stat().st_size < total:
            raise _RetryableError(f"connection closed after {part.stat().st_size} of {total} bytes")
