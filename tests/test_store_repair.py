"""A damaged run store: one clear line instead of a traceback, and ``--repair`` salvages every intact row."""

from __future__ import annotations

import json
import os
import re
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from derm_cloud.cli import main
from derm_cloud.compare.run.store import RunStore
from derm_cloud.compare.run.store_repair import repair_store
from derm_cloud.errors import RunStoreDamagedError


def _store_with_rows(path: Path, n: int) -> tuple[str, dict[str, tuple[Any, ...]]]:
    """A finished run of ``n`` results, checkpointed into the main file (as after a clean exit)."""
    with RunStore(path) as store:
        run = store.create_run(fingerprint="f" * 64, config={"seed": 1}, dataset_fingerprint="d")
        store.start_session(run)
        for i in range(n):
            store.add_result(
                run,
                backend="b",
                image_id=f"img{i:04d}",
                scenario="quality",
                repeat=0,
                ok=True,
                probs=[0.1] * 7,
                label="nv",
                extra={"a": 1},
            )
        store.finish_run(run)
        store._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        original = {r.image_id: (r.ok, r.probs, r.label, r.extra) for r in store.results(run)}
    return run, original


def _cut(path: Path, n_bytes: int) -> None:
    with path.open("r+b") as fh:
        fh.truncate(os.path.getsize(path) - n_bytes)


def _undecodable_rows(path: Path) -> list[str]:
    with sqlite3.connect(path) as db:
        bad = []
        for image_id, extra in db.execute("SELECT image_id, extra_json FROM results"):
            try:
                json.loads(extra)
            except ValueError:
                bad.append(image_id)
    return bad


def test_five_bytes_cut_is_refused_in_one_line_then_repaired(tmp_path: Path) -> None:
    path = tmp_path / "runs.sqlite"
    run, original = _store_with_rows(path, 40)
    _cut(path, 5)
    # The precondition of the fault: SQLite's structure is fine but one row's JSON is now zero bytes.
    assert _undecodable_rows(path) == ["img0037"]
    with pytest.raises(RunStoreDamagedError, match=r"--repair") as info:
        RunStore(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)

    report = repair_store(path)
    assert [(d.table, d.key) for d in report.dropped] == [("results", f"{run} b img0037 quality 0")]
    assert report.kept["results"] == 39 and report.reopened_runs == [run]
    assert report.damaged_copy is not None and report.damaged_copy.is_file()
    assert any("img0037" in line for line in report.summary())
    with RunStore(path) as store:
        salvaged = {r.image_id: (r.ok, r.probs, r.label, r.extra) for r in store.results(run)}
        # The run lost a unit, so an identical rerun resumes it and requests exactly that unit again.
        assert store.latest_incomplete("f" * 64) == run
    assert salvaged == {k: v for k, v in original.items() if k != "img0037"}
    assert repair_store(path).damaged_copy is None  # now intact: a second repair changes nothing


def test_lost_page_is_refused_and_every_other_row_salvaged(tmp_path: Path) -> None:
    path = tmp_path / "runs.sqlite"
    run, original = _store_with_rows(path, 300)
    _cut(path, 4096 + 5)
    with pytest.raises(RunStoreDamagedError, match="malformed"):
        RunStore(path)
    report = repair_store(path)
    with RunStore(path) as store:
        salvaged = {r.image_id: (r.ok, r.probs, r.label, r.extra) for r in store.results(run)}
    # Every kept row is exactly what was written; only the rows of the lost page are gone, and they are reported.
    assert salvaged and all(original[k] == v for k, v in salvaged.items())
    assert 0 < len(original) - len(salvaged) <= 60
    assert report.dropped and report.kept["runs"] == 1


def test_cli_says_one_line_and_repair_resumes_to_a_report(
    tmp_path: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests_helpers import DEV_CSV

    out = tmp_path / "out"
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        f'title = "repair"\noutput = "{out}"\nseed = 3\n[dataset]\nsource = "{DEV_CSV}"\nlimit = 40\n'
        '[fairness]\nskin_tone = "none"\n'
        "[scenarios]\nwarmup = 0\nmin_samples = 5\nbootstrap = 20\n"
        "single_stream = { enabled = false }\nserver = { enabled = false }\noffline = { enabled = false }\n"
        "cold_start = { enabled = false }\n"
        f'[[backends]]\nname = "a"\ntype = "local-onnx"\noptions = {{ model_dir = "{tiny_model_dir}" }}\n'
    )
    assert main(["compare", str(cfg), "-q"]) == 0
    store_path = out / "runs.sqlite"
    with RunStore(store_path) as store:
        run = store.runs()[0].run_id
        full = store.count(run)
        store._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    _cut(store_path, 4096 + 5)
    capsys.readouterr()

    assert main(["compare", str(cfg), "-q"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("derm-cloud: error: RunStoreDamagedError") and "--repair" in err and "\n" not in err

    assert main(["compare", str(cfg), "-q", "--repair"]) == 0
    printed = capsys.readouterr().out
    assert re.search(r"repaired .* dropped [1-9][0-9]* row", printed) and (out / "report.html").is_file()
    with RunStore(store_path) as store:
        # The rerun after the repair requested the dropped units again: the run is whole.
        assert store.count(run) == full and store.run(run).status == "complete"
