"""A tiny embedder built at test time: a sklesion-shaped classifier in miniature, cut at its penultimate layer.

The classifier takes an image and a metadata vector, like sklesion: per-channel mean of the image and a
linear map of the metadata, concatenated, a ReLU (the penultimate activation, 5 values), then a dense layer
and softmax over the seven classes. `build_tiny_embedder` cuts it with the same code that cuts sklesion
(`derm_cloud.models.embedder_cut`), so tests of embedders, probes and embedding emulators run on a real cut
graph in milliseconds. Images of different colours get different embeddings; it is not a lesion model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from derm_cloud.models.spec import ModelSpec, Preprocess
from derm_cloud.taxonomy import CLASS_CODES

__all__ = ["TINY_EMBEDDER_DIMENSION", "build_tiny_classifier_with_head", "build_tiny_embedder", "build_tiny_probe"]

TINY_EMBEDDER_DIMENSION = 5


def build_tiny_classifier_with_head(directory: str | Path, *, size: int = 16, seed: int = 0) -> Path:
    """Write a classifier folder (image NHWC + sklesion-v1 metadata -> 5-value penultimate -> 7 classes)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    inits: dict[str, np.ndarray] = {
        "axes": np.asarray([1, 2], np.int64),
        "WM": rng.normal(0, 0.5, size=(10, 2)).astype(np.float32),
        "W": rng.normal(0, 2.0, size=(TINY_EMBEDDER_DIMENSION, len(CLASS_CODES))).astype(np.float32),
        "B": rng.normal(0, 0.1, size=(len(CLASS_CODES),)).astype(np.float32),
    }
    nodes = [
        helper.make_node("ReduceMean", ["image", "axes"], ["pooled"], keepdims=0),
        helper.make_node("MatMul", ["metadata", "WM"], ["meta_features"]),
        helper.make_node("Concat", ["pooled", "meta_features"], ["features"], axis=1),
        helper.make_node("Relu", ["features"], ["penultimate"]),
        helper.make_node("MatMul", ["penultimate", "W"], ["head"]),
        helper.make_node("Add", ["head", "B"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_sklesion_shaped",
        [
            helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", size, size, 3]),
            helper.make_tensor_value_info("metadata", TensorProto.FLOAT, ["batch", 10]),
        ],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", len(CLASS_CODES)])],
        [numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], producer_name="derm-cloud")
    model.ir_version = 8
    onnx.checker.check_model(model)
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    (d / "model.onnx").write_bytes(model.SerializeToString())
    ModelSpec(
        model_id="tiny-sklesion-shaped",
        labels=tuple(CLASS_CODES),
        preprocess=Preprocess(resize="squash", height=size, width=size, interpolation="pil_bilinear", scale=1 / 255),
        layout="NHWC",
        metadata_input_index=1,
        metadata_encoding="sklesion-v1",
        facts={"architecture": "channel means + metadata map, ReLU, dense (test fixture)", "training_data": "none"},
    ).save(d)
    return d


def build_tiny_embedder(directory: str | Path, *, size: int = 16, seed: int = 0) -> Path:
    """Write an embedder folder (`model.onnx` + `embedder.json`, 5 values) cut from the tiny classifier."""
    from derm_cloud.models.embedder_cut import export_classifier_embedder

    d = Path(directory)
    source = build_tiny_classifier_with_head(d.with_name(d.name + "-classifier"), size=size, seed=seed)
    export_classifier_embedder(source, d, model_id="tiny-embedder", overwrite=True)
    return d


def build_tiny_probe(
    directory: str | Path,
    *,
    embedder_name: str = "local-onnx",
    embedder_options: dict[str, Any] | None = None,
    embedder_model_id: str = "tiny-embedder",
    dimension: int = TINY_EMBEDDER_DIMENSION,
    seed: int = 0,
) -> Path:
    """Write a probe folder with a seeded random head (no fitting) over a recorded embedder.

    By default the embedder is a tiny local one written beside the folder; pass another registry name, its
    options, model id and dimension to put the head over an emulated endpoint's embeddings.
    """
    import json

    from derm_cloud.backends.probe import PROBE_FORMAT
    from derm_cloud.backends.probe_head import LinearHead

    d = Path(directory)
    if embedder_options is None:
        embedder_options = {"model_dir": str(build_tiny_embedder(d.with_name(d.name + "-embedder")))}
    rng = np.random.default_rng(seed)
    d.mkdir(parents=True, exist_ok=True)
    LinearHead(
        mean=np.full(dimension, 0.3),
        scale=np.full(dimension, 0.2),
        coef=rng.normal(0, 1.0, size=(len(CLASS_CODES), dimension)),
        intercept=rng.normal(0, 0.1, size=len(CLASS_CODES)),
        beta=1.0,
        classes=tuple(CLASS_CODES),
    ).save(d / "head.npz")
    spec = {
        "format": PROBE_FORMAT,
        "model_id": f"tiny-probe-{embedder_model_id}",
        "embedder": {
            "name": embedder_name,
            "options": embedder_options,
            "model_id": embedder_model_id,
            "dimension": dimension,
        },
        "labels": list(CLASS_CODES),
        "head": {"file": "head.npz", "kind": "seeded random linear head (test fixture)"},
        "facts": {"training_data": "none: random seeded weights", "intended_use": "software tests only"},
    }
    (d / "probe.json").write_text(json.dumps(spec, indent=2) + "\n", encoding="utf-8")
    return d
