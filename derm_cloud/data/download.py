"""Resumable HTTP downloads with a progress display and checksum verification.

A download goes to ``NAME.part`` beside its destination. When that file exists, the next attempt asks the server
for the rest with an HTTP ``Range`` header and appends (a server that ignores ``Range`` answers 200 and the file
starts again). A cut connection is retried from where it stopped; when the retries run out the ``.part`` file is
kept and :class:`~derm_cloud.errors.DownloadError` says that rerunning resumes. Only a complete file whose digest
matches is renamed into place.

Complete means: as long as the server stated (Content-Length, or the total of a 206's Content-Range, which must
start at the offset asked for, or no later), and, when no digest is known, passing the file's own check (zip
CRCs, CSV rows: `derm_cloud.data.integrity`). A body that ended without a stated length and fails that check was
cut: the next attempt resumes it.

Progress: a tqdm bar when stderr is a terminal, otherwise one plain line at most every ``interval`` seconds
(CI logs, ``| tee``); ``quiet`` silences both. A host that sends nothing is reported every ``interval`` seconds
("waiting for data") and fails the attempt after ``stall_timeout`` seconds; a failure to connect names what to
check (DNS, proxy, URL) and ``--mirror``.
"""

from __future__ import annotations

import hashlib
import re
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from derm_cloud.errors import ChecksumMismatchError, DownloadError, MissingDependencyError

__all__ = [
    "STALL_TIMEOUT_S",
    "Downloaded",
    "Progress",
    "describe_failure",
    "download",
    "file_digest",
    "mirror_url",
    "network_advice",
    "requests_module",
]

_CHUNK = 1 << 20
_READ = 1 << 16
_CONNECT_TIMEOUT_S = 15.0
#: Seconds without a byte from the host before an attempt fails (and is retried, resuming): a stalled host is
#: reported every ``interval`` seconds meanwhile, so the wait is never silent.
STALL_TIMEOUT_S = 30.0


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
    check: Callable[[Path], str | None] | None = None,
    stall_timeout: float = STALL_TIMEOUT_S,
    stream: Any = None,
) -> Downloaded:
    """Download ``url`` to ``dest``, resuming a ``dest.part`` left by an earlier attempt.

    Completeness is established by what the server states (Content-Length, or the total of a 206's
    Content-Range, which must start at the offset asked for), then by the digest when one is known, and otherwise
    by ``check``: a body without a stated length that fails it is treated as cut and resumed; one whose length
    was stated is damaged and deleted.

    Args:
        url: http(s) URL.
        dest: final path; its folder is created.
        sha256: expected SHA-256 (hex); checked before ``dest`` is written.
        md5: expected MD5, when that is all the source publishes (Dataverse).
        retries: extra attempts after a cut connection, a stall or a 5xx, each resuming where the last stopped.
        quiet: no progress output.
        interval: seconds between plain progress lines (and "waiting for data" lines while the host is silent).
        on_retry: called with (attempt, error) before each retry (default: a line on ``stream`` unless quiet).
        check: the file's own integrity check when no digest is known (zip CRCs, CSV rows): returns what is
            wrong, or ``None``; see `derm_cloud.data.integrity.integrity_check`.
        stall_timeout: seconds without a byte from the host before the attempt fails (and is retried).
        stream: where progress and retry lines go (default stderr).

    Raises:
        DownloadError: unreachable host, HTTP error, stall or cut connection after the retries (the ``.part`` file
            is kept and the same command resumes), or a complete file that fails ``check`` (deleted).
        ChecksumMismatchError: the complete file has another digest (the ``.part`` file is deleted, so the next
            attempt starts clean).
    """
    requests = requests_module()
    import urllib3

    stream = stream or sys.stderr
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    first_offset = part.stat().st_size if part.exists() else 0
    verify = None if (sha256 or md5) else check  # a matching digest says more than any structural check
    session = requests.Session()
    attempt = 0
    try:
        while True:
            try:
                stated = _fetch_into(
                    session, url, part, quiet=quiet, interval=interval, label=dest.name,
                    stall_timeout=stall_timeout, stream=stream,
                )  # fmt: skip
                problem = verify(part) if verify is not None else None
                if problem is not None and stated is None:
                    raise _RetryableError(f"the body ended after {part.stat().st_size} bytes and is incomplete "
                                          f"({problem}); the server stated no length")  # fmt: skip
                if problem is not None:
                    part.unlink()
                    raise _DamagedError(
                        f"{dest.name} from {url} is damaged ({problem}) although its length matches what the server "
                        f"stated; it was deleted. Run the same command again to download it anew, or fetch from "
                        f"another copy with --mirror URL"
                    )
                break
            except (requests.RequestException, urllib3.exceptions.HTTPError, OSError, _RetryableError) as exc:
                if isinstance(exc, _DamagedError):
                    raise DownloadError(str(exc)) from None
                if isinstance(exc, _FatalError) or attempt >= retries:
                    have = part.stat().st_size if part.exists() else 0
                    raise DownloadError(
                        f"downloading {dest.name} from {url} failed: {describe_failure(exc, url, stall_timeout)}. "
                        f"{have} bytes are kept in {part}; run the same command again to resume"
                    ) from exc
                attempt += 1
                if on_retry is not None:
                    on_retry(attempt, exc)
                elif not quiet:
                    print(f"{dest.name}: {describe_failure(exc, url, stall_timeout, advice=False)}; retry {attempt} of "
                          f"{retries}, resuming", file=stream, flush=True)  # fmt: skip
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


