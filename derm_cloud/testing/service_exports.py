"""Tiny stand-ins for managed-service exports, built at test time in each service's real layout.

They are real, small networks (a strided convolution, pooling, a linear layer, softmax), so resizing, channel
order and dtype differences change their outputs, as they would a trained model's. Layout details and their
sources:

* Custom Vision ONNX (Microsoft `customvision-export-samples`, `samples/python/onnx/classification*`):
  `model.onnx` with one input `data` `[1, 3, 224, 224]`, BGR 0..255 declared in the ONNX metadata
  (`Image.BitmapPixelFormat=Bgr8`, `Image.NominalPixelRange=NominalRange_0_255`), `labels.txt` in output
  order; `OnnxFloat16` makes input, weights and output float16; older compact exports end in `ZipMap`
  (`loss`) beside a `classLabel`-style output. `cvexport.manifest` carries platform, flavor and iteration
  (its field names follow exports seen in the wild, not a published schema).
* SageMaker JumpStart PyTorch IC `model.tar.gz`: the network (TorchScript here) and
  `class_label_to_prediction_index.json`.
* Custom Vision `TensorFlowLite` (same sample repo, `samples/python/tensorflow_lite/classification`):
  `model.tflite` taking float32 `[1, 224, 224, 3]` BGR 0..255, `labels.txt`; the manifest says platform
  `TensorFlow`, flavor `TensorFlowLite`. The network is the ONNX stand-in's, weight for weight, so the two
  exports of one iteration can be compared.
* Vertex AI AutoML Edge TFLite: `model.tflite` + `dict.txt` (Google's documented export files); the uint8
  input `[1, 224, 224, 3]` with quantization (here scale 1/128, zero point 128: the model reads pixels as
  -1..1) and uint8 scores (scale 1/256) are the quantized edge models' interface. The TFLite files are written
  from the flatbuffers schema (`derm_cloud.testing.tflite_writer`), no TensorFlow involved.

Example:
    >>> folder = build_custom_vision_export(tmp_path / "cv", flavor="OnnxFloat16")  # doctest: +SKIP
"""

from __future__ import annotations

import io
import json
import tarfile
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = [
    "CUSTOM_VISION_TAGS",
    "JUMPSTART_LABELS",
    "VERTEX_EDGE_LABELS",
    "build_custom_vision_export",
    "build_custom_vision_tflite_export",
    "build_jumpstart_artifact",
    "build_vertex_edge_export",
    "custom_vision_export_zip",
    "folder_zip",
]

#: tags named the way a person names them when training in the portal (mapped onto the codes by name).
CUSTOM_VISION_TAGS = (
    "Actinic keratosis",
    "Basal cell carcinoma",
    "Benign keratosis",
    "Dermatofibroma",
    "Melanoma",
    "Melanocytic nevus",
    "Vascular lesion",
)
JUMPSTART_LABELS = ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")
#: AutoML dataset labels are identifiers (letters, digits, underscores), so a person writes codes or snake_case.
VERTEX_EDGE_LABELS = (
    "actinic_keratosis",
    "basal_cell_carcinoma",
    "benign_keratosis",
    "dermatofibroma",
    "melanoma",
    "melanocytic_nevus",
    "vascular_lesion",
)


