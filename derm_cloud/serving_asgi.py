"""The ASGI side of `derm_cloud.serving_http`: the Starlette app with its admission queue, and the uvicorn
h11 protocol with header timeout, connection cap and request-framing checks.

A request's body is read whole (within `max_body_bytes`, `body_timeout` and the shared `body_buffer_bytes`)
*before* it is admitted: admission slots and queue places go to complete requests only, so clients that upload
slowly, or stall half-way, cannot lock valid requests out of the model; the body timeout ends their reads.

Why a protocol subclass: uvicorn times out idle keep-alive connections but not a request whose headers trickle
in (slowloris), and h11 silently merges a repeated `Content-Length` and lets `Transfer-Encoding` override
one, which a proxy in front may read differently (request smuggling). Both are refused here before the app runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Iterator, Mapping
from http import HTTPStatus
from typing import Any

import anyio
import h11
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route
from uvicorn.protocols.http.h11_impl import H11Protocol

from derm_cloud.serving import Served
from derm_cloud.serving_errors import ServerBusyError, error_response
from derm_cloud.serving_limits import ServerLimits

__all__ = ["create_app", "guarded_protocol"]

logger = logging.getLogger("derm_cloud.serving")
_JSON = "application/json"
_HEAD_SCAN_LIMIT = 64 * 1024  # h11 refuses heads above 16 KiB itself; this only bounds our copy


def _error_body(code: str, message: str) -> bytes:
    return json.dumps({"error": {"code": code, "message": message}}).encode()


def _json_response(status: int, served: Served, headers: Mapping[str, str] | None = None) -> Response:
    return Response(served.body, status_code=status, media_type=served.content_type, headers=dict(headers or {}))


def _error(status: int, code: str, message: str, *, close: bool = False, retry_after: int | None = None) -> Response:
    headers = {"Connection": "close"} if close else {}
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    return Response(_error_body(code, message), status_code=status, media_type=_JSON, headers=headers)


class _RefusedError(Exception):
    """A request refused while its body is read; `response` closes the connection (the body may be unread)."""

    def __init__(self, status: int, code: str, message: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.response = _error(status, code, message, close=True, retry_after=retry_after)


class _BodyBuffer:
    """Bytes of request bodies in memory, each counted from its first byte read until its response is sent.

    Only the event loop thread touches it, so plain integers suffice. Bytes are counted as they arrive, never as
    declared: a client that announces a large body and stalls holds only what it sent.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def fits(self, nbytes: int) -> bool:
        return self.used + nbytes <= self.limit

    @contextlib.contextmanager
    def account(self) -> Iterator[Callable[[int], bool]]:
        """A `take(nbytes) -> bool` for one request; everything it took is given back when the block ends."""
        taken = 0

        def take(nbytes: int) -> bool:
            nonlocal taken
            if not self.fits(nbytes):
                return False
            self.used += nbytes
            taken += nbytes
            return True

        try:
            yield take
        finally:
            self.used -= taken


def _buffer_full(buffer: _BodyBuffer, limits: ServerLimits) -> _RefusedError:
    logger.warning("503: request bodies in memory at their limit (%d of %d bytes)", buffer.used, buffer.limit)
    return _RefusedError(
        503,
        "ServiceUnavailable",
        f"the server holds {buffer.used / 1e6:,.1f} MB of request bodies, its limit "
        f"(DERM_CLOUD_BODY_BUFFER_MB={buffer.limit / 1e6:g}); retry after {limits.retry_after} s",
        retry_after=limits.retry_after,
    )


