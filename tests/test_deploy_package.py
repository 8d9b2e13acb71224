"""``derm-cloud deploy package``: each cloud's artefact, unpacked and served, answers like local-onnx.

The adapters run from the unpacked artefact in a subprocess, importing the ``derm_cloud`` copy the artefact
carries (not the installed one), and are called through the matching emulator and backend where the emulator
can forward to a container (SageMaker), through the backend against the emulator hosting the packaged model
folder (Vertex AI, Azure ML), and directly over HTTP. Images: HAM10000 dev set (Tschandl et al. 2018, CC BY-NC
4.0), read from ../shared/data.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import os
import subprocess
import sys
import tarfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests_helpers import dev_image, dev_rows

from derm_cloud.deploy.package import package_model

ROOT = Path(__file__).resolve().parents[1]
ADAPTERS = ROOT / "adapters"


@pytest.fixture(scope="module")
def images() -> list[Path]:
    return [dev_image(r) for r in dev_rows(3)]


@pytest.fixture(scope="module")
def expected(tiny_model_dir: Path, images: list[Path]) -> list[dict[str, float]]:
    import derm_cloud

    with derm_cloud.create("local-onnx", model_dir=str(tiny_model_dir)) as clf:
        return [clf.predict(p).probabilities for p in images]


def _same(got: dict[str, float], want: dict[str, float]) -> None:
    assert list(got) == list(want)
    assert list(got.values()) == pytest.approx(list(want.values()), abs=1e-6)


def _start(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> tuple[subprocess.Popen[str], int]:
    """Start an adapter server on port 0 and read the port from its first stdout line."""
    proc = subprocess.Popen(
        cmd,
        cwd=cwd,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1", **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "listening on" not in line:
        proc.kill()
        raise AssertionError(f"adapter did not start: {line!r} {proc.stderr.read() if proc.stderr else ''}")
    return proc, int(line.rsplit(":", 1)[1])


def _dockerfile_sources(context: Path) -> list[str]:
    """Source paths of every COPY in the context's Dockerfile (no docker here: check the context is coherent)."""
    sources = []
    for line in (context / "Dockerfile").read_text().splitlines():
        parts = line.split()
        if parts and parts[0] == "COPY":
            sources += parts[1:-1]
    return sources


