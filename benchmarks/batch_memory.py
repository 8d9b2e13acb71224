"""Peak memory of ``predict_batch`` over 200 vs 2,000 images: flat in the number of images, or not.

Each size runs in a fresh subprocess (peak RSS, ``ru_maxrss``, only ever grows, so sizes must not share a
process). The child loads the model, classifies one warm-up chunk (onnxruntime's arena and the codecs are then
allocated), records its RSS, then runs ``predict_batch`` over N HAM10000 dev images (the 1,321 of dev.csv,
cycled) given as paths, and reports its peak RSS. Goal: the peak at 2,000 within 10% of the peak at 200.

    PYTHONPATH=. python benchmarks/batch_memory.py [--sizes 200,2000] [--model-dir sklesion|tiny] [--batch-size 16]

``--model-dir tiny`` builds the test suite's tiny ONNX model: with almost no model memory, any image kept for
the whole batch shows in the peak. The library measured is the first ``derm_cloud`` on the path (the line
"library:" says which file).

Real images: HAM10000, Tschandl et al. 2018, CC BY-NC 4.0 (read in place, never copied).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEV_CSV = Path(os.environ.get("DERM_CLOUD_DATA", ROOT.parent / "shared" / "data")) / "ham10000" / "dev.csv"


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def child(size: int, model_dir: str, batch_size: int) -> None:
    """Run one size in this process and print a JSON line."""
    import derm_cloud

    if model_dir == "tiny":
        import tempfile

        from derm_cloud.testing.tiny_models import build_tiny_onnx_model

        model_dir = str(build_tiny_onnx_model(Path(tempfile.mkdtemp(prefix="derm-batch-mem-")) / "tiny"))
    with DEV_CSV.open() as fh:
        rows = list(csv.DictReader(fh))
    paths = [DEV_CSV.parent / rows[i % len(rows)]["file"] for i in range(size)]
    with derm_cloud.create("local-onnx", model_dir=model_dir, intra_op_threads=1) as clf:
        clf.predict_batch(paths[:batch_size], batch_size=batch_size)
        warm = _rss_mib()
        start = time.perf_counter()
        predictions = clf.predict_batch(paths, batch_size=batch_size)
        seconds = time.perf_counter() - start
    assert len(predictions) == size
    print(
        json.dumps(
            {
                "library": derm_cloud.__file__,
                "images": size,
                "warm_rss_mib": warm,
                "peak_rss_mib": _rss_mib(),
                "seconds": seconds,
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="200,2000")
    parser.add_argument("--model-dir", default="sklesion")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.model_dir, args.batch_size)
        return
    results = []
    for size in (int(s) for s in args.sizes.split(",")):
        cmd = [sys.executable, __file__, "--child", str(size), "--model-dir", args.model_dir]
        cmd += ["--batch-size", str(args.batch_size)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT)
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"predict_batch, local-onnx {args.model_dir}, batch {args.batch_size}, paths, one process per size")
    print(f"library: {results[0]['library']}")
    print(f"{'images':>7} {'RSS after warm-up MiB':>22} {'peak RSS MiB':>13} {'growth MiB':>11} {'images/s':>9}")
    for r in results:
        growth = r["peak_rss_mib"] - r["warm_rss_mib"]
        rate = r["images"] / r["seconds"]
        print(f"{r['images']:>7} {r['warm_rss_mib']:>22.1f} {r['peak_rss_mib']:>13.1f} {growth:>11.1f} {rate:>9.1f}")
    first, last = results[0]["peak_rss_mib"], results[-1]["peak_rss_mib"]
    ratio = last / first
    verdict = "meets" if ratio <= 1.10 else "MISSES"
    print(
        f"peak at {results[-1]['images']} / peak at {results[0]['images']} = {ratio:.3f} ({verdict} the <= 1.10 goal)"
    )


if __name__ == "__main__":
    main()
