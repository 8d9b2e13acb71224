"""How the comparator scales: backends in parallel vs one after another, and memory at 500 vs 5,000 images.

1. Wall time of one comparison of 4 emulated clouds (SageMaker, Vertex AI, Azure ML, Azure OpenAI), each
   hosting the same tiny model and answering with a fixed injected service delay (``emulator.delay_ms``) so the
   waiting is measurable, run with ``backends_in_parallel = true`` and then ``false``. Goal: the parallel run
   takes about as long as the slowest backend alone, not the sum of all four.
2. Peak memory of a quality pass over 500 and 5,000 images (dev images repeated under new ids), each size in
   a fresh process: Python heap peak (tracemalloc) and peak resident set size (ru_maxrss). Goal: flat, since
   images are read one request at a time and results go straight to the run store.
3. Where the CPU time of a comparison goes (local-onnx plus three emulated clouds, all hosting sklesion when it
   is cached, else the tiny model): yappi CPU clock over every thread, each function's own time (C calls
   included in their Python caller) grouped by module into our code (``derm_cloud``), the cloud SDKs, the
   model (onnxruntime), image and array libraries, the emulators standing in for the cloud service, and the
   rest (asyncio, threads, sockets, stdlib). Goal: our code's share is small beside the SDK and model time.

Images: HAM10000 dev images (Tschandl et al. 2018, CC BY-NC 4.0), read in place from ``../shared/data``.

Run:  python benchmarks/compare_scaling.py [--images 40] [--delays 40,60,80,100] [--sizes 500,5000]
      python benchmarks/compare_scaling.py --cpu-share-only [--images 40]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEV_CSV = Path(os.environ.get("DERM_CLOUD_DATA", ROOT.parent / "shared" / "data")) / "ham10000" / "dev.csv"
CLOUDS = ("sagemaker", "vertex", "azure-ml", "azure-openai")


def scenarios(quality_only: bool, concurrency: int = 2) -> dict[str, Any]:
    off = {"enabled": False}
    base: dict[str, Any] = {"warmup": 1, "bootstrap": 0, "min_samples": 1, "quality": {"concurrency": concurrency}}
    if quality_only:
        return base | {k: off for k in ("single_stream", "server", "offline", "cold_start")}
    return base | {"single_stream": {"queries": 10}, "server": off, "offline": off, "cold_start": off}


def parallel_vs_sequential(model_dir: Path, work: Path, images: int, delays: list[float]) -> dict[str, Any]:
    from derm_cloud.compare import RunStore, run_comparison

    backends = [
        {"name": cloud, "type": cloud, "emulate": True, "model_dir": str(model_dir), "emulator": {"delay_ms": d}}
        for cloud, d in zip(CLOUDS, delays, strict=True)
    ]
    out: dict[str, Any] = {}
    # A first small run loads the SDKs and emulator code, so neither measured run pays the imports.
    warm = {"output": str(work / "warm"), "dataset": {"source": str(DEV_CSV), "limit": 2}, "backends": backends}
    warm |= {"fairness": {"skin_tone": "none"}, "scenarios": scenarios(quality_only=True)}
    run_comparison(warm, fresh=True, progress=False)
    for mode, parallel in (("parallel", True), ("sequential", False)):
        cfg = {
            "output": str(work / mode),
            "backends_in_parallel": parallel,
            "dataset": {"source": str(DEV_CSV), "limit": images},
            "fairness": {"skin_tone": "none"},
            "scenarios": scenarios(quality_only=False, concurrency=1),
            "backends": backends,
        }
        start = time.perf_counter()
        result = run_comparison(cfg, fresh=True, progress=False)
        wall = time.perf_counter() - start
        spans = {}
        with RunStore(work / mode / "runs.sqlite") as store:
            for cloud in CLOUDS:
                rows = list(store.results(result.run_id, cloud))
                spans[cloud] = max(r.t_end for r in rows) - min(r.t_start for r in rows)
                assert all(r.ok for r in rows), f"{cloud}: {[r.error_type for r in rows if not r.ok][:3]}"
        requests = {cloud: result.summary["quality"]["backends"][cloud]["attempted"] + 10 for cloud in CLOUDS}
        phase = result.summary["run"]["timings_s"]["requests"]
        out[mode] = {
            "wall_s": wall,
            "requests_phase_s": phase,
            "backend_span_s": spans,
            "requests_per_backend": requests,
        }
    seq = out["sequential"]["backend_span_s"]
    out["slowest_alone_s"] = max(seq.values())
    out["sum_alone_s"] = sum(seq.values())
    out["parallel_over_slowest"] = out["parallel"]["requests_phase_s"] / out["slowest_alone_s"]
    out["parallel_over_sum"] = out["parallel"]["requests_phase_s"] / out["sum_alone_s"]
    out["speedup"] = out["sequential"]["requests_phase_s"] / out["parallel"]["requests_phase_s"]
    return out


def write_manifest(path: Path, n: int) -> None:
    with DEV_CSV.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image_id", "path", "label", "age", "sex", "site"])
        for i in range(n):
            r = rows[i % len(rows)]
            w.writerow(
                [
                    f"{r['image_id']}-{i // len(rows)}",
                    DEV_CSV.parent / r["file"],
                    r["dx"],
                    r["age"],
                    r["sex"],
                    r["localization"],
                ]
            )


def measure_memory(model_dir: Path, work: Path, n: int) -> dict[str, Any]:
    """Run in a fresh process (see main): tracemalloc peak and ru_maxrss of one quality pass over n images."""
    import resource
    import tracemalloc

    from derm_cloud.compare import run_comparison

    manifest = work / f"manifest-{n}.csv"
    write_manifest(manifest, n)
    cfg = {
        "output": str(work / f"mem-{n}"),
        "dataset": {"source": str(manifest)},
        "fairness": {"skin_tone": "none"},
        "scenarios": scenarios(quality_only=True),
        "backends": [{"name": "local", "type": "local-onnx", "options": {"model_dir": str(model_dir)}}],
    }
    import derm_cloud.data  # noqa: F401  (imports are not what we measure)

    tracemalloc.start()
    start = time.perf_counter()
    result = run_comparison(cfg, fresh=True, progress=False)
    wall = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    answered = result.summary["quality"]["backends"]["local"]["answered"]
    return {
        "images": n,
        "answered": answered,
        "wall_s": wall,
        "tracemalloc_peak_mb": peak / 2**20,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


_SDK_PACKAGES = (
    "boto3",
    "botocore",
    "s3transfer",
    "google",
    "grpc",
    "proto",
    "azure",
    "msrest",
    "openai",
    "requests",
    "urllib3",
    "httpx",
    "httpcore",
    "h11",
    "certifi",
    "charset_normalizer",
    "pydantic",
)


def _bucket(module: str) -> str:
    """The group a function's file belongs to (see the module docstring, part 3)."""
    path = module.replace("\\", "/")
    if "/onnxruntime/" in path:
        return "model (onnxruntime)"
    if "/derm_cloud/testing/" in path or path.endswith(("/derm_cloud/serving.py", "/derm_cloud/serving_http.py")):
        return "emulated cloud service (derm_cloud.testing, serving)"
    if "/derm_cloud/" in path:
        return "our code (derm_cloud)"
    if any(f"/site-packages/{p}/" in path or f"/site-packages/{p}." in path for p in _SDK_PACKAGES):
        return "cloud SDKs and HTTP/gRPC clients"
    if "/matplotlib/" in path or "/fontTools/" in path:
        return "report figures (matplotlib)"
    if "/PIL/" in path or "/numpy/" in path:
        return "images and arrays (Pillow, numpy)"
    return "other (asyncio, threads, sockets, stdlib)"


