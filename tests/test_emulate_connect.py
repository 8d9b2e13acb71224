"""`derm-cloud emulate` prints connection details that work when copied: env, names, keys, both snippets."""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from derm_cloud.cli import main
from derm_cloud.testing.connect import connection, render_text
from derm_cloud.testing.launch import start

KINDS = [
    "sagemaker",
    "azure-ml",
    "azure-custom-vision",
    "vertex",
    "google-vision",
    "azure-openai",
    "vertex-gemini",
    "rekognition-custom-labels",
]


def _nulls(value: Any, path: str = "") -> list[str]:
    if value is None:
        return [path]
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _nulls(v, f"{path}.{k}")]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _nulls(v, f"{path}[{i}]")]
    return []


@pytest.fixture
def lesion_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working folder holding lesion.jpg (with EXIF), as the snippets expect."""
    exif = Image.Exif()
    exif[0x010F] = "camera-maker"
    Image.new("RGB", (96, 80), (190, 130, 120)).save(tmp_path / "lesion.jpg", "JPEG", exif=exif)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@contextlib.contextmanager
def _running(kind: str, model_dir: Path, transport: str = "rest") -> Iterator[Any]:
    emu = start(kind, None if kind == "google-vision" else model_dir, options={}, transport=transport)
    try:
        yield emu
    finally:
        emu.stop()


def _run_snippet(code: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "<snippet>", "exec"), {"__name__": "__snippet__"})
    return out.getvalue()


@pytest.mark.parametrize("kind", KINDS)
def test_both_printed_snippets_classify_through_the_emulator(
    kind: str, tiny_model_dir: Path, lesion_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with _running(kind, tiny_model_dir) as emu:
        info = connection(kind, emu)
        assert _nulls(info) == []
        json.dumps(info)  # every field is JSON
        for name, value in info["env"].items():  # exactly what a user pastes into the shell
            monkeypatch.setenv(name, value)
        sdk_out = _run_snippet(info["python_sdk"])
        ours = _run_snippet(info["python_derm_cloud"])
        assert len(emu.requests) >= 2  # both snippets reached the emulator's server
    assert sdk_out.strip()
    assert "LabelScore" in ours  # derm-cloud's top(3)
    text = render_text(info)
    assert info["url"] in text
    for name, value in info["env"].items():
        assert f"export {name}={value}" in text


def test_sagemaker_details_name_the_endpoint_and_the_dummy_keys(tiny_model_dir: Path) -> None:
    with _running("sagemaker", tiny_model_dir) as emu:
        info = connection("sagemaker", emu)
    assert info["endpoint_name"] == "derm-cloud"
    assert info["env"]["AWS_ACCESS_KEY_ID"] == info["aws_access_key_id"] == "testing"
    assert info["env"]["AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME"] == info["url"]
    assert any("credentials" in note for note in info["notes"])


def test_sagemaker_environment_alone_is_enough_for_the_backend(
    tiny_model_dir: Path, lesion_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import derm_cloud

    with _running("sagemaker", tiny_model_dir) as emu:
        info = connection("sagemaker", emu)
        for name, value in info["env"].items():
            monkeypatch.setenv(name, value)
        options = {k: v for k, v in info["backend"]["options"].items() if k != "region"}
        with derm_cloud.create("sagemaker", **options) as clf:  # endpoint URL and region from the env only
            assert clf.predict("lesion.jpg").backend == "sagemaker"
        assert len(emu.requests) == 1


def test_vertex_grpc_snippets_use_an_insecure_channel(
    tiny_model_dir: Path, lesion_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with _running("vertex", tiny_model_dir, transport="grpc") as emu:
        info = connection("vertex", emu)
        assert info["grpc_target"].startswith("127.0.0.1:")
        assert "insecure_channel" in info["python_sdk"]
        assert _run_snippet(info["python_sdk"]).strip()
        assert "LabelScore" in _run_snippet(info["python_derm_cloud"])


def test_emulate_json_lines_carry_every_field(tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["emulate", "all", "--model-dir", str(tiny_model_dir), "--once", "--json"]) == 0
    infos = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert sorted(i["kind"] for i in infos) == sorted(KINDS)
    for info in infos:
        assert _nulls(info) == [], info["kind"]
        assert {"url", "env", "backend", "python_sdk", "python_derm_cloud", "notes"} <= set(info)
    sagemaker = next(i for i in infos if i["kind"] == "sagemaker")
    assert sagemaker["endpoint_name"] == "derm-cloud"
    assert sagemaker["aws_secret_access_key"] == "testing"


def test_emulate_text_output_prints_exports_and_snippets(
    tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["emulate", "azure-ml", "--model-dir", str(tiny_model_dir), "--once"]) == 0
    out = capsys.readouterr().out
    assert "export AZUREML_SCORING_URI=http://127.0.0.1:" in out
    assert "export AZUREML_ENDPOINT_KEY=" in out
    assert "derm_cloud.create(" in out
    assert "requests.post(" in out


def test_connection_rejects_an_unknown_cloud() -> None:
    with pytest.raises(ValueError, match="choose from"):
        connection("ibm-watson", object())
