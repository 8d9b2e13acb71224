"""Shared fixtures: real HAM10000 dev images (read from ../shared/data, never copied) and tiny models."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("DERM_CLOUD_DATA", ROOT.parent / "shared" / "data")).resolve()
DEV_CSV = DATA_DIR / "ham10000" / "dev.csv"


def dev_rows(limit: int | None = None) -> list[dict[str, str]]:
    """Rows of dev.csv (HAM10000, Tschandl et al. 2018, CC BY-NC 4.0), in file order."""
    with DEV_CSV.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    return rows[:limit] if limit else rows


def dev_image(row: dict[str, str]) -> Path:
    return DEV_CSV.parent / row["file"]


@pytest.fixture(scope="session")
def dev_images() -> list[Path]:
    """The first 8 dev images."""
    return [dev_image(r) for r in dev_rows(8)]


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from derm_cloud.testing.tiny_models import build_tiny_onnx_model

    return build_tiny_onnx_model(tmp_path_factory.mktemp("tiny") / "tiny-onnx")


@pytest.fixture(scope="session")
def tiny_meta_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from derm_cloud.testing.tiny_models import build_tiny_onnx_model

    return build_tiny_onnx_model(
        tmp_path_factory.mktemp("tinymeta") / "tiny-meta", with_metadata=True, layout="NHWC", model_id="tiny-meta"
    )


def sklesion_dir() -> Path | None:
    """The fetched sklesion model directory, if `derm-cloud models fetch sklesion` has run."""
    from derm_cloud.models.cache import models_dir

    d = models_dir() / "sklesion-0.2.2"
    return d if (d / "spec.json").is_file() else None


@pytest.fixture(scope="session")
def sklesion_model_dir() -> Path:
    d = sklesion_dir()
    if d is None:
        # CI fetches the model before the tests (.ci/run); a missing model there is a failure, not a skip.
        pytest.fail("sklesion is not fetched: run `derm-cloud models fetch sklesion` first")
    return d
