"""Where an emulated backend's extra milliseconds go: local-onnx against each emulator serving sklesion.

The default comparison (`derm-cloud compare` with no config) times local-onnx and seven emulated clouds that
host the same sklesion model on this machine; they should agree within 10 % at p50 (issue 20). This benchmark
builds the same backends the same way (the embedded default config, `derm_cloud.compare.run.backends.prepare`:
the emulators in this process, each reached through its real SDK on 127.0.0.1) and times them as the comparator
does: round-robin, one request in flight, each round starting with a different backend, every backend of a round
sent the same shared payload (prepared before the timer, as `derm_cloud.compare.run.calls.PAYLOADS` does).

Each call's wall time is split, by timers wrapped around module functions (exclusive time: a stage nested in
another is counted once), into:

* onnxruntime - `ModelRunner.run_tensors`, the model itself;
* preprocess - `ModelRunner.tensors` (resize, scaling) without the decode inside it;
* decode - the full JPEG decode (Pillow or libjpeg's strict decode in `derm_cloud.payload`);
* image check - `prepare_payload` on the bytes the emulator received (structure, EXIF strip, entropy check);
* server route - the rest of the emulator's `handle` (JSON and base64 parsing, the answer's JSON);
* client + SDK + HTTP - the rest of the call: our request building, the SDK (signing, serialising), loopback
  HTTP both ways and the answer's parsing.

Printed per backend: p50 of the call, the median over rounds of its time divided by local-onnx's in the same
round (paired: a load spike hits both), and the median ms of every stage. Before that, two checks that the
model itself runs alike everywhere: each hosted onnxruntime session's options beside local-onnx's, and the
sessions alone fed one tensor round-robin (median ratio to local-onnx's session).

    PYTHONPATH=. python benchmarks/latency_parity.py [--images 20] [--rounds 3] [--json out.json]
    PYTHONPATH=. python benchmarks/latency_parity.py --profile azure-ml --calls 100   # cProfile one backend
    python benchmarks/latency_parity.py --trees base=/tmp/base,ours=. --blocks 4   # two source trees, alternated

`--trees` runs this script in a child process per block with `PYTHONPATH` set to each tree in turn (a process
can hold one version of derm-cloud), alternating trees block after block, and prints each tree's median ratios
over its blocks: two versions measured in one session under the same drift of the machine's load.

Real images: HAM10000, Tschandl et al. 2018, CC BY-NC 4.0 (read in place, never copied).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

DEV_CSV = Path(__file__).resolve().parents[2] / "shared" / "data" / "ham10000" / "dev.csv"
STAGES = ("onnxruntime", "preprocess", "decode", "image check", "server route", "client + SDK + HTTP")


class StageClock:
    """Exclusive wall time per stage for the call in flight (one at a time: stages never overlap)."""

    def __init__(self) -> None:
        self.spent: dict[str, float] = defaultdict(float)
        self._stack: list[list[Any]] = []

    def wrap(self, stage: str, func: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            frame = [stage, time.perf_counter(), 0.0]  # stage, start, time of nested stages
            self._stack.append(frame)
            try:
                return func(*args, **kwargs)
            finally:
                self._stack.pop()
                elapsed = time.perf_counter() - frame[1]
                self.spent[stage] += elapsed - frame[2]
                if self._stack:
                    self._stack[-1][2] += elapsed

        return timed

    def take(self) -> dict[str, float]:
        out = {k: v * 1000 for k, v in self.spent.items()}
        self.spent.clear()
        return out


def _instrument(clock: StageClock) -> None:
    """Wrap the stage functions at module level (names that exist in every version this compares)."""
    import derm_cloud.images as images
    import derm_cloud.payload as payload
    from derm_cloud.backends._runner import ModelRunner

    images._from_bytes = clock.wrap("image check", images._from_bytes)  # type: ignore[assignment]
    for name in ("_decode_rgb", "_decode_strict_rgb"):
        setattr(payload, name, clock.wrap("decode", getattr(payload, name)))
    ModelRunner.tensors = clock.wrap("preprocess", ModelRunner.tensors)  # type: ignore[method-assign]
    ModelRunner.run_tensors = clock.wrap("onnxruntime", ModelRunner.run_tensors)  # type: ignore[method-assign]


def _runtimes() -> list[Any]:
    """The default comparison's backends that serve sklesion, built as the comparator builds them."""
    import warnings

    from derm_cloud.compare.run.backends import prepare
    from derm_cloud.compare.run.config_file import parse_config
    from derm_cloud.compare.run.defaults import DEFAULT_CONFIG_TOML, ensure_sklesion

    ensure_sklesion()
    config = parse_config(DEFAULT_CONFIG_TOML, file="<embedded default config>")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Custom Vision's retirement notice: known, not a result
        return [prepare(cfg, 120.0) for cfg in config.backends if cfg.type == "local-onnx" or cfg.model_dir]


