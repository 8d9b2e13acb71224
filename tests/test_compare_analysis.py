"""Report figures from stored results: a common image set across backends, coverage, emulated cost sizing."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from tests_helpers import dev_image, dev_rows

from derm_cloud.compare.analysis.analyse import analyse
from derm_cloud.compare.run.config_file import parse_config
from derm_cloud.compare.run.results import collect_results
from derm_cloud.compare.run.store import RunStore
from derm_cloud.data import load_dataset
from derm_cloud.taxonomy import CLASS_CODES

OFF = {"enabled": False}


def onehot(code: str) -> list[float]:
    return [0.94 if c == code else 0.01 for c in CLASS_CODES]


def test_backends_are_scored_on_the_common_set_with_their_coverage(tmp_path: Path, tiny_model_dir: Path) -> None:
    # Twelve labelled dev images (HAM10000, Tschandl et al. 2018, CC BY-NC 4.0; read in place, never copied).
    rows = dev_rows(12)
    manifest = tmp_path / "manifest.csv"
    with manifest.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image_id", "path", "label"])
        for r in rows:
            w.writerow([r["image_id"], dev_image(r), r["dx"]])
    ds = load_dataset(manifest)
    cfg = parse_config(
        {
            "output": str(tmp_path / "out"),
            "seed": 3,
            "dataset": {"source": str(manifest)},
            "fairness": {"skin_tone": "none"},
            "scenarios": {
                "bootstrap": 20,
                "single_stream": OFF,
                "server": OFF,
                "offline": OFF,
                "cold_start": OFF,
            },
            "backends": [{"name": "a", "type": "local-onnx", "options": {"model_dir": str(tiny_model_dir)}}],
        }
    )
    truth = {s.image_id: str(s.label) for s in ds.samples}
    ids = [s.image_id for s in ds.samples]
    failed = {ids[0]: "ThrottledError", ids[1]: "ServiceError", ids[2]: "InvalidImageError"}
    wrong = {c: CLASS_CODES[(CLASS_CODES.index(c) + 1) % len(CLASS_CODES)] for c in CLASS_CODES}
    with RunStore(tmp_path / "runs.sqlite") as store:
        run = store.create_run(fingerprint="f" * 64, config={}, dataset_fingerprint=ds.fingerprint())
        store.start_session(run)
        for i, image_id in enumerate(ids):
            # "a" fails on the three (hard) images; elsewhere it is always right.
            if image_id in failed:
                store.add_result(
                    run, backend="a", image_id=image_id, scenario="quality", repeat=0, ok=False,
                    error_type=failed[image_id],
                )  # fmt: skip
            else:
                store.add_result(
                    run, backend="a", image_id=image_id, scenario="quality", repeat=0, ok=True,
                    probs=onehot(truth[image_id]), label=truth[image_id],
                )  # fmt: skip
            # "b" answers everything: wrong on every second image, and right on the three that "a" failed.
            code = truth[image_id] if image_id in failed or i % 2 else wrong[truth[image_id]]
            store.add_result(
                run, backend="b", image_id=image_id, scenario="quality", repeat=0, ok=True,
                probs=onehot(code), label=code,
            )  # fmt: skip
        infos = {
            "a": {"provider": "local", "labels_mapped": True},
            "b": {
                "provider": "aws",
                "labels_mapped": True,
                "emulated": True,
                "billing": {"sku": "aws.sagemaker.realtime.ml.m5.large"},
            },
        }
        results = collect_results(store, run, cfg, ds, infos)
    summary = analyse(results, cfg).to_dict()
    q = summary["quality"]
    assert q["common_set"] == 9
    a, b = q["backends"]["a"], q["backends"]["b"]
    # Both are scored on the same nine images, whatever each answered.
    assert a["answered"] == b["answered"] == a["n"] == b["n"] == 9
    common = [i for i in ids if i not in failed]
    b_common = np.mean([ids.index(i) % 2 == 1 for i in common])
    b_all = np.mean([i in failed or ids.index(i) % 2 == 1 for i in ids])
    assert b_common != pytest.approx(b_all)
    assert b["accuracy"] == pytest.approx(b_common)
    assert a["accuracy"] == pytest.approx(1.0)
    # Own coverage is reported beside the figures.
    assert (a["answered_own"], a["attempted"], a["coverage"]) == (9, 12, pytest.approx(0.75))
    assert (b["answered_own"], b["attempted"], b["coverage"]) == (12, 12, 1.0)
    dropped = [w for w in summary["warnings"] if "dropped from the common set" in w]
    assert len(dropped) == 1
    assert "3 of 12" in dropped[0] and "a failed on 3" in dropped[0] and "ThrottledError x1" in dropped[0]
    # Fairness uses the same common set.
    assert set(summary["fairness"]["backends"]) == {"a", "b"}
    for report in summary["fairness"]["backends"].values():
        assert sum(g["n"] for g in next(iter(report["attributes"].values()))["groups"].values()) == 9
    # The emulated backend's always-on cost is not sized from this machine's throughput.
    cb = summary["cost"]["backends"]["b"]
    assert cb["instances"] == 1 and cb["per_1k_at_throughput"] is None
    assert any("b: throughput-based sizing skipped because the backend was emulated" in w for w in summary["warnings"])