def _weights(seed: int, n_labels: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    conv = rng.normal(0, 0.5, size=(8, 3, 5, 5)).astype(np.float32)
    dense = rng.normal(0, 0.5, size=(8, n_labels)).astype(np.float32)
    bias = rng.normal(0, 0.3, size=(n_labels,)).astype(np.float32)
    return conv, dense, bias


def build_custom_vision_export(
    folder: Path,
    tags: Sequence[str] = CUSTOM_VISION_TAGS,
    *,
    flavor: str | None = None,
    zipmap: bool = False,
    iteration_id: str = "b7d2c1e0-3f4a-4c2b-9e1d-0a1b2c3d4e5f",
    seed: int = 0,
) -> Path:
    """Write a Custom Vision compact-domain classification export into `folder` and return it."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    float16 = flavor == "OnnxFloat16"
    dtype = TensorProto.FLOAT16 if float16 else TensorProto.FLOAT
    np_dtype = np.float16 if float16 else np.float32
    conv, dense, bias = _weights(seed, len(tags))
    inits = [
        numpy_helper.from_array(conv.astype(np_dtype), "conv_w"),
        numpy_helper.from_array(dense.astype(np_dtype), "dense_w"),
        numpy_helper.from_array(bias.astype(np_dtype), "dense_b"),
        numpy_helper.from_array(np.array(1 / 255, np_dtype), "inv255"),
    ]
    nodes = [
        helper.make_node("Mul", ["data", "inv255"], ["x01"]),
        helper.make_node("Conv", ["x01", "conv_w"], ["c"], strides=[4, 4], pads=[2, 2, 2, 2]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("MatMul", ["f", "dense_w"], ["z0"]),
        helper.make_node("Add", ["z0", "dense_b"], ["z"]),
        helper.make_node("Softmax", ["z"], ["model_output"], axis=1),
    ]
    outputs = [helper.make_tensor_value_info("model_output", dtype, [1, len(tags)])]
    opsets = [helper.make_opsetid("", 13)]
    if zipmap:
        # The older compact exports: scores as a sequence of {tag: score} maps, plus the top class index.
        nodes.append(helper.make_node("Cast", ["model_output"], ["scores32"], to=TensorProto.FLOAT))
        nodes.append(
            helper.make_node("ZipMap", ["scores32"], ["loss"], domain="ai.onnx.ml", classlabels_strings=list(tags))
        )
        nodes.append(helper.make_node("ArgMax", ["model_output"], ["classIndex"], axis=1, keepdims=0))
        seq_map = helper.make_sequence_type_proto(
            helper.make_map_type_proto(TensorProto.STRING, helper.make_tensor_type_proto(TensorProto.FLOAT, []))
        )
        outputs = [
            helper.make_value_info("loss", seq_map),
            helper.make_tensor_value_info("classIndex", TensorProto.INT64, [1]),
        ]
        opsets.append(helper.make_opsetid("ai.onnx.ml", 3))
    graph = helper.make_graph(
        nodes, "customvision", [helper.make_tensor_value_info("data", dtype, [1, 3, 224, 224])], outputs, inits
    )
    model = helper.make_model(graph, opset_imports=opsets, producer_name="customvision-standin")
    model.ir_version = 8
    helper.set_model_props(model, {"Image.BitmapPixelFormat": "Bgr8", "Image.NominalPixelRange": "NominalRange_0_255"})
    onnx.checker.check_model(model)
    folder.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(folder / "model.onnx"))
    (folder / "labels.txt").write_text("\n".join(tags) + "\n", encoding="utf-8")
    manifest = {
        "DomainType": "Classification",
        "Platform": "ONNX",
        "Flavor": flavor or "",
        "ExporterVersion": "2.0",
        "ExportedDate": "2026-11-30T12:00:00Z",
        "IterationId": iteration_id,
        "ModelFileName": "model.onnx",
        "LabelFileName": "labels.txt",
    }
    (folder / "cvexport.manifest").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    return folder


def custom_vision_export_zip(tags: Sequence[str] = CUSTOM_VISION_TAGS, **options: object) -> bytes:
    """The export as the zip the service's download link serves."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        folder = build_custom_vision_export(Path(tmp) / "export", tags, **options)  # type: ignore[arg-type]
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            for path in sorted(folder.iterdir()):
                zf.write(path, path.name)
        return buf.getvalue()


def build_jumpstart_artifact(target: Path, labels: Sequence[str] = JUMPSTART_LABELS, *, seed: int = 0) -> Path:
    """Write a JumpStart PyTorch image-classification `model.tar.gz` at `target` and return it."""
    import tempfile

    import torch

    conv, dense, bias = _weights(seed, len(labels))

    class TinyIC(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 8, 5, stride=4, padding=2, bias=False)
            self.fc = torch.nn.Linear(8, len(labels))
            with torch.no_grad():
                self.conv.weight.copy_(torch.from_numpy(conv))
                self.fc.weight.copy_(torch.from_numpy(dense.T.copy()))
                self.fc.bias.copy_(torch.from_numpy(bias))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out: torch.Tensor = self.fc(torch.relu(self.conv(x)).mean(dim=(2, 3)))
            return out

    scripted = torch.jit.script(TinyIC().eval())
    index = {label: i for i, label in enumerate(labels)}
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        model_path = Path(tmp) / "model.pt"
        torch.jit.save(scripted, str(model_path))
        label_path = Path(tmp) / "class_label_to_prediction_index.json"
        label_path.write_text(json.dumps(index), encoding="utf-8")
        with tarfile.open(target, "w:gz") as tf:
            tf.add(model_path, "model.pt")
            tf.add(label_path, label_path.name)
    return target


def folder_zip(folder: Path) -> bytes:
    """The files of `folder` as the zip a service's download link serves."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(folder.iterdir()):
            zf.write(path, path.name)
    return buf.getvalue()


def _tflite_weights(seed: int, n_labels: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    conv, dense, bias = _weights(seed, n_labels)
    return np.ascontiguousarray(conv.transpose(0, 2, 3, 1)), np.ascontiguousarray(dense.T), bias  # OHWI, [out, in]


def build_custom_vision_tflite_export(
    folder: Path,
    tags: Sequence[str] = CUSTOM_VISION_TAGS,
    *,
    iteration_id: str = "b7d2c1e0-3f4a-4c2b-9e1d-0a1b2c3d4e5f",
    seed: int = 0,
) -> Path:
    """Write a Custom Vision `TensorFlowLite` classification export into `folder` and return it."""
    from derm_cloud.testing.tflite_writer import tiny_classifier_tflite

    conv, dense, bias = _tflite_weights(seed, len(tags))
    # The ONNX stand-in scales 0..255 to 0..1 before its bias-free convolution; folding 1/255 into the filter
    # keeps the input 0..255 as the TFLite export's is, and the function the same.
    data = tiny_classifier_tflite(conv / 255, dense, bias, description="customvision-standin TensorFlowLite")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.tflite").write_bytes(data)
    (folder / "labels.txt").write_text("\n".join(tags) + "\n", encoding="utf-8")
    manifest = {
        "DomainType": "Classification",
        "Platform": "TensorFlow",
        "Flavor": "TensorFlowLite",
        "ExporterVersion": "2.0",
        "ExportedDate": "2026-11-30T12:00:00Z",
        "IterationId": iteration_id,
        "ModelFileName": "model.tflite",
        "LabelFileName": "labels.txt",
    }
    (folder / "cvexport.manifest").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    return folder


def build_vertex_edge_export(
    folder: Path, labels: Sequence[str] = VERTEX_EDGE_LABELS, *, quantized: bool = True, seed: int = 0
) -> Path:
    """Write a Vertex AI AutoML Edge image-classification TFLite export into `folder` and return it.

    Args:
        folder: where to write `model.tflite` and `dict.txt`.
        labels: the dataset's labels, in output order.
        quantized: uint8 input and output with quantization parameters (the default edge export); `False`
            writes a float32 model.
        seed: weights seed.
    """
    from derm_cloud.testing.tflite_writer import Quantization, tiny_classifier_tflite

    conv, dense, bias = _tflite_weights(seed, len(labels))
    if quantized:
        data = tiny_classifier_tflite(
            conv,
            dense,
            bias,
            input_quant=Quantization(1 / 128, 128),
            output_quant=Quantization(1 / 256, 0),
            description="vertex-edge-standin uint8",
        )
    else:
        data = tiny_classifier_tflite(conv, dense, bias, description="vertex-edge-standin float32")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.tflite").write_bytes(data)
    (folder / "dict.txt").write_text("\n".join(labels) + "\n", encoding="utf-8")
    return folder
