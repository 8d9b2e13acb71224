"""The comparison engine end to end: tiny local models, emulated clouds, the run store, resume and the report."""

from __future__ import annotations

import csv
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tests_helpers import DEV_CSV, dev_image, dev_rows

from derm_cloud.compare import RunStore, run_comparison
from derm_cloud.errors import ConfigError
from derm_cloud.taxonomy import CLASS_CODES

SMALL_SCENARIOS: dict[str, Any] = {
    "warmup": 1,
    "min_samples": 5,
    "bootstrap": 50,
    "single_stream": {"queries": 6},
    "server": {"queries": 6, "target_qps": 40.0, "latency_bound_ms": 5000},
    "offline": {"queries": 6, "concurrency": [1, 3]},
    "cold_start": {"trials": 1, "warm_queries": 1},
}


def config(out: Path, backends: list[dict[str, Any]], source: Path = DEV_CSV, limit: int = 12, **extra: Any) -> dict:
    return {
        "title": "test run",
        "output": str(out),
        "seed": 3,
        "dataset": {"source": str(source), "limit": limit},
        "scenarios": extra.pop("scenarios", SMALL_SCENARIOS),
        # ITA estimation reads every image again; only the engine test needs the skin-tone column.
        "fairness": extra.pop("fairness", {"skin_tone": "none"}),
        "backends": backends,
        **extra,
    }


def stored(out: Path, run_id: str) -> dict[tuple[str, str, str, int], tuple[bool, Any, Any, Any]]:
    with RunStore(out / "runs.sqlite") as store:
        return {r.key: (r.ok, r.probs, r.label, r.error_type) for r in store.results(run_id)}


@pytest.fixture(scope="module")
def second_tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from derm_cloud.testing.tiny_models import build_tiny_onnx_model

    return build_tiny_onnx_model(tmp_path_factory.mktemp("tiny2") / "tiny-b", seed=5, model_id="tiny-b")


@pytest.fixture
def manifest_with_corrupt_image(tmp_path: Path) -> Path:
    """Ten labelled dev images (HAM10000, Tschandl et al. 2018, CC BY-NC 4.0; read in place) + one corrupt file."""
    bad = tmp_path / "corrupt.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    path = tmp_path / "manifest.csv"
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image_id", "path", "label", "age", "sex", "site"])
        for r in dev_rows(10):
            w.writerow([r["image_id"], dev_image(r), r["dx"], r["age"], r["sex"], r["localization"]])
        w.writerow(["BROKEN_1", bad, "mel", "50", "male", "back"])
    return path


