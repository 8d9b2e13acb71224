"""The emulator fixtures are a registered pytest plugin: a user's project needs no conftest line.

The user project runs in a subprocess with ``-W error``. Its derm-cloud is this source tree, and the plugin is
found the way pytest finds any installed plugin: through a ``pytest11`` entry point in distribution metadata,
written here from this repository's ``pyproject.toml`` (what pip writes when it installs the wheel).
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

USER_TEST = """
import io

from PIL import Image

from derm_cloud.testing.emulators.base import Fault


def _image():
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (180, 120, 110)).save(buf, "JPEG")
    return buf.getvalue()


def test_retried_after_one_throttle(sagemaker_emulator, sagemaker_classifier):
    sagemaker_emulator.inject(Fault("throttle", times=1, retry_after=0.05))
    assert sagemaker_classifier.predict(_image()).attempts == 2
    assert len(sagemaker_emulator.requests) == 2
"""


EVERY_CLASSIFIER_TEST = """
import io

import pytest
from PIL import Image


@pytest.mark.parametrize(
    "fixture", ["sagemaker_classifier", "azure_ml_classifier", "custom_vision_classifier", "vertex_classifier"]
)
def test_each_classifier_fixture_answers(fixture, request):
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (180, 120, 110)).save(buf, "JPEG")
    assert request.getfixturevalue(fixture).predict(buf.getvalue()).top(1)
"""


def _declared_plugins() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return dict(project.get("entry-points", {}).get("pytest11", {}))


def test_pyproject_declares_the_fixtures_module_as_a_pytest11_plugin() -> None:
    plugins = _declared_plugins()
    # Named after the module, so an existing `pytest_plugins = [...]` line does not register it twice.
    assert plugins == {"derm_cloud.testing.fixtures": "derm_cloud.testing.fixtures"}


def _metadata_dir(root: Path) -> Path:
    """A dist-info holding this repository's pytest11 entry points, as an installed wheel would have."""
    dist = root / "derm_cloud_plugin_metadata-0.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: derm-cloud-plugin-metadata\nVersion: 0.0\n")
    lines = "".join(f"{name} = {target}\n" for name, target in _declared_plugins().items())
    (dist / "entry_points.txt").write_text(f"[pytest11]\n{lines}")
    return root


def test_user_project_gets_the_fixtures_without_conftest_and_without_warnings(tmp_path: Path) -> None:
    project = tmp_path / "app"
    project.mkdir()
    (project / "test_app.py").write_text(USER_TEST)
    metadata = _metadata_dir(tmp_path / "site")
    env_path = f"{ROOT}:{metadata}"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-W", "error", "-q", "-p", "no:cacheprovider", str(project)],
        capture_output=True,
        text=True,
        cwd=project,
        env={**_clean_env(), "PYTHONPATH": env_path},
        timeout=300,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    assert "1 passed" in proc.stdout
    assert "PytestDeprecationWarning" not in output
    assert "asyncio_default_fixture_loop_scope" not in output
    assert not (project / "conftest.py").exists()


def test_a_scope_the_project_sets_is_kept(tmp_path: Path) -> None:
    project = tmp_path / "app"
    project.mkdir()
    (project / "pytest.ini").write_text("[pytest]\nasyncio_default_fixture_loop_scope = module\n")
    (project / "test_scope.py").write_text(
        "def test_scope(pytestconfig):\n"
        "    assert pytestconfig.pluginmanager.hasplugin('derm_cloud.testing.fixtures')\n"
        "    assert pytestconfig.getini('asyncio_default_fixture_loop_scope') == 'module'\n"
    )
    metadata = _metadata_dir(tmp_path / "site")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-W", "error", "-q", "-p", "no:cacheprovider", str(project)],
        capture_output=True,
        text=True,
        cwd=project,
        env={**_clean_env(), "PYTHONPATH": f"{ROOT}:{metadata}"},
        timeout=300,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert "1 passed" in proc.stdout


def _clean_env() -> dict[str, str]:
    import os

    # No inherited PYTEST_ADDOPTS / PYTEST_PLUGINS: the user's project starts from nothing.
    return {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}


@pytest.mark.parametrize("warnings_as_errors", ["error", "error::DeprecationWarning"])
def test_every_classifier_fixture_is_clean_under_warnings_as_errors(tmp_path: Path, warnings_as_errors: str) -> None:
    # custom_vision_classifier used to fail here on the Custom Vision retirement warning, which is meant for code
    # that calls the real service, not for a backend wired to an emulator on 127.0.0.1.
    project = tmp_path / "app"
    project.mkdir()
    (project / "test_fixtures.py").write_text(EVERY_CLASSIFIER_TEST)
    metadata = _metadata_dir(tmp_path / "site")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-W", warnings_as_errors, "-q", "-p", "no:cacheprovider", str(project)],
        capture_output=True,
        text=True,
        cwd=project,
        env={**_clean_env(), "PYTHONPATH": f"{ROOT}:{metadata}"},
        timeout=300,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    assert "4 passed" in proc.stdout
    assert "Warning" not in output