def cpu_share(work: Path, images: int) -> dict[str, Any]:
    """CPU seconds per group over every thread of one comparison (yappi, CPU clock)."""
    import yappi

    from derm_cloud.compare import run_comparison
    from derm_cloud.models.cache import resolve_model_dir
    from derm_cloud.testing.tiny_models import build_tiny_onnx_model

    try:
        model = resolve_model_dir("sklesion")
        if not (model / "spec.json").is_file():
            raise FileNotFoundError(model)
    except Exception:
        model = build_tiny_onnx_model(work / "tiny-cpu")
    backends: list[dict[str, Any]] = [
        {"name": "local-onnx", "type": "local-onnx", "options": {"model_dir": str(model)}}
    ]
    backends += [
        {"name": c, "type": c, "emulate": True, "model_dir": str(model)} for c in ("sagemaker", "vertex", "azure-ml")
    ]
    base = {"dataset": {"source": str(DEV_CSV)}, "backends": backends, "fairness": {"skin_tone": "none"}}
    base["backends_in_parallel"] = False
    run_comparison(
        base
        | {
            "output": str(work / "cpu-warm"),
            "dataset": {"source": str(DEV_CSV), "limit": 2},
            "scenarios": scenarios(True),
        },
        fresh=True,
        progress=False,
    )
    cfg = base | {"output": str(work / "cpu"), "dataset": {"source": str(DEV_CSV), "limit": images}}
    cfg["scenarios"] = scenarios(quality_only=False)
    yappi.set_clock_type("cpu")
    cpu0 = time.process_time()
    yappi.start(builtins=False, profile_threads=True)
    t0 = time.perf_counter()
    try:
        run_comparison(cfg, fresh=True, progress=False)
    finally:
        yappi.stop()
    wall = time.perf_counter() - t0
    process_cpu = time.process_time() - cpu0
    groups: dict[str, float] = {}
    other: dict[str, float] = {}
    for stat in yappi.get_func_stats():
        bucket = _bucket(str(stat.module))
        groups[bucket] = groups.get(bucket, 0.0) + float(stat.tsub)
        if bucket.startswith("other"):
            other[str(stat.module)] = other.get(str(stat.module), 0.0) + float(stat.tsub)
    yappi.clear_stats()
    # Threads Python does not run (onnxruntime's intra-op pool, gRPC's C core) are invisible to yappi: their CPU
    # time is the process's CPU time minus what yappi saw, and most of it is model time.
    groups["native threads (onnxruntime pool, gRPC core): process CPU - profiled"] = max(
        0.0, process_cpu - sum(groups.values())
    )
    total = sum(groups.values())
    return {
        "model": str(model),
        "images": images,
        "wall_s": wall,
        "cpu_s": total,
        "process_cpu_s": process_cpu,
        "groups_s": dict(sorted(groups.items(), key=lambda kv: -kv[1])),
        "other_top_modules_s": dict(sorted(other.items(), key=lambda kv: -kv[1])[:6]),
        "shares": {k: v / total for k, v in groups.items()} if total else {},
    }