async def _read_body(request: Request, limits: ServerLimits, buffer: _BodyBuffer, take: Callable[[int], bool]) -> bytes:
    """The whole body (`Content-Length` or chunked), within `max_body_bytes`, `body_timeout` and the buffer."""
    declared = request.headers.get("content-length")
    if declared is not None and int(declared) > limits.max_body_bytes:  # h11 has checked it is a number
        raise _RefusedError(
            413,
            "PayloadTooLarge",
            f"request body of {int(declared):,} bytes is over this server's limit of {limits.max_body_bytes:,}; "
            "send a smaller (re-encoded or downscaled) image",
        )
    if declared is not None and not buffer.fits(int(declared)):
        raise _buffer_full(buffer, limits)  # before reading: it could not be held whole next to the others
    chunks: list[bytes] = []
    size = 0
    with anyio.move_on_after(limits.body_timeout) as scope:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limits.max_body_bytes:
                raise _RefusedError(
                    413,
                    "PayloadTooLarge",
                    f"request body is over this server's limit of {limits.max_body_bytes:,} bytes; "
                    "send a smaller (re-encoded or downscaled) image",
                )
            if not take(len(chunk)):
                raise _buffer_full(buffer, limits)
            chunks.append(chunk)
    if scope.cancelled_caught:
        raise _RefusedError(
            408, "RequestTimeout", f"the request body did not arrive within {limits.body_timeout:g} s; send it whole"
        )
    return b"".join(chunks)


class _Admission:
    """Requests admitted (whole body in, waiting for a slot or running) and the slots that run them."""

    def __init__(self, limits: ServerLimits) -> None:
        self.limits = limits
        self.inside = 0
        self._slots: anyio.CapacityLimiter | None = None  # created on the event loop, at the first request

    @property
    def slots(self) -> anyio.CapacityLimiter:
        if self._slots is None:
            self._slots = anyio.CapacityLimiter(self.limits.max_concurrency)
        return self._slots

    def full(self) -> bool:
        return self.inside >= self.limits.max_concurrency + self.limits.max_queue


def create_app(routes: Mapping[tuple[str, str], Any], limits: ServerLimits) -> Starlette:
    """The Starlette app answering `routes` with bounded concurrency (see `derm_cloud.serving_http`)."""
    admission = _Admission(limits)
    buffer = _BodyBuffer(limits.body_buffer_bytes)
    paths = {path for _, path in routes}

    async def endpoint(request: Request) -> Response:
        method, path = request.method, request.scope["path"]
        handler = routes.get((method, path))
        has_body = request.headers.get("content-length", "0") != "0" or "transfer-encoding" in request.headers
        if handler is None:
            known = path in paths
            status, code = (405, "MethodNotAllowed") if known else (404, "NotFound")
            return _error(status, code, f"{method} {path} is not served here", close=has_body)
        headers = {k.lower(): v for k, v in request.headers.items()}
        if method == "GET":  # health and parameters: no body, no decode, never queued behind predictions
            return _run_inline(handler, headers)
        if admission.full():  # complete requests fill every slot and the queue: no use reading this body
            return _busy(limits, "the server is at its request limit", close=has_body)
        with buffer.account() as take:  # the body's bytes stay counted until its response is sent
            try:
                body = await _read_body(request, limits, buffer, take)
            except _RefusedError as refused:
                return refused.response
            except ClientDisconnect:
                return _error(400, "ClientDisconnected", "the client closed the connection mid-request", close=True)
            # Admitted only now, whole body in hand: a slow upload never held a slot or a place in the queue.
            if admission.full():
                return _busy(limits, "the server is at its request limit")
            admission.inside += 1
            try:
                return await _run_in_slot(admission, handler, headers, body)
            finally:
                admission.inside -= 1

    app = Starlette(routes=[Route("/{path:path}", endpoint, methods=["GET", "POST", "PUT", "DELETE", "PATCH"])])
    return app


def _run_inline(handler: Any, headers: dict[str, str]) -> Response:
    try:
        return _json_response(200, handler(headers, b""))
    except Exception as exc:
        status, served = error_response(exc)
        return _json_response(status, served)