def test_engine_on_tiny_local_models(
    tmp_path: Path, tiny_model_dir: Path, second_tiny_dir: Path, manifest_with_corrupt_image: Path
) -> None:
    from sklearn.metrics import accuracy_score

    import derm_cloud
    from derm_cloud.data import load_dataset

    out = tmp_path / "report"
    backends = [
        {"name": "a", "type": "local-onnx", "options": {"model_dir": str(tiny_model_dir)}},
        {"name": "b", "type": "local-onnx", "options": {"model_dir": str(second_tiny_dir)}},
    ]
    result = run_comparison(
        config(out, backends, manifest_with_corrupt_image, limit=100, fairness={"skin_tone": "auto"})
    )
    s = result.summary
    assert not result.resumed and result.output_dir == out
    # Every planned result is stored exactly once; warm-up queries are not.
    with RunStore(out / "runs.sqlite") as store:
        # quality 11 + single-stream 6 + server 6 + offline 2 x 6 + cold start 1, per backend
        assert store.count(result.run_id) == 2 * (11 + 6 + 6 + 12 + 1)
        assert len(list(store.results(result.run_id, "a", "single_stream"))) == 6
        errors = [r for r in store.results(result.run_id, "a", "quality") if not r.ok]
    # The corrupt image is a typed error result, not a crash, and carries no image bytes.
    assert [(r.image_id, r.error_type) for r in errors] == [("BROKEN_1", "InvalidImageError")]
    assert "not really" not in (errors[0].error_message or "")
    qa = s["quality"]["backends"]["a"]
    assert qa["answered"] == 10 and qa["errors"] == 1
    # Quality figures equal scikit-learn on predictions made independently of the engine.
    ds = load_dataset(manifest_with_corrupt_image)
    good = [x for x in ds.samples if x.image_id != "BROKEN_1"]
    with derm_cloud.create("local-onnx", model_dir=str(tiny_model_dir)) as clf:
        pred = [clf.predict(x.read_bytes(), x.metadata).label for x in good]
    truth = [x.label for x in good]
    assert qa["accuracy"] == pytest.approx(accuracy_score(truth, pred))
    present = sorted(set(truth))
    recalls = [np.mean([p == c for p, t in zip(pred, truth) if t == c]) for c in present]
    assert qa["balanced_accuracy"] == pytest.approx(np.mean(recalls))
    # Report files: self-contained HTML, Markdown, JSON and data for every figure.
    html = result.html.read_text()
    assert "data:image/png;base64," in html and "<script" not in html and "src='http" not in html
    assert "a clinician reviews every result" in html.lower()
    md = result.markdown.read_text()
    assert "| a |" in md and "| b |" in md and "unknown" in md
    assert json.loads(result.json.read_text())["run"]["run_id"] == result.run_id
    for fig in s["figures"].values():
        assert (out / fig["png"]).stat().st_size > 1000
        assert (out / fig["csv"]).read_text().count("\n") >= 2
        assert isinstance(json.loads((out / fig["json"]).read_text()), list)
    assert {"reliability", "latency_distribution", "offline_throughput", "group_bars"} <= set(s["figures"])
    assert set(s["fairness"]["backends"]["a"]["attributes"]) == {"skin_tone", "sex", "age_band", "site"}
    # The local price is unknown: reported as unknown with a warning, never as 0.
    assert s["cost"]["backends"]["a"]["monthly"] is None
    assert any("price unknown" in w and "local.cpu" in w for w in result.warnings)
    assert s["agreement"]["available"] and s["agreement"]["pairwise"][0]["n"] == 10
    assert s["run"]["versions"]["python"] and s["run"]["versions"]["derm-cloud"]
    assert any("HAM10000" in a for a in s["attribution"])


def test_unlabelled_folder_explains_how_to_supply_labels(tmp_path: Path, tiny_model_dir: Path) -> None:
    folder = tmp_path / "images"
    folder.mkdir()
    for r in dev_rows(3):
        (folder / f"{r['image_id']}.jpg").symlink_to(dev_image(r))
    scen = {**SMALL_SCENARIOS, "server": {"enabled": False}, "offline": {"enabled": False}}
    backends = [{"name": "a", "type": "local-onnx", "options": {"model_dir": str(tiny_model_dir)}}]
    result = run_comparison(config(tmp_path / "out", backends, folder, scenarios=scen))
    q = result.summary["quality"]
    assert q["available"] is False and "label column" in q["how_to"]
    assert result.summary["fairness"]["available"] is False and "label" in result.summary["fairness"]["how_to"]
    assert "label column" in result.markdown.read_text()
    assert "server" not in result.summary["latency"]["a"]


