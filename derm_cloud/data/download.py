"""Resumable HTTP downloads with a progress display and checksum verification.

A download goes to `NAME.part` beside its destination. When that file exists, the next attempt asks the server
for the rest with an HTTP `Range` header and appends (a server that ignores `Range` answers 200 and the file
starts again). A cut connection is retried from where it stopped; when the retries run out the `.part` file is
kept and `DownloadError` says that rerunning resumes. Only a complete file whose digest
matches is renamed into place.

Complete means: as long as the server stated (Content-Length, or the total of a 206's Content-Range, which must
start at the offset asked for, or no later), and, when no digest is known, passing the file's own check (zip
CRCs, CSV rows: `derm_cloud.data.integrity`). A body that ended without a stated length and fails that check was
cut: the next attempt resumes it.

Progress: a tqdm bar when stderr is a terminal, otherwise one plain line at most every `interval` seconds
(CI logs, `| tee`); `quiet` silences both. A host that sends nothing is reported every `interval` seconds
("waiting for data") and fails the attempt after `stall_timeout` seconds; a failure to connect names what to
check (DNS, proxy, URL) and `--mirror`.
"""

from __future__ import annotations

import hashlib
import re
import sys
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from derm_cloud.data.download_errors import STALL_TIMEOUT_S, describe_failure, network_advice, requests_module
from derm_cloud.data.download_progress import Progress, _Silence
from derm_cloud.errors import ChecksumMismatchError, DownloadError

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


def file_digest(path: Path, algorithm: str = "sha256") -> str:
    """Hex digest of a file, read in chunks (archives are gigabytes)."""
    h = hashlib.new(algorithm)
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def mirror_url(url: str, mirror: str | None) -> str:
    """`https://HOST/PATH?Q` -> `MIRROR/HOST/PATH?Q` (unchanged without a mirror).

    Example:
        >>> mirror_url("https://example.org/a/b.zip?x=1", "http://127.0.0.1:8000/m")
        'http://127.0.0.1:8000/m/example.org/a/b.zip?x=1'
    """
    if not mirror:
        return url
    parts = urllib.parse.urlsplit(url)
    tail = parts.path + (f"?{parts.query}" if parts.query else "")
    return f"{mirror.rstrip('/')}/{parts.netloc}{tail}"


@dataclass(frozen=True)
class Downloaded:
    """A finished download: where it is, its SHA-256, and whether it resumed a partial file."""

    path: Path
    sha256: str
    size: int
    resumed_from: int


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
    """Download `url` to `dest`, resuming a `dest.part` left by an earlier attempt.

    Completeness is established by what the server states (Content-Length, or the total of a 206's
    Content-Range, which must start at the offset asked for), then by the digest when one is known, and otherwise
    by `check`: a body without a stated length that fails it is treated as cut and resumed; one whose length
    was stated is damaged and deleted.

    Args:
        url: http(s) URL.
        dest: final path; its folder is created.
        sha256: expected SHA-256 (hex); checked before `dest` is written.
        md5: expected MD5, when that is all the source publishes (Dataverse).
        retries: extra attempts after a cut connection, a stall or a 5xx, each resuming where the last stopped.
        quiet: no progress output.
        interval: seconds between plain progress lines (and "waiting for data" lines while the host is silent).
        on_retry: called with (attempt, error) before each retry (default: a line on `stream` unless quiet).
        check: the file's own integrity check when no digest is known (zip CRCs, CSV rows): returns what is
            wrong, or `None`; see `derm_cloud.data.integrity.integrity_check`.
        stall_timeout: seconds without a byte from the host before the attempt fails (and is retried).
        stream: where progress and retry lines go (default stderr).

    Raises:
        DownloadError: unreachable host, HTTP error, stall or cut connection after the retries (the `.part` file
            is kept and the same command resumes), or a complete file that fails `check` (deleted).
        ChecksumMismatchError: the complete file has another digest (the `.part` file is deleted, so the next
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


class _RetryableError(Exception):
    """A failure worth another attempt (5xx, short body, misplaced range)."""

    wait = True


class _FatalError(_RetryableError):
    """A failure no retry fixes (4xx other than 416)."""


class _DamagedError(_FatalError):
    """A file of the stated length that fails its own check: deleted, so nothing is left to resume."""


_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


def _fetch_into(
    session: Any, url: str, part: Path, *, quiet: bool, interval: float, label: str, stall_timeout: float, stream: Any
) -> int | None:
    """One attempt: append what the server sends to `part`; returns the file size the server stated, if any."""
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