def _vendored_import(cwd: Path, env: dict[str, str] | None = None) -> str:
    out = subprocess.run(
        [sys.executable, "-c", "import derm_cloud.serving, derm_cloud; print(derm_cloud.__file__)"],
        cwd=cwd,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1", **(env or {})},
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


# --- SageMaker ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sagemaker_pkg(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sm") / "pkg"
    package_model("sagemaker", tiny_model_dir, out, adapters_dir=ADAPTERS)
    return out


@pytest.fixture(scope="module")
def unpacked_model(sagemaker_pkg: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("opt-ml") / "model"  # what SageMaker does with ModelDataUrl
    with tarfile.open(sagemaker_pkg / "model.tar.gz") as tar:
        tar.extractall(target, filter="data")
    return target


def test_sagemaker_archive_follows_the_inference_toolkit_layout(sagemaker_pkg: Path, tiny_model_dir: Path) -> None:
    with tarfile.open(sagemaker_pkg / "model.tar.gz") as tar:
        names = set(tar.getnames())
        members = tar.getmembers()
    for f in tiny_model_dir.iterdir():
        assert f.name in names  # model files at the archive root
    assert {"code/inference.py", "code/requirements.txt", "code/derm_cloud/serving.py"} <= names
    assert not any("__pycache__" in n or n.startswith("/") or ".." in n for n in names)
    assert all(m.mtime == 0 and m.uid == 0 for m in members)
    manifest = json.loads((sagemaker_pkg / "MANIFEST.json").read_text())
    archive = next(f for f in manifest["files"] if f["path"] == "model.tar.gz")
    assert archive["sha256"] == hashlib.sha256((sagemaker_pkg / "model.tar.gz").read_bytes()).hexdigest()
    assert any(r.startswith("onnxruntime==") for r in manifest["requirements"])
    assert set(_dockerfile_sources(sagemaker_pkg / "container")) == {
        "requirements.txt",
        "derm_cloud",
        "serve.py",
        "inference.py",
    }
    for src in _dockerfile_sources(sagemaker_pkg / "container"):
        assert (sagemaker_pkg / "container" / src).exists(), src


def test_sagemaker_package_is_reproducible(sagemaker_pkg: Path, tiny_model_dir: Path, tmp_path: Path) -> None:
    again = package_model("sagemaker", tiny_model_dir, tmp_path / "again", adapters_dir=ADAPTERS)
    assert (again.out_dir / "model.tar.gz").read_bytes() == (sagemaker_pkg / "model.tar.gz").read_bytes()


def test_sagemaker_container_serves_the_unpacked_model_through_the_emulator(
    sagemaker_pkg: Path, unpacked_model: Path, images: list[Path], expected: list[dict[str, float]]
) -> None:
    from derm_cloud.testing.emulators.sagemaker import SageMakerRuntimeEmulator, sagemaker_backend_for

    context = sagemaker_pkg / "container"
    assert _vendored_import(context) == str(context / "derm_cloud" / "__init__.py")
    cmd = [sys.executable, str(context / "serve.py"), "serve", "--model-dir", str(unpacked_model)]
    proc, port = _start([*cmd, "--host", "127.0.0.1", "--port", "0"], cwd=context)
    try:
        with SageMakerRuntimeEmulator() as emu:
            emu.add_endpoint("packaged", container_url=f"http://127.0.0.1:{port}")
            with sagemaker_backend_for(emu, "packaged", response_format="adapter") as clf:
                for image, want in zip(images, expected, strict=True):
                    _same(clf.predict(image).probabilities, want)
            assert len(emu.requests_to("/endpoints/packaged/invocations")) == len(images)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_sagemaker_toolkit_handlers_from_the_archive(
    unpacked_model: Path, images: list[Path], expected: list[dict[str, float]], tmp_path: Path
) -> None:
    # What the inference toolkit does: put code/ on sys.path, call model_fn, then input/predict/output per request.
    driver = tmp_path / "driver.py"
    driver.write_text(
        "import json, sys\n"
        "sys.path.insert(0, sys.argv[1] + '/code')\n"
        "import derm_cloud, inference\n"
        "model = inference.model_fn(sys.argv[1])\n"
        "out = []\n"
        "for path in sys.argv[2:]:\n"
        "    data = inference.input_fn(open(path, 'rb').read(), 'application/x-image')\n"
        "    out.append(json.loads(inference.output_fn(inference.predict_fn(data, model), 'application/json')))\n"
        "print(json.dumps({'lib': derm_cloud.__file__, 'out': out}))\n"
    )
    proc = subprocess.run(
        [sys.executable, str(driver), str(unpacked_model), *map(str, images)],
        cwd=tmp_path,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
        capture_output=True,
        text=True,
        check=True,
    )
    result = json.loads(proc.stdout)
    assert result["lib"] == str(unpacked_model / "code" / "derm_cloud" / "__init__.py")
    for body, want in zip(result["out"], expected, strict=True):
        _same(dict(zip(body["labels"], body["probabilities"], strict=True)), want)


# --- Azure ML -----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def azureml_pkg(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("aml") / "pkg"
    package_model("azureml", tiny_model_dir, out, adapters_dir=ADAPTERS, endpoint_name="Derm Triage", instance_count=2)
    return out


def test_azureml_yaml_points_at_the_packaged_files(azureml_pkg: Path) -> None:
    import yaml

    deployment = yaml.safe_load((azureml_pkg / "deployment.yml").read_text())
    endpoint = yaml.safe_load((azureml_pkg / "endpoint.yml").read_text())
    assert endpoint["name"] == deployment["endpoint_name"] == "derm-triage"
    assert endpoint["auth_mode"] == "key"
    assert (azureml_pkg / deployment["model"]["path"] / "spec.json").is_file()
    code = azureml_pkg / deployment["code_configuration"]["code"]
    assert (code / deployment["code_configuration"]["scoring_script"]).is_file()
    conda = yaml.safe_load((azureml_pkg / deployment["environment"]["conda_file"]).read_text())
    pip = next(d["pip"] for d in conda["dependencies"] if isinstance(d, dict))
    assert "azureml-inference-server-http" in pip and any(p.startswith("onnxruntime==") for p in pip)
    assert deployment["instance_count"] == 2 and deployment["instance_type"] == "Standard_DS3_v2"


def test_azureml_score_script_serves_through_the_emulator(
    azureml_pkg: Path, images: list[Path], expected: list[dict[str, float]], monkeypatch: pytest.MonkeyPatch
) -> None:
    from derm_cloud.testing.emulators.azure_ml import AzureMLEmulator, azure_ml_backend_for
    from derm_cloud.testing.emulators.base import Response

    monkeypatch.setenv("AZUREML_MODEL_DIR", str(azureml_pkg / "model"))
    spec = importlib.util.spec_from_file_location("packaged_score", azureml_pkg / "code" / "score.py")
    assert spec is not None and spec.loader is not None
    score: Any = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(score)
    score.init()
    with AzureMLEmulator(endpoint_name="derm-triage") as emu:
        emu.add_deployment("blue", respond=lambda body: Response.json(score.run(body)), traffic=100)
        with azure_ml_backend_for(emu) as clf:
            for image, want in zip(images, expected, strict=True):
                _same(clf.predict(image).probabilities, want)
        assert [c.deployment for c in emu.calls] == ["blue"] * len(images)


def test_azureml_code_folder_runs_with_its_own_library(azureml_pkg: Path, images: list[Path], expected: Any) -> None:
    body = json.dumps(
        {"input_data": {"columns": ["image"], "data": [base64.b64encode(images[0].read_bytes()).decode()]}}
    )
    code = azureml_pkg / "code"
    script = (
        "import json, sys, derm_cloud, score; score.init(); "
        "print(json.dumps([derm_cloud.__file__, score.run(sys.stdin.read())]))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script],
        cwd=code,
        input=body,
        env={**os.environ, "AZUREML_MODEL_DIR": str(azureml_pkg / "model"), "PYTHONDONTWRITEBYTECODE": "1"},
        capture_output=True,
        text=True,
        check=True,
    )
    lib, answer = json.loads(proc.stdout)
    assert lib == str(code / "derm_cloud" / "__init__.py")
    _same(dict(zip(answer[0]["labels"], answer[0]["probs"], strict=True)), expected[0])


# --- Vertex AI ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def vertex_pkg(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("vx") / "pkg"
    package_model("vertex", tiny_model_dir, out, adapters_dir=ADAPTERS)
    return out


@pytest.fixture
def vertex_container(vertex_pkg: Path) -> Iterator[int]:
    context = vertex_pkg / "container"
    env = {
        "DERM_CLOUD_MODEL_DIR": str(context / "model"),
        "AIP_HEALTH_ROUTE": "/health",
        "AIP_PREDICT_ROUTE": "/predict",
    }
    env["AIP_STORAGE_URI"] = ""  # not uploaded with an artifactUri: the baked-in model is used
    proc, port = _start(
        [sys.executable, str(context / "server.py"), "--host", "127.0.0.1", "--port", "0"], context, env
    )
    yield port
    proc.terminate()
    proc.wait(timeout=10)


def test_vertex_container_context_is_complete(vertex_pkg: Path) -> None:
    context = vertex_pkg / "container"
    sources = _dockerfile_sources(context)
    assert set(sources) == {"requirements.txt", "derm_cloud", "model", "server.py"}
    for src in sources:
        assert (context / src).exists(), src
    assert "google-cloud-storage" in (context / "requirements.txt").read_text()  # for gs:// artifactUri downloads
    assert "ENV DERM_CLOUD_MODEL_DIR=/opt/model" in (context / "Dockerfile").read_text()
    assert _vendored_import(context) == str(context / "derm_cloud" / "__init__.py")


def test_vertex_container_answers_the_custom_contract(
    vertex_container: int, images: list[Path], expected: list[dict[str, float]]
) -> None:
    base = f"http://127.0.0.1:{vertex_container}"
    with urllib.request.urlopen(f"{base}/health", timeout=10) as resp:
        assert resp.status == 200
    instances = [{"b64": base64.b64encode(p.read_bytes()).decode()} for p in images]
    request = urllib.request.Request(
        f"{base}/predict",
        data=json.dumps({"instances": instances}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as resp:
        predictions = json.load(resp)["predictions"]
    for p, want in zip(predictions, expected, strict=True):
        _same(dict(zip(p["labels"], p["probabilities"], strict=True)), want)


def test_vertex_model_folder_serves_through_the_emulator(
    vertex_pkg: Path, images: list[Path], expected: list[dict[str, float]]
) -> None:
    from derm_cloud.testing.emulators.vertex import VertexEmulator, vertex_backend_for

    with (
        VertexEmulator(vertex_pkg / "model", schema="custom", grpc=False) as emu,
        vertex_backend_for(emu, transport="rest") as clf,
    ):
        for image, want in zip(images, expected, strict=True):
            _same(clf.predict(image).probabilities, want)


# --- the command ----------------------------------------------------------------------------------------------------


def test_cli_packages_and_refuses_to_overwrite(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from derm_cloud.cli import main

    out = tmp_path / "pkg"
    args = ["deploy", "package", "--cloud", "vertex", str(tiny_model_dir), "--out", str(out)]
    assert main([*args, "--adapters-dir", str(ADAPTERS), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["cloud"] == "vertex" and Path(printed["manifest"]).is_file()
    assert main([*args, "--adapters-dir", str(ADAPTERS)]) == 1
    assert "is not empty" in capsys.readouterr().err
    assert main(["deploy", "package", "--cloud", "azureml", str(tmp_path), "--out", str(tmp_path / "x")]) == 1
    assert "spec.json" in capsys.readouterr().err
