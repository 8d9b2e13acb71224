"""What a Router costs per call: one healthy deployment behind a router vs the same backend called bare.

For each backend (the local ONNX model in-process, and the same model behind the SageMaker emulator through
boto3), both contenders classify the same dev images with the same metadata; calls are interleaved pairwise
(bare then router, then router then bare on the next image) so that machine noise hits both alike. Reported
per backend: median latency of each, the ratio router / bare of the medians and of the totals (goal <= 1.02x),
and the median per-call difference in milliseconds (thread hand-off, span, metrics, balancing).

The baseline is the backend's public ``predict``: it shares no routing code with what is measured.

    python benchmarks/router_overhead.py [--images 24] [--rounds 3] [--model-dir sklesion]

Images: HAM10000 dev set (Tschandl et al. 2018, CC BY-NC 4.0), read from ../shared/data.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import derm_cloud
from derm_cloud import Deployment, Router, RouterPolicy

DEV_CSV = Path(__file__).resolve().parents[2] / "shared" / "data" / "ham10000" / "dev.csv"


def _timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000


def measure(
    name: str, clf: derm_cloud.Classifier, rows: list[tuple[Path, dict[str, Any]]], rounds: int
) -> dict[str, Any]:
    router = Router([Deployment(name, clf)], policy=RouterPolicy(deadline_s=60.0))
    for path, meta in rows[:3]:  # warm both paths (sessions, thread pool, caches)
        clf.predict(path, meta)
        router.predict(path, meta)
    bare: list[float] = []
    routed: list[float] = []
    for r in range(rounds):
        for i, (path, meta) in enumerate(rows):
            b = lambda p=path, m=meta: clf.predict(p, m)  # noqa: E731
            t = lambda p=path, m=meta: router.predict(p, m)  # noqa: E731
            if (i + r) % 2 == 0:
                bare.append(_timed(b))
                routed.append(_timed(t))
            else:
                routed.append(_timed(t))
                bare.append(_timed(b))
    diffs = [x - y for x, y in zip(routed, bare, strict=True)]
    return {
        "backend": name,
        "calls": len(bare),
        "bare_median_ms": statistics.median(bare),
        "router_median_ms": statistics.median(routed),
        "ratio_of_medians": statistics.median(routed) / statistics.median(bare),
        "ratio_of_totals": sum(routed) / sum(bare),
        "median_overhead_ms": statistics.median(diffs),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", default="sklesion")
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    from derm_cloud.models.cache import resolve_model_dir
    from derm_cloud.testing.emulators.sagemaker import SageMakerRuntimeEmulator, sagemaker_backend_for

    model_dir = resolve_model_dir(args.model_dir)
    with DEV_CSV.open() as fh:
        rows = [
            (DEV_CSV.parent / r["file"], {"age": float(r["age"]), "sex": r["sex"], "site": r["localization"]})
            for r in list(csv.DictReader(fh))[: args.images]
        ]
    results = []
    local = derm_cloud.create("local-onnx", model_dir=str(model_dir))
    results.append(measure("local-onnx", local, rows, args.rounds))
    local.close()
    with SageMakerRuntimeEmulator() as emu:
        emu.add_endpoint("bench", model_dir)
        remote = sagemaker_backend_for(emu, "bench")
        results.append(measure("sagemaker (emulator)", remote, rows, args.rounds))
        remote.close()

    print(f"router overhead, {args.images} images x {args.rounds} rounds, model {model_dir.name}, interleaved")
    print(f"{'backend':<22} {'bare ms':>9} {'router ms':>10} {'ratio med':>10} {'ratio tot':>10} {'+ms/call':>9}")
    for r in results:
        print(
            f"{r['backend']:<22} {r['bare_median_ms']:>9.2f} {r['router_median_ms']:>10.2f} "
            f"{r['ratio_of_medians']:>9.3f}x {r['ratio_of_totals']:>9.3f}x {r['median_overhead_ms']:>9.3f}"
        )
    worst = max(r["ratio_of_totals"] for r in results)
    print(f"goal router / bare <= 1.02x: {'met' if worst <= 1.02 else 'NOT met'} (worst ratio of totals {worst:.3f}x)")


if __name__ == "__main__":
    main()