def test_emulated_backends_concurrent_rate_limited_and_labelled(tmp_path: Path, tiny_model_dir: Path) -> None:
    out = tmp_path / "emu"
    backends = [
        {"name": "local", "type": "local-onnx", "options": {"model_dir": str(tiny_model_dir)}},
        {
            "name": "sagemaker",
            "type": "sagemaker",
            "emulate": True,
            "model_dir": str(tiny_model_dir),
            "options": {"instance_type": "ml.m5.large"},
            "rate_limit": 25.0,
        },
        {"name": "vertex", "type": "vertex", "emulate": True, "model_dir": str(tiny_model_dir)},
    ]
    result = run_comparison(config(out, backends, limit=12))
    s = result.summary
    assert s["emulated"] == ["sagemaker", "vertex"]
    assert s["backends"]["sagemaker"]["endpoint"].startswith("http://127.0.0.1:")
    assert "[EMULATED]" in result.markdown.read_text() and "EMULATED" in result.html.read_text()
    with RunStore(out / "runs.sqlite") as store:
        q = {
            n: {r.image_id: r for r in store.results(result.run_id, n, "quality")}
            for n in ("local", "sagemaker", "vertex")
        }
        cold = {n: list(store.results(result.run_id, n, "cold_start")) for n in ("local", "sagemaker")}
    # Same model behind each emulator, through the real SDKs: same probabilities as local-onnx.
    for name in ("sagemaker", "vertex"):
        for image_id, r in q["local"].items():
            assert np.allclose(q[name][image_id].probs, r.probs, atol=1e-5)
    # Cold start: the emulator answered "not ready" first, the retry policy tried again.
    assert cold["sagemaker"][0].attempts == 2 and cold["sagemaker"][0].extra["not_ready_injected"] == 1
    assert cold["local"][0].extra["not_ready_injected"] == 0
    # The rate limit (25/s) spaced the sagemaker quality requests.
    starts = sorted(r.t_start for r in q["sagemaker"].values())
    assert starts[-1] - starts[0] >= (len(starts) - 1) / 25 * 0.9
    # Backends ran concurrently: their quality phases overlap in time.
    spans = {n: (min(r.t_start for r in q[n].values()), max(r.t_end for r in q[n].values())) for n in q}
    assert max(spans["sagemaker"][0], spans["vertex"][0]) < min(spans["sagemaker"][1], spans["vertex"][1])
    assert s["cost"]["backends"]["sagemaker"]["monthly"] == pytest.approx(83.95)
    assert s["cost"]["backends"]["vertex"]["monthly"] == pytest.approx(1003.75)
    assert s["pareto"]["points"] and "cost_vs_volume" in s["figures"]


def test_secrets_never_reach_report_or_store(tmp_path: Path, tiny_model_dir: Path) -> None:
    out = tmp_path / "sec"
    scen = {"warmup": 0, "single_stream": {"enabled": False}, "server": {"enabled": False}}
    scen |= {"offline": {"enabled": False}, "cold_start": {"enabled": False}}
    backends = [
        {
            "name": "llm",
            "type": "azure-openai",
            "emulate": True,
            "model_dir": str(tiny_model_dir),
            "options": {"api_key": "emulator-key", "model_name": "gpt-4o"},
        }
    ]
    result = run_comparison(config(out, backends, limit=4, scenarios=scen))
    assert result.summary["cost"]["backends"]["llm"]["known"]  # priced from measured token usage
    for path in (result.html, result.markdown, result.json, out / "runs.sqlite"):
        assert b"emulator-key" not in path.read_bytes()
    assert result.summary["backends"]["llm"]["options"]["api_key"] == "<redacted>"


def test_rerun_resumes_and_resume_checks_fingerprint(tmp_path: Path, tiny_model_dir: Path) -> None:
    out = tmp_path / "r"
    scen = {**SMALL_SCENARIOS, "server": {"enabled": False}, "offline": {"enabled": False}}
    cfg = config(
        out, [{"name": "a", "type": "local-onnx", "options": {"model_dir": str(tiny_model_dir)}}], scenarios=scen
    )
    first = run_comparison(cfg)
    with RunStore(out / "runs.sqlite") as store:
        store._db.execute("UPDATE runs SET status = 'running'")  # as if killed before it finished
        n = store.count(first.run_id)
    again = run_comparison(cfg)
    assert again.run_id == first.run_id and again.resumed
    with RunStore(out / "runs.sqlite") as store:
        assert store.count(first.run_id) == n and store.sessions(first.run_id) == 2
    assert any("resumed" in w for w in again.warnings)
    assert run_comparison(cfg, fresh=True).run_id != first.run_id
    with pytest.raises(ConfigError, match="no run 'nope'"):
        run_comparison(cfg, resume="nope")
    with pytest.raises(ConfigError, match="different config or dataset"):
        run_comparison({**cfg, "seed": 99}, resume=first.run_id)


