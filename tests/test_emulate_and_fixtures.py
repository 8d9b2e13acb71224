"""`derm-cloud emulate` and the shipped pytest fixtures (run as a user's own pytest session would)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from derm_cloud.cli import main


def test_emulate_once_prints_connection_details(tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["emulate", "sagemaker", "vertex", "--model-dir", str(tiny_model_dir), "--once", "--json"]) == 0
    views = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [v["kind"] for v in views] == ["sagemaker", "vertex"]
    assert all(v["url"].startswith("http://127.0.0.1:") for v in views)


def test_emulate_rejects_unknown_cloud(tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["emulate", "ibm-watson", "--model-dir", str(tiny_model_dir), "--once"]) == 1
    assert "unknown cloud" in capsys.readouterr().err


@pytest.mark.parametrize(("spec", "message"), [("bogus:1", "unknown fault 'bogus'"), ("slow:x", "whole number")])
def test_emulate_rejects_a_bad_fault_naming_the_choices(
    tiny_model_dir: Path, capsys: pytest.CaptureFixture[str], spec: str, message: str
) -> None:
    assert main(["emulate", "sagemaker", "--model-dir", str(tiny_model_dir), "--fault", spec, "--once"]) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    if spec.startswith("bogus"):
        assert "throttle" in err and "drip" in err  # the choices, so the fix is on screen


USER_TEST = """
import io
from PIL import Image
from derm_cloud.testing.emulators.base import Fault

pytest_plugins = ["derm_cloud.testing.fixtures"]


def _image():
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (180, 120, 110)).save(buf, "JPEG")
    return buf.getvalue()


def test_throttled_once_then_answers(sagemaker_emulator, sagemaker_classifier):
    sagemaker_emulator.inject(Fault("throttle", times=1, retry_after=0.05))
    pred = sagemaker_classifier.predict(_image())
    assert pred.attempts == 2
    assert len(sagemaker_emulator.requests) == 2


def test_each_cloud_fixture_answers(azure_ml_classifier, custom_vision_classifier, vertex_classifier):
    labels = {c.predict(_image()).label for c in (azure_ml_classifier, custom_vision_classifier, vertex_classifier)}
    assert len(labels) == 1  # the same hosted model answers the same everywhere
"""


def test_fixtures_work_in_a_users_pytest_session(tmp_path: Path) -> None:
    (tmp_path / "test_user_app.py").write_text(USER_TEST)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "2 passed" in proc.stdout