def _session_facts(runner: Any) -> dict[str, Any]:
    options = runner.session.get_session_options()
    return {
        "intra_op_num_threads": options.intra_op_num_threads,
        "inter_op_num_threads": options.inter_op_num_threads,
        "graph_optimization_level": str(options.graph_optimization_level).rsplit(".", 1)[-1],
        "execution_mode": str(options.execution_mode).rsplit(".", 1)[-1],
        "providers": ",".join(runner.session.get_providers()),
    }


def _median_ratio(times: dict[str, list[float]], name: str, base: str) -> float:
    return statistics.median(t / b for t, b in zip(times[name], times[base], strict=True))


def measure(n_images: int, rounds: int, profile: str | None, calls: int) -> dict[str, Any]:
    from derm_cloud.images import prepare_payload

    rows = list(csv.DictReader(DEV_CSV.open(newline="")))[:n_images]
    paths = [DEV_CSV.parent / row["file"] for row in rows]
    clock = StageClock()
    _instrument(clock)
    runtimes = _runtimes()
    names = [rt.name for rt in runtimes]
    for rt in runtimes:
        if rt.emulator is not None:
            rt.emulator.handle = clock.wrap("server route", rt.emulator.handle)
    # Which onnxruntime session answers each backend: the runner seen during its warm-up calls.
    from derm_cloud.backends._runner import ModelRunner

    seen: list[Any] = []
    timed_run = ModelRunner.run_tensors
    ModelRunner.run_tensors = lambda self, *a: (seen.append(self), timed_run(self, *a))[1]  # type: ignore[method-assign]
    runners = {}
    for rt in runtimes:
        for path in paths[:2]:
            rt.classifier.predict(prepare_payload(path.read_bytes()))
        runners[rt.name] = seen[-1]
    ModelRunner.run_tensors = timed_run  # type: ignore[method-assign]
    if profile:
        return _profile(runtimes, profile, paths, calls)
    facts = {name: _session_facts(runner) for name, runner in runners.items()}
    tensor = runners["local-onnx"].tensors([prepare_payload(paths[0].read_bytes())])
    meta = _unknown_metadata(runners["local-onnx"])
    session_ms: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds * n_images):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            start = time.perf_counter()
            runners[name].run_tensors(tensor, meta)
            session_ms[name].append((time.perf_counter() - start) * 1000)
    clock.take()
    total: dict[str, list[float]] = {name: [] for name in names}
    stages: dict[str, dict[str, list[float]]] = {name: defaultdict(list) for name in names}
    load_before = os.getloadavg()
    for r in range(rounds):
        for i, path in enumerate(paths):
            payload = prepare_payload(path.read_bytes())  # one per round, before the timer, as PAYLOADS does
            turn = (r * len(paths) + i) % len(names)
            for rt in runtimes[turn:] + runtimes[:turn]:
                clock.take()
                start = time.perf_counter()
                rt.classifier.predict(payload)
                ms = (time.perf_counter() - start) * 1000
                spent = clock.take()
                spent["client + SDK + HTTP"] = ms - sum(spent.values())
                total[rt.name].append(ms)
                for stage in STAGES:
                    stages[rt.name][stage].append(spent.get(stage, 0.0))
    load_after = os.getloadavg()
    for rt in runtimes:
        rt.close()
    return {
        "load_before": load_before,
        "load_after": load_after,
        "calls_per_backend": len(total["local-onnx"]),
        "backends": {
            name: {
                "p50_ms": statistics.median(total[name]),
                "ratio": _median_ratio(total, name, "local-onnx"),
                "session_ratio": _median_ratio(session_ms, name, "local-onnx"),
                "session": facts[name],
                "stages_ms": {stage: statistics.median(stages[name][stage]) for stage in STAGES},
                "outside_model_ms": statistics.median(
                    t - o for t, o in zip(total[name], stages[name]["onnxruntime"], strict=True)
                ),
            }
            for name in names
        },
    }


def _unknown_metadata(runner: Any) -> Any:
    from derm_cloud.preprocess import encode_metadata
    from derm_cloud.types import PatientMetadata

    return encode_metadata(runner.spec, [PatientMetadata()])


