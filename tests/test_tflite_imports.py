"""TFLite exports come home: Custom Vision ``TensorFlowLite`` and Vertex AI AutoML Edge run under ``local-tflite``.

The exports are tiny real networks written at test time from the flatbuffers schema (no TensorFlow), in each
service's layout (derm_cloud.testing.service_exports). The "cloud" side is the prediction emulator hosting the
imported folder through ModelServer, which now runs TFLite directories with the same runner; independent
re-implementations of each vendor's sample feed the interpreter directly to check the preprocessing.
Images: HAM10000 (Tschandl et al. 2018, CC BY-NC 4.0), read from shared/data, never copied.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import derm_cloud
from derm_cloud.errors import ModelSpecError
from derm_cloud.models.imports import detect_layout, import_model
from derm_cloud.models.imports.cloud import export_custom_vision
from derm_cloud.models.spec import ModelSpec
from derm_cloud.testing.emulators.azure_custom_vision import CustomVisionEmulator, custom_vision_backend_for
from derm_cloud.testing.emulators.custom_vision_training import CustomVisionTrainingEmulator
from derm_cloud.testing.emulators.vertex import VertexEmulator, vertex_backend_for
from derm_cloud.testing.service_exports import (
    CUSTOM_VISION_TAGS,
    VERTEX_EDGE_LABELS,
    build_custom_vision_export,
    build_custom_vision_tflite_export,
    build_vertex_edge_export,
    folder_zip,
)

pytestmark = pytest.mark.filterwarnings("ignore:Azure AI Custom Vision retires")


def _gap(a: derm_cloud.Prediction, b: derm_cloud.Prediction) -> float:
    return max(abs(a.probabilities[c] - b.probabilities[c]) for c in a.probabilities)


def _interpreter(model_path: Path):  # type: ignore[no-untyped-def]
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(model_path))
    interpreter.allocate_tensors()
    return interpreter


def _microsoft_tflite_sample_scores(model_path: Path, image_path: Path) -> np.ndarray:
    """Microsoft's customvision-export-samples python/tensorflow_lite/classification predict.py, re-implemented."""
    interpreter = _interpreter(model_path)
    detail = interpreter.get_input_details()[0]
    image = Image.open(image_path).resize(tuple(detail["shape"][1:3]))
    array = np.array(image, dtype=np.float32)[np.newaxis, :, :, (2, 1, 0)]  # => BGR
    interpreter.set_tensor(detail["index"], array)
    interpreter.invoke()
    return np.asarray(interpreter.get_tensor(interpreter.get_output_details()[0]["index"])[0], np.float64)


def _edge_reference_scores(model_path: Path, image_path: Path) -> np.ndarray:
    """Feed a Vertex Edge model the resized uint8 pixels (or /255 floats) and dequantize its output by hand."""
    interpreter = _interpreter(model_path)
    detail, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    height, width = (int(d) for d in detail["shape"][1:3])
    pixels = np.array(Image.open(image_path).convert("RGB").resize((width, height), Image.Resampling.BILINEAR))
    feed = pixels[np.newaxis] if detail["dtype"] == np.uint8 else (pixels[np.newaxis] / 255).astype(np.float32)
    interpreter.set_tensor(detail["index"], feed)
    interpreter.invoke()
    raw = np.asarray(interpreter.get_tensor(out["index"])[0])
    scale, zero_point = out["quantization"]
    return (raw.astype(np.float64) - zero_point) * scale if raw.dtype == np.uint8 else raw.astype(np.float64)


