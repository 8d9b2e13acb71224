"""``deploy package`` faults of issue 11: nested output folders, YAML injection, packages bigger than needed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from derm_cloud.cli import main
from derm_cloud.deploy.package import package_model
from derm_cloud.errors import ConfigError

ADAPTERS = Path(__file__).resolve().parents[1] / "adapters"


def test_out_holding_the_model_is_refused_and_nothing_is_deleted(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sandbox = tmp_path / "sb"
    model = sandbox / "models" / "m1"
    shutil.copytree(tiny_model_dir, model)
    (sandbox / "notes.txt").write_text("keep me")
    args = ["deploy", "package", "--cloud", "sagemaker", str(model), "--out", str(sandbox), "--overwrite"]
    assert main([*args, "--adapters-dir", str(ADAPTERS)]) == 1
    err = capsys.readouterr().err
    assert "ConfigError" in err and "would delete it" in err and "Traceback" not in err
    assert (model / "model.onnx").is_file() and (sandbox / "notes.txt").read_text() == "keep me"


def test_overwrite_replaces_only_an_earlier_package(tiny_model_dir: Path, tmp_path: Path) -> None:
    other = tmp_path / "photos"
    other.mkdir()
    (other / "holiday.jpg").write_bytes(b"not ours")
    with pytest.raises(ConfigError, match="not a derm-cloud package"):
        package_model("vertex", tiny_model_dir, other, adapters_dir=ADAPTERS, overwrite=True)
    assert (other / "holiday.jpg").is_file()
    out = tmp_path / "pkg"
    package_model("vertex", tiny_model_dir, out, adapters_dir=ADAPTERS)
    package_model("vertex", tiny_model_dir, out, adapters_dir=ADAPTERS, overwrite=True)
    assert (out / "MANIFEST.json").is_file()


def test_azureml_yaml_is_written_by_a_yaml_library(tiny_model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not an Azure VM size"):
        package_model(
            "azureml", tiny_model_dir, tmp_path / "bad", adapters_dir=ADAPTERS, instance_type="Standard_DS3_v2\nx: 1"
        )
    out = tmp_path / "aml"
    package_model("azureml", tiny_model_dir, out, adapters_dir=ADAPTERS, endpoint_name="derm: x\n#y", instance_count=2)
    deployment = yaml.safe_load((out / "deployment.yml").read_text())
    assert deployment["instance_type"] == "Standard_DS3_v2" and deployment["instance_count"] == 2
    assert set(deployment) == {
        "$schema",
        "name",
        "endpoint_name",
        "model",
        "code_configuration",
        "environment",
        "instance_type",
        "instance_count",
        "request_settings",
    }
    endpoint = yaml.safe_load((out / "endpoint.yml").read_text())
    assert endpoint["name"] == deployment["endpoint_name"] == "derm-x-y" and endpoint["auth_mode"] == "key"
    conda = yaml.safe_load((out / "environment" / "conda.yaml").read_text())
    assert "azureml-inference-server-http" in conda["dependencies"][-1]["pip"]


def test_package_carries_only_what_serving_loads(sklesion_model_dir: Path, tmp_path: Path) -> None:
    assert (sklesion_model_dir / "model.keras").is_file()  # the 86 MB Keras original sits beside the ONNX model
    out = tmp_path / "aml"
    result = package_model("azureml", sklesion_model_dir, out, adapters_dir=ADAPTERS)
    assert sorted(p.name for p in (out / "model").iterdir()) == ["model.onnx", "spec.json"]
    manifest = json.loads(result.manifest.read_text())
    assert manifest["left_out"] == ["model.keras"]
    total = sum(f["bytes"] for f in manifest["files"])
    onnx_bytes = (sklesion_model_dir / "model.onnx").stat().st_size
    assert total < onnx_bytes * 1.2, f"package holds {total:,} bytes for a {onnx_bytes:,}-byte model"
