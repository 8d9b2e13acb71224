"""Shared fixtures: real HAM10000 dev images (read from ../shared/data, never copied) and tiny models."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests_helpers import dev_image, dev_rows


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
