"""Load and hostile traffic against the SageMaker and Vertex HTTP adapters on 127.0.0.1, one adapter at a time.

For each adapter it starts ``adapters/<cloud>/...`` as a subprocess (as the cloud would), warms it up, then:

1. **Never-fitting requests, idle server.** Three tries each of one request holding five 6000x4000 JPEGs (24 MP
   photos, 336 MB each to prepare) and one holding two 7071x7071 RGBA PNGs (1.3 GB each): each image fits the
   1,500 MB decode budget, the request never does. Expected: 413 at once, every time (never 503 + Retry-After).
2. **Stalled uploads.** ``--stalled-uploads`` connections (40) send their headers and 100 of 50,000 body bytes,
   then nothing (reopened when the server closes them); after ``--stall-settle`` seconds, ``--clients`` valid
   clients run for ``--stall-duration`` seconds. Expected: every valid request 200.
3. **Load with a hostile mix.** For ``--duration`` seconds, ``--clients`` keep-alive clients send real HAM10000
   dev images (HAM10000, Tschandl et al. 2018, CC BY-NC 4.0, read in place) while alongside run: bursts of four
   concurrent 7071x7071 RGBA PNGs (194 KB each, 200 MB decoded, ~1.2 GB to prepare); ``--stalled`` connections
   that send half a request head and then nothing (slowloris); the stalled uploads of phase 2; a client sending
   valid images as chunked bodies, and one whose bodies stall half-way.

It prints what the never-fitting requests got and how fast, the valid requests' statuses during the stalled
uploads, throughput, p50/p99 latency and errors of the valid requests under load, what the hostile requests got,
and the server's RSS: after start, after warm-up, peak and at the end (growth = end vs after warm-up).
``--source`` runs another checkout's adapters and ``derm_cloud`` (e.g. ``--source /path/to/main`` for the
before figures).

    python benchmarks/adapter_load.py [--adapter sagemaker|vertex|all] [--duration 30] [--clients 16]
        [--stalled-uploads 40] [--stall-duration 15] [--model-dir sklesion] [--source .] [--no-hostile]
    python benchmarks/adapter_load.py --measure-decode   # peak RSS of decoding, for the decode budget factors
    python benchmarks/adapter_load.py --fd-limit 64      # log lines and CPU at the open-file limit [--source]
"""

from __future__ import annotations

import argparse
import base64
import csv
import http.client
import io
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[1]
DEV_CSV = ROOT.parent / "shared" / "data" / "ham10000" / "dev.csv"
VERTEX_ROUTE = "/predict"
_JSON = "application/json"


@dataclass
class Tally:
    """Outcomes of one kind of traffic (thread-safe enough: list.append and Counter updates under the GIL)."""

    latencies: list[float] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)


