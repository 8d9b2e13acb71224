"""The HTTP machinery every cloud emulator shares: a loopback server, fault injection, request recording.

An emulator subclasses `EmulatorServer` and implements `EmulatorServer.handle` for its cloud's wire
contract. This base gives each of them, identically:

* a `ThreadingHTTPServer` on `127.0.0.1` (port 0 by default) speaking HTTP/1.1 keep-alive with
  `TCP_NODELAY` (without it Nagle + delayed ACK add ~44 ms to every call and latency figures are fiction);
* `Fault` injection: 429 with `Retry-After`, 5xx, slow answers, timeouts (no answer), connection
  resets, malformed and truncated bodies, and cold start (the first N calls answer "not ready");
* a record of every request (method, path, headers, body) so tests can assert what reached the provider:
  no EXIF, the no-store path, an auth header, a size within limits. Secrets in headers are kept only as
  `<redacted:N chars>`.

Start as a context manager or with `start`/`stop`:

```python
with SageMakerEmulator(model_dir) as emu:
    client = boto3.client("sagemaker-runtime", endpoint_url=emu.url, ...)
```
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from derm_cloud.serving import ModelServer

__all__ = [
    "EmulatorServer",
    "Fault",
    "OneModelEmulator",
    "RecordedRequest",
    "Response",
    "header_value",
    "retry_after_header",
]

FaultKind = Literal["throttle", "error", "slow", "drip", "timeout", "reset", "malformed", "truncated", "not_ready"]

# Header names whose values are secrets: recorded only as a length, so test logs never hold keys.
_SECRET_HEADERS = frozenset(
    {"authorization", "prediction-key", "api-key", "x-api-key", "x-goog-api-key", "ocp-apim-subscription-key"}
)
# Query parameters that carry keys (Google API keys travel as ?key=...).
_SECRET_QUERY = re.compile(r"([?&](?:key|api_key|code|sig)=)[^&]*", re.IGNORECASE)


@dataclass(frozen=True)
class Response:
    """An HTTP response produced by an emulator route."""

    status: int = 200
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, payload: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
        return cls(status, json.dumps(payload).encode(), {"Content-Type": "application/json", **(headers or {})})


@dataclass(frozen=True)
class Fault:
    """One injected failure, applied to the next `times` matching requests.

    Attributes:
        kind: `throttle` (429 + Retry-After), `error` (status, default 500), `slow` (answer after
            `delay` s), `drip` (the answer's body a byte every 50 ms for `delay` s, then the rest: a socket
            read timeout never fires; over gRPC, the whole answer held back `delay` s in 50 ms steps),
            `timeout` (hold the connection `delay` s, then close without answering), `reset` (close the
            socket at once), `malformed` (200 with a body that is not the contract), `truncated` (200 whose
            body stops half-way), `not_ready` (the cloud's cold-start answer).
        times: how many requests it applies to.
        status: HTTP status for `error`.
        retry_after: seconds sent in `Retry-After` for `throttle`.
        delay: seconds for `slow`, `drip` and `timeout`.
        path_contains: apply only to requests whose path contains this.
    """

    kind: FaultKind
    times: int = 1
    status: int = 500
    retry_after: float | None = 1.0
    delay: float = 2.0
    path_contains: str = ""


@dataclass(frozen=True)
class RecordedRequest:
    """A request as the emulator received it (secret header values redacted)."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    time: float

    def json(self) -> Any:
        return json.loads(self.body)

    def header(self, name: str) -> str | None:
        return header_value(self.headers, name)


def header_value(headers: Mapping[str, str], name: str) -> str | None:
    """The value of header `name` (case-insensitive, as HTTP header names are), or `None`.

    Example:
        >>> header_value({"content-type": "image/jpeg"}, "Content-Type")
        'image/jpeg'
    """
    wanted = name.lower()
    for key, value in headers.items():
        if key.lower() == wanted:
            return value
    return None


def retry_after_header(seconds: float | None) -> dict[str, str]:
    """`{"Retry-After": "<seconds>"}`, or no header when `seconds` is `None` (a fault without one).

    Example:
        >>> retry_after_header(0.25), retry_after_header(None)
        ({'Retry-After': '0.25'}, {})
    """
    return {"Retry-After": f"{seconds:g}"} if seconds is not None else {}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # TCP_NODELAY; otherwise ~44 ms per call (Nagle + delayed ACK)
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        return  # requests are recorded, not logged: logs would hold paths with ids

    def _dispatch(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = _read_chunked(self.rfile)
        emulator = self.server.emulator
        headers = {k: v for k, v in self.headers.items()}
        emulator._record(self.command, self.path, headers, body)
        fault = emulator._take_fault(self.path)
        if fault is not None and fault.kind in ("reset", "timeout"):
            if fault.kind == "timeout":
                time.sleep(fault.delay)
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        drip = fault if fault is not None and fault.kind == "drip" else None
        if fault is not None and fault.kind in ("slow", "drip"):  # the real answer, late
            if fault.kind == "slow":
                time.sleep(fault.delay)
            fault = None
        try:
            if fault is None:
                response = emulator.handle(self.command, self.path, headers, body)
            else:
                response = emulator.fault_response(fault)
        except Exception as exc:  # an emulator bug must show up as a 500 the test can see, not a hang
            response = Response.json({"error": f"emulator error: {type(exc).__name__}: {exc}"}, status=500)
        out = response.body
        declared = len(out)
        if fault is not None and fault.kind == "truncated":
            out = out[: max(1, len(out) // 2)]
            self.close_connection = True
        self.send_response(response.status)
        for k, v in response.headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(declared))
        self.end_headers()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            if drip is not None:
                out = self._drip(out, drip.delay)
            self.wfile.write(out)

    def _drip(self, body: bytes, seconds: float) -> bytes:
        """Write `body` a byte at a time for `seconds`; return what is left to write."""
        until = time.monotonic() + seconds
        while body and time.monotonic() < until:
            self.wfile.write(body[:1])
            self.wfile.flush()
            body = body[1:]
            time.sleep(0.05)
        return body

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _dispatch


def _read_chunked(rfile: Any) -> bytes:
    data = bytearray()
    while True:
        size = int(rfile.readline().strip() or b"0", 16)
        if size == 0:
            rfile.readline()
            return bytes(data)
        data += rfile.read(size)
        rfile.readline()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    emulator: EmulatorServer


class EmulatorServer(ABC):
    """Base class of the cloud emulators: override `handle` and `fault_response`."""

    #: short name used by ``derm-cloud emulate`` and in reports.
    name = "emulator"

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self._host = host
        self._port = port
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._faults: deque[list[Any]] = deque()  # [Fault, remaining]
        self._lock = threading.Lock()
        self.requests: list[RecordedRequest] = []

    # --- lifecycle ---------------------------------------------------------------------------------------------

    def start(self) -> EmulatorServer:
        if self._server is not None:
            return self
        self._server = _Server((self._host, self._port), _Handler)
        self._server.emulator = self
        self._thread = threading.Thread(target=self._server.serve_forever, name=f"{self.name}-emulator", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> EmulatorServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError(f"{self.name} emulator is not running; call start() first")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """Base URL, e.g. `http://127.0.0.1:43121`."""
        return f"http://{self._host}:{self.port}"

    # --- faults and records ---------------------------------------------------------------------------------

    def inject(self, fault: Fault) -> None:
        """Queue a fault; faults apply in the order injected."""
        with self._lock:
            self._faults.append([fault, fault.times])

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def reset(self) -> None:
        """Forget recorded requests and pending faults."""
        with self._lock:
            self._faults.clear()
            self.requests.clear()

    def _take_fault(self, path: str) -> Fault | None:
        with self._lock:
            for entry in self._faults:
                fault, remaining = entry
                if fault.path_contains and fault.path_contains not in path:
                    continue
                entry[1] = remaining - 1
                if entry[1] <= 0:
                    self._faults.remove(entry)
                return fault  # type: ignore[no-any-return]
        return None

    def _record(self, method: str, path: str, headers: dict[str, str], body: bytes) -> None:
        safe = {k: (f"<redacted:{len(v)} chars>" if k.lower() in _SECRET_HEADERS else v) for k, v in headers.items()}
        path = _SECRET_QUERY.sub(r"\1<redacted>", path)
        with self._lock:
            self.requests.append(RecordedRequest(method, path, safe, body, time.time()))

    def requests_to(self, path_contains: str) -> list[RecordedRequest]:
        """Recorded requests whose path contains `path_contains`."""
        return [r for r in self.requests if path_contains in r.path]

    # --- what subclasses implement ----------------------------------------------------------------------------

    @abstractmethod
    def handle(self, method: str, path: str, headers: Mapping[str, str], body: bytes) -> Response:
        """Answer one request in the cloud's wire format."""

    def fault_response(self, fault: Fault) -> Response:
        """The cloud's own shape of an injected failure; subclasses refine it (error envelopes, headers)."""
        if fault.kind == "throttle":
            headers = retry_after_header(fault.retry_after)
            return Response.json({"error": {"code": "TooManyRequests", "message": "rate limit"}}, 429, headers)
        if fault.kind == "error":
            return Response.json({"error": {"code": "InternalError", "message": "injected failure"}}, fault.status)
        if fault.kind == "not_ready":
            return Response.json({"error": {"code": "ModelNotReady", "message": "model is loading"}}, 503)
        if fault.kind == "malformed":
            return Response(200, b"<html>not the contract</html>", {"Content-Type": "text/html"})
        if fault.kind == "truncated":
            return Response.json({"predictions": [[0.1, 0.2, 0.3, 0.4]], "padding": "x" * 64})
        raise ValueError(f"unknown fault kind {fault.kind!r}")


class OneModelEmulator(EmulatorServer):
    """An emulator that serves one model directory through `ModelServer` (Gemini, Rekognition).

    The model is loaded once, at `start`, so the first request's latency is not the load time; a request
    that arrives first (a test calling `handle` directly) loads it under the lock.
    """

    def __init__(self, model_dir: str | os.PathLike[str], *, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(host=host, port=port)
        self.model_dir = model_dir
        self._hosted_server: ModelServer | None = None
        self._hosting_lock = threading.Lock()

    def start(self) -> EmulatorServer:
        self._hosted()
        return super().start()

    def _hosted(self) -> ModelServer:
        with self._hosting_lock:
            if self._hosted_server is None:
                from derm_cloud.serving import ModelServer

                self._hosted_server = ModelServer(self.model_dir)
            return self._hosted_server
