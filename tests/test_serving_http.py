"""The adapters' production HTTP server (uvicorn + Starlette): decode budget, admission limits, timeouts, framing.

Each property runs against an in-process :class:`~derm_cloud.serving_http.AdapterServer` with small limits, so
every wait is bounded (well under 5 s a test). Images: HAM10000 dev images (Tschandl et al. 2018, CC BY-NC 4.0),
read in place, plus synthetic PNGs.
"""

from __future__ import annotations

import base64
import http.client
import io
import json
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from derm_cloud.backends.local_onnx import LocalOnnxClassifier
from derm_cloud.errors import ConfigError
from derm_cloud.serving import ModelServer, RequestTooLargeError, Served, ServerBusyError
from derm_cloud.serving_http import AdapterServer, make_http_server, sagemaker_routes, vertex_routes
from derm_cloud.serving_limits import DecodeBudget, ServerLimits, estimate_decode


@pytest.fixture(scope="module")
def rgba_png() -> bytes:
    """A 3000x3000 RGBA PNG: 36 MB decoded, ~234 MB to prepare, a few KB on the wire."""
    buf = io.BytesIO()
    Image.new("RGBA", (3000, 3000), (200, 120, 90, 255)).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def jpeg(dev_images: list[Path]) -> bytes:
    return dev_images[0].read_bytes()


def raw_exchange(port: int, data: bytes, *, wait: float = 5.0) -> tuple[bytes, float]:
    """Send raw bytes, then read until the server closes; returns what came back and how long until EOF."""
    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as sock:
        sock.sendall(data)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    return received, time.monotonic() - start


def status_of(raw: bytes) -> int:
    return int(raw.split(b" ", 2)[1])


# --- decode budget, from the header, before decoding ------------------------------------------------------------


def test_estimate_reads_header_only(rgba_png: bytes) -> None:
    estimate = estimate_decode(rgba_png)
    assert estimate is not None
    assert (estimate.width, estimate.height, estimate.mode) == (3000, 3000, "RGBA")
    assert estimate.decoded_bytes == 3000 * 3000 * 4 * 1
    assert estimate.working_bytes == estimate.decoded_bytes * 6.5  # transparency: composite + RGB copies
    assert estimate_decode(b"not an image") is None  # left to load_image, which names the problem


