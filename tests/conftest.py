"""Shared fixtures: real HAM10000 dev images (read from the data folder, never copied) and tiny models.

Tests that read the HAM10000 images are found from their code (see ``tests_helpers.needs_ham10000``) and marked
``ham10000``; without the data folder they are skipped with a reason naming how to get it, and under ``CI=true``
the run fails at collection instead, so CI can never pass by skipping them. Tests marked ``project_data`` pin
figures of the project's own data folder: on the dev split a fetch derives they are skipped the same way.
Every report.json a test writes is checked against its JSON Schema (``DERM_CLOUD_VALIDATE_REPORT``).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from tests_helpers import (
    HOW_TO_GET_DATA,
    HOW_TO_GET_PROJECT_DATA,
    PROJECT_SPLIT,
    data_available,
    dev_image,
    dev_rows,
    is_data_path,
    needs_ham10000,
)

# Every report.json any test writes (in this process or a CLI subprocess) is checked against the shipped schema
# (derm_cloud/compare/report/report.schema.json): a field removed or retyped fails the test that wrote it.
os.environ.setdefault("DERM_CLOUD_VALIDATE_REPORT", "1")


def pytest_configure(config: pytest.Config) -> None:
    # The suite prices with the shipped snapshot: a user catalogue from `derm-cloud prices refresh` on this
    # machine would change every cost figure. Tests that want one pass its path.
    import tempfile

    os.environ["DERM_CLOUD_PRICES"] = str(Path(tempfile.mkdtemp(prefix="derm-cloud-prices-")) / "none.json")
    config.addinivalue_line("markers", "ham10000: reads the HAM10000 dev images ($DERM_CLOUD_DATA or ../shared/data)")
    config.addinivalue_line(
        "markers", "project_data: pins figures of the project's data folder (its 1,321-image dev split), not a fetch's"
    )


def _item_needs_data(item: pytest.Item) -> bool:
    if not isinstance(item, pytest.Function):
        return False
    if item.get_closest_marker("ham10000") or needs_ham10000(item.function):
        return True
    callspec = getattr(item, "callspec", None)
    if callspec is not None and any(is_data_path(v) for v in callspec.params.values()):
        return True
    seen: set[int] = set()
    fixtures = item._fixtureinfo.name2fixturedefs.values()
    return any(needs_ham10000(d.func, seen) for defs in fixtures for d in defs)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    marked = [item for item in items if _item_needs_data(item)]
    for item in marked:
        item.add_marker(pytest.mark.ham10000)
    if marked and not data_available() and os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        # CI must test on the real images: a missing data folder there is a broken set-up, not a reason to skip.
        raise pytest.UsageError(f"CI=true and {len(marked)} selected tests {HOW_TO_GET_DATA}")
    pinned = [item for item in items if item.get_closest_marker("project_data")]
    if pinned and data_available() and not PROJECT_SPLIT and os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        raise pytest.UsageError(f"CI=true and {len(pinned)} selected tests {HOW_TO_GET_PROJECT_DATA}")


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("ham10000") and not data_available():
        pytest.skip(HOW_TO_GET_DATA)
    if item.get_closest_marker("project_data") and data_available() and not PROJECT_SPLIT:
        pytest.skip(HOW_TO_GET_PROJECT_DATA)


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
