"""TFLite exports (Custom Vision `TensorFlowLite`, Vertex AI AutoML Edge) as `local-tflite` model folders.

The `.tflite` file is copied unchanged; `spec.json` records how to feed it, so LiteRT runs it without
TensorFlow. Layout details and where they come from:

* **Custom Vision** `TensorFlowLite` (Microsoft `customvision-export-samples`,
  `samples/python/tensorflow_lite/classification/predict.py`): `labels.txt` (one tag per line, output order)
  and `model.tflite` with one float32 input `[1, H, W, 3]`; the sample resizes with Pillow's default filter
  (bicubic) straight to `W x H`, keeps pixels 0..255 and reverses the channels to BGR. An optional
  `cvexport.manifest` gives platform, flavor and iteration for provenance.
* **Vertex AI AutoML Edge** image classification: `model.tflite` plus `dict.txt` (one label per line) is
  the export Google documents; an input `[1, 224, 224, 3]` uint8 with quantization and a uint8 quantized score
  output are what the quantized edge models have, and both are read from the file itself, not assumed. What is
  *assumed* (Google publishes no reference preprocessing for these exports that we could check): a plain resize
  to the input size with Pillow bilinear, pixels fed raw (uint8 models), or scaled to 0..1 (float models).
  `tflite_metadata.json`, when present, is kept as provenance only.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from derm_cloud.errors import MissingDependencyError, ModelSpecError
from derm_cloud.models.spec import ModelSpec, Preprocess

__all__ = [
    "is_custom_vision_tflite",
    "is_vertex_edge_tflite",
    "write_custom_vision_tflite",
    "write_vertex_edge_tflite",
]


def _single_tflite(folder: Path) -> Path | None:
    found = list(folder.glob("*.tflite"))
    return found[0] if len(found) == 1 else None


def is_custom_vision_tflite(folder: Path) -> bool:
    """A folder with `labels.txt` and exactly one `.tflite` file."""
    return (folder / "labels.txt").is_file() and _single_tflite(folder) is not None


def is_vertex_edge_tflite(folder: Path) -> bool:
    """A folder with `dict.txt` and exactly one `.tflite` file."""
    return (folder / "dict.txt").is_file() and _single_tflite(folder) is not None


def _labels(path: Path) -> list[str]:
    labels = [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines() if line.strip()]
    if not labels:
        raise ModelSpecError(f"{path} lists no labels")
    return labels


def _io_details(model_path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The single input's and output's details, read by LiteRT (which also proves the file loads)."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError as exc:
        raise MissingDependencyError(
            "importing a TFLite export needs LiteRT; run: pip install 'derm-cloud[tflite]'"
        ) from exc
    try:
        interpreter = Interpreter(model_path=str(model_path))
    except (ValueError, RuntimeError) as exc:
        raise ModelSpecError(f"{model_path.name} is not a TFLite model LiteRT can load ({exc})") from None
    inputs, outputs = interpreter.get_input_details(), interpreter.get_output_details()
    if len(inputs) != 1 or len(outputs) != 1:
        raise ModelSpecError(
            f"{model_path.name} has {len(inputs)} input(s) and {len(outputs)} output(s); an image classifier "
            "export has one of each"
        )
    shape = [int(d) for d in inputs[0]["shape"]]
    if len(shape) != 4 or shape[3] != 3:
        raise ModelSpecError(f"{model_path.name} takes {shape}; expected an NHWC image input [1, H, W, 3]")
    return inputs[0], outputs[0]


def _check_outputs(output: dict[str, Any], labels: list[str], label_file: str) -> None:
    n_out = int(output["shape"][-1])
    if n_out != len(labels):
        raise ModelSpecError(f"the model has {n_out} outputs but {label_file} lists {len(labels)} labels")


def _dtype_name(detail: dict[str, Any]) -> str:
    import numpy as np

    return str(np.dtype(detail["dtype"]))


def _write(folder: Path, model_path: Path, out: Path, spec: ModelSpec, label_file: str) -> ModelSpec:
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(model_path, out / "model.tflite")
    shutil.copyfile(folder / label_file, out / label_file)
    spec.save(out)
    return spec


def write_custom_vision_tflite(folder: Path, out: Path, provenance: dict[str, Any]) -> ModelSpec:
    """Write the Custom Vision `TensorFlowLite` export in `folder` as a model directory `out`."""
    from derm_cloud.models.imports.custom_vision import _manifest

    labels = _labels(folder / "labels.txt")
    model_path = _single_tflite(folder)
    assert model_path is not None  # detect_layout checked
    image_in, scores_out = _io_details(model_path)
    _check_outputs(scores_out, labels, "labels.txt")
    if (in_dtype := _dtype_name(image_in)) != "float32":
        raise ModelSpecError(f"{model_path.name}: Custom Vision TFLite exports take float32 input, got {in_dtype}")
    _, height, width, _ = (int(d) for d in image_in["shape"])
    manifest = _manifest(folder)
    provenance = {
        "service": "azure-custom-vision",
        "platform": manifest.get("Platform", "TensorFlow"),
        "flavor": provenance.get("flavor") or manifest.get("Flavor") or "TensorFlowLite",
        "iteration": provenance.get("iteration") or manifest.get("IterationId"),
        "exported": provenance.get("exported") or manifest.get("ExportedDate"),
        **{k: v for k, v in provenance.items() if v is not None},
    }
    project = provenance.get("project") or "project"
    iteration = provenance.get("iteration") or model_path.stem
    spec = ModelSpec(
        model_id=f"customvision:{project}/{iteration}/{provenance['flavor']}",
        labels=tuple(labels),
        preprocess=Preprocess(
            resize="squash", height=height, width=width, interpolation="pil_bicubic", scale=1.0, channel_order="BGR"
        ),
        output="probabilities",
        layout="NHWC",
        max_batch=1,
        model_file="model.tflite",
        facts={
            "architecture": "Azure Custom Vision compact-domain image classifier (TFLite export)",
            "provenance": provenance,
            "input_conventions": {"channel_order": "BGR", "pixel_range": "0-255", "dtype": "float32"},
            "preprocessing_source": (
                "Microsoft customvision-export-samples, python/tensorflow_lite/classification/predict.py: Pillow "
                "resize (bicubic) to the input size, pixels 0..255, channels reversed to BGR"
            ),
            "manifest": manifest or None,
        },
    )
    return _write(folder, model_path, out, spec, "labels.txt")


def write_vertex_edge_tflite(folder: Path, out: Path, provenance: dict[str, Any]) -> ModelSpec:
    """Write the Vertex AI AutoML Edge TFLite export in `folder` as a model directory `out`."""
    labels = _labels(folder / "dict.txt")
    model_path = _single_tflite(folder)
    assert model_path is not None  # detect_layout checked
    image_in, scores_out = _io_details(model_path)
    _check_outputs(scores_out, labels, "dict.txt")
    _, height, width, _ = (int(d) for d in image_in["shape"])
    in_dtype = _dtype_name(image_in)
    scale, zero_point = image_in.get("quantization", (0.0, 0))
    if in_dtype == "float32":
        pre = Preprocess(resize="squash", height=height, width=width, interpolation="pil_bilinear", scale=1 / 255)
        pixel_note = "float32 input: pixels scaled to 0..1 (assumption)"
    elif in_dtype in ("uint8", "int8"):
        # The spec describes the real value the model means, real = scale * (q - zero_point); choosing
        # scale/mean this way makes the runner's quantization hand the model the raw pixel as q.
        s = float(scale) or 1.0
        pre = Preprocess(
            resize="squash",
            height=height,
            width=width,
            interpolation="pil_bilinear",
            scale=s,
            mean=(s * zero_point,) * 3,
        )
        pixel_note = f"{in_dtype} input fed the raw pixel (quantization scale {s:g}, zero point {zero_point})"
    else:
        raise ModelSpecError(f"{model_path.name}: input dtype {in_dtype} is not supported (float32, uint8, int8)")
    metadata = _tflite_metadata(folder)
    provenance = {
        "service": "vertex-ai-automl-edge",
        "flavor": provenance.get("flavor") or "tflite",
        **{k: v for k, v in provenance.items() if v is not None},
    }
    name = provenance.get("model") or provenance.get("project") or folder.name
    spec = ModelSpec(
        model_id=f"vertex-edge:{name}",
        labels=tuple(labels),
        preprocess=pre,
        output="probabilities",
        layout="NHWC",
        max_batch=1,
        model_file="model.tflite",
        facts={
            "architecture": "Vertex AI AutoML Edge image classifier (TFLite export)",
            "provenance": provenance,
            "input_conventions": {
                "channel_order": "RGB",
                "dtype": in_dtype,
                "pixels": pixel_note,
                "output": f"{_dtype_name(scores_out)} scores"
                + (" (dequantized)" if _dtype_name(scores_out) != "float32" else ""),
            },
            "preprocessing_source": (
                "assumed: plain Pillow bilinear resize to the input size (Google publishes no reference "
                "preprocessing for AutoML Edge exports); dtype and quantization read from the model file"
            ),
            "tflite_metadata": metadata,
        },
    )
    return _write(folder, model_path, out, spec, "dict.txt")


def _tflite_metadata(folder: Path) -> dict[str, Any] | None:
    path = folder / "tflite_metadata.json"
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        return None
    return data if isinstance(data, dict) else None
