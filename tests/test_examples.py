"""The three user examples in examples/, run against the emulators so they never rot.

* ``compare_providers.py`` (architect): a quick comparison on real dev images, report written and "opened";
* ``app_service.py`` (app engineer): the FastAPI service through TestClient, primary on the SageMaker emulator
  with faults injected so that the fallback answers;
* ``test_ci_example.py`` (CI): run as its own pytest session, exactly as a user's CI would run it. Our own run
  does not collect examples/ (``testpaths = ["tests"]``), so this wrapper is what runs it.

Images: HAM10000 dev set (Tschandl et al. 2018, CC BY-NC 4.0), read from ../shared/data.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from tests_helpers import DEV_CSV, dev_image, dev_rows

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses and FastAPI resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


# --- the CI example ---------------------------------------------------------------------------------------------


def test_ci_example_passes_as_its_own_pytest_run(tmp_path: Path) -> None:
    runner = Path(sys.executable).with_name("pytest")
    cmd = [str(runner)] if runner.exists() else [sys.executable, "-m", "pytest"]
    proc = subprocess.run(
        [*cmd, "-q", "-p", "no:cacheprovider", str(EXAMPLES / "test_ci_example.py")],
        cwd=EXAMPLES.parent,  # the repository's pytest settings apply, warnings as errors included
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "5 passed" in proc.stdout


# --- the engineer's app -----------------------------------------------------------------------------------------


@pytest.fixture
def service(tiny_model_dir: Path) -> Iterator[tuple[Any, Any, ModuleType]]:
    from fastapi.testclient import TestClient

    app_service = _load("app_service")
    triage, emulator = app_service.emulated_triage(str(tiny_model_dir), deadline_s=3.0)
    try:
        with TestClient(app_service.create_app(triage)) as client:
            yield client, emulator, app_service
    finally:
        triage.primary.close()
        triage.fallback.close()
        emulator.stop()


def _post(client: Any, path: Path | bytes, **form: str) -> Any:
    data = path.read_bytes() if isinstance(path, Path) else path
    return client.post("/v1/classify", files={"image": ("lesion.jpg", data, "image/jpeg")}, data=form)


def test_engineer_app_answers_like_the_library(service: Any, tiny_model_dir: Path) -> None:
    import derm_cloud

    client, emulator, _ = service
    row = dev_rows(1)[0]
    assert client.get("/healthz").json() == {"status": "ok", "backends": ["sagemaker", "local-onnx"]}
    reply = _post(client, dev_image(row), age=row["age"], sex=row["sex"], site=row["localization"])
    assert reply.status_code == 200, reply.text
    body = reply.json()
    with derm_cloud.create("local-onnx", model_dir=str(tiny_model_dir)) as clf:
        want = clf.predict(dev_image(row), {"age": float(row["age"]), "sex": row["sex"], "site": row["localization"]})
    assert body["served_by"] == "primary" and body["fallback_reason"] is None
    assert list(body["prediction"]["probabilities"].values()) == pytest.approx(list(want.probabilities.values()))
    referral = body["referral"]
    assert isinstance(referral["refer"], bool) and referral["refer"] == bool(referral["rules"] and referral["reasons"])
    assert "clinician reviews every result" in body["note"]
    assert len(emulator.requests_to("/invocations")) == 2  # the start-up check's probe, then the request


def test_engineer_app_falls_back_when_the_primary_fails(service: Any) -> None:
    from derm_cloud.testing.emulators.base import Fault

    client, emulator, _ = service
    emulator.inject(Fault("error", status=500, times=10))
    body = _post(client, dev_image(dev_rows(1)[0])).json()
    assert body["served_by"] == "fallback" and body["prediction"]["backend"] == "local-onnx"
    assert "ServiceError" in body["fallback_reason"]
    # the start-up check's probe, then the primary's retry policy: 3 attempts, then fallback
    assert len(emulator.requests_to("/invocations")) == 4


def test_engineer_app_refuses_bad_input_and_reports_no_fallback(service: Any, tiny_model_dir: Path) -> None:
    from fastapi.testclient import TestClient

    from derm_cloud.testing.emulators.base import Fault

    client, emulator, app_service = service
    assert _post(client, b"<html>").status_code == 400
    assert _post(client, dev_image(dev_rows(1)[0]), age="200").status_code == 422
    too_big = b"\xff\xd8\xff\xe0" + b"\0" * (app_service.MAX_UPLOAD_BYTES + 10)
    assert _post(client, too_big).status_code == 413
    assert len(emulator.requests_to("/invocations")) == 1  # the start-up check's probe: no bad input was sent
    triage, second = app_service.emulated_triage(str(tiny_model_dir), deadline_s=2.0)
    triage.fallback.close()
    triage.fallback = None
    second.inject(Fault("throttle", times=10, retry_after=0.01))
    try:
        with TestClient(app_service.create_app(triage)) as lone:
            reply = _post(lone, dev_image(dev_rows(1)[0]))
        assert reply.status_code == 503 and "no fallback" in reply.json()["detail"]
    finally:
        triage.primary.close()
        second.stop()


# --- the architect's script -------------------------------------------------------------------------------------


def test_architect_script_writes_and_opens_the_report(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    compare_providers = _load("compare_providers")
    opened: list[str] = []
    monkeypatch.setattr(compare_providers.webbrowser, "open", opened.append)
    out = tmp_path / "report"
    args = ["--dataset", str(DEV_CSV), "--model-dir", str(tiny_model_dir), "--limit", "8", "--quick"]
    assert compare_providers.main([*args, "--out", str(out), "--open"]) == 0
    html = (out / "report.html").read_text()
    assert opened == [(out / "report.html").resolve().as_uri()]
    assert f"report: {out / 'report.html'}" in capsys.readouterr().out
    for name in ("local-onnx", "sagemaker", "azure-ml", "vertex"):
        assert name in html
    assert "EMULATED" in html
    report = json.loads((out / "report.json").read_text())
    assert list(report["backends"]) == ["local-onnx", "sagemaker", "azure-ml", "vertex"]
    assert sorted(report["emulated"]) == ["azure-ml", "sagemaker", "vertex"]
    assert report["dataset"]["n"] == 8 and report["quality"]["available"]