class Adapter:
    """An adapter subprocess and how to phrase a request to it."""

    def __init__(self, cloud: str, source: Path, model_dir: Path, env: dict[str, str]) -> None:
        self.cloud = cloud
        script = source / "adapters" / ("sagemaker/serve.py" if cloud == "sagemaker" else "vertex/server.py")
        args = ["serve", "--model-dir", str(model_dir)] if cloud == "sagemaker" else ["--model-dir", str(model_dir)]
        full_env = {**os.environ, "PYTHONPATH": str(source), "AIP_PREDICT_ROUTE": VERTEX_ROUTE, **env}
        self.proc = subprocess.Popen(
            [sys.executable, str(script), *args, "--host", "127.0.0.1", "--port", "0"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=full_env,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if "listening on" not in line:
            raise SystemExit(f"{cloud} adapter did not start: {line!r}")
        self.port = int(line.rsplit(":", 1)[1])
        self.ps = psutil.Process(self.proc.pid)

    def request(self, image: bytes) -> tuple[str, bytes, dict[str, str]]:
        if self.cloud == "sagemaker":
            return "/invocations", image, {"Content-Type": "application/x-image"}
        return self.batch_request([image])

    def batch_request(self, images: list[bytes]) -> tuple[str, bytes, dict[str, str]]:
        """One JSON request holding several images (both adapters take ``{"instances": [{"b64": ...}]}``)."""
        body = json.dumps({"instances": [{"b64": base64.b64encode(i).decode()} for i in images]}).encode()
        return ("/invocations" if self.cloud == "sagemaker" else VERTEX_ROUTE), body, {"Content-Type": _JSON}

    def rss_mb(self) -> float:
        return float(self.ps.memory_info().rss) / 1e6

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def post(conn: http.client.HTTPConnection, path: str, body: bytes, headers: dict[str, str]) -> int:
    conn.request("POST", path, body, headers)
    reply = conn.getresponse()
    reply.read()
    if reply.getheader("Connection", "").lower() == "close":
        conn.close()
    return reply.status


def valid_client(adapter: Adapter, images: list[bytes], stop: threading.Event, tally: Tally, seed: int) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", adapter.port, timeout=120)
    i = seed
    while not stop.is_set():
        path, body, headers = adapter.request(images[i % len(images)])
        i += 1
        start = time.perf_counter()
        try:
            status = post(conn, path, body, headers)
        except (OSError, http.client.HTTPException) as exc:
            tally.errors.append(type(exc).__name__)
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", adapter.port, timeout=120)
            continue
        tally.statuses[str(status)] += 1
        if status == 200:
            tally.latencies.append(time.perf_counter() - start)
        else:
            tally.errors.append(str(status))
    conn.close()


def bomb_bursts(adapter: Adapter, bomb: bytes, stop: threading.Event, tally: Tally, every: float) -> None:
    """Four concurrent bombs, then a pause, until stopped; each burst waits for its four answers."""
    path, body, headers = adapter.request(bomb)

    def one() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", adapter.port, timeout=300)
        try:
            tally.statuses[str(post(conn, path, body, headers))] += 1
        except (OSError, http.client.HTTPException) as exc:
            tally.statuses[type(exc).__name__] += 1
        finally:
            conn.close()

    while not stop.is_set():
        burst = [threading.Thread(target=one) for _ in range(4)]
        for t in burst:
            t.start()
        for t in burst:
            t.join()
        stop.wait(every)


def stalled_connections(adapter: Adapter, count: int, stop: threading.Event, tally: Tally) -> None:
    """``count`` slowloris connections held open, each reopened when the server closes it."""
    socks: list[socket.socket | None] = [None] * count
    while not stop.is_set():
        for i in range(count):
            sock = socks[i]
            if sock is not None:
                try:
                    sock.setblocking(False)
                    if sock.recv(4096) == b"":
                        raise ConnectionResetError
                    tally.statuses["closed-with-answer"] += 1
                    raise ConnectionResetError
                except BlockingIOError:
                    continue  # still open, still stalled
                except OSError:
                    sock.close()
                    socks[i] = None
            try:
                sock = socket.create_connection(("127.0.0.1", adapter.port), timeout=5)
                sock.sendall(b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n")
                socks[i] = sock
                tally.statuses["opened"] += 1
            except OSError as exc:
                tally.statuses[f"open-failed:{type(exc).__name__}"] += 1
        stop.wait(0.5)
    for sock in socks:
        if sock is not None:
            sock.close()


def stalled_uploads(adapter: Adapter, count: int, stop: threading.Event, tally: Tally) -> None:
    """``count`` uploads that send headers and 100 of 50,000 body bytes, then stall; reopened when answered."""
    path, _, headers = adapter.request(b"")
    head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {headers['Content-Type']}\r\n"
    head += "Content-Length: 50000\r\n\r\n"
    socks: list[tuple[socket.socket, float] | None] = [None] * count
    while not stop.is_set():
        for i in range(count):
            held = socks[i]
            if held is not None:
                sock, opened = held
                try:
                    sock.setblocking(False)
                    data = sock.recv(4096)
                except BlockingIOError:
                    continue  # still stalled, still unanswered
                except OSError:
                    data = b""
                status = data.split(b" ", 2)[1].decode() if data.startswith(b"HTTP/") else "closed"
                tally.statuses[f"{status} after {time.monotonic() - opened:.0f}s"] += 1
                sock.close()
                socks[i] = None
            try:
                sock = socket.create_connection(("127.0.0.1", adapter.port), timeout=5)
                sock.sendall(head.encode() + b"x" * 100)
                socks[i] = (sock, time.monotonic())
                tally.statuses["opened"] += 1
            except OSError as exc:
                tally.statuses[f"open-failed:{type(exc).__name__}"] += 1
        stop.wait(0.5)
    for held in socks:
        if held is not None:
            held[0].close()


def never_fitting(adapter: Adapter, name: str, images: list[bytes], tries: int) -> dict[str, Any]:
    """``tries`` sequential sends of one request whose images never fit the decode budget together."""
    path, body, headers = adapter.batch_request(images)
    statuses: Counter[str] = Counter()
    seconds: list[float] = []
    message = ""
    for _ in range(tries):
        conn = http.client.HTTPConnection("127.0.0.1", adapter.port, timeout=300)
        start = time.perf_counter()
        try:
            conn.request("POST", path, body, headers)
            reply = conn.getresponse()
            payload = reply.read()
            retry_after = reply.getheader("Retry-After")
            statuses[f"{reply.status}" + (f" Retry-After {retry_after}" if retry_after else "")] += 1
            if reply.status != 200:
                message = json.loads(payload)["error"]["message"]
        except (OSError, http.client.HTTPException) as exc:
            statuses[type(exc).__name__] += 1
        finally:
            conn.close()
        seconds.append(time.perf_counter() - start)
    return {
        "request": name,
        "body_kb": len(body) // 1000,
        "statuses": dict(statuses),
        "max_s": max(seconds),
        "message": message,
    }


def stalled_phase(adapter: Adapter, args: argparse.Namespace, images: list[bytes]) -> dict[str, Any]:
    """Valid clients while ``--stalled-uploads`` uploads stall: every valid request should get 200."""
    uploads, valid = Tally(), Tally()
    stop_uploads, stop_valid = threading.Event(), threading.Event()
    holder = threading.Thread(target=stalled_uploads, args=(adapter, args.stalled_uploads, stop_uploads, uploads))
    holder.start()
    time.sleep(args.stall_settle)  # every stalled upload is connected and its body is being read
    clients = [
        threading.Thread(target=valid_client, args=(adapter, images, stop_valid, valid, i)) for i in range(args.clients)
    ]
    start = time.perf_counter()
    for t in clients:
        t.start()
    time.sleep(args.stall_duration)
    stop_valid.set()
    for t in clients:
        t.join()
    elapsed = time.perf_counter() - start
    stop_uploads.set()
    holder.join()
    return {
        "valid_statuses": dict(valid.statuses),
        "valid_errors": dict(Counter(valid.errors)),
        "valid_per_s": len(valid.latencies) / elapsed,
        "uploads": dict(uploads.statuses),
    }


def chunked_client(adapter: Adapter, images: list[bytes], stop: threading.Event, tally: Tally) -> None:
    """Valid images sent as chunked bodies (4 KiB chunks), one request per connection."""
    i = 0
    while not stop.is_set():
        path, body, headers = adapter.request(images[i % len(images)])
        i += 1
        chunks = b"".join(
            b"%x\r\n%s\r\n" % (len(body[o : o + 4096]), body[o : o + 4096]) for o in range(0, len(body), 4096)
        )
        head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {headers['Content-Type']}\r\n"
        head += "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        try:
            with socket.create_connection(("127.0.0.1", adapter.port), timeout=120) as sock:
                sock.sendall(head.encode() + chunks + b"0\r\n\r\n")
                reply = b""
                while chunk := sock.recv(65536):
                    reply += chunk
            tally.statuses[reply.split(b" ", 2)[1].decode() if reply else "empty"] += 1
        except OSError as exc:
            tally.statuses[type(exc).__name__] += 1
        stop.wait(0.2)


def stalled_body_client(adapter: Adapter, image: bytes, stop: threading.Event, tally: Tally) -> None:
    """Headers and half a body, then silence, until the server gives up on it."""
    path, body, headers = adapter.request(image)
    while not stop.is_set():
        head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {headers['Content-Type']}\r\n"
        head += f"Content-Length: {len(body)}\r\n\r\n"
        try:
            with socket.create_connection(("127.0.0.1", adapter.port), timeout=5) as sock:
                sock.sendall(head.encode() + body[: len(body) // 2])
                sock.settimeout(None)
                start = time.monotonic()
                while not stop.is_set():
                    sock.settimeout(1.0)
                    try:
                        data = sock.recv(65536)
                    except TimeoutError:
                        continue
                    status = data.split(b" ", 2)[1].decode() if data else "closed"
                    tally.statuses[f"{status} after {time.monotonic() - start:.0f}s"] += 1
                    break
        except OSError as exc:
            tally.statuses[type(exc).__name__] += 1


def run_adapter(
    cloud: str, args: argparse.Namespace, images: list[bytes], bomb: bytes, photos: list[bytes]
) -> dict[str, Any]:
    adapter = Adapter(cloud, Path(args.source).resolve(), args.model_dir, {})
    result: dict[str, Any] = {"adapter": cloud}
    try:
        rss_start = adapter.rss_mb()
        warm = Tally()
        stop = threading.Event()
        clients = [
            threading.Thread(target=valid_client, args=(adapter, images, stop, warm, i)) for i in range(args.clients)
        ]
        for t in clients:
            t.start()
        time.sleep(args.warmup)
        stop.set()
        for t in clients:
            t.join()
        rss_warm = adapter.rss_mb()

        result["never_fitting"] = [
            never_fitting(adapter, f"5 x 6000x4000 JPEG ({len(photos[0]) // 1000} KB each)", photos, 3),
            never_fitting(adapter, f"2 x 7071x7071 RGBA PNG ({len(bomb) // 1000} KB each)", [bomb, bomb], 3),
        ]
        if args.stalled_uploads:
            result["stalled_phase"] = stalled_phase(adapter, args, images)

        valid, bombs, stalled, chunked, stalled_body = Tally(), Tally(), Tally(), Tally(), Tally()
        uploads = Tally()
        stop = threading.Event()
        threads = [
            threading.Thread(target=valid_client, args=(adapter, images, stop, valid, i)) for i in range(args.clients)
        ]
        if args.hostile:
            threads += [
                threading.Thread(target=bomb_bursts, args=(adapter, bomb, stop, bombs, 5.0)),
                threading.Thread(target=stalled_connections, args=(adapter, args.stalled, stop, stalled)),
                threading.Thread(target=stalled_uploads, args=(adapter, args.stalled_uploads, stop, uploads)),
                threading.Thread(target=chunked_client, args=(adapter, images, stop, chunked)),
                threading.Thread(target=stalled_body_client, args=(adapter, images[0], stop, stalled_body)),
            ]
        peaks = [rss_warm]
        sampling = threading.Event()

        def sample() -> None:  # until every request, bombs included, is answered
            while not sampling.is_set():
                peaks.append(adapter.rss_mb())
                time.sleep(0.05)

        sampler = threading.Thread(target=sample)
        sampler.start()
        start = time.perf_counter()
        for t in threads:
            t.start()
        time.sleep(args.duration)
        stop.set()
        elapsed = time.perf_counter() - start
        for t in threads:
            t.join(timeout=300)
        sampling.set()
        sampler.join()
        peak = max(peaks)
        time.sleep(1.0)
        rss_end = adapter.rss_mb()
        lat = sorted(valid.latencies)
        result |= {
            "valid_ok": len(lat),
            "throughput": len(lat) / elapsed,
            "p50_ms": 1000 * statistics.median(lat) if lat else float("nan"),
            "p99_ms": 1000 * lat[min(len(lat) - 1, int(0.99 * len(lat)))] if lat else float("nan"),
            "valid_errors": len(valid.errors),
            "valid_error_kinds": dict(Counter(valid.errors)),
            "bombs": dict(bombs.statuses),
            "stalled": dict(stalled.statuses),
            "stalled_uploads": dict(uploads.statuses),
            "chunked": dict(chunked.statuses),
            "stalled_body": dict(stalled_body.statuses),
            "rss_start_mb": rss_start,
            "rss_warm_mb": rss_warm,
            "rss_peak_mb": peak,
            "rss_end_mb": rss_end,
            "rss_growth_pct": 100 * (rss_end - rss_warm) / rss_warm,
        }
    finally:
        adapter.stop()
    return result


def make_bomb() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGBA", (7071, 7071), (200, 120, 90, 255)).save(buf, "PNG")
    return buf.getvalue()


def make_photos(images: list[bytes], count: int = 5) -> list[bytes]:
    """``count`` 24 MP JPEGs (dev images upscaled to 6000x4000, quality 85: under 1 MB each, so five fit the body
    limit as base64); each needs 336 MB to prepare, five 1,680 MB, over the default 1,500 MB decode budget."""
    from PIL import Image

    photos = []
    for data in images[:count]:
        buf = io.BytesIO()
        Image.open(io.BytesIO(data)).convert("RGB").resize((6000, 4000), Image.Resampling.BICUBIC).save(
            buf, "JPEG", quality=85
        )
        photos.append(buf.getvalue())
    return photos


_DECODE_PROBE = """
import sys
from derm_cloud.images import load_image

def peak_rss():  # VmHWM: this process's peak RSS since the last reset
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024

data = open(sys.argv[1], "rb").read()
with open("/proc/self/clear_refs", "w") as fh:
    fh.write("5")  # reset the peak: a child starts with its parent's (Linux)
before = peak_rss()
image = load_image(data)
print(peak_rss() - before)
"""


def measure_decode() -> None:
    """Peak RSS of load_image per decoded byte, for a transparent and an opaque image (one process each)."""
    import tempfile

    from PIL import Image

    from derm_cloud.serving_limits import estimate_decode

    cases = {
        "7071x7071 RGBA PNG": (Image.new("RGBA", (7071, 7071), (200, 120, 90, 255)), "PNG"),
        "6000x4000 RGB JPEG": (Image.new("RGB", (6000, 4000), (10, 200, 30)), "JPEG"),
    }
    print("| image | decoded MB | peak RSS of load_image MB | peak / (w x h x 4) | estimate MB |")
    print("|---|---|---|---|---|")
    for name, (image, fmt) in cases.items():
        with tempfile.NamedTemporaryFile(suffix="." + fmt.lower()) as fh:
            image.save(fh, fmt)
            fh.flush()
            data = Path(fh.name).read_bytes()
            out = subprocess.run([sys.executable, "-c", _DECODE_PROBE, fh.name], capture_output=True, text=True)
        peak = int(out.stdout.strip())
        estimate = estimate_decode(data)
        assert estimate is not None
        pillow_bytes = estimate.width * estimate.height * 4
        print(
            f"| {name} | {estimate.decoded_bytes / 1e6:,.0f} | {peak / 1e6:,.0f} | {peak / pillow_bytes:.2f} "
            f"| {estimate.working_bytes / 1e6:,.0f} |"
        )


def measure_fd_limit(args: argparse.Namespace, limit: int, hold: float = 5.0) -> None:
    """The SageMaker adapter under ``ulimit -n limit`` with ``limit + 40`` connections held ``hold`` seconds:
    what it logs (lines, tracebacks), the CPU it spends while accept() fails, and whether it serves afterwards."""
    import resource
    import tempfile

    def lower_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))

    source = Path(args.source).resolve()
    with tempfile.TemporaryFile("w+") as log:  # a file: a full pipe would block the server's logging
        proc = subprocess.Popen(
            [
                sys.executable,
                str(source / "adapters/sagemaker/serve.py"),
                "serve",
                "--model-dir",
                str(args.model_dir),
                "--host",
                "127.0.0.1",
                "--port",
                "0",
            ],
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            env={**os.environ, "PYTHONPATH": str(source)},
            preexec_fn=lower_limit,
        )
        assert proc.stdout is not None
        port = int(proc.stdout.readline().rsplit(":", 1)[1])
        ps = psutil.Process(proc.pid)
        cpu_before = sum(ps.cpu_times()[:2])
        held = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(limit + 40)]
        time.sleep(hold)
        cpu = sum(ps.cpu_times()[:2]) - cpu_before
        for sock in held:
            sock.close()
        start = time.perf_counter()
        status = "no answer"
        while time.perf_counter() - start < 15:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                conn.request("GET", "/ping")
                status = str(conn.getresponse().status)
                conn.close()
                break
            except OSError:
                time.sleep(0.2)
        recovered = time.perf_counter() - start
        proc.terminate()
        proc.wait(timeout=40)
        log.seek(0)
        text = log.read()
    accept_lines = [line for line in text.splitlines() if "accept" in line and not line.startswith(" ")]
    print(f"source: {source}  ulimit -n {limit}, {limit + 40} connections held {hold:g} s")
    print("| log lines | lines about accept() | tracebacks | CPU s while held | /ping after closing |")
    print("|---|---|---|---|---|")
    print(
        f"| {len(text.splitlines()):,} | {len(accept_lines):,} | {text.count('Traceback'):,} | {cpu:.2f} "
        f"| {status} after {recovered:.1f} s |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--adapter", choices=["sagemaker", "vertex", "all"], default="all")
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--stalled", type=int, default=200, help="slowloris connections held open")
    parser.add_argument("--stalled-uploads", type=int, default=40, help="uploads stalled after 100 body bytes")
    parser.add_argument("--stall-settle", type=float, default=2.0, help="seconds the uploads stall before phase 2")
    parser.add_argument("--stall-duration", type=float, default=15.0, help="seconds of valid traffic in phase 2")
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--model-dir", default="sklesion")
    parser.add_argument("--source", default=str(ROOT), help="checkout whose adapters/ and derm_cloud/ are run")
    parser.add_argument("--no-hostile", dest="hostile", action="store_false")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--measure-decode", action="store_true")
    parser.add_argument("--fd-limit", type=int, help="only measure the adapter at this open-file limit")
    args = parser.parse_args()
    if args.measure_decode:
        measure_decode()
        return
    from derm_cloud.models.cache import resolve_model_dir

    args.model_dir = resolve_model_dir(args.model_dir)
    if args.fd_limit:
        measure_fd_limit(args, args.fd_limit)
        return
    with DEV_CSV.open() as fh:
        images = [(DEV_CSV.parent / r["file"]).read_bytes() for r in list(csv.DictReader(fh))[: args.images]]
    bomb = make_bomb()
    photos = make_photos(images)
    clouds = ["sagemaker", "vertex"] if args.adapter == "all" else [args.adapter]
    results = [run_adapter(cloud, args, images, bomb, photos) for cloud in clouds]
    mix = (
        f"{args.stalled} stalled connections, {args.stalled_uploads} stalled uploads, 4 x {len(bomb) // 1000} KB "
        "7071x7071 RGBA PNG bursts, chunked and stalled-body clients"
        if args.hostile
        else "none"
    )
    print(f"load average at the end: {os.getloadavg()[0]:.1f} {os.getloadavg()[1]:.1f} {os.getloadavg()[2]:.1f}")
    print("\nNever-fitting requests on the idle server (3 tries each):")
    print("| adapter | request | body KB | answers | slowest s |")
    print("|---|---|---|---|---|")
    for r in results:
        for nf in r["never_fitting"]:
            answers = ", ".join(f"{n} x {s}" for s, n in nf["statuses"].items())
            print(f"| {r['adapter']} | {nf['request']} | {nf['body_kb']:,} | {answers} | {nf['max_s']:.2f} |")
    for r in results:
        for nf in r["never_fitting"]:
            print(f"{r['adapter']}, {nf['request']}: {nf['message']}")
    if args.stalled_uploads:
        print(
            f"\nValid requests while {args.stalled_uploads} uploads stall ({args.clients} clients, "
            f"{args.stall_duration:g} s):"
        )
        print("| adapter | valid answers | req/s | the stalled uploads got |")
        print("|---|---|---|---|")
        for r in results:
            sp = r["stalled_phase"]
            # Statuses, then transport errors (valid_errors repeats the non-200 statuses: left out)
            failures = {k: n for k, n in sp["valid_errors"].items() if not k.isdigit()}
            answers = ", ".join(f"{n} x {s}" for s, n in {**sp["valid_statuses"], **failures}.items())
            print(f"| {r['adapter']} | {answers} | {sp['valid_per_s']:.1f} | {sp['uploads']} |")
    print()
    print(
        f"source: {Path(args.source).resolve()}  clients: {args.clients}  duration: {args.duration:g} s  hostile: {mix}"
    )
    print("| adapter | req/s | p50 ms | p99 ms | valid errors | RSS start / warm / peak / end MB | growth |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['adapter']} | {r['throughput']:.1f} | {r['p50_ms']:.0f} | {r['p99_ms']:.0f} | {r['valid_errors']} "
            f"| {r['rss_start_mb']:.0f} / {r['rss_warm_mb']:.0f} / {r['rss_peak_mb']:.0f} / {r['rss_end_mb']:.0f} "
            f"| {r['rss_growth_pct']:+.1f}% |"
        )
    for r in results:
        print(
            f"{r['adapter']}: valid error kinds {r['valid_error_kinds']}; bombs {r['bombs']}; "
            f"stalled {r['stalled']}; chunked {r['chunked']}; stalled body {r['stalled_body']}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
