"""How the comparator scales: backends in parallel vs one after another, and memory at 500 vs 5,000 images.

1. Wall time of one comparison of 4 emulated clouds (SageMaker, Vertex AI, Azure ML, Azure OpenAI), each
   hosting the same tiny model and answering with a fixed injected service delay (``emulator.delay_ms``) so the
   waiting is measurable, run with ``backends_in_parallel = true`` and then ``false``. Goal: the parallel run
   takes about as long as the slowest backend alone, not the sum of all four.
2. Peak memory and wall time of a quality pass over 500 and 5,000 images (dev images repeated under new ids),
   each size in a fresh process: Python heap peak (tracemalloc) and peak resident set size (ru_maxrss). Goal:
   flat memory, since images are read one request at a time and results go straight to the run store.
3. Where the CPU time goes, and linear time with real work: one comparison of the real sklesion model
   (local-onnx), a CPU-bound backend (defined here: decodes every pixel and computes colour statistics in numpy,
   about as much CPU per image as a small model) and two emulated clouds, with skin tone on (ITA estimated from
   each image), profiled with yappi (CPU clock, every thread). Each function's own CPU time is grouped by module:
   derm-cloud, cloud SDKs, emulators (the providers' side, in-process here), the model (onnxruntime), image
   codecs and numpy, the CPU-bound backend, the rest. Run at two sizes in fresh processes: time per image and
   peak RSS should stay flat where image work, a real model and skin-tone estimation could make them grow.

Images: HAM10000 dev images (Tschandl et al. 2018, CC BY-NC 4.0), read in place from ``../shared/data``.

Run:  PYTHONPATH=. python benchmarks/compare_scaling.py [--images 40] [--delays 40,60,80,100] [--sizes 500,5000]
          [--profile-sizes 100,400] [--only 1,2,3]
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


def profile_run(model_dir: Path, work: Path, n: int) -> dict[str, Any]:
    """Run in a fresh process: one comparison of sklesion, the CPU-bound backend and two clouds under yappi."""
    import resource

    import yappi
    from cpu_share import cpu_by_group

    import derm_cloud
    from derm_cloud.compare import run_comparison

    derm_cloud.register_backend("cpu-bound", "cpu_share:CpuBoundClassifier")
    manifest = work / f"profile-manifest-{n}.csv"
    write_manifest(manifest, n)
    clouds = [
        {"name": c, "type": c, "emulate": True, "model_dir": str(model_dir), "emulator": {"delay_ms": 0}}
        for c in ("sagemaker", "vertex")
    ]
    cfg = {
        "output": str(work / f"profile-{n}"),
        "dataset": {"source": str(manifest)},
        "fairness": {"skin_tone": "ita"},  # estimated from every image's pixels: the costly setting
        "scenarios": scenarios(quality_only=True),
        "backends": [
            {"name": "sklesion", "type": "local-onnx", "options": {"model_dir": "sklesion", "intra_op_threads": 1}},
            {"name": "cpu-bound", "type": "cpu-bound", "options": {"rounds": 3}},
            *clouds,
        ],
    }
    # A first small run loads the SDKs, emulator code and model sessions' code: imports are not what we measure.
    warm = cfg | {"output": str(work / f"profile-warm-{n}"), "dataset": {"source": str(manifest), "limit": 2}}
    run_comparison(warm, fresh=True, progress=False)
    yappi.set_clock_type("cpu")
    yappi.start(builtins=True, profile_threads=True)
    start = time.perf_counter()
    result = run_comparison(cfg, fresh=True, progress=False)
    wall = time.perf_counter() - start
    yappi.stop()
    groups, other = cpu_by_group(yappi.get_func_stats())
    answered = {b: v["answered"] for b, v in result.summary["quality"]["backends"].items()}
    return {
        "images": n,
        "answered": answered,
        "wall_s": wall,
        "cpu_s": groups,
        "other_top": other,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def print_profiles(rows: list[dict[str, Any]]) -> None:
    from cpu_share import NOTE

    print("\n3. sklesion + CPU-bound backend + 2 emulated clouds, skin tone (ITA) on; yappi CPU time by module")
    print(f"   {'images':>7}{'wall s':>8}{'ms/img':>8}{'RSS MB':>8}{'CPU s':>8}")
    for r in rows:
        print(
            f"   {r['images']:>7}{r['wall_s']:>8.1f}{1000 * r['wall_s'] / r['images']:>8.1f}"
            f"{r['peak_rss_mb']:>8.0f}{sum(r['cpu_s'].values()):>8.1f}"
        )
    print(f"   CPU time by group (own time of each function; C work is counted where Python called it): {NOTE}")
    print(f"   {'group':<20}" + "".join(f"{r['images']:>12} img  share" for r in rows))
    for group in rows[0]["cpu_s"]:
        cells = ""
        for r in rows:
            v = r["cpu_s"][group]
            cells += f"{v:>14.2f}s {100 * v / sum(r['cpu_s'].values()):>5.1f}%"
        print(f"   {group:<20}{cells}")
    if len(rows) >= 2:
        a, b = rows[0], rows[-1]
        per_image = (b["wall_s"] / b["images"]) / (a["wall_s"] / a["images"])
        print(
            f"   {b['images'] / a['images']:.0f}x the images: time per image x{per_image:.2f}, "
            f"peak RSS x{b['peak_rss_mb'] / a['peak_rss_mb']:.2f}"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=40, help="images per backend in the parallel test")
    parser.add_argument("--delays", default="40,60,80,100", help="injected service delay per cloud (ms)")
    parser.add_argument("--sizes", default="500,5000", help="dataset sizes for the memory test")
    parser.add_argument("--profile-sizes", default="100,400", help="dataset sizes for the CPU-share test")
    parser.add_argument("--only", default="1,2,3", help="sections to run")
    parser.add_argument("--measure-memory", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--profile", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--model", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure_memory:
        print(json.dumps(measure_memory(args.model, args.work, args.measure_memory)))
        return 0
    if args.profile:
        print(json.dumps(profile_run(args.model, args.work, args.profile)))
        return 0
    sections = {int(x) for x in args.only.split(",")}
    from derm_cloud.testing.tiny_models import build_tiny_onnx_model

    with tempfile.TemporaryDirectory(prefix="derm-scaling-") as tmp:
        work = Path(tmp)
        model = build_tiny_onnx_model(work / "tiny")
        delays = [float(x) for x in args.delays.split(",")]
        if 3 in sections:
            profiles = []
            for n in (int(x) for x in args.profile_sizes.split(",")):
                cmd = [sys.executable, __file__, "--profile", str(n), "--work", str(work), "--model", str(model)]
                proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
                profiles.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            print_profiles(profiles)
            print(json.dumps({"profiles": profiles}, default=str), file=sys.stderr)
        if 1 not in sections and 2 not in sections:
            return 0
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
        print(json.dumps({"parallel": par, "memory": rows}, default=str), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
