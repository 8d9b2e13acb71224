"""The Ray executor on a local Ray instance: workers rebuild backends from picklable recipes."""

from __future__ import annotations

import os
import pickle
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from tests_helpers import DEV_CSV, dev_image, dev_rows

from derm_cloud.compare import RunStore, run_comparison
from derm_cloud.compare.run.backends import prepare
from derm_cloud.compare.run.config_file import parse_config


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
