"""Latency honesty (issue 20, item 3): the comparator does not time its own contention, and says what it timed.

One small run (module scope): a tiny model through local-onnx and behind an emulated SageMaker endpoint (two
backends of one model that both compute on this machine), with `backends_in_parallel = true` asked for, and the
machine's load reading replaced by a value far above any machine's core count (the warning must not depend on
the machine the tests run on).
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest
from tests_helpers import DEV_CSV

from derm_cloud.compare import RunStore, run_comparison
from derm_cloud.compare.analysis.latency import machine_summary
from derm_cloud.compare.analysis.pareto import pareto_section
from derm_cloud.compare.run import facts as run_facts
from derm_cloud.compare.run.facts import MACHINE_FACT, computes_here

INJECTED_LOAD = (512.0, 256.0, 128.0)
EMULATOR_LABEL = "127.0.0.1 emulator, not the provider"
TIMED = ("single_stream", "server", "offline/c=1", "offline/c=2", "cold_start")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Any:
    out = tmp_path_factory.mktemp("honesty") / "report"
    cfg = {
        "title": "latency honesty",
        "output": str(out),
        "seed": 5,
        "backends_in_parallel": True,  # asked for: quality passes may overlap, timing of CPU-bound ones may not
        "dataset": {"source": str(DEV_CSV), "limit": 6},
        "fairness": {"skin_tone": "none"},
        "scenarios": {
            "warmup": 1,
            "min_samples": 4,
            "bootstrap": 20,
            "quality": {"concurrency": 3},
            "single_stream": {"queries": 6},
            "server": {"queries": 4, "target_qps": 40.0, "latency_bound_ms": 5000},
            "offline": {"queries": 4, "concurrency": [1, 2]},
            "cold_start": {"trials": 1, "warm_queries": 1},
        },
        "backends": [
            {"name": "local", "type": "local-onnx", "options": {"model_dir": str(tiny_model_dir)}},
            {"name": "emu", "type": "sagemaker", "emulate": True, "model_dir": str(tiny_model_dir)},
        ],
    }
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(run_facts, "load_average", lambda: INJECTED_LOAD)
        result = run_comparison(cfg, progress=False)
    with RunStore(out / "runs.sqlite") as store:
        rows = list(store.results(result.run_id))
        machine = store.facts(result.run_id, MACHINE_FACT)
    return result, rows, machine


def test_cpu_bound_backends_are_timed_one_request_at_a_time(run: Any) -> None:
    result, rows, _ = run
    assert result.summary["backends"]["local"]["latency_basis"] == "local"
    assert result.summary["backends"]["emu"]["latency_basis"] == "emulator"
    # Single stream: round-robin, one request in flight in the whole process, so no two windows overlap.
    single = sorted((r for r in rows if r.scenario == "single_stream"), key=lambda r: r.t_start)
    assert len(single) == 12
    for before, after in itertools.pairwise(single):
        assert before.t_end <= after.t_start, (before.backend, after.backend)
    assert {r.backend for r in single[:2]} == {"local", "emu"}  # interleaved, not one block after the other
    # Server, offline and cold start: each backend's scenarios in one block that overlaps no other backend's.
    spans = {}
    for name in ("local", "emu"):
        mine = [r for r in rows if r.backend == name and r.scenario in TIMED[1:]]
        spans[name] = (min(r.t_start for r in mine), max(r.t_end for r in mine))
    first, second = sorted(spans.values())
    assert first[1] <= second[0]
    # Quality passes (which may run side by side) are all done before any timing starts.
    quality_end = max(r.t_end for r in rows if r.scenario == "quality")
    assert quality_end <= min(r.t_start for r in rows if r.scenario in TIMED)


def test_machine_facts_and_load_are_recorded_in_store_and_report(run: Any) -> None:
    result, _, machine = run
    session = machine["session-1"]
    assert session["cores"] >= 1 and session["cpu_model"]
    assert session["before"]["load"] == list(INJECTED_LOAD) and session["after"]["load"] == list(INJECTED_LOAD)
    phases = [(w["phase"], w["timed"], w["concurrent"]) for w in session["windows"]]
    assert phases[:2] == [("quality", False, True), ("single_stream", True, False)]
    assert [w["backends"] for w in session["windows"][2:]] == [["local"], ["emu"]]
    recorded = json.loads(result.json.read_text())["run"]["machine"]
    assert recorded["max_timing_load"] == INJECTED_LOAD[0] and recorded["load_exceeded_cores"]
    md = result.markdown.read_text()
    assert "| CPU model | " in md and "512.00 / 256.00 / 128.00" in md


def test_load_above_the_cores_warns_at_the_top_of_every_format(run: Any) -> None:
    result, _, _ = run
    html, md = result.html.read_text(), result.markdown.read_text()
    top = json.loads(result.json.read_text())["top_warnings"]
    assert any(w.startswith("MACHINE LOADED WHILE TIMING: the 1-minute load average reached 512.0") for w in top)
    assert html.index("MACHINE LOADED WHILE TIMING") < html.index("<h2>Summary</h2>")
    assert md.index("MACHINE LOADED WHILE TIMING") < md.index("## Summary")


def test_no_load_warning_at_or_below_the_cores() -> None:
    def session(load: float) -> dict[str, Any]:
        reading = {"at": 0.0, "load": [load, load, load]}
        window = {"phase": "single_stream", "backends": ["a"], "timed": True, "start": reading, "end": reading}
        untimed = {**window, "phase": "quality", "timed": False, "start": {"at": 0.0, "load": [99.0, 1, 1]}}
        return {"cores": 4, "usable_cores": 2, "cpu_model": "x", "windows": [untimed, window]}

    facts, warnings = machine_summary([session(2.0)])  # an untimed phase's load does not count
    assert facts["max_timing_load"] == 2.0 and not facts["load_exceeded_cores"] and warnings == []
    facts, warnings = machine_summary([session(2.5)])  # usable cores (affinity), not all cores, are the bound
    assert facts["load_exceeded_cores"] and "2.5 on 2 cores" in warnings[0]


def test_emulated_latency_is_labelled_in_html_markdown_and_json(run: Any) -> None:
    result, _, _ = run
    data = json.loads(result.json.read_text())
    assert data["latency"]["emu"]["basis"]["label"] == EMULATOR_LABEL
    assert data["latency"]["local"]["basis"]["label"] == "local model on this machine"
    assert next(p for p in data["pareto"]["points"] if p["name"] == "emu")["latency_basis"] == EMULATOR_LABEL
    md = result.markdown.read_text()
    # A row in each latency table (single stream, server, two offline levels, cold start) and in the Pareto table.
    assert md.count(f"| emu | {EMULATOR_LABEL} |") == 5
    assert md.count(f"| emu [EMULATED] | {EMULATOR_LABEL} |") == 1
    assert "(127.0.0.1 emulator)" in next(line for line in md.splitlines() if line.startswith("| emu [EMULATED]"))
    html = result.html.read_text()
    assert html.count(f"<td>emu</td><td>{EMULATOR_LABEL}</td>") == 5


def test_pareto_shows_every_backend_unknown_cost_in_its_own_band(run: Any) -> None:
    result, _, _ = run
    pareto = json.loads(result.json.read_text())["pareto"]
    points = {p["name"]: p for p in pareto["points"]}
    assert set(points) == {"local", "emu"}
    assert points["local"]["cost"] is None and points["local"]["band"] == "cost unknown, measured latency"
    assert points["local"]["ranked_on"] == ["latency", "quality"] and points["local"]["pareto_optimal"]
    assert "latency" not in points["emu"]["ranked_on"] and points["emu"]["band"].endswith("(not ranked)")
    rows = json.loads((result.output_dir / "figures" / "pareto.json").read_text())
    assert {r["name"] for r in rows} == {"local", "emu"}


def test_pareto_bands_rank_only_like_with_like() -> None:
    def facts(emulated: bool) -> dict[str, Any]:
        return {"emulated": emulated}

    names = ("real", "cheap-emu", "dear-emu", "local", "labels-emu")
    backends = {n: facts(n.endswith("-emu")) for n in names}
    p90 = {"real": 400.0, "cheap-emu": 900.0, "dear-emu": 50.0, "local": 80.0, "labels-emu": 10.0}
    latency = {n: {"single_stream": {"p90_ms": v}} for n, v in p90.items()}
    prices = {"real": 1.0, "cheap-emu": 0.5, "dear-emu": 2.0, "local": None, "labels-emu": 0.1}
    cost = {"backends": {n: {"known": v is not None, "per_1k_at_volume": v} for n, v in prices.items()}}
    quality = {"backends": {n: {"balanced_accuracy": 0.8} for n in names if n != "labels-emu"}}
    out = pareto_section(backends, latency, quality, cost)
    # The emulator's 50 ms never beats a real endpoint's 400 ms: the emulated ones are ranked on cost and quality,
    # and a backend without quality figures is not ranked against those with them.
    assert {p["name"]: p["pareto_optimal"] for p in out["points"]} == {
        "real": True,
        "cheap-emu": True,
        "dear-emu": False,
        "local": True,
        "labels-emu": True,
    }
    assert [(b["ranked_on"], b["backends"]) for b in out["bands"]] == [
        (["cost", "latency", "quality"], ["real"]),
        (["cost", "quality"], ["cheap-emu", "dear-emu"]),
        (["latency", "quality"], ["local"]),
        (["cost"], ["labels-emu"]),
    ]


def test_computes_here_local_emulated_and_loopback() -> None:
    assert computes_here({"provider": "local"}) and computes_here({"provider": "aws", "emulated": True})
    assert computes_here({"provider": "azure", "endpoint": "http://localhost:5001/score"})
    assert computes_here({"provider": "gcp", "endpoint": "127.0.0.1:50051"})
    assert computes_here({"provider": "azure", "endpoint": "http://[::1]:8080/score"})
    assert not computes_here({"provider": "aws", "endpoint": "https://runtime.sagemaker.eu-west-1.amazonaws.com"})
