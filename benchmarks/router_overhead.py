"""What a Router adds per call: one healthy deployment behind a router vs the same backend called directly.

For each model (the test suite's tiny ONNX model, built here, whose calls take about 2 ms, so every
fraction of a millisecond the router adds shows; and the fetched sklesion model, about 300 ms a call) and each
backend (the local ONNX model in this process, and the same model behind the SageMaker emulator through
boto3, the emulator in a ``derm-cloud emulate`` child process as a cloud runs apart from its client), both
contenders classify the same HAM10000 dev images, given as file paths, with the same metadata. Calls are
paired: each pair is one direct call and one routed call of the same image, back to back, the order flipped
from pair to pair, so a load spike on the machine hits both sides of a pair.

Reported per row: the median latency of each, the ratio of the medians, and the **added ms per call**: the
median of the per-pair differences (router - direct) with its 95 % distribution-free interval (order
statistics of the binomial, no model of the noise assumed). The goal on a quiet machine: at most 0.3 ms
added per call, the figure that matters for the tiny model. The load average is printed before and after: on
a busy machine every thread hand-off and cache miss costs more, so read the figures with it. The same paired
difference of the process's CPU time (every thread of this process; the emulator's child process is not in
it) is reported too: it does not count time spent waiting for a core, so it stays readable on a busy machine.

The baseline is the backend's public ``predict``: it shares no routing code with what is measured.

    python benchmarks/router_overhead.py [--models tiny,sklesion] [--backends local,sagemaker]
                                         [--images 24] [--pairs-tiny 600] [--pairs-sklesion 72]

Images: HAM10000 dev set (Tschandl et al. 2018, CC BY-NC 4.0), read in place from $DERM_CLOUD_DATA or
../shared/data, never copied.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import derm_cloud
from derm_cloud import Deployment, Router, RouterPolicy

ROOT = Path(__file__).resolve().parents[1]
DEV_CSV = Path(os.environ.get("DERM_CLOUD_DATA") or ROOT.parent / "shared" / "data") / "ham10000" / "dev.csv"
GOAL_MS = 0.3


def _timed(fn: Callable[[], Any]) -> tuple[float, float]:
    """Wall-clock and CPU milliseconds (every thread of this process) of one call."""
    start, cpu = time.perf_counter(), time.process_time()
    fn()
    return (time.perf_counter() - start) * 1000, (time.process_time() - cpu) * 1000


def median_interval(values: list[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """The median of ``values`` and a distribution-free interval for it (order statistics, binomial(n, 1/2)).

    The interval is [x_(k), x_(n+1-k)] with the largest k whose coverage is at least ``confidence``.

    Example:
        >>> median_interval([float(i) for i in range(1, 101)])
        (50.5, 40.0, 61.0)
    """
    xs = sorted(values)
    n = len(xs)
    # P(X < k) for X ~ Binomial(n, 1/2); the interval [x_k, x_{n+1-k}] covers the median with 1 - 2 P(X < k).
    cdf, k = 0.0, 0
    while k < n // 2:
        nxt = cdf + math.comb(n, k) / 2**n
        if 1 - 2 * nxt < confidence:
            break
        cdf, k = nxt, k + 1
    k = max(k, 1)
    return statistics.median(xs), xs[k - 1], xs[n - k]


def measure(
    label: str, clf: derm_cloud.Classifier, rows: list[tuple[Path, dict[str, Any]]], pairs: int
) -> dict[str, Any]:
    """``pairs`` paired calls of ``clf.predict`` and of a one-deployment router over it, cycling the images."""
    router = Router([Deployment(label, clf)], policy=RouterPolicy(deadline_s=60.0))
    for path, meta in rows[:5]:  # warm both paths (sessions, threads, codecs, the model's arena)
        clf.predict(path, meta)
        router.predict(path, meta)
    direct: list[tuple[float, float]] = []
    routed: list[tuple[float, float]] = []
    for i in range(pairs):
        path, meta = rows[i % len(rows)]
        d = lambda p=path, m=meta: clf.predict(p, m)  # noqa: E731
        r = lambda p=path, m=meta: router.predict(p, m)  # noqa: E731
        if i % 2 == 0:
            direct.append(_timed(d))
            routed.append(_timed(r))
        else:
            routed.append(_timed(r))
            direct.append(_timed(d))
    added, low, high = median_interval([x[0] - y[0] for x, y in zip(routed, direct, strict=True)])
    cpu, cpu_low, cpu_high = median_interval([x[1] - y[1] for x, y in zip(routed, direct, strict=True)])
    direct_ms, routed_ms = [x for x, _ in direct], [x for x, _ in routed]
    return {
        "backend": label,
        "pairs": pairs,
        "direct_median_ms": statistics.median(direct_ms),
        "router_median_ms": statistics.median(routed_ms),
        "ratio_of_medians": statistics.median(routed_ms) / statistics.median(direct_ms),
        "added_ms": added,
        "added_low_ms": low,
        "added_high_ms": high,
        "added_cpu_ms": cpu,
        "added_cpu_low_ms": cpu_low,
        "added_cpu_high_ms": cpu_high,
    }


@contextmanager
def sagemaker_emulator(model_dir: Path) -> Iterator[derm_cloud.Classifier]:
    """The model behind ``derm-cloud emulate sagemaker`` in a child process, reached through boto3."""
    command = [sys.executable, "-m", "derm_cloud.cli", "emulate", "sagemaker", "--model-dir", str(model_dir)]
    child = subprocess.Popen([*command, "--json", "--transport", "rest"], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        if not line:
            raise SystemExit(f"derm-cloud emulate stopped before it was ready: {' '.join(command)}")
        info = json.loads(line)
        os.environ.update(info["env"])  # boto3 reads its endpoint and dummy keys from the environment
        with derm_cloud.create(info["backend"]["type"], **info["backend"]["options"]) as clf:
            yield clf
    finally:
        child.terminate()
        child.wait(30)


def _model_dir(name: str, tmp: Path) -> Path:
    if name == "tiny":
        from derm_cloud.testing.tiny_models import build_tiny_onnx_model

        return build_tiny_onnx_model(tmp / "tiny")
    from derm_cloud.models.cache import resolve_model_dir

    return Path(resolve_model_dir(name))


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f}, {five:.2f}, {fifteen:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="tiny,sklesion", help="'tiny', 'sklesion' or a model directory")
    parser.add_argument("--backends", default="local,sagemaker")
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--pairs-tiny", type=int, default=600, help="paired calls per backend, tiny model")
    parser.add_argument("--pairs-sklesion", type=int, default=72, help="paired calls per backend, other models")
    args = parser.parse_args()

    with DEV_CSV.open() as fh:
        rows = [
            (DEV_CSV.parent / r["file"], {"age": float(r["age"]), "sex": r["sex"], "site": r["localization"]})
            for r in list(csv.DictReader(fh))[: args.images]
        ]
    backends = [b for b in args.backends.split(",") if b]
    print(f"library: {derm_cloud.__file__}; {os.cpu_count()} cores; load average before: {_load()}", flush=True)
    results = []
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        for model in [m for m in args.models.split(",") if m]:
            model_dir = _model_dir(model, Path(tmp))
            pairs = args.pairs_tiny if model == "tiny" else args.pairs_sklesion
            for backend in backends:
                if backend == "local":
                    clf = stack.enter_context(derm_cloud.create("local-onnx", model_dir=str(model_dir)))
                else:
                    clf = stack.enter_context(sagemaker_emulator(model_dir))
                result = {"model": model, **measure(backend, clf, rows, pairs)}
                results.append(result)
                print(
                    f"  {model}/{backend}: added {result['added_ms']:+.3f} ms "
                    f"[{result['added_low_ms']:+.3f}, {result['added_high_ms']:+.3f}] (load {_load()})",
                    flush=True,
                )
    print()
    print(f"router overhead, {len(rows)} images cycled, paired calls, load average after: {_load()}")
    print(
        "| model | backend | pairs | direct median ms | router median ms | ratio of medians "
        "| added ms per call (median, 95 % interval) | added CPU ms per call |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['model']} | {r['backend']} | {r['pairs']} | {r['direct_median_ms']:.2f} "
            f"| {r['router_median_ms']:.2f} | {r['ratio_of_medians']:.3f} "
            f"| {r['added_ms']:+.3f} [{r['added_low_ms']:+.3f}, {r['added_high_ms']:+.3f}] "
            f"| {r['added_cpu_ms']:+.3f} [{r['added_cpu_low_ms']:+.3f}, {r['added_cpu_high_ms']:+.3f}] |"
        )
    tiny_local = [r for r in results if r["model"] == "tiny" and r["backend"] == "local"]
    if tiny_local:
        added = tiny_local[0]["added_ms"]
        verdict = "met" if added <= GOAL_MS else "NOT met"
        print(f"goal <= {GOAL_MS} ms added per call (tiny model, local): {verdict} ({added:+.3f} ms)")


if __name__ == "__main__":
    main()
