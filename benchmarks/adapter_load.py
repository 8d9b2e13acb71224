"""Load and hostile traffic against the SageMaker and Vertex HTTP adapters on 127.0.0.1, one adapter at a time.

For each adapter it starts ``adapters/<cloud>/...`` as a subprocess (as the cloud would), warms it up, then for
``--duration`` seconds runs ``--clients`` keep-alive clients sending real HAM10000 dev images (HAM10000,
Tschandl et al. 2018, CC BY-NC 4.0, read in place) while a hostile mix runs alongside:

* bursts of four concurrent 7071x7071 RGBA PNGs (194 KB each, 200 MB decoded, ~1.2 GB to prepare);
* ``--stalled`` connections that send half a request head and then nothing (slowloris), reopened when closed;
* a client sending valid images as chunked bodies, and one whose bodies stall half-way.

It prints throughput, p50/p99 latency and errors of the valid requests, what the hostile requests got, and the
server's RSS: after start, after warm-up, peak and at the end (growth = end vs after warm-up). ``--source``
runs another checkout's adapters and ``derm_cloud`` (e.g. ``--source /path/to/main`` for the before figures).

    python benchmarks/adapter_load.py [--adapter sagemaker|vertex|all] [--duration 30] [--clients 16]
        [--model-dir sklesion] [--source .] [--no-hostile]
    python benchmarks/adapter_load.py --measure-decode   # peak RSS of decoding, for the decode budget factors
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
        body = json.dumps({"instances": [{"b64": base64.b64encode(image).decode()}]}).encode()
        return VERTEX_ROUTE, body, {"Content-Type": "application/json"}

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


def run_adapter(cloud: str, args: argparse.Namespace, images: list[bytes], bomb: bytes) -> dict[str, Any]:
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

        valid, bombs, stalled, chunked, stalled_body = Tally(), Tally(), Tally(), Tally(), Tally()
        stop = threading.Event()
        threads = [
            threading.Thread(target=valid_client, args=(adapter, images, stop, valid, i)) for i in range(args.clients)
        ]
        if args.hostile:
            threads += [
                threading.Thread(target=bomb_bursts, args=(adapter, bomb, stop, bombs, 5.0)),
                threading.Thread(target=stalled_connections, args=(adapter, args.stalled, stop, stalled)),
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--adapter", choices=["sagemaker", "vertex", "all"], default="all")
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--stalled", type=int, default=200, help="slowloris connections held open")
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--model-dir", default="sklesion")
    parser.add_argument("--source", default=str(ROOT), help="checkout whose adapters/ and derm_cloud/ are run")
    parser.add_argument("--no-hostile", dest="hostile", action="store_false")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--measure-decode", action="store_true")
    args = parser.parse_args()
    if args.measure_decode:
        measure_decode()
        return
    from derm_cloud.models.cache import resolve_model_dir

    args.model_dir = resolve_model_dir(args.model_dir)
    with DEV_CSV.open() as fh:
        images = [(DEV_CSV.parent / r["file"]).read_bytes() for r in list(csv.DictReader(fh))[: args.images]]
    bomb = make_bomb()
    clouds = ["sagemaker", "vertex"] if args.adapter == "all" else [args.adapter]
    results = [run_adapter(cloud, args, images, bomb) for cloud in clouds]
    mix = (
        f"{args.stalled} stalled connections, 4 x {len(bomb) // 1000} KB 7071x7071 RGBA PNG bursts, chunked and "
        "stalled-body clients"
        if args.hostile
        else "none"
    )
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