KILL_CONFIG = """\
title = "kill and resume"
output = "{out}"
seed = 11

[dataset]
source = "{source}"
limit = 32

[scenarios]
warmup = 1
bootstrap = 50
min_samples = 5

[scenarios.single_stream]
queries = 12

[scenarios.server]
enabled = false

[scenarios.offline]
queries = 8
concurrency = [2]

[scenarios.cold_start]
enabled = false

[[backends]]
name = "a"
type = "local-onnx"
options = {{ model_dir = "{model}" }}
rate_limit = 40

[[backends]]
name = "b"
type = "local-onnx"
options = {{ model_dir = "{model2}" }}
rate_limit = 40
"""


def test_killed_run_resumes_to_the_same_results(tmp_path: Path, tiny_model_dir: Path, second_tiny_dir: Path) -> None:
    killed_out = tmp_path / "killed"
    cfg_path = tmp_path / "kill.toml"
    cfg_path.write_text(
        KILL_CONFIG.format(out=killed_out, source=DEV_CSV, model=tiny_model_dir, model2=second_tiny_dir)
    )
    total = 2 * (32 + 12 + 8)
    proc = subprocess.Popen(
        [sys.executable, "-m", "derm_cloud.cli", "compare", str(cfg_path), "-q"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    db = killed_out / "runs.sqlite"
    deadline = time.monotonic() + 60
    count = 0
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if db.exists():
                with sqlite3.connect(db) as conn:
                    try:
                        count = conn.execute("SELECT COUNT(*) FROM results").fetchone()[0]
                    except sqlite3.OperationalError:
                        count = 0
                if count >= 20:
                    break
            time.sleep(0.02)
        assert proc.poll() is None, f"the run finished before it could be killed: {proc.stderr.read()!r}"  # type: ignore[union-attr]
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    with sqlite3.connect(db) as conn:
        at_kill = conn.execute("SELECT COUNT(*) FROM results").fetchone()[0]
    assert 20 <= at_kill < total

    resumed = run_comparison(cfg_path)  # same config and dataset: picks up the killed run
    assert resumed.resumed
    clean = run_comparison(cfg_path, output=tmp_path / "clean")
    assert not clean.resumed
    a, b = stored(killed_out, resumed.run_id), stored(tmp_path / "clean", clean.run_id)
    assert len(a) == len(b) == total
    assert a.keys() == b.keys()
    for key in a:
        ok_a, probs_a, label_a, err_a = a[key]
        ok_b, probs_b, label_b, err_b = b[key]
        assert (ok_a, label_a, err_a) == (ok_b, label_b, err_b), key
        assert np.allclose(probs_a, probs_b, atol=1e-9), key
    for name in ("a", "b"):
        qa, qb = resumed.summary["quality"]["backends"][name], clean.summary["quality"]["backends"][name]
        for metric in ("accuracy", "balanced_accuracy", "macro_auc"):
            assert qa[metric] == qb[metric]
        assert qa["per_class"] == qb["per_class"]
    with RunStore(killed_out / "runs.sqlite") as store:
        assert store.sessions(resumed.run_id) == 2
        assert store.run(resumed.run_id).status == "complete"


@pytest.mark.slow
def test_sklesion_dev_set_matches_scikit_learn(tmp_path: Path, sklesion_model_dir: Path) -> None:
    """Quality figures of sklesion (local-onnx) on a stratified dev subset equal scikit-learn's."""
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, recall_score, roc_auc_score

    scen = {"bootstrap": 200, "quality": {"concurrency": 2}}
    scen |= {k: {"enabled": False} for k in ("single_stream", "server", "offline", "cold_start")}
    backends = [{"name": "sklesion", "type": "local-onnx", "options": {"model_dir": "sklesion"}}]
    result = run_comparison(config(tmp_path / "sk", backends, DEV_CSV, limit=140, scenarios=scen))
    q = result.summary["quality"]["backends"]["sklesion"]
    assert q["answered"] == 140
    with RunStore(tmp_path / "sk" / "runs.sqlite") as store:
        rows = {r.image_id: r for r in store.results(result.run_id, "sklesion", "quality")}
    truth_by_id = {r["image_id"]: r["dx"] for r in dev_rows()}
    ids = sorted(rows)
    y = [truth_by_id[i] for i in ids]
    probs = np.asarray([rows[i].probs for i in ids])
    pred = [CLASS_CODES[k] for k in probs.argmax(axis=1)]
    assert q["accuracy"] == pytest.approx(accuracy_score(y, pred), abs=1e-12)
    assert q["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, pred), abs=1e-12)
    recalls = recall_score(y, pred, labels=list(CLASS_CODES), average=None, zero_division=0)
    for code, recall in zip(CLASS_CODES, recalls, strict=True):
        assert q["per_class"][code]["sensitivity"] == pytest.approx(recall, abs=1e-12)
    auc = roc_auc_score(y, probs, multi_class="ovr", average="macro", labels=list(CLASS_CODES))
    assert q["macro_auc"] == pytest.approx(auc, abs=1e-9)
    assert any("overlap" in w and "HAM10000" in w for w in result.warnings)
    assert "overlap" in result.html.read_text()


@pytest.mark.slow  # downloads the 1 MB dermapred wheel from PyPI
def test_default_example_image_is_fetched_and_verified(tmp_path: Path) -> None:
    import hashlib

    from derm_cloud.images import load_image, metadata_markers
    from derm_cloud.models.example_image import EXAMPLE_IMAGE_SHA256, example_image_dir

    folder = example_image_dir(tmp_path)
    image = folder / "dermapred-example.jpg"
    assert hashlib.sha256(image.read_bytes()).hexdigest() == EXAMPLE_IMAGE_SHA256
    assert "Apache-2.0" in (folder / "ATTRIBUTION.txt").read_text()
    assert "exif" in metadata_markers(image.read_bytes())  # a phone photo with camera EXIF ...
    data, _ = load_image(image).upload_bytes()
    assert not metadata_markers(data)  # ... that never leaves the machine
    assert example_image_dir(tmp_path) == folder  # cached: no second download


def test_a_report_that_fails_to_render_says_how_to_write_it_without_measuring_again(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import derm_cloud.compare.pipeline as pipeline

    out = tmp_path / "r"
    scen = {**SMALL_SCENARIOS, "server": {"enabled": False}, "offline": {"enabled": False}}
    cfg = config(
        out, [{"name": "a", "type": "local-onnx", "options": {"model_dir": str(tiny_model_dir)}}], scenarios=scen
    )
    real = pipeline.write_report

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise AttributeError("'bool' object has no attribute 'get'")  # what a rendering bug looked like

    monkeypatch.setattr(pipeline, "write_report", broken)
    with pytest.raises(AttributeError) as caught:
        run_comparison(cfg)
    (note,) = caught.value.__notes__
    run_id = note.split("(run ")[1].split(" ")[0]
    assert f"--resume {run_id}" in note and str(out / "runs.sqlite") in note
    with RunStore(out / "runs.sqlite") as store:
        n = store.count(run_id)
    monkeypatch.setattr(pipeline, "write_report", real)
    again = run_comparison(cfg, resume=run_id)  # the note's advice, followed: nothing measured again
    assert again.run_id == run_id and again.html.is_file()
    with RunStore(out / "runs.sqlite") as store:
        assert store.count(run_id) == n
