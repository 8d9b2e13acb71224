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


# --- a real run store of ~120 rows: the header zeroed, a page lost, an index page lost --------------------------


@pytest.fixture(scope="module")
def real_store(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    """``runs.sqlite`` of a real comparison: 120 HAM10000 dev images through the tiny model, checkpointed."""
    from tests_helpers import DEV_CSV

    folder = tmp_path_factory.mktemp("real-store")
    cfg = folder / "c.toml"
    cfg.write_text(
        f'title = "store"\noutput = "{folder / "out"}"\nseed = 5\n[dataset]\nsource = "{DEV_CSV}"\nlimit = 120\n'
        '[fairness]\nskin_tone = "none"\n'
        "[scenarios]\nwarmup = 0\nmin_samples = 5\nbootstrap = 20\n"
        "single_stream = { enabled = false }\nserver = { enabled = false }\noffline = { enabled = false }\n"
        "cold_start = { enabled = false }\n"
        f'[[backends]]\nname = "a"\ntype = "local-onnx"\noptions = {{ model_dir = "{tiny_model_dir}" }}\n'
    )
    assert main(["compare", str(cfg), "-q"]) == 0
    store = folder / "out" / "runs.sqlite"
    with sqlite3.connect(store) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return store


def _all_rows(path: Path) -> dict[str, set[tuple[Any, ...]]]:
    with sqlite3.connect(path) as db:
        return {t: set(db.execute(f"SELECT * FROM {t}")) for t in ("runs", "sessions", "results", "facts")}


def _pages(path: Path, table: str) -> dict[str, list[int]]:
    """The root, interior and leaf pages of ``table``'s b-tree, read from the file (independent of the code under
    test): the page type byte, the right-most child pointer and the 4-byte child pointer of each interior cell."""
    data = path.read_bytes()
    size = int.from_bytes(data[16:18], "big")
    with sqlite3.connect(path) as db:
        root = db.execute("SELECT rootpage FROM sqlite_schema WHERE name = ?", (table,)).fetchone()[0]
    out: dict[str, list[int]] = {"root": [root], "interior": [], "leaf": []}
    todo = [root]
    while todo:
        page = todo.pop()
        base = (page - 1) * size
        kind = data[base]
        if kind in (0x0D, 0x0A):
            out["leaf"].append(page)
            continue
        out["interior"].append(page)
        cells = int.from_bytes(data[base + 3 : base + 5], "big")
        todo.append(int.from_bytes(data[base + 8 : base + 12], "big"))
        for i in range(cells):
            at = base + int.from_bytes(data[base + 12 + 2 * i : base + 14 + 2 * i], "big")
            todo.append(int.from_bytes(data[at : at + 4], "big"))
    out["leaf"].sort()
    return out


def _zero(path: Path, start: int, n: int) -> None:
    with path.open("r+b") as fh:
        fh.seek(start)
        fh.write(bytes(n))


def _damaged_copy(real_store: Path, tmp_path: Path) -> tuple[Path, dict[str, set[tuple[Any, ...]]], int]:
    path = tmp_path / "runs.sqlite"
    path.write_bytes(real_store.read_bytes())
    return path, _all_rows(path), int.from_bytes(path.read_bytes()[16:18], "big")


def test_a_zeroed_header_loses_no_row(real_store: Path, tmp_path: Path) -> None:
    path, before, _ = _damaged_copy(real_store, tmp_path)
    assert 110 <= len(before["results"]) <= 130  # the size of store the outside check used
    _zero(path, 0, 100)
    with pytest.raises(RunStoreDamagedError):
        RunStore(path)
    report = repair_store(path)
    assert report.dropped == [] and report.kept["results"] == len(before["results"])
    assert _all_rows(path) == before
    assert any("rebuilt the file header" in line for line in report.summary())
    with RunStore(path):
        pass  # opens cleanly


def test_a_zeroed_first_page_loses_no_row(real_store: Path, tmp_path: Path) -> None:
    path, before, size = _damaged_copy(real_store, tmp_path)
    _zero(path, 0, size)  # the header and the schema: SQL can read nothing at all
    report = repair_store(path)
    after = _all_rows(path)
    assert report.dropped == [] and {t: after[t] for t in after if t != "runs"} == {
        t: before[t] for t in before if t != "runs"
    }
    assert any("scan of every page" in line for line in report.summary())
    # Without the schema nothing says the key index pages found are all there is: the count is a floor, so the
    # run is reopened and a rerun requests whatever may be missing (nothing is, here).
    assert not report.exact and "dropped at least 0 row(s)" in report.summary()[0]
    (run,) = before["runs"]
    assert report.reopened_runs == [run[0]] and after["runs"] == {(*run[:5], None, "running")}


@pytest.mark.parametrize("where", ["first leaf", "middle leaf", "last leaf", "root"])
def test_dropped_rows_are_counted_as_they_were_lost(real_store: Path, tmp_path: Path, where: str) -> None:
    path, before, size = _damaged_copy(real_store, tmp_path)
    pages = _pages(path, "results")
    assert len(pages["leaf"]) >= 3 and pages["interior"], pages  # the store spans several pages
    leaf = pages["leaf"]
    page = {"first leaf": leaf[0], "middle leaf": leaf[len(leaf) // 2], "last leaf": leaf[-1]}.get(where)
    _zero(path, ((page or pages["root"][0]) - 1) * size, size)
    report = repair_store(path)
    after = _all_rows(path)
    lost = before["results"] - after["results"]
    assert after["results"] <= before["results"]  # nothing invented
    dropped = [d for d in report.dropped if d.table == "results"]
    # Exactly the lost rows are reported, each by its key (run, backend, image, scenario, repeat).
    assert sorted(d.key for d in dropped) == sorted(" ".join(str(v) for v in row[:5]) for row in lost)
    assert f"dropped {len(report.dropped)} row(s)" in report.summary()[0]
    if where == "root":
        assert lost == set()  # an interior page only points at leaves: every row is still on its leaf
    else:
        assert 0 < len(lost) < len(before["results"]) // 2


def test_a_lost_index_page_still_counts_true(real_store: Path, tmp_path: Path) -> None:
    path, before, size = _damaged_copy(real_store, tmp_path)
    index = _pages(path, "sqlite_autoindex_results_1")
    table = _pages(path, "results")
    _zero(path, (index["leaf"][0] - 1) * size, size)  # the index that lists every row ...
    _zero(path, (table["leaf"][-1] - 1) * size, size)  # ... and a page of rows
    report = repair_store(path)
    after = _all_rows(path)
    lost = before["results"] - after["results"]
    dropped = [d for d in report.dropped if d.table == "results"]
    assert lost and after["results"] <= before["results"]
    # Rows lost with the index page cannot be named; what is reported is a floor, and it says so.
    assert len(dropped) <= len(lost)
    assert "at least" in report.summary()[0]


@pytest.mark.parametrize("page_size", [1024, 2048, 4096, 8192, 65536])
def test_the_page_size_of_a_headerless_file_is_inferred(tmp_path: Path, page_size: int) -> None:
    from derm_cloud.compare.run.sqlite_pages import infer_page_size

    path = tmp_path / "s.sqlite"
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA page_size = {page_size}")
    db.execute("CREATE TABLE t (a TEXT, b TEXT)")
    # Bytes that look like page-type bytes (0x0A, 0x0D, 0x05, 0x02) inside the rows, where a wrong size would look.
    db.executemany("INSERT INTO t VALUES (?, ?)", [(f"{i:05d}", "\n\r\x05\x02" * (i % 97 + 1)) for i in range(6000)])
    db.commit()
    db.close()
    data = bytearray(path.read_bytes())
    data[:100] = bytes(100)
    assert infer_page_size(bytes(data))[0] == page_size
