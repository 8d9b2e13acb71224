"""Serve a `ModelServer` over HTTP with each cloud's container routes (Starlette + uvicorn).

The adapters in `adapters/` run this: SageMaker's container contract (`GET /ping`, `POST /invocations`,
`GET /execution-parameters`) and Vertex AI's custom-container contract (health and predict on the `AIP_*`
routes). The request handling itself is all in `derm_cloud.serving`; this module adds what a production
server needs in front of it, each limit in `ServerLimits`:

* a bounded number of requests decoded and classified at once (worker threads, so onnxruntime and Pillow run
  outside the event loop) and a bounded queue; beyond it, 503 with `Retry-After` at once;
* header, body and keep-alive timeouts (a slowloris connection gets 408 and is closed), and a cap on open
  connections;
* request framing checked: `Content-Length` and chunked bodies both read (h11), a duplicate
  `Content-Length` or one alongside `Transfer-Encoding` refused with 400 (request smuggling);
* SIGTERM (how SageMaker and Vertex stop containers) stops accepting, finishes the requests in flight within
  `drain_timeout` and exits 0;
* at the open-file limit, one log line per interval instead of a traceback per failed `accept()`
  (`derm_cloud.serving_loop`).

GET routes (health checks) bypass the queue, so a busy server still answers its health probe.

Example:
    >>> server = ModelServer(find_model_dir("/opt/ml/model"))  # doctest: +SKIP
    >>> serve_forever(make_http_server(sagemaker_routes(server), host="0.0.0.0", port=8080))  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import json
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable, Mapping
from pathlib import Path

from derm_cloud.errors import ModelSpecError
from derm_cloud.serving import ModelServer, Served
from derm_cloud.serving_limits import ServerLimits
from derm_cloud.serving_loop import ServingEventLoop, warn_if_fd_limit_below

__all__ = [
    "AdapterServer",
    "Handler",
    "Routes",
    "ServerLimits",
    "find_model_dir",
    "make_http_server",
    "sagemaker_routes",
    "serve_forever",
    "vertex_routes",
]

# The serving core's logger, so one logging configuration covers a request from socket to model.
logger = logging.getLogger("derm_cloud.serving")
_JSON = "application/json"


def find_model_dir(root: str | os.PathLike[str], *, max_depth: int = 3) -> Path:
    """The model directory at or below `root` (holding `spec.json` or an AutoML `labels.json`).

    Clouds unpack models into their own layouts (SageMaker `/opt/ml/model`, Azure ML
    `$AZUREML_MODEL_DIR/<registered folder>/`), so adapters search a few levels down.

    Raises:
        ModelSpecError: no model directory, or several, below `root`.
    """
    base = Path(root).expanduser()
    found: list[Path] = []
    level = [base]
    for _ in range(max_depth + 1):
        hits = [d for d in level if (d / "spec.json").is_file() or (d / "labels.json").is_file()]
        found += hits
        level = sorted(c for d in level if d.is_dir() and d not in hits for c in d.iterdir() if c.is_dir())
    if len(found) != 1:
        what = "no" if not found else f"{len(found)}"
        raise ModelSpecError(
            f"{what} model directories (spec.json or labels.json) found under {str(base)!r} within {max_depth} "
            "levels; package exactly one model (model.onnx + spec.json) in the model archive"
        )
    return found[0]


Handler = Callable[[Mapping[str, str], bytes], Served]
Routes = Mapping[tuple[str, str], Handler]


def sagemaker_routes(server: ModelServer) -> dict[tuple[str, str], Handler]:
    """The SageMaker container contract: `GET /ping`, `POST /invocations`, `GET /execution-parameters`."""

    def invocations(headers: Mapping[str, str], body: bytes) -> Served:
        return server.sagemaker_invocations(
            body,
            headers.get("content-type"),
            headers.get("accept"),
            custom_attributes=headers.get("x-amzn-sagemaker-custom-attributes"),
        )

    def execution_parameters(headers: Mapping[str, str], body: bytes) -> Served:
        # Batch Transform asks this once: one image per record, 6 MB payloads.
        params = {"MaxConcurrentTransforms": 1, "BatchStrategy": "SINGLE_RECORD", "MaxPayloadInMB": 6}
        return Served(json.dumps(params).encode(), _JSON)

    return {
        ("GET", "/ping"): lambda headers, body: server.health(),
        ("POST", "/invocations"): invocations,
        ("GET", "/execution-parameters"): execution_parameters,
    }


def vertex_routes(
    server: ModelServer, *, health_route: str, predict_route: str, automl: bool = False
) -> dict[tuple[str, str], Handler]:
    """The Vertex AI custom-container contract: health GET and predict POST on the `AIP_*` routes."""
    predict = server.vertex_automl_predict if automl else server.vertex_custom_predict
    return {
        ("GET", health_route): lambda headers, body: server.health(),
        ("POST", predict_route): lambda headers, body: predict(body),
    }


class AdapterServer:
    """An adapter's HTTP server: `routes` behind uvicorn with `ServerLimits`, bound at construction.

    Run it with `run` (blocking, SIGTERM drains; what the adapter scripts do) or `start` /
    `stop` in a background thread (tests, notebooks).

    Args:
        routes: `(method, path) -> handler` (`sagemaker_routes`, `vertex_routes`).
        host: interface to listen on (containers: `0.0.0.0`).
        port: port; 0 picks a free one (read it from `port`).
        limits: concurrency, timeouts and sizes (default: `ServerLimits.from_env`).

    Example:
        >>> with make_http_server(sagemaker_routes(ModelServer(model_dir))).start() as httpd:  # doctest: +SKIP
        ...     print(httpd.port)
    """

    def __init__(
        self, routes: Routes, *, host: str = "127.0.0.1", port: int = 0, limits: ServerLimits | None = None
    ) -> None:
        import uvicorn

        from derm_cloud.serving_asgi import create_app, guarded_protocol

        self.limits = limits or ServerLimits.from_env()
        self.host = host
        self._socket = socket.create_server((host, port), backlog=2048)
        self.port: int = self._socket.getsockname()[1]
        config = uvicorn.Config(
            create_app(routes, self.limits),
            http=guarded_protocol(self.limits),
            ws="none",
            lifespan="off",
            loop="asyncio",
            log_config=None,
            access_log=False,
            server_header=False,
            timeout_keep_alive=self.limits.keepalive_timeout,  # type: ignore[arg-type]  # float works
            timeout_graceful_shutdown=self.limits.drain_timeout,  # type: ignore[arg-type]
        )
        self._uvicorn = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    def run(self) -> None:
        """Serve until SIGTERM or Ctrl-C, then drain in-flight requests (at most `drain_timeout` seconds)."""
        if threading.current_thread() is threading.main_thread():
            # uvicorn re-raises the signal it drained on once it is done; a no-op handler makes that a clean exit 0.
            signal.signal(signal.SIGTERM, lambda *_: None)
        _release_freed_memory_eagerly()
        logger.info("serving on %s:%s", self.host, self.port)
        try:
            self._serve()
        finally:
            self._socket.close()

    def _serve(self) -> None:
        """uvicorn's serve loop on a `ServingEventLoop` (quiet and calm at the open-file limit)."""
        warn_if_fd_limit_below(self.limits.max_connections)
        with asyncio.Runner(loop_factory=ServingEventLoop) as runner:
            runner.run(self._uvicorn.serve(sockets=[self._socket]))

    def start(self) -> AdapterServer:
        """Serve from a daemon thread; returns once the server accepts connections."""
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        while not self._uvicorn.started:
            if not self._thread.is_alive():
                raise RuntimeError("the adapter server stopped while starting; see the log")
            threading.Event().wait(0.01)
        return self

    def stop(self, timeout: float | None = None) -> None:
        """Drain and stop a server started with `start`."""
        self._uvicorn.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout if timeout is not None else self.limits.drain_timeout + 5)
        self._socket.close()

    def __enter__(self) -> AdapterServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def make_http_server(
    routes: Routes, *, host: str = "127.0.0.1", port: int = 0, limits: ServerLimits | None = None
) -> AdapterServer:
    """An `AdapterServer` for `routes` (bound, not started); port 0 picks a free port.

    Example:
        >>> httpd = make_http_server(sagemaker_routes(ModelServer(model_dir)), port=8080)  # doctest: +SKIP
        >>> serve_forever(httpd)  # doctest: +SKIP
    """
    return AdapterServer(routes, host=host, port=port, limits=limits)


def serve_forever(server: AdapterServer) -> None:
    """Serve until SIGTERM or Ctrl-C (SageMaker and Vertex stop containers with SIGTERM), draining on the way out."""
    with contextlib.suppress(KeyboardInterrupt):
        server.run()


def _release_freed_memory_eagerly() -> None:
    """Make glibc return large freed buffers to the OS at once (decoded images are tens to hundreds of MB).

    glibc raises its mmap threshold up to 32 MB after a large buffer is freed, so the next decodes come from the
    heap and stay in the process (RSS) after they are freed. A fixed threshold keeps big buffers on mmap.
    """
    if not sys.platform.startswith("linux"):
        return
    path = ctypes.util.find_library("c")
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(path)
        m_mmap_threshold = -3
        libc.mallopt(m_mmap_threshold, 1024 * 1024)
