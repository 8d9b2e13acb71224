"""The Ray executor at 10,000 and 100,000 images: flat memory, and its throughput against the local executor.

What is measured is the executor, not a model: the images are generated (32x32 PNG, each drawn from its own
seed, written once into the work folder and listed in a CSV manifest) and the backend is the test suite's tiny
ONNX model (`derm_cloud.testing.tiny_models`, `local-onnx`). The quality pass is the one scenario run.

Each (executor, size) runs in a fresh process (peak RSS is a high-water mark), side by side in one run, sizes
in increasing order and, for each size, the Ray executor then the local executor, with the load average
(`uptime`) before each:

* **ray**: `RayExecutor` on a local Ray instance of `--cpus` CPUs, `--actors` actors, `--shard-size` images a
  shard, the manifest read a shard at a time (`ManifestSamples`), results written to `runs.sqlite` as shards
  finish. Memory: peak RSS of the driver (`ru_maxrss`) and the peak, sampled every 0.5 s, of the sum of the
  RSS of the shard workers (`ray::ShardWorker` processes) and of every Ray process (GCS, raylet, workers).
  Goal: each peak at 100,000 images within 1.10x of its peak at 10,000.
* **local**: `LocalExecutor` on the same manifest, the same model and the same machine (the comparator's
  default executor: asyncio and a thread pool in one process, quality concurrency 4), its driver's peak RSS
  alongside for reference.

Throughput is images stored per second over the executor's whole `run` (actor start-up included).

Run:  PYTHONPATH=. python benchmarks/ray_executor.py [--sizes 10000,100000] [--cpus 2] [--actors 2]
          [--shard-size 256] [--work /tmp/derm-cloud-ray-bench]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
LABELS = ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")


def _write_images(args: tuple[Path, int, int]) -> None:
    import numpy as np
    from PIL import Image

    folder, start, stop = args
    for i in range(start, stop):
        # A 4x4 grid of seeded colours blown up to 32x32: every image differs, and PNG encodes it fast.
        grid = np.random.default_rng(i).integers(0, 256, size=(4, 4, 3), dtype=np.uint8)
        Image.fromarray(grid.repeat(8, axis=0).repeat(8, axis=1)).save(folder / f"{i:06d}.png")


def prepare(work: Path, n: int) -> Path:
    """Images 0..n-1 and their manifest (kept between runs: generating is not what is measured)."""
    manifest, rows = work / "manifest.csv", work / "manifest.rows"
    if manifest.is_file() and rows.is_file() and int(rows.read_text()) >= n:
        return manifest
    folder = work / "images"
    folder.mkdir(parents=True, exist_ok=True)
    have = int(rows.read_text()) if rows.is_file() else 0
    step = 5000
    with ProcessPoolExecutor(max_workers=2) as pool:
        list(pool.map(_write_images, [(folder, s, min(n, s + step)) for s in range(have, n, step)]))
    with manifest.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image_id", "file", "label", "age", "sex", "site"])
        for i in range(n):
            w.writerow([f"gen-{i:06d}", f"images/{i:06d}.png", LABELS[i % 7], 30 + i % 50, "mf"[i % 2], "back"])
    rows.write_text(str(n))
    return manifest


class Sampler(threading.Thread):
    """Every 0.5 s: peak RSS of the Ray shard workers (summed) and of every process under this one, and the CPU
    time each of them has used (the last sample before a worker exits counts: up to 0.5 s of it is missed)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.workers_peak = 0
        self.ray_peak = 0
        self.worker_cpu: dict[int, float] = {}
        self.other_cpu: dict[int, float] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        import psutil

        me = psutil.Process()
        while not self.stop.wait(0.5):
            workers = everything = 0
            for proc in me.children(recursive=True):
                try:
                    rss = proc.memory_info().rss
                    title = (proc.cmdline() or [""])[0]
                    times = proc.cpu_times()
                except psutil.Error:
                    continue
                everything += rss
                cpu = self.worker_cpu if title.startswith("ray::ShardWorker") else self.other_cpu
                cpu[proc.pid] = times.user + times.system
                if title.startswith("ray::ShardWorker"):
                    workers += rss
            self.workers_peak = max(self.workers_peak, workers)
            self.ray_peak = max(self.ray_peak, everything)


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def child(executor: str, n: int, work: Path, cpus: int, actors: int, shard_size: int) -> dict[str, Any]:
    """One executor over the first n images, in this (fresh) process."""
    from derm_cloud.compare.run.backends import open_runtimes
    from derm_cloud.compare.run.config_file import parse_config
    from derm_cloud.compare.run.local_executor import Job, LocalExecutor
    from derm_cloud.compare.run.manifest_samples import ManifestSamples
    from derm_cloud.compare.run.ray_executor import RayExecutor
    from derm_cloud.compare.run.store import RunStore

    out = work / f"out-{executor}-{n}"
    shutil.rmtree(out, ignore_errors=True)
    off = {"enabled": False}
    cfg = parse_config(
        {
            "output": str(out),
            "scenarios": {"warmup": 0, **{k: off for k in ("single_stream", "server", "offline", "cold_start")}},
            "backends": [{"name": "tiny", "type": "local-onnx", "options": {"model_dir": str(work / "tiny")}}],
        }
    )
    samples = ManifestSamples(work / "manifest.csv", head=n)
    store = RunStore(out / "runs.sqlite")
    run_id = store.create_run(fingerprint=f"bench-{n}", config={}, dataset_fingerprint=f"gen-{n}")
    store.start_session(run_id)
    runtimes = open_runtimes(cfg, skip_unavailable=False, warnings=[])
    sampler = Sampler()
    if executor == "ray":
        import ray

        ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
        runner: LocalExecutor = RayExecutor(actors=actors, shard_size=shard_size)
        sampler.start()
    else:
        runner = LocalExecutor()
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start, cpu_start = time.perf_counter(), _cpu_s()
    runner.run(Job(run_id, store, cfg, samples, runtimes))
    wall, driver_cpu = time.perf_counter() - start, _cpu_s() - cpu_start
    sampler.stop.set()
    stored = store.count(run_id)
    ok = sum(r.ok for r in store.results(run_id))
    store.close()
    for rt in runtimes:
        rt.close()
    if executor == "ray":
        import ray

        ray.shutdown()
    return {
        "executor": executor,
        "images": n,
        "stored": stored,
        "ok": ok,
        "wall_s": wall,
        "images_per_s": stored / wall,
        "driver_rss_before_run_mb": rss_before,
        "driver_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "workers_peak_rss_mb": sampler.workers_peak / 2**20 if executor == "ray" else None,
        "shard_workers": len(sampler.worker_cpu) if executor == "ray" else None,
        "driver_cpu_ms_per_image": driver_cpu * 1000 / n,
        "workers_cpu_ms_per_image": sum(sampler.worker_cpu.values()) * 1000 / n if executor == "ray" else None,
        "ray_daemons_cpu_s": sum(sampler.other_cpu.values()) if executor == "ray" else None,
        "ray_processes_peak_rss_mb": sampler.ray_peak / 2**20 if executor == "ray" else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--actors", type=int, default=2)
    parser.add_argument("--shard-size", type=int, default=256)
    parser.add_argument("--work", type=Path, default=Path("/tmp/derm-cloud-ray-bench"))
    parser.add_argument("--executors", default="ray,local")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    a = parser.parse_args()
    if a.child:
        result = child(a.child, a.n, a.work, a.cpus, a.actors, a.shard_size)
        print("RESULT " + json.dumps(result), flush=True)
        return
    sizes = [int(s) for s in a.sizes.split(",")]
    a.work.mkdir(parents=True, exist_ok=True)
    if not (a.work / "tiny" / "model.onnx").is_file():
        from derm_cloud.testing.tiny_models import build_tiny_onnx_model

        build_tiny_onnx_model(a.work / "tiny")
    t0 = time.perf_counter()
    prepare(a.work, max(sizes))
    print(f"images and manifest ready in {time.perf_counter() - t0:.0f} s", flush=True)
    results = []
    for n in sizes:
        for executor in a.executors.split(","):
            load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
            cmd = [sys.executable, __file__, "--child", executor, "--n", str(n), "--work", str(a.work)]
            cmd += ["--cpus", str(a.cpus), "--actors", str(a.actors), "--shard-size", str(a.shard_size)]
            proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
            line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
            if not line:
                sys.exit(f"{executor} at {n} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
            result = json.loads(line[0][len("RESULT ") :]) | {"uptime_before": load}
            results.append(result)
            print(json.dumps(result), flush=True)
    print(
        "\nexecutor | images | stored ok | wall s | images/s | CPU ms an image (driver + workers) | "
        "driver peak RSS MB | workers peak RSS MB (sum)"
    )
    for r in results:
        workers = f"{r['workers_peak_rss_mb']:.0f}" if r["workers_peak_rss_mb"] is not None else "-"
        cpu = r["driver_cpu_ms_per_image"] + (r["workers_cpu_ms_per_image"] or 0.0)
        print(
            f"{r['executor']} | {r['images']} | {r['ok']} | {r['wall_s']:.1f} | {r['images_per_s']:.0f} | "
            f"{cpu:.2f} | {r['driver_peak_rss_mb']:.0f} | {workers}"
        )
    by = {(r["executor"], r["images"]): r for r in results}
    if len(sizes) > 1 and ("ray", sizes[0]) in by and ("ray", sizes[-1]) in by:
        lo, hi = by["ray", sizes[0]], by["ray", sizes[-1]]
        for key in ("driver_peak_rss_mb", "workers_peak_rss_mb", "ray_processes_peak_rss_mb"):
            print(f"ray {key}: {hi[key]:.0f} / {lo[key]:.0f} = {hi[key] / lo[key]:.3f}x")
    for n in sizes:
        if ("ray", n) in by and ("local", n) in by:
            ratio = by["ray", n]["images_per_s"] / by["local", n]["images_per_s"]
            print(f"throughput ray / local at {n}: {ratio:.2f}x")
    print("uptime after:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())


if __name__ == "__main__":
    main()