def test_custom_vision_tflite_through_the_training_sdk_matches_the_endpoint_and_the_onnx_export(
    tmp_path: Path, dev_images: list[Path]
) -> None:
    builders = {
        ("TensorFlow", "TensorFlowLite"): lambda: folder_zip(build_custom_vision_tflite_export(tmp_path / "cv-tfl")),
    }
    with CustomVisionTrainingEmulator(builders) as training:
        url = export_custom_vision(
            training.url,
            training.training_key,
            training.project_id,
            training.iteration_id,
            platform="TensorFlow",
            flavor="TensorFlowLite",
            poll_seconds=0.01,
        )
        result = import_model(url, tmp_path / "home", provenance={"project": training.project_id})
    assert result.layout == "azure-custom-vision-tflite"
    provenance = result.spec.facts["provenance"]
    assert provenance["service"] == "azure-custom-vision" and provenance["flavor"] == "TensorFlowLite"
    assert provenance["iteration"] == training.iteration_id and provenance["platform"] == "TensorFlow"
    assert len(provenance["source_sha256"]) == 64 and "sig=" not in (result.model_dir / "spec.json").read_text()
    spec = ModelSpec.load(result.model_dir)
    assert spec.model_file == "model.tflite" and spec.preprocess.channel_order == "BGR" and spec.layout == "NHWC"
    onnx_home = import_model(build_custom_vision_export(tmp_path / "cv-onnx"), tmp_path / "onnx-home").model_dir
    with (
        CustomVisionEmulator(result.model_dir) as cloud_emu,
        custom_vision_backend_for(cloud_emu) as cloud,
        derm_cloud.create("local-tflite", model_dir=result.model_dir) as home,
        derm_cloud.create("local-onnx", model_dir=onnx_home) as home_onnx,
    ):
        cloud_gaps, onnx_gaps = [], []
        for path in dev_images:
            ours = home.predict(path)
            cloud_gaps.append(_gap(cloud.predict(path), ours))
            onnx_gaps.append(_gap(home_onnx.predict(path), ours))
        assert home.describe().backend == "local-tflite" and not home.describe().data_leaves_machine
    # The endpoint hosts the same folder with the same runner: only float rounding could differ.
    assert max(cloud_gaps) < 1e-6, cloud_gaps
    # Same network exported two ways (BGR folded into the ONNX graph, done by the spec for TFLite).
    assert max(onnx_gaps) < 1e-5, onnx_gaps


def test_custom_vision_tflite_matches_microsofts_sample(tmp_path: Path, dev_images: list[Path]) -> None:
    folder = build_custom_vision_tflite_export(tmp_path / "cv")
    result = import_model(folder, tmp_path / "home")
    with derm_cloud.create("local-tflite", model_dir=result.model_dir) as clf:
        gaps = []
        for path in dev_images:
            ours = {s.label: s.score for s in clf.predict(path).provider_scores}
            sample = _microsoft_tflite_sample_scores(folder / "model.tflite", path)
            gaps.append(max(abs(ours[t] - s) for t, s in zip(CUSTOM_VISION_TAGS, sample, strict=True)))
    assert max(gaps) < 1e-6, gaps
    # Without the BGR flip the answers move: the channel order in the spec is doing real work.
    rgb = ModelSpec.load(result.model_dir)
    from dataclasses import replace

    replace(rgb, preprocess=replace(rgb.preprocess, channel_order="RGB")).save(result.model_dir)
    with derm_cloud.create("local-tflite", model_dir=result.model_dir) as clf:
        ours = {s.label: s.score for s in clf.predict(dev_images[0]).provider_scores}
    sample = _microsoft_tflite_sample_scores(folder / "model.tflite", dev_images[0])
    assert max(abs(ours[t] - s) for t, s in zip(CUSTOM_VISION_TAGS, sample, strict=True)) > 1e-3


@pytest.mark.parametrize("quantized", [True, False], ids=["uint8", "float32"])
@pytest.mark.parametrize("packaging", ["folder", "zip"])
def test_vertex_edge_export_matches_the_vertex_endpoint_and_a_direct_interpreter_run(
    quantized: bool, packaging: str, tmp_path: Path, dev_images: list[Path]
) -> None:
    folder = build_vertex_edge_export(tmp_path / "export", quantized=quantized)
    assert detect_layout(folder) == "vertex-automl-edge-tflite"
    source: Path = folder
    if packaging == "zip":
        source = tmp_path / "model-export.zip"
        source.write_bytes(folder_zip(folder))
    result = import_model(source, tmp_path / "home", provenance={"model": "derm-edge", "exported": "2026-11-30"})
    facts = result.spec.facts
    assert facts["provenance"]["service"] == "vertex-ai-automl-edge" and result.spec.model_id == "vertex-edge:derm-edge"
    assert facts["input_conventions"]["dtype"] == ("uint8" if quantized else "float32")
    assert "assumed" in facts["preprocessing_source"]
    with (
        VertexEmulator(result.model_dir) as emu,
        vertex_backend_for(emu) as cloud,
        derm_cloud.create("local-tflite", model_dir=result.model_dir) as home,
    ):
        cloud_gaps, reference_gaps = [], []
        for path in dev_images:
            ours = home.predict(path)
            cloud_gaps.append(_gap(cloud.predict(path), ours))
            by_label = {s.label: s.score for s in ours.provider_scores}
            reference = _edge_reference_scores(folder / "model.tflite", path)
            reference_gaps.append(max(abs(by_label[x] - r) for x, r in zip(VERTEX_EDGE_LABELS, reference, strict=True)))
            if quantized:  # dequantized uint8 scores come in steps of 1/256
                assert all(abs(s.score * 256 - round(s.score * 256)) < 1e-9 for s in ours.provider_scores)
    assert max(cloud_gaps) < 1e-6, cloud_gaps
    # The uint8 model gets exactly the resized pixels (quantization with the model's own parameters round-trips).
    assert max(reference_gaps) < 1e-6, reference_gaps