def print_cpu_share(share: dict[str, Any]) -> None:
    print(
        f"\n3. CPU time of one comparison ({share['images']} images; local-onnx + 3 emulated clouds hosting "
        f"{Path(share['model']).name}; yappi CPU clock, all threads): {share['cpu_s']:.1f} CPU s in "
        f"{share['wall_s']:.1f} s"
    )
    print(f"   {'group':<72}{'CPU s':>8}{'share':>8}")
    for name, secs in share["groups_s"].items():
        print(f"   {name[:70]:<72}{secs:>8.2f}{100 * share['shares'][name]:>7.1f}%")
    print("   largest 'other' modules: " + ", ".join(f"{m} {s:.2f} s" for m, s in share["other_top_modules_s"].items()))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=40, help="images per backend in the parallel test")
    parser.add_argument("--delays", default="40,60,80,100", help="injected service delay per cloud (ms)")
    parser.add_argument("--sizes", default="500,5000", help="dataset sizes for the memory test")
    parser.add_argument("--cpu-share-only", action="store_true", help="only part 3: where the CPU time goes")
    parser.add_argument("--measure-memory", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--model", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure_memory:
        print(json.dumps(measure_memory(args.model, args.work, args.measure_memory)))
        return 0
    from derm_cloud.testing.tiny_models import build_tiny_onnx_model

    with tempfile.TemporaryDirectory(prefix="derm-scaling-") as tmp:
        work = Path(tmp)
        if args.cpu_share_only:
            share = cpu_share(work, args.images)
            print_cpu_share(share)
            print(json.dumps({"cpu_share": share}, default=str), file=sys.stderr)
            return 0
        model = build_tiny_onnx_model(work / "tiny")
        delays = [float(x) for x in args.delays.split(",")]
        par = parallel_vs_sequential(model, work, args.images, delays)
        print("\n1. Four emulated clouds, one comparison (each request waits its cloud's injected delay)")
        print(f"   {'backend':<14}{'delay ms':>9}{'requests':>10}{'alone s':>10}{'in parallel run s':>19}")
        for cloud, d in zip(CLOUDS, delays, strict=True):
            print(
                f"   {cloud:<14}{d:>9.0f}{par['sequential']['requests_per_backend'][cloud]:>10}"
                f"{par['sequential']['backend_span_s'][cloud]:>10.2f}{par['parallel']['backend_span_s'][cloud]:>19.2f}"
            )
        p, q = par["parallel"], par["sequential"]
        print(f"   sum of backends alone {par['sum_alone_s']:.2f} s; slowest alone {par['slowest_alone_s']:.2f} s")
        print(
            f"   request phase: parallel {p['requests_phase_s']:.2f} s = {par['parallel_over_slowest']:.2f}x the "
            f"slowest alone ({par['parallel_over_sum']:.2f}x the sum); sequential {q['requests_phase_s']:.2f} s; "
            f"speed-up {par['speedup']:.2f}x"
        )
        print(
            f"   whole run incl. emulator start-up, analysis and report: parallel {p['wall_s']:.2f} s, "
            f"sequential {q['wall_s']:.2f} s"
        )
        rows = []
        for n in (int(x) for x in args.sizes.split(",")):
            cmd = [sys.executable, __file__, "--measure-memory", str(n), "--work", str(work), "--model", str(model)]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
            rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print("\n2. Memory of a quality pass (one local-onnx tiny backend; each size in a fresh process)")
        print(f"   {'images':>8}{'answered':>10}{'wall s':>9}{'tracemalloc peak MB':>21}{'peak RSS MB':>13}")
        for r in rows:
            print(
                f"   {r['images']:>8}{r['answered']:>10}{r['wall_s']:>9.1f}{r['tracemalloc_peak_mb']:>21.1f}"
                f"{r['peak_rss_mb']:>13.1f}"
            )
        if len(rows) >= 2:
            a, b = rows[0], rows[-1]
            heap = b["tracemalloc_peak_mb"] / a["tracemalloc_peak_mb"]
            rss = b["peak_rss_mb"] / a["peak_rss_mb"]
            print(f"   {b['images'] / a['images']:.0f}x the images: heap peak x{heap:.2f}, RSS x{rss:.2f}")
        share = cpu_share(work, args.images)
        print_cpu_share(share)
        print(json.dumps({"parallel": par, "memory": rows, "cpu_share": share}, default=str), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