def network_advice(url: str, *, stalled: bool = False) -> str:
    """What to check when ``url``'s host cannot be reached (or stops sending), and the way around it (a mirror)."""
    host = (urllib.parse.urlsplit(url).hostname or url).strip("[]")
    mirror = (
        "or fetch from a copy with --mirror URL (or $DERM_CLOUD_DATA_MIRROR), which serves https://HOST/PATH as "
        "URL/HOST/PATH"
    )
    if stalled:
        return (
            f"{host} accepted the connection but stopped sending: rerun later (the download resumes), raise "
            f"--stall-timeout on a slow link, check any proxy ($HTTPS_PROXY / $HTTP_PROXY), {mirror}"
        )
    return (
        f"check the network connection, DNS (does {host} resolve?), any proxy ($HTTPS_PROXY / $HTTP_PROXY) and "
        f"that the URL is right; {mirror}"
    )


def describe_failure(
    exc: BaseException, url: str, stall_timeout: float = STALL_TIMEOUT_S, *, advice: bool = True
) -> str:
    """One line for a failed attempt: what happened, in words, and (for network failures) what to check."""
    requests = requests_module()
    import urllib3

    host = urllib.parse.urlsplit(url).netloc or url
    stalled = False
    if isinstance(exc, requests.exceptions.ConnectionError) and not isinstance(exc, requests.exceptions.ReadTimeout):
        text = f"cannot reach {host} ({_root_reason(exc)})"
    elif isinstance(exc, (requests.exceptions.ReadTimeout, urllib3.exceptions.ReadTimeoutError, TimeoutError)):
        text, stalled = f"{host} sent no data for {stall_timeout:g} s (stalled)", True
    elif isinstance(exc, requests.exceptions.Timeout):
        text = f"cannot reach {host} (no answer to the connection attempt)"
    else:
        return str(exc)
    return f"{text}; {network_advice(url, stalled=stalled)}" if advice else text


def _root_reason(exc: BaseException) -> str:
    """The innermost cause of a connection failure, without the pool's wrapping ("Connection refused")."""
    seen: BaseException | None = exc
    text = str(exc)
    while seen is not None:
        if isinstance(seen, OSError) and seen.strerror:
            return str(seen.strerror)
        text = str(seen) or text
        inner = seen.args[0] if seen.args and isinstance(seen.args[0], BaseException) else None
        seen = seen.__cause__ or seen.__context__ or inner
    for marker in ("Name or service not known", "Temporary failure in name resolution", "Connection refused",
                   "Network is unreachable", "timed out", "ProxyError", "SSL"):  # fmt: skip
        if marker in text:
            return marker
    return text.split(": ")[-1][:200]


