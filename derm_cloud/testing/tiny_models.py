"""Tiny, deterministic ONNX classifiers built at test time (no downloads), for unit and CI tests.

The graph is a real image classifier in miniature: per-channel global average pooling, a seeded linear layer,
softmax (or raw logits). Different images give different, reproducible probabilities, which is all the
contract tests need; it is not a lesion model and says so in its facts.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from derm_cloud.models.spec import IMAGENET_MEAN, IMAGENET_STD, ModelSpec, Preprocess
from derm_cloud.taxonomy import CLASS_CODES

__all__ = ["build_tiny_automl_export", "build_tiny_onnx_model"]


def _graph(
    n_labels: int, size: int, layout: str, output: str, seed: int, metadata_dim: int | None, opset: int = 18
) -> bytes:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    weight = rng.normal(0, 3.0, size=(3, n_labels)).astype(np.float32)
    bias = rng.normal(0, 0.1, size=(n_labels,)).astype(np.float32)
    shape: list[int | str] = ["batch", 3, size, size] if layout == "NCHW" else ["batch", size, size, 3]
    inputs = [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, shape)]
    axes = [2, 3] if layout == "NCHW" else [1, 2]
    nodes = [
        helper.make_node("ReduceMean", ["pixels", "axes"], ["pooled"], keepdims=0),
        helper.make_node("Gemm", ["pooled", "W", "B"], ["logits_img"]),
    ]
    inits = [
        numpy_helper.from_array(np.asarray(axes, np.int64), "axes"),
        numpy_helper.from_array(weight, "W"),
        numpy_helper.from_array(bias, "B"),
    ]
    last = "logits_img"
    if metadata_dim:
        inputs.append(helper.make_tensor_value_info("meta", TensorProto.FLOAT, ["batch", metadata_dim]))
        wm = rng.normal(0, 1.0, size=(metadata_dim, n_labels)).astype(np.float32)
        inits.append(numpy_helper.from_array(wm, "WM"))
        nodes += [
            helper.make_node("MatMul", ["meta", "WM"], ["logits_meta"]),
            helper.make_node("Add", ["logits_img", "logits_meta"], ["logits_all"]),
        ]
        last = "logits_all"
    if output == "probabilities":
        nodes.append(helper.make_node("Softmax", [last], ["scores"], axis=1))
    else:
        nodes.append(helper.make_node("Identity", [last], ["scores"]))
    graph = helper.make_graph(
        nodes,
        "tiny_classifier",
        inputs,
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", n_labels])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="derm-cloud")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


def build_tiny_onnx_model(
    directory: str | Path,
    *,
    labels: Sequence[str] = CLASS_CODES,
    size: int = 32,
    layout: str = "NCHW",
    output: str = "probabilities",
    seed: int = 0,
    with_metadata: bool = False,
    model_id: str = "tiny-onnx",
) -> Path:
    """Write a derm-cloud model directory (`model.onnx` + `spec.json`) holding a tiny classifier."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    (d / "model.onnx").write_bytes(_graph(len(labels), size, layout, output, seed, 10 if with_metadata else None))
    ModelSpec(
        model_id=model_id,
        labels=tuple(labels),
        preprocess=Preprocess(
            resize="squash",
            height=size,
            width=size,
            interpolation="pil_bilinear",
            scale=1 / 255,
            mean=IMAGENET_MEAN,
            std=IMAGENET_STD,
        ),
        output="probabilities" if output == "probabilities" else "logits",
        layout="NCHW" if layout == "NCHW" else "NHWC",
        metadata_input_index=1 if with_metadata else None,
        metadata_encoding="sklesion-v1" if with_metadata else None,
        facts={
            "architecture": "global average pool + linear (test fixture)",
            "parameters": 3 * len(labels) + len(labels),
            "licence": "MIT",
            "training_data": "none: random seeded weights",
            "intended_use": "software tests only; not a lesion model",
        },
    ).save(d)
    return d


def build_tiny_automl_export(directory: str | Path, *, labels: Sequence[str] = CLASS_CODES, seed: int = 1) -> Path:
    """Write the Azure AutoML for Images export layout: `model.onnx` (logits, 224 NCHW) + `labels.json`."""
    import json

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    (d / "model.onnx").write_bytes(_graph(len(labels), 224, "NCHW", "logits", seed, None))
    (d / "labels.json").write_text(json.dumps(list(labels)), encoding="utf-8")
    return d