async def _run_in_slot(admission: _Admission, handler: Any, headers: dict[str, str], body: bytes) -> Response:
    limits = admission.limits
    acquired = False
    with anyio.move_on_after(limits.queue_timeout):
        await admission.slots.acquire()
        acquired = True
    if not acquired:
        return _busy(limits, f"no worker became free within {limits.queue_timeout:g} s")
    try:
        served = await anyio.to_thread.run_sync(handler, headers, body)
        return _json_response(200, served)
    except Exception as exc:
        status, out = error_response(exc)
        extra = {"Retry-After": str(exc.retry_after)} if isinstance(exc, ServerBusyError) else {}
        return _json_response(status, out, extra)
    finally:
        admission.slots.release()


def _busy(limits: ServerLimits, why: str, *, close: bool = False) -> Response:
    logger.warning("503: %s", why)
    message = f"{why}; retry after {limits.retry_after} s"
    return _error(503, "ServiceUnavailable", message, close=close, retry_after=limits.retry_after)


def _framing_problem(head: bytes) -> str | None:
    """Why a complete request head is ambiguous (repeated or list-valued Content-Length, or CL with TE)."""
    lines = [line.rstrip(b"\r") for line in head.split(b"\n")[1:]]
    names = [line.split(b":", 1)[0].strip().lower() for line in lines if b":" in line]
    values = [line.split(b":", 1)[1] for line in lines if line.split(b":", 1)[0].strip().lower() == b"content-length"]
    if len(values) > 1 or any(b"," in v for v in values):
        return "the request has more than one Content-Length; send exactly one"
    if values and b"transfer-encoding" in names:
        return "the request has both Content-Length and Transfer-Encoding; send one of them"
    return None


class _GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol plus a header timeout, a connection cap and request-framing checks."""

    limits: ServerLimits = ServerLimits()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timer: asyncio.TimerHandle | None = None
        self._head = bytearray()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            self._refuse(503, f"more than {self.limits.max_connections} open connections", self.limits.retry_after)
            return
        self._arm_head_timer()

    def data_received(self, data: bytes) -> None:
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            if self._head_timer is None:
                self._arm_head_timer()  # first byte of the next request on a kept-alive connection
            if len(self._head) < _HEAD_SCAN_LIMIT:
                self._head += data[: _HEAD_SCAN_LIMIT - len(self._head)]
                end = max(self._head.find(b"\r\n\r\n"), self._head.find(b"\n\n"))
                problem = _framing_problem(bytes(self._head[:end])) if end >= 0 else None
                if problem:
                    self._refuse(400, problem)
                    return
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:  # the head is in: the app's body timeout takes over
            self._cancel_head_timer()
            self._head.clear()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def _arm_head_timer(self) -> None:
        self._cancel_head_timer()
        self._head_timer = self.loop.call_later(self.limits.header_timeout, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        idle_between_requests = self.cycle is None or self.cycle.response_complete
        if self.conn.their_state is h11.IDLE and idle_between_requests and not self.transport.is_closing():
            self._refuse(408, f"request headers did not arrive within {self.limits.header_timeout:g} s")

    def _refuse(self, status: int, message: str, retry_after: int | None = None) -> None:
        """Answer `status` outside h11 (the request was never parsed) and close the connection."""
        self._cancel_head_timer()
        logger.warning("%d before the request reached the app: %s", status, message)
        code = {400: "BadRequest", 408: "RequestTimeout", 503: "ServiceUnavailable"}[status]
        body = _error_body(code, message)
        head = [
            f"HTTP/1.1 {status} {HTTPStatus(status).phrase}",
            f"Content-Type: {_JSON}",
            f"Content-Length: {len(body)}",
            "Connection: close",
        ]
        if retry_after is not None:
            head.append(f"Retry-After: {retry_after}")
        self.transport.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        self.transport.close()


def guarded_protocol(limits: ServerLimits) -> type[H11Protocol]:
    """A `_GuardedH11Protocol` subclass bound to `limits` (uvicorn instantiates the class itself)."""
    return type("DermCloudH11Protocol", (_GuardedH11Protocol,), {"limits": limits})
