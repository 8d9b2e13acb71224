"""The Ray executor on a local Ray instance: workers rebuild backends from picklable recipes, shards stream to the
store in any order, and a killed worker's shard is sent again without redoing what is stored."""

from __future__ import annotations

import os
import pickle
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from tests_helpers import DEV_CSV, dev_image, dev_rows

from derm_cloud.compare import RunStore, run_comparison
from derm_cloud.compare.run.backends import open_runtimes, prepare
from derm_cloud.compare.run.config_file import parse_config
from derm_cloud.compare.run.local_executor import Job, LocalExecutor
from derm_cloud.compare.run.manifest_samples import ManifestSamples
from derm_cloud.compare.run.ray_executor import RayExecutor
from derm_cloud.data import Sample
from derm_cloud.errors import ConfigError
from derm_cloud.testing.worker_faults import WorkerFaults


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


def test_recipe_pickles_without_a_client_and_rebuilds_against_the_emulator(tiny_model_dir: Path) -> None:
    cfg = parse_config(
        {
            "backends": [
                {"name": "sm", "type": "sagemaker", "emulate": True, "model_dir": str(tiny_model_dir)},
            ]
        }
    )
    rt = prepare(cfg.backends[0], 30.0)
    try:
        blob = pickle.dumps(rt.recipe)
        assert b"botocore" not in blob and b"Session" not in blob  # a view of the emulator, no live client
        rebuilt = pickle.loads(blob).create(None)
        try:
            image = dev_image(dev_rows(1)[0])
            assert rebuilt is not rt.classifier
            assert np.allclose(rebuilt.predict(image).vector(), rt.classifier.predict(image).vector(), atol=1e-6)
        finally:
            rebuilt.close()
    finally:
        rt.close()


@pytest.mark.slow  # starting Ray takes ~10 s on a 2-core machine
def test_ray_executor_gives_the_local_results(tmp_path: Path, tiny_model_dir: Path, local_ray: None) -> None:
    scenarios = {
        "warmup": 1,
        "bootstrap": 50,
        "min_samples": 3,
        "single_stream": {"queries": 4},
        **{k: {"enabled": False} for k in ("server", "offline", "cold_start")},
    }
    cfg = {
        "output": str(tmp_path / "ray"),
        "executor": "ray",
        "ray": {"actors": 2, "shard_size": 5},
        "dataset": {"source": str(DEV_CSV), "limit": 20},
        "scenarios": scenarios,
        "backends": [
            {"name": "local", "type": "local-onnx", "options": {"model_dir": str(tiny_model_dir)}},
            {"name": "sm", "type": "sagemaker", "emulate": True, "model_dir": str(tiny_model_dir)},
        ],
    }
    on_ray = run_comparison(cfg)
    local = run_comparison(cfg, executor="local", output=tmp_path / "local")
    assert on_ray.summary["run"]["executor"] == "ray" and local.summary["run"]["executor"] == "local"
    with RunStore(tmp_path / "ray" / "runs.sqlite") as a, RunStore(tmp_path / "local" / "runs.sqlite") as b:
        for name in ("local", "sm"):
            ray_rows = {r.image_id: r for r in a.results(on_ray.run_id, name, "quality")}
            local_rows = {r.image_id: r for r in b.results(local.run_id, name, "quality")}
            assert ray_rows.keys() == local_rows.keys() and len(ray_rows) == 20
            for image_id, r in ray_rows.items():
                assert r.ok and np.allclose(r.probs, local_rows[image_id].probs, atol=1e-9)
                # Built and run inside a Ray worker process, not in this one.
                assert r.extra["executor"] == "ray" and r.extra["worker_pid"] != os.getpid()
            assert len({r.extra["worker_pid"] for r in ray_rows.values()}) == 2  # both actors took shards
    for name in ("local", "sm"):
        assert (
            on_ray.summary["quality"]["backends"][name]["accuracy"]
            == local.summary["quality"]["backends"][name]["accuracy"]
        )


def _generated_manifest(folder: Path, n: int) -> Path:
    """n seeded 32x32 PNGs and a manifest listing them (`gen-000000` ...)."""
    from PIL import Image

    (folder / "images").mkdir(parents=True)
    lines = ["image_id,file,label"]
    for i in range(n):
        pixels = np.random.default_rng(i).integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / "images" / f"{i}.png")
        lines.append(f"gen-{i:06d},images/{i}.png,{('mel', 'nv', 'bkl')[i % 3]}")
    manifest = folder / "manifest.csv"
    manifest.write_text("\n".join(lines) + "\n")
    return manifest


