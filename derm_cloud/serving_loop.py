"""The event loop the HTTP adapters run on: asyncio's selector loop, made quiet and calm at the open-file limit.

When a process has as many files open as `ulimit -n` allows, `accept()` fails with `EMFILE` and the
pending connection stays in the kernel's listen backlog. asyncio logs each failure with a full traceback and,
instead of stopping, calls `accept()` again for the rest of its batch (uvicorn's backlog, 2,048), scheduling
one retry per failure: an adapter at the limit printed 62,638 tracebacks in 15 s. CPython fixed that loop
upstream (gh-151615); `ServingEventLoop` does the same on the Python versions that still have it, and:

* ends an accept batch at the first out-of-resource error, so asyncio's own back-off (it retries accepting one
  second later) costs one `accept()` a second while the limit lasts;
* logs those errors as one WARNING line naming the limit and what to change, then at most one line per
  `RESOURCE_LOG_INTERVAL` seconds with the count of failures not logged, and one line when accepting
  works again;
* ignores a retry that fires after the server has closed its socket (shutdown during such a back-off).

`warn_if_fd_limit_below` tells the operator at start when `max_connections` cannot be reached under the
process's open-file limit.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
import time
from typing import Any

__all__ = ["RESOURCE_LOG_INTERVAL", "ServingEventLoop", "warn_if_fd_limit_below"]

logger = logging.getLogger("derm_cloud.serving")

#: Seconds between two log lines about ``accept()`` failing for lack of file descriptors or memory.
RESOURCE_LOG_INTERVAL = 10.0
# What asyncio itself treats as "out of system resource" on accept (selector_events.py).
_RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
_ADVICE = (
    "new connections wait in the listen backlog until one closes; raise the open-file limit (ulimit -n, "
    "docker run --ulimit nofile=...) or lower DERM_CLOUD_MAX_CONNECTIONS"
)


def _is_resource_error(exc: BaseException | None) -> bool:
    return isinstance(exc, OSError) and exc.errno in _RESOURCE_ERRNOS


def _describe(exc: OSError) -> str:
    name = errno.errorcode.get(exc.errno or 0, str(exc.errno))
    return f"{name}, {exc.strerror}"


class _AcceptFailures:
    """Counts `accept()` failures for lack of resources and logs them one line per interval."""

    def __init__(self) -> None:
        self.last_logged: float | None = None  # monotonic time of the last line; None: no failure pending
        self.not_logged = 0
        self.since = 0.0

    def failed(self, exc: OSError) -> None:
        now = time.monotonic()
        if self.last_logged is None:
            logger.warning("cannot accept connections: accept() failed (%s); %s", _describe(exc), _ADVICE)
            self.last_logged = self.since = now
        elif now - self.last_logged >= RESOURCE_LOG_INTERVAL:
            logger.warning(
                "still cannot accept connections (%s): failed %d more time(s) in the last %.0f s; %s",
                _describe(exc),
                self.not_logged + 1,
                now - self.last_logged,
                _ADVICE,
            )
            self.last_logged, self.not_logged = now, 0
        else:
            self.not_logged += 1

    def accepted(self) -> None:
        if self.last_logged is None:
            return
        logger.warning(
            "accepting connections again after %.0f s (%d failure(s) not logged since the last line)",
            time.monotonic() - self.since,
            self.not_logged,
        )
        self.last_logged, self.not_logged = None, 0


class _ListeningSocket:
    """The listening socket as one accept batch of asyncio sees it: after an out-of-resource error, the rest of
    the batch finds the queue empty (`BlockingIOError`), which ends the batch; asyncio's retry stays scheduled.
    """

    def __init__(self, sock: socket.socket, failures: _AcceptFailures) -> None:
        self._sock = sock
        self._failures = failures
        self._exhausted = False

    def accept(self) -> tuple[socket.socket, Any]:
        if self._exhausted:
            raise BlockingIOError(errno.EAGAIN, "accept batch ended after an out-of-resource error")
        try:
            accepted = self._sock.accept()
        except OSError as exc:
            if _is_resource_error(exc):
                self._exhausted = True
            raise
        self._failures.accepted()
        return accepted

    def __getattr__(self, name: str) -> Any:  # fileno(), family... for asyncio's bookkeeping and repr
        return getattr(self._sock, name)


class ServingEventLoop(asyncio.SelectorEventLoop):
    """asyncio's selector event loop with the accept behaviour at the open-file limit described in this module.

    Example:
        >>> with asyncio.Runner(loop_factory=ServingEventLoop) as runner:  # doctest: +SKIP
        ...     runner.run(uvicorn_server.serve(sockets=[sock]))
    """

    def __init__(self) -> None:
        super().__init__()
        self._accept_failures = _AcceptFailures()
        self.set_exception_handler(self._handle_exception)

    def _accept_connection(self, protocol_factory: Any, sock: Any, *args: Any, **kwargs: Any) -> None:
        real = sock._sock if isinstance(sock, _ListeningSocket) else sock
        super()._accept_connection(  # type: ignore[misc]
            protocol_factory, _ListeningSocket(real, self._accept_failures), *args, **kwargs
        )

    def _start_serving(self, protocol_factory: Any, sock: Any, *args: Any, **kwargs: Any) -> None:
        if sock.fileno() == -1:  # a retry after an accept failure, firing after the server closed its socket
            return
        super()._start_serving(protocol_factory, sock, *args, **kwargs)  # type: ignore[misc]

    def _handle_exception(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if _is_resource_error(exc) and "accept" in str(context.get("message", "")):
            assert isinstance(exc, OSError)
            self._accept_failures.failed(exc)
            return
        loop.default_exception_handler(context)


def warn_if_fd_limit_below(max_connections: int) -> None:
    """Log a WARNING at start when `max_connections` open connections would not fit the open-file limit.

    Past the limit, new connections wait in the listen backlog instead of getting the connection cap's 503.
    """
    try:
        import resource
    except ImportError:  # not a Unix: no RLIMIT_NOFILE
        return
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return
    try:
        in_use = len(os.listdir("/proc/self/fd"))
    except OSError:
        in_use = 0
    headroom = 16  # model files, log files, thread wake-up pipes opened after start
    reachable = soft - in_use - headroom
    if max_connections > reachable:
        logger.warning(
            "the connection cap (DERM_CLOUD_MAX_CONNECTIONS=%d) is above what the open-file limit allows "
            "(ulimit -n %d, %d file(s) already open): past about %d connections, new ones wait in the listen "
            "backlog instead of getting 503; raise the limit (ulimit -n, docker run --ulimit nofile=...) or set "
            "DERM_CLOUD_MAX_CONNECTIONS=%d",
            max_connections,
            soft,
            in_use,
            max(reachable, 0),
            max(reachable, 1),
        )