def test_broken_tflite_exports_are_refused_with_the_reason(tmp_path: Path) -> None:
    lonely = tmp_path / "lonely"
    lonely.mkdir()
    (lonely / "model.tflite").write_bytes(
        build_vertex_edge_export(tmp_path / "ok").joinpath("model.tflite").read_bytes()
    )
    with pytest.raises(ModelSpecError, match="without its label file"):
        detect_layout(lonely)
    short = build_vertex_edge_export(tmp_path / "short")
    (short / "dict.txt").write_text("melanoma\nmelanocytic_nevus\n")
    with pytest.raises(ModelSpecError, match="7 outputs but dict.txt lists 2"):
        import_model(short, tmp_path / "short-home")
    good = import_model(build_custom_vision_tflite_export(tmp_path / "cv"), tmp_path / "cv-home").model_dir
    spec = json.loads((good / "spec.json").read_text())
    spec["preprocess"]["height"] = 200
    (good / "spec.json").write_text(json.dumps(spec))
    with pytest.raises(ModelSpecError, match="fix preprocess height/width"):
        derm_cloud.create("local-tflite", model_dir=good)
    spec["preprocess"]["height"], spec["preprocess"]["channel_order"] = 224, "GBR"
    (good / "spec.json").write_text(json.dumps(spec))
    with pytest.raises(ModelSpecError, match="channel_order must be RGB or BGR"):
        derm_cloud.create("local-tflite", model_dir=good)


def test_cli_imports_a_vertex_edge_export_and_names_the_backend(tmp_path: Path, dev_images: list[Path]) -> None:
    folder = build_vertex_edge_export(tmp_path / "edge")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    run = subprocess.run(
        [sys.executable, "-m", "derm_cloud.cli", "models", "import", str(folder), "--out", str(tmp_path / "home")],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert "vertex-automl-edge-tflite" in run.stdout and "--backend local-tflite" in run.stdout
    classify = subprocess.run(
        [
            sys.executable,
            "-m",
            "derm_cloud.cli",
            "classify",
            str(dev_images[0]),
            "--backend",
            "local-tflite",
            "-o",
            f"model_dir={tmp_path / 'home'}",
        ],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert classify.returncode == 0, classify.stderr
    assert "[local-tflite / vertex-edge:edge" in classify.stdout and "not a diagnosis" in classify.stdout
    info = subprocess.run(
        [sys.executable, "-m", "derm_cloud.cli", "models", "info", str(tmp_path / "home")],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert info.returncode == 0, info.stderr
    assert re.search(r"kind +tflite", info.stdout) and "zero point 128" in info.stdout


def test_cli_fetches_the_tflite_flavor_through_the_training_api(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from derm_cloud.cli import main

    builders = {
        ("TensorFlow", "TensorFlowLite"): lambda: folder_zip(build_custom_vision_tflite_export(tmp_path / "cv")),
    }
    with CustomVisionTrainingEmulator(builders, polls_until_done=0) as training:
        monkeypatch.setenv("AZURE_CUSTOM_VISION_TRAINING_KEY", training.training_key)
        argv = ["models", "import", "--custom-vision", training.project_id, training.iteration_id]
        argv += ["--endpoint", training.url, "--flavor", "TensorFlowLite", "--out", str(tmp_path / "home"), "--json"]
        assert main(argv) == 0
        exports = [r.path for r in training.requests if r.method == "POST" and "/export" in r.path]
    row = json.loads(capsys.readouterr().out)
    assert row["layout"] == "azure-custom-vision-tflite" and row["provenance"]["flavor"] == "TensorFlowLite"
    assert exports and all("platform=TensorFlow" in p and "flavor=TensorFlowLite" in p for p in exports)