def _quality_job(tiny_model_dir: Path, out: Path, samples: Sequence[Sample]) -> Job:
    off = {"enabled": False}
    cfg = parse_config(
        {
            "output": str(out),
            "scenarios": {"warmup": 0, **{k: off for k in ("single_stream", "server", "offline", "cold_start")}},
            "backends": [{"name": "tiny", "type": "local-onnx", "options": {"model_dir": str(tiny_model_dir)}}],
        }
    )
    store = RunStore(out / "runs.sqlite")
    run_id = store.create_run(fingerprint="f", config={}, dataset_fingerprint="d")
    store.start_session(run_id)
    return Job(run_id, store, cfg, samples, open_runtimes(cfg, skip_unavailable=False, warnings=[]))


def _stored(job: Job) -> list[tuple[str, str, int, int, str]]:
    """(backend, image_id, session, ok, probs_json) of every row, in the order they were written."""
    db = sqlite3.connect(job.store.path)
    try:
        sql = "SELECT backend, image_id, session, ok, probs_json FROM results ORDER BY rowid"
        return [tuple(r) for r in db.execute(sql)]
    finally:
        db.close()


@pytest.mark.slow  # a local Ray instance (started once for the module)
def test_shards_are_stored_as_they_finish_with_the_local_executors_probabilities(
    tmp_path: Path, tiny_model_dir: Path, local_ray: None
) -> None:
    samples = ManifestSamples(_generated_manifest(tmp_path / "data", 120))
    # The first shard waits until the other actor has moved on past the second shard (it starts the fourth one,
    # whether shards are dealt round-robin or on demand): the shard sent after it finished, and is stored, first.
    # Waiting only for the second shard's first image left a race that a loaded machine lost (both shards then
    # ran side by side, and the first could finish its ten images first).
    faults = WorkerFaults(tmp_path, hold_at="gen-000000", until="gen-000030")
    on_ray = _quality_job(tiny_model_dir, tmp_path / "ray", samples)
    local = _quality_job(tiny_model_dir, tmp_path / "local", samples)
    try:
        RayExecutor(actors=2, shard_size=10, on_sample=faults).run(on_ray)
        LocalExecutor().run(local)
        ray_rows, local_rows = _stored(on_ray), _stored(local)
        workers = {r.extra["worker_pid"] for r in on_ray.store.results(on_ray.run_id)}
    finally:
        for job in (on_ray, local):
            job.store.close()
            for rt in job.runtimes:
                rt.close()
    order = [r[1] for r in ray_rows]
    assert sorted(order) == [s.image_id for s in samples]  # every image, once
    assert order.index("gen-000000") > order.index("gen-000010")  # shard 0 was stored after shard 1
    assert all(r[3] for r in ray_rows)
    # Same model, same pixels: the very same probabilities (as stored, to the last digit).
    assert {r[1]: r[4] for r in ray_rows} == {r[1]: r[4] for r in local_rows}
    assert len(workers) == 2 and os.getpid() not in workers


@pytest.mark.slow
def test_a_killed_workers_shard_is_sent_again_and_nothing_stored_is_redone(
    tmp_path: Path, tiny_model_dir: Path, local_ray: None
) -> None:
    manifest = _generated_manifest(tmp_path / "data", 120)
    job = _quality_job(tiny_model_dir, tmp_path / "out", ManifestSamples(manifest, head=30))
    try:
        # Session 1 stored the first 30 images (what a driver killed there leaves in the store; the rows are the
        # same whichever executor wrote them).
        LocalExecutor().run(job)
        # Session 2, the whole manifest: the worker is SIGKILLed in the middle of shard gen-40..49.
        job.store.start_session(job.run_id)
        faults = WorkerFaults(tmp_path, kill_at="gen-000042")
        RayExecutor(actors=2, shard_size=10, on_sample=faults).run(replace(job, samples=ManifestSamples(manifest)))
        rows = _stored(job)
    finally:
        job.store.close()
        for rt in job.runtimes:
            rt.close()
    assert faults.killed()
    keys = [(r[0], r[1]) for r in rows]
    assert len(keys) == len(set(keys)) == 120 and all(r[3] for r in rows)  # one row per (backend, image)
    assert {r[1] for r in rows if r[2] == 1} == {f"gen-{i:06d}" for i in range(30)}
    classified = faults.classified()
    assert not {f"gen-{i:06d}" for i in range(30)} & set(classified)  # stored in session 1: never sent again
    # The killed shard was sent again: the two images classified before the kill ran twice, the rest once.
    assert classified.count("gen-000040") == classified.count("gen-000041") == 2
    assert sorted(set(classified)) == [f"gen-{i:06d}" for i in range(30, 120)]
    assert len(classified) == 90 + 2


def test_a_cluster_address_with_local_resources_is_refused_before_connecting() -> None:
    import ray

    executor = RayExecutor(address="ray://head.example:10001", init={"num_cpus": 2, "retries": 1})
    assert executor.retries == 1 and executor.init == {"num_cpus": 2}
    with pytest.raises(ConfigError, match=r"\[ray\] num_cpus size a local Ray instance.*remove them"):
        executor._connect(ray)