def _profile(runtimes: list[Any], name: str, paths: list[Path], calls: int, top: int = 25) -> dict[str, Any]:
    """yappi on the CPU clock over every thread (client, retry worker, emulator, onnxruntime callers)."""
    import yappi

    from derm_cloud.images import prepare_payload

    yappi.set_clock_type("cpu")
    for rt in runtimes if name == "all" else [rt for rt in runtimes if rt.name in name.split(",")]:
        yappi.clear_stats()
        yappi.start(builtins=True)
        for k in range(calls):
            # A fresh payload per call (prepared outside the profile), as a comparison round gets one.
            yappi.stop()
            payload = prepare_payload(paths[k % len(paths)].read_bytes())
            yappi.start(builtins=True)
            rt.classifier.predict(payload)
        yappi.stop()
        stats = sorted(yappi.get_func_stats(), key=lambda s: -s.tsub)
        total = sum(s.tsub for s in stats) * 1000 / calls
        print(
            f"\n{rt.name}: CPU ms per call by function (own time, every thread), {calls} calls, {total:.2f} ms in all"
        )
        for s in stats[:top]:
            print(f"{s.tsub * 1000 / calls:8.2f}  {s.module.rsplit('site-packages/', 1)[-1]}:{s.lineno} {s.name}")
    for rt in runtimes:
        rt.close()
    return {}


def print_report(result: dict[str, Any], label: str = "") -> None:
    before, after = result["load_before"], result["load_after"]
    print(
        f"{label}load average before {before[0]:.2f} {before[1]:.2f} {before[2]:.2f}, after {after[0]:.2f} "
        f"{after[1]:.2f} {after[2]:.2f}; {result['calls_per_backend']} calls per backend, {os.cpu_count()} cores"
    )
    first = next(iter(result["backends"].values()))["session"]
    print("onnxruntime session options (local-onnx):", first)
    print(
        "| backend | p50 ms | / local-onnx (median of rounds) | session alone / local-onnx | outside model ms | "
        + " | ".join(STAGES)
        + " | same session options |"
    )
    print("|---|---|---|---|---|" + "---|" * len(STAGES) + "---|")
    for name, b in result["backends"].items():
        stages = " | ".join(f"{b['stages_ms'][s]:.1f}" for s in STAGES)
        same = "yes" if b["session"] == first else f"NO: {b['session']}"
        print(
            f"| {name} | {b['p50_ms']:.1f} | {b['ratio']:.3f} | {b['session_ratio']:.3f} | "
            f"{b['outside_model_ms']:.1f} | {stages} | {same} |"
        )
    ratios = [b["p50_ms"] for b in result["backends"].values()]
    print(f"largest / smallest p50: {max(ratios) / min(ratios):.3f}")


def alternate(trees: str, blocks: int, argv: list[str]) -> None:
    """Run each tree's code in a child process, block after block, and summarise each tree's ratios."""
    named = [part.split("=", 1) for part in trees.split(",")]
    results: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in named}
    for block in range(blocks):
        order = named if block % 2 == 0 else named[::-1]
        for name, tree in order:
            env = {**os.environ, "PYTHONPATH": str(Path(tree).resolve())}
            out = subprocess.run(
                [sys.executable, __file__, *argv, "--json", "-"], env=env, check=True, capture_output=True, text=True
            ).stdout
            result = json.loads(out.strip().splitlines()[-1])
            results[name].append(result)
            print_report(result, f"[block {block + 1}, {name}] ")
    names = list(results[named[0][0]][0]["backends"])
    print("\n| backend | " + " | ".join(f"{t}: / local-onnx | {t}: outside model ms" for t, _ in named) + " |")
    print("|---|" + "---|---|" * len(named))
    for backend in names:
        cells = []
        for tree, _ in named:
            runs = [r["backends"][backend] for r in results[tree]]
            cells.append(f"{statistics.median(r['ratio'] for r in runs):.3f}")
            cells.append(f"{statistics.median(r['outside_model_ms'] for r in runs):.1f}")
        print(f"| {backend} | " + " | ".join(cells) + " |")
    for tree, _ in named:
        spreads = [
            max(b["p50_ms"] for b in r["backends"].values()) / min(b["p50_ms"] for b in r["backends"].values())
            for r in results[tree]
        ]
        print(f"{tree}: largest / smallest p50 per block: {', '.join(f'{s:.3f}' for s in spreads)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20, help="dev.csv images per round")
    parser.add_argument("--rounds", type=int, default=3, help="passes over the images")
    parser.add_argument("--json", help="write the result as JSON here ('-': one line on stdout)")
    parser.add_argument("--profile", help="cProfile this backend's calls instead of timing (e.g. azure-ml)")
    parser.add_argument("--calls", type=int, default=100, help="calls to profile")
    parser.add_argument("--trees", help="name=path,name=path: compare source trees, alternating child processes")
    parser.add_argument("--blocks", type=int, default=4, help="blocks per tree with --trees")
    args = parser.parse_args()
    if args.trees:
        alternate(args.trees, args.blocks, ["--images", str(args.images), "--rounds", str(args.rounds)])
        return
    result = measure(args.images, args.rounds, args.profile, args.calls)
    if args.profile:
        return
    if args.json == "-":
        print(json.dumps(result))
        return
    print_report(result)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
