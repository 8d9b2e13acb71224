"""Serve a :class:`~derm_cloud.serving.ModelServer` over HTTP with each cloud's container routes.

The adapters in ``adapters/`` run this: SageMaker's container contract (``GET /ping``, ``POST /invocations``,
``GET /execution-parameters``) and Vertex AI's custom-container contract (health and predict on the ``AIP_*``
routes). It is a small threaded HTTP/1.1 server from the standard library, stopped by SIGTERM as both clouds
stop containers; the request handling itself is all in :mod:`derm_cloud.serving`.

Example:
    >>> server = ModelServer(find_model_dir("/opt/ml/model"))  # doctest: +SKIP
    >>> serve_forever(make_http_server(sagemaker_routes(server), host="0.0.0.0", port=8080))  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import threading
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from derm_cloud.errors import ModelSpecError
from derm_cloud.serving import (
    DEFAULT_MAX_BODY_BYTES,
    ModelServer,
    RequestTooLargeError,
    Served,
    ServingError,
    error_response,
)

__all__ = [
    "Handler",
    "Routes",
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
    """The model directory at or below ``root`` (holding ``spec.json`` or an AutoML ``labels.json``).

    Clouds unpack models into their own layouts (SageMaker ``/opt/ml/model``, Azure ML
    ``$AZUREML_MODEL_DIR/<registered folder>/``), so adapters search a few levels down.

    Raises:
        ModelSpecError: no model directory, or several, below ``root``.
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
    """The SageMaker container contract: ``GET /ping``, ``POST /invocations``, ``GET /execution-parameters``."""

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
    """The Vertex AI custom-container contract: health GET and predict POST on the ``AIP_*`` routes."""
    predict = server.vertex_automl_predict if automl else server.vertex_custom_predict
    return {
        ("GET", health_route): lambda headers, body: server.health(),
        ("POST", predict_route): lambda headers, body: predict(body),
    }


class _HttpHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # TCP_NODELAY; otherwise Nagle + delayed ACK add ~44 ms per response
    server: _HttpServer

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s %s", self.command, self.path.split("?")[0])

    def _dispatch(self) -> None:
        path = self.path.split("?")[0]
        raw_length = self.headers.get("Content-Length") or "0"
        length = int(raw_length) if raw_length.isdigit() else -1
        headers = {k.lower(): v for k, v in self.headers.items()}
        handler = self.server.routes.get((self.command, path))
        if length < 0:
            self.close_connection = True  # the body's end is unknown: never read it
            bad = ServingError(f"Content-Length must be a non-negative whole number, got {raw_length[:40]!r}")
            bad.status, bad.code = 400, "BadRequest"
            status, out = bad.status, bad.response()
        elif length > self.server.max_body_bytes:
            self.close_connection = True  # do not read a body we refuse
            status, out = error_response(RequestTooLargeError(f"request body of {length:,} bytes is too large"))
        elif handler is None:
            self.rfile.read(length)
            known = any(p == path for _, p in self.server.routes)
            err = ServingError(f"{self.command} {path} is not served here")
            err.status, err.code = (405, "MethodNotAllowed") if known else (404, "NotFound")
            status, out = err.status, err.response()
        else:
            body = self.rfile.read(length)
            try:
                status, out = 200, handler(headers, body)
            except Exception as exc:
                status, out = error_response(exc)
        self.send_response(status)
        self.send_header("Content-Type", out.content_type)
        self.send_header("Content-Length", str(len(out.body)))
        self.end_headers()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.wfile.write(out.body)

    do_GET = do_POST = do_PUT = do_DELETE = _dispatch


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    routes: Routes
    max_body_bytes: int


def make_http_server(
    routes: Routes, *, host: str = "127.0.0.1", port: int = 0, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
) -> ThreadingHTTPServer:
    """A threaded HTTP/1.1 server for ``routes`` (not started); port 0 picks a free port.

    Example:
        >>> httpd = make_http_server(sagemaker_routes(ModelServer(model_dir)), port=8080)  # doctest: +SKIP
        >>> httpd.serve_forever()  # doctest: +SKIP
    """
    httpd = _HttpServer((host, port), _HttpHandler)
    httpd.routes = dict(routes)
    httpd.max_body_bytes = max_body_bytes
    return httpd


def serve_forever(httpd: ThreadingHTTPServer) -> None:
    """Serve until SIGTERM or Ctrl-C (SageMaker and Vertex stop containers with SIGTERM)."""
    host, port = httpd.server_address[:2]
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=httpd.shutdown, daemon=True).start())
    logger.info("serving on %s:%s", host, port)
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        httpd.server_close()
