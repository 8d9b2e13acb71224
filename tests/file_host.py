"""One local file host for the `derm-cloud data fetch` tests: files by path, Range support, scripted faults.

`test_data_fetch.py` and `test_data_fetch_integrity.py` both need a mirror that misbehaves the way real hosts do;
one server keeps the two suites agreeing on what a resume or a cut connection looks like on the wire.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from derm_cloud.data.download import mirror_url

FAULTS = ("cut", "no-length-cut", "range-from-zero", "range-elsewhere", "stall")


class FileHost:
    """Serves `files[path]` with Range support; `faults[path]` makes the next answer(s) for that path misbehave.

    Faults, each used once, in order:

    - `"cut"`: the full Content-Length, half the body, then close (a dropped connection the client can see);
    - `"no-length-cut"`: no Content-Length, half the body, then close (the client cannot tell it is short);
    - `"range-from-zero"` / `"range-elsewhere"`: a resume answered with 206 whose Content-Range starts at 0, or
      7 bytes past the offset asked for;
    - `"stall"`: headers, then silence until the test ends.

    `log` records `(path, Range header)` per request.
    """

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.faults: dict[str, list[str]] = {}
        self.log: list[tuple[str, str | None]] = []
        self.release = threading.Event()
        host = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                path = self.path.split("?")[0]
                rng = self.headers.get("Range")
                host.log.append((path, rng))
                body = host.files.get(path)
                if body is None:
                    self.send_error(404)
                    return
                queue = host.faults.get(path) or []
                fault = queue.pop(0) if queue else None
                start = int(rng.split("=")[1].split("-")[0]) if rng else 0
                if fault == "no-length-cut":
                    self.send_response(200)
                    self.end_headers()  # HTTP/1.0, no Content-Length: the body ends when the connection closes
                    self.wfile.write(body[: len(body) // 2])
                    self.close_connection = True
                    return
                if fault == "stall":
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.flush()
                    host.release.wait(30)
                    return
                if rng and fault in ("range-from-zero", "range-elsewhere"):
                    start = 0 if fault == "range-from-zero" else min(start + 7, len(body) - 1)
                if rng and start >= len(body):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(body)}")
                    self.end_headers()
                    return
                self.send_response(206 if rng else 200)
                self.send_header("Content-Length", str(len(body) - start))
                if rng:
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                self.end_headers()
                if fault == "cut":
                    self.wfile.write(body[start : start + (len(body) - start) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body[start:])

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}/m"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def put(self, url: str, body: bytes, *faults: str) -> str:
        """Serve `body` where the mirror maps the real `url`; the faults apply to its next answers, in order."""
        unknown = set(faults) - set(FAULTS)
        assert not unknown, f"unknown fault(s) {sorted(unknown)}; known: {FAULTS}"
        path = mirror_url(url, "/m").split("?")[0]
        self.files[path] = body
        self.faults[path] = list(faults)
        return path

    def fail_next(self, path: str, *faults: str) -> None:
        """Queue faults for the next answers on a path already served."""
        self.faults.setdefault(path, []).extend(faults)

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@contextmanager
def file_host() -> Iterator[FileHost]:
    """A started `FileHost`, shut down (stalled answers released) on exit."""
    host = FileHost()
    try:
        yield host
    finally:
        host.close()