def test_budget_refuses_before_decoding(tiny_model_dir: Path, rgba_png: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    server = ModelServer(tiny_model_dir, decode_budget=DecodeBudget(100_000_000))

    def must_not_decode(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the image was decoded although its header shows it is over the budget")

    monkeypatch.setattr("derm_cloud.serving.prepare_for_model", must_not_decode)
    with pytest.raises(RequestTooLargeError, match=r"3000x3000 RGBA .*decode budget of 100 MB") as info:
        server.sagemaker_invocations(rgba_png, "image/png")
    assert info.value.status == 413
    assert server.decode_budget.used_bytes == 0


def test_budget_in_use_answers_503_with_retry_after(tiny_model_dir: Path, rgba_png: bytes, jpeg: bytes) -> None:
    budget = DecodeBudget(300_000_000)
    server = ModelServer(tiny_model_dir, decode_budget=budget)
    assert budget.try_reserve(200_000_000)  # another request's image is being decoded
    with make_http_server(sagemaker_routes(server), limits=ServerLimits()).start() as httpd:
        conn = http.client.HTTPConnection("127.0.0.1", httpd.port, timeout=10)
        start = time.monotonic()
        conn.request("POST", "/invocations", rgba_png, {"Content-Type": "image/png"})
        reply = conn.getresponse()
        body = json.loads(reply.read())
        assert (reply.status, reply.getheader("Retry-After")) == (503, "2")
        assert body["error"]["code"] == "ServiceUnavailable" and "3000x3000 RGBA" in body["error"]["message"]
        assert time.monotonic() - start < 1.0  # refused from the header: a 9 MP decode takes seconds
        conn.request("POST", "/invocations", jpeg, {"Content-Type": "image/jpeg"})  # small images still fit
        assert conn.getresponse().status == 200
        conn.close()
    assert budget.used_bytes == 200_000_000  # every request released what it reserved


def _jpeg_of(width: int, height: int) -> bytes:
    """A plain opaque JPEG: a few KB on the wire, width x height x 4 x 3.5 bytes to prepare."""
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (180, 110, 90)).save(buf, "JPEG")
    return buf.getvalue()


def _vertex_request(*images: bytes) -> bytes:
    return json.dumps({"instances": [{"b64": base64.b64encode(i).decode()} for i in images]}).encode()


def test_request_that_can_never_fit_gets_413_not_503(tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Each 3000x2000 JPEG needs 84 MB to prepare and fits a 200 MB budget alone; three together (252 MB) never do.
    budget = DecodeBudget(200_000_000)
    server = ModelServer(tiny_model_dir, decode_budget=budget)
    request = _vertex_request(*[_jpeg_of(3000, 2000)] * 3)

    def must_not_decode(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("an image was decoded for a request that can never fit the decode budget")

    monkeypatch.setattr("derm_cloud.serving.prepare_for_model", must_not_decode)
    for _ in range(3):  # the same answer on every try: a retry can never succeed
        with pytest.raises(RequestTooLargeError) as info:
            server.vertex_custom_predict(request)
        message = str(info.value)
        assert info.value.status == 413
        assert "3 images" in message and "decode budget of 200 MB" in message
        assert "at most 2 images like instances[0]" in message and "DERM_CLOUD_DECODE_BUDGET_MB" in message
        assert budget.used_bytes == 0


def test_two_bombs_in_one_request_get_413_at_once_on_an_idle_server(tiny_model_dir: Path, rgba_png: bytes) -> None:
    # Each 3000x3000 RGBA PNG (234 MB to prepare) fits a 300 MB budget alone, never both at once.
    server = ModelServer(tiny_model_dir, decode_budget=DecodeBudget(300_000_000))
    routes = vertex_routes(server, health_route="/health", predict_route="/predict")
    with make_http_server(routes, limits=ServerLimits()).start() as httpd:
        for _ in range(2):
            conn = http.client.HTTPConnection("127.0.0.1", httpd.port, timeout=10)
            start = time.monotonic()
            conn.request("POST", "/predict", _vertex_request(rgba_png, rgba_png), {"Content-Type": "application/json"})
            reply = conn.getresponse()
            body = json.loads(reply.read())
            conn.close()
            assert (reply.status, reply.getheader("Retry-After")) == (413, None)
            assert body["error"]["code"] == "PayloadTooLarge" and "send fewer" in body["error"]["message"]
            assert time.monotonic() - start < 1.0  # from the headers: decoding one of them takes seconds
    assert server.decode_budget.used_bytes == 0


def test_request_that_fits_an_idle_budget_gets_503_while_it_is_busy(tiny_model_dir: Path) -> None:
    budget = DecodeBudget(200_000_000)
    server = ModelServer(tiny_model_dir, decode_budget=budget)
    request = _vertex_request(*[_jpeg_of(3000, 2000)] * 2)  # 168 MB together: fits the budget when it is free
    assert budget.try_reserve(100_000_000)  # another request's images are being decoded
    with pytest.raises(ServerBusyError) as info:
        server.vertex_custom_predict(request)
    assert (info.value.status, info.value.retry_after) == (503, 2)
    assert budget.used_bytes == 100_000_000  # all or nothing: no part of the request stays reserved
    budget.release(100_000_000)
    predictions = json.loads(server.vertex_custom_predict(request).body)["predictions"]
    assert len(predictions) == 2
    assert budget.used_bytes == 0


# --- admission: bounded concurrency and queue -----------------------------------------------------------------


class Gate:
    """A POST handler that blocks in its worker thread until released: a request held in flight on purpose."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.entered = threading.Semaphore(0)

    def __call__(self, headers: Mapping[str, str], body: bytes) -> Served:
        self.entered.release()
        assert self.release.wait(10)
        return Served(json.dumps({"bytes": len(body)}).encode(), "application/json")


@pytest.fixture
def gated() -> Iterator[tuple[AdapterServer, Gate]]:
    gate = Gate()
    routes = {("POST", "/slow"): gate, ("GET", "/ping"): lambda h, b: Served(b'{"status": "ok"}', "application/json")}
    limits = ServerLimits(max_concurrency=1, max_queue=1, queue_timeout=2.0, retry_after=3)
    with make_http_server(routes, limits=limits).start() as httpd:
        yield httpd, gate
        gate.release.set()


def post_async(port: int, path: str, body: bytes) -> tuple[threading.Thread, list[Any]]:
    out: list[Any] = []

    def call() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("POST", path, body)
        reply = conn.getresponse()
        out.append((reply.status, reply.getheader("Retry-After"), reply.read()))
        conn.close()

    thread = threading.Thread(target=call)
    thread.start()
    return thread, out


def test_concurrency_limit_answers_503_with_retry_after(gated: tuple[AdapterServer, Gate]) -> None:
    httpd, gate = gated
    first, first_out = post_async(httpd.port, "/slow", b"a" * 10)
    assert gate.entered.acquire(timeout=5)  # the only worker is busy
    queued, queued_out = post_async(httpd.port, "/slow", b"b")  # admitted to the queue of one
    time.sleep(0.5)
    start = time.monotonic()
    reply, _ = raw_exchange(httpd.port, b"POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nc")
    assert status_of(reply) == 503 and b"retry-after: 3" in reply.lower()
    assert time.monotonic() - start < 1.0  # refused at once, not queued for queue_timeout (2 s)
    # The health check bypasses the queue: a busy server is not a dead one.
    conn = http.client.HTTPConnection("127.0.0.1", httpd.port, timeout=5)
    conn.request("GET", "/ping")
    assert conn.getresponse().status == 200
    conn.close()
    queued.join(5)  # waited queue_timeout (2 s) for the worker, then 503
    assert queued_out[0][:2] == (503, "3")
    gate.release.set()
    first.join(5)
    assert first_out[0][0] == 200 and json.loads(first_out[0][2]) == {"bytes": 10}


def _stall_upload(port: int, path: str, sent: bytes = b"x" * 100, declared: int = 50_000) -> socket.socket:
    """A client that sends its headers and the first bytes of its body, then nothing."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {declared}\r\n\r\n".encode() + sent)
    return sock


def _read_reply(sock: socket.socket) -> bytes:
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received


def test_stalled_uploads_do_not_lock_out_valid_requests() -> None:
    # One slot and a queue of one: before, two stalled uploads held both and every valid request got 503.
    routes = {("POST", "/echo"): lambda h, b: Served(json.dumps({"bytes": len(b)}).encode(), "application/json")}
    limits = ServerLimits(max_concurrency=1, max_queue=1, body_timeout=2.0)
    with make_http_server(routes, limits=limits).start() as httpd:
        stalled = [_stall_upload(httpd.port, "/echo") for _ in range(6)]
        try:
            time.sleep(0.3)  # every stalled body is being read
            for _ in range(3):
                conn = http.client.HTTPConnection("127.0.0.1", httpd.port, timeout=5)
                conn.request("POST", "/echo", b"y" * 5000)
                reply = conn.getresponse()
                assert (reply.status, json.loads(reply.read())) == (200, {"bytes": 5000})
                conn.close()
            start = time.monotonic()
            replies = [_read_reply(sock) for sock in stalled]  # slow bodies are still cut off: 408 and close
            assert [status_of(r) for r in replies] == [408] * 6
            assert time.monotonic() - start < 3.0
        finally:
            for sock in stalled:
                sock.close()


def test_bodies_being_read_are_bounded_in_memory() -> None:
    routes = {("POST", "/echo"): lambda h, b: Served(json.dumps({"bytes": len(b)}).encode(), "application/json")}
    limits = ServerLimits(max_body_bytes=100_000, body_buffer_bytes=250_000, body_timeout=3.0, retry_after=4)
    with make_http_server(routes, limits=limits).start() as httpd:
        # Two uploads that stall after 90 KB each hold 180 KB of the 250 KB of body buffer...
        stalled = [_stall_upload(httpd.port, "/echo", b"z" * 90_000, 100_000) for _ in range(2)]
        try:
            time.sleep(0.5)
            # ...so a third 90 KB body does not fit now: 503 with Retry-After, not an unbounded buffer.
            conn = http.client.HTTPConnection("127.0.0.1", httpd.port, timeout=5)
            conn.request("POST", "/echo", b"w" * 90_000)
            reply = conn.getresponse()
            body = json.loads(reply.read())
            conn.close()
            assert (reply.status, reply.getheader("Retry-After")) == (503, "4")
            assert "DERM_CLOUD_BODY_BUFFER_MB" in body["error"]["message"]
            conn = http.client.HTTPConnection("127.0.0.1", httpd.port, timeout=5)
            conn.request("POST", "/echo", b"v" * 50_000)  # a smaller one still fits next to them
            assert conn.getresponse().status == 200
            conn.close()
        finally:
            for sock in stalled:
                sock.close()
        time.sleep(0.3)  # their reads ended when they closed: the whole buffer is free again
        conn = http.client.HTTPConnection("127.0.0.1", httpd.port, timeout=5)
        conn.request("POST", "/echo", b"u" * 100_000)
        assert conn.getresponse().status == 200
        conn.close()


def test_body_buffer_must_hold_one_largest_body() -> None:
    with pytest.raises(ConfigError, match="body_buffer_bytes .* at least max_body_bytes"):
        ServerLimits(max_body_bytes=10_000_000, body_buffer_bytes=5_000_000)


# --- timeouts ------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def strict_server(tiny_model_dir: Path) -> Iterator[AdapterServer]:
    limits = ServerLimits(header_timeout=0.5, body_timeout=0.5, keepalive_timeout=3, max_connections=4)
    with make_http_server(sagemaker_routes(ModelServer(tiny_model_dir)), limits=limits).start() as httpd:
        yield httpd


def test_slowloris_closed_after_header_timeout(strict_server: AdapterServer) -> None:
    reply, elapsed = raw_exchange(strict_server.port, b"POST /invocations HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    assert status_of(reply) == 408 and b"connection: close" in reply.lower()
    assert 0.4 < elapsed < 2.5
    silent, elapsed = raw_exchange(strict_server.port, b"")  # connected, never sends a byte
    assert status_of(silent) == 408 and elapsed < 2.5


def test_header_timeout_applies_to_each_request_on_a_kept_alive_connection(
    strict_server: AdapterServer, jpeg: bytes
) -> None:
    with socket.create_connection(("127.0.0.1", strict_server.port), timeout=5) as sock:
        sock.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
        first = sock.recv(65536)
        while b"\r\n\r\n" not in first:
            first += sock.recv(65536)
        head, body = first.split(b"\r\n\r\n", 1)
        length = int(next(h.split(b":")[1] for h in head.lower().split(b"\r\n") if h.startswith(b"content-length")))
        while len(body) < length:  # the whole first response, so the next read is the second answer
            body += sock.recv(65536)
        assert status_of(first) == 200
        start = time.monotonic()
        sock.sendall(b"POST /invocations HTTP/1.1\r\nHost: x\r\n")  # the second head never ends
        second = b""
        while chunk := sock.recv(65536):
            second += chunk
        assert status_of(second) == 408 and time.monotonic() - start < 2.5


def test_stalled_body_gets_408_after_body_timeout(strict_server: AdapterServer) -> None:
    head = b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nContent-Length: 1000\r\n\r\n"
    reply, elapsed = raw_exchange(strict_server.port, head + b"\xff\xd8" * 5)
    assert status_of(reply) == 408 and b"RequestTimeout" in reply
    assert elapsed < 2.5


def test_connection_cap_answers_503(strict_server: AdapterServer) -> None:
    held = [socket.create_connection(("127.0.0.1", strict_server.port), timeout=5) for _ in range(4)]
    try:
        reply, elapsed = raw_exchange(strict_server.port, b"")
        assert status_of(reply) == 503 and b"retry-after: 1" in reply.lower() and elapsed < 1.0
    finally:
        for sock in held:
            sock.close()


# --- framing: chunked bodies, Content-Length --------------------------------------------------------------------


def test_chunked_body_is_read_whole(strict_server: AdapterServer, tiny_model_dir: Path, jpeg: bytes) -> None:
    pieces = [jpeg[i : i + 4096] for i in range(0, len(jpeg), 4096)]
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
    head = b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nTransfer-Encoding: chunked\r\n"
    reply, _ = raw_exchange(strict_server.port, head + b"Connection: close\r\n\r\n" + chunked)
    assert status_of(reply) == 200
    payload = json.loads(reply.split(b"\r\n\r\n", 1)[1])
    with LocalOnnxClassifier(tiny_model_dir) as clf:
        expected = [s.score for s in clf.predict(jpeg).provider_scores]
    np.testing.assert_allclose(payload["probabilities"], expected, atol=1e-6)


@pytest.mark.parametrize(
    "headers",
    [
        b"Content-Length: 4\r\nContent-Length: 4\r\n",  # identical duplicates: h11 alone would merge them
        b"Content-Length: 4\r\nContent-Length: 40\r\n",
        b"Content-Length: 4, 4\r\n",
        b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n",  # request smuggling through a proxy
    ],
)
def test_ambiguous_length_refused(strict_server: AdapterServer, headers: bytes) -> None:
    reply, elapsed = raw_exchange(
        strict_server.port, b"POST /invocations HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\nabcd"
    )
    assert status_of(reply) == 400 and b"connection: close" in reply.lower() and elapsed < 1.0
    assert b"Content-Length" in reply.split(b"\r\n\r\n", 1)[1]  # the message names the problem


# --- configuration ------------------------------------------------------------------------------------------------


def test_limits_from_env() -> None:
    limits = ServerLimits.from_env({"DERM_CLOUD_MAX_CONCURRENCY": "3", "DERM_CLOUD_DECODE_BUDGET_MB": "800"})
    assert (limits.max_concurrency, limits.decode_budget_bytes) == (3, 800_000_000)
    assert ServerLimits.from_env({"DERM_CLOUD_HEADER_TIMEOUT": "2.5"}).header_timeout == 2.5
    with pytest.raises(ConfigError, match="DERM_CLOUD_MAX_QUEUE='lots' is not a number"):
        ServerLimits.from_env({"DERM_CLOUD_MAX_QUEUE": "lots"})
    with pytest.raises(ConfigError, match="max_concurrency must be at least 1"):
        ServerLimits.from_env({"DERM_CLOUD_MAX_CONCURRENCY": "0"})
    with pytest.raises(ConfigError, match="whole number"):
        ServerLimits.from_env({"DERM_CLOUD_MAX_CONNECTIONS": "1.5"})


def test_server_busy_error_shape() -> None:
    error = ServerBusyError("busy", retry_after=0)
    assert (error.status, error.retry_after) == (503, 1)  # Retry-After is at least one whole second