class _RetryableError(Exception):
    """A failure worth another attempt (5xx, short body, misplaced range)."""

    wait = True


class _FatalError(_RetryableError):
    """A failure no retry fixes (4xx other than 416)."""


class _DamagedError(_FatalError):
    """A file of the stated length that fails its own check: deleted, so nothing is left to resume."""


class _Silence:
    """Prints "waiting for data" every ``interval`` s while no byte arrives, so a stalled host is visible."""

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


_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


def _fetch_into(
    session: Any, url: str, part: Path, *, quiet: bool, interval: float, label: str, stall_timeout: float, stream: Any
) -> int | None:
    """One attempt: append what the server sends to ``part``; returns the file size the server stated, if any."""
    offset = part.stat().st_size if part.exists() else 0
    headers = (
        {"Range": f"bytes={offset}-", "Accept-Encoding": "identity"} if offset else {"Accept-Encoding": "identity"}
    )
    host = urllib.parse.urlsplit(url).netloc
    progress = Progress(label, None, quiet=quiet, interval=interval, stream=stream)
    with (
        _Silence(progress, host, stall_timeout, interval),
        session.get(
            url, headers=headers, stream=True, timeout=(_CONNECT_TIMEOUT_S, stall_timeout), allow_redirects=True
        ) as resp,
    ):
        if resp.status_code == 416 and offset:
            stated = _RANGE_TOTAL.fullmatch(resp.headers.get("Content-Range", ""))
            if stated and int(stated.group(1)) != offset:
                part.unlink()  # the server's file is not the one this .part was cut from: start again
                raise _RetryableError(f"the server's copy has {stated.group(1)} bytes, the partial file {offset}")
            return offset if stated else None  # the .part file already holds the whole body
        if resp.status_code >= 500:
            raise _RetryableError(f"HTTP {resp.status_code} from {resp.url}")
        if resp.status_code >= 400:
            raise _FatalError(f"HTTP {resp.status_code} from {resp.url}")
        length = resp.headers.get("Content-Length")
        size = int(length) if length and length.isdigit() else None
        start, total = 0, size  # a 200 to a resume is the whole file: it is written again from byte 0
        if resp.status_code == 206:
            start, total = _checked_range(resp.headers.get("Content-Range", ""), offset, size, part)
        progress.set_total(total)
        progress.start_at(start)
        try:
            with part.open("r+b" if start else "wb") as fh:
                fh.truncate(start)  # a 206 may restart before the offset: overwrite, never duplicate
                fh.seek(start)
                # read1 hands over whatever arrived before a cut, so a resume loses nothing (iter_content
                # drops the last partial chunk when the connection breaks).
                while chunk := resp.raw.read1(_READ):
                    fh.write(chunk)
                    progress.update(len(chunk))
        finally:
            progress.close()
    have = part.stat().st_size
    if total is not None and have < total:
        raise _RetryableError(f"connection closed after {have} of {total} bytes")
    if total is not None and have > total:
        part.unlink()
        raise _RetryableError(f"received {have} bytes, more than the {total} the server stated; starting again")
    return total


_RANGE_TOTAL = re.compile(r"bytes \*/(\d+)")


def _checked_range(header: str, offset: int, length: int | None, part: Path) -> tuple[int, int | None]:
    """Where a 206 body goes and the file's total size, from its Content-Range; a range that cannot be placed
    (missing, starting past the offset, or disagreeing with Content-Length) discards the partial file."""
    match = _RANGE.fullmatch(header.strip())
    if match is None:
        part.unlink(missing_ok=True)
        raise _RetryableError(f"a 206 answer without a usable Content-Range ({header!r}); starting again")
    first, last, total = int(match.group(1)), int(match.group(2)), match.group(3)
    if first > offset:
        part.unlink(missing_ok=True)
        raise _RetryableError(f"the server resumed at byte {first}, not {offset} as asked; starting again")
    if length is not None and length != last - first + 1:
        part.unlink(missing_ok=True)
        raise _RetryableError(f"Content-Range {header!r} disagrees with Content-Length {length}; starting again")
    return first, (int(total) if total != "*" else None)
