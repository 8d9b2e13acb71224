"""Cut a classifier ONNX at its penultimate layer into an image embedder folder, and prove the cut is exact.

The penultimate activation is the input of the last dense layer (`MatMul` + bias, or `Gemm`) before the
output softmax: what the network's own head classifies from. A probe trained on it learns from the same
features. A metadata input (sklesion's age, sex and site) is fixed to the model's "unknown" encoding inside
the graph, so the embedder takes the image alone, like a foundation-model endpoint.

Two checks before the folder is written, on the same images through onnxruntime:

1. the cut graph's output equals the full graph's penultimate activation (the full graph run with that
   tensor exposed as an extra output and the metadata input fed the same "unknown" encoding);
2. the full graph's last layer applied to the embedding gives back the full graph's probabilities, which
   shows the cut sits exactly before the head.

The dropped last layer is kept beside the cut graph as `dropped_head.npz` (`weight` `(classes, dim)`, `bias`,
`labels`): the emulated embedding endpoints build their stand-in text tower from it (a prompt naming one class
maps to that class's weight vector; `derm_cloud.testing.emulators.embedding_host`). It is the stand-in model's
own head, recorded so that zero-shot through an emulator exercises the plumbing with vectors that mean something.

Example:
    >>> export_classifier_embedder("sklesion", "~/.cache/derm-cloud/models/sklesion-0.2.2-embedder")  # doctest: +SKIP
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from derm_cloud.embedders.spec import EmbedderSpec
from derm_cloud.errors import ConversionError, ModelSpecError
from derm_cloud.models.cache import resolve_model_dir
from derm_cloud.models.spec import ModelSpec
from derm_cloud.preprocess import encode_metadata, image_tensor, softmax
from derm_cloud.types import PatientMetadata

__all__ = ["DROPPED_HEAD_FILE", "CutCheck", "export_classifier_embedder", "load_dropped_head", "penultimate_layer"]

OUTPUT_NAME = "embedding"
#: The classifier's last dense layer, dropped by the cut and kept beside it (weights per class).
DROPPED_HEAD_FILE = "dropped_head.npz"


@dataclass(frozen=True)
class CutCheck:
    """What the export measured: images compared and the largest differences found."""

    images: int
    max_abs_diff_embedding: float
    max_abs_diff_probabilities: float
    dimension: int
    tensor: str


def penultimate_layer(graph: Any) -> tuple[str, np.ndarray, np.ndarray]:
    """`(activation tensor name, weight (dim, classes), bias (classes,))` of the graph's last dense layer.

    Walks back from the first output through an optional Softmax, then `Add(MatMul(x, W), b)` or `Gemm`.

    Raises:
        ModelSpecError: the graph does not end in a dense layer this walk recognises.
    """
    from onnx import numpy_helper

    producers = {out: node for node in graph.node for out in node.output}
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    node = producers.get(graph.output[0].name)
    if node is not None and node.op_type == "Softmax":
        node = producers.get(node.input[0])
    problem = "the graph does not end in a dense layer (MatMul + Add or Gemm, then an optional Softmax)"
    if node is None:
        raise ModelSpecError(problem)
    if node.op_type == "Gemm":
        attrs = {a.name: a.i for a in node.attribute}
        weight = inits.get(node.input[1])
        if weight is None or attrs.get("transA", 0):
            raise ModelSpecError(problem)
        weight = weight.T if attrs.get("transB", 0) else weight
        bias = inits.get(node.input[2]) if len(node.input) > 2 else None
        return node.input[0], weight, np.zeros(weight.shape[1]) if bias is None else bias
    if node.op_type == "Add":
        bias_name = next((name for name in node.input if name in inits), None)
        other = next((name for name in node.input if name not in inits), None)
        matmul = producers.get(other or "")
        if bias_name is not None and matmul is not None and matmul.op_type == "MatMul" and matmul.input[1] in inits:
            return matmul.input[0], inits[matmul.input[1]], inits[bias_name]
    raise ModelSpecError(problem)


def _cut(model: Any, spec: ModelSpec, tensor: str, dimension: int) -> Any:
    """A copy of `model` whose only input is the image and whose only output is `tensor`, named `embedding`."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    inputs = list(graph.input)
    image_name = inputs[spec.image_input_index].name
    head: list[Any] = []
    if spec.metadata_input_index is not None:
        meta_name = inputs[spec.metadata_input_index].name
        unknown = encode_metadata(spec, [PatientMetadata()])
        assert unknown is not None
        graph.initializer.append(numpy_helper.from_array(unknown.astype(np.float32), "embedder.metadata_unknown"))
        graph.initializer.append(numpy_helper.from_array(np.asarray([unknown.shape[1]], np.int64), "embedder.k"))
        # The constant row repeated once per image of the batch: Shape(image)[0:1] ++ [k] -> Expand.
        head = [
            helper.make_node("Shape", [image_name], ["embedder.batch"], start=0, end=1),
            helper.make_node("Concat", ["embedder.batch", "embedder.k"], ["embedder.meta_shape"], axis=0),
            helper.make_node("Expand", ["embedder.metadata_unknown", "embedder.meta_shape"], [meta_name]),
        ]
        graph.input.remove(inputs[spec.metadata_input_index])
    nodes = [*head, *graph.node, helper.make_node("Identity", [tensor], [OUTPUT_NAME])]
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["batch", dimension]))
    # Drop everything the embedding does not need (the head, the softmax).
    return onnx.utils.Extractor(model).extract_model([image_name], [OUTPUT_NAME])


def export_classifier_embedder(
    model_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    images: Sequence[Any] = (),
    model_id: str | None = None,
    tolerance: float = 1e-4,
    overwrite: bool = False,
) -> tuple[EmbedderSpec, CutCheck]:
    """Write an embedder folder from a classifier folder, cut at its penultimate layer, checked on `images`.

    Args:
        model_dir: a derm-cloud classifier folder (`spec.json` + `model.onnx`) or `"sklesion"`.
        out_dir: the new embedder folder (`model.onnx` + `embedder.json`).
        images: inputs for the checks (paths, bytes, arrays: anything `prepare_payload` takes); seeded
            generated lesion-like images are added so the check never runs on nothing.
        model_id: the embedder's id (default: the classifier's id + `-penultimate`).
        tolerance: largest absolute difference accepted in either check.
        overwrite: replace `out_dir` when it exists.

    Returns:
        The written spec and what the checks measured.

    Raises:
        ConversionError: a check failed (nothing is written), or `out_dir` exists without `overwrite`.
        ModelSpecError: the classifier folder is not one this cut understands.
    """
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from derm_cloud.images import prepare_payload
    from derm_cloud.models.sklesion_verify import generated_lesion_images

    source = resolve_model_dir(model_dir)
    spec = ModelSpec.load(source)
    out = Path(out_dir).expanduser()
    if out.exists() and not overwrite:
        raise ConversionError(f"{out} exists; pass overwrite=True (--overwrite) to replace it")
    full = onnx.load(str(source / spec.model_file))
    tensor, weight, bias = penultimate_layer(full.graph)
    dimension = int(weight.shape[0])
    cut = _cut(onnx.load(str(source / spec.model_file)), spec, tensor, dimension)
    # The full graph with the penultimate activation exposed too: the reference the cut must reproduce.
    full.graph.output.append(helper.make_tensor_value_info(tensor, TensorProto.FLOAT, None))

    with tempfile.TemporaryDirectory() as scratch:
        inputs = [*images, *generated_lesion_images(Path(scratch), 6)]
        pixels = np.stack([image_tensor(prepare_payload(im).array(), spec.preprocess, spec.layout) for im in inputs])
    full_session = ort.InferenceSession(full.SerializeToString(), providers=["CPUExecutionProvider"])
    cut_session = ort.InferenceSession(cut.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds: dict[str, np.ndarray] = {full_session.get_inputs()[spec.image_input_index].name: pixels}
    meta = encode_metadata(spec, [PatientMetadata()] * len(pixels))
    if meta is not None and spec.metadata_input_index is not None:
        feeds[full_session.get_inputs()[spec.metadata_input_index].name] = meta
    full_out, reference = full_session.run([full_session.get_outputs()[0].name, tensor], feeds)
    (embedding,) = cut_session.run([OUTPUT_NAME], {cut_session.get_inputs()[0].name: pixels})
    diff_embedding = float(np.abs(embedding - reference).max())
    rebuilt = embedding.astype(np.float64) @ weight.astype(np.float64) + bias.astype(np.float64)
    expected = np.asarray(full_out, np.float64)
    if spec.output == "probabilities":
        rebuilt = softmax(rebuilt)
    diff_probs = float(np.abs(rebuilt - expected).max())
    if diff_embedding > tolerance or diff_probs > tolerance:
        raise ConversionError(
            f"the cut at {tensor!r} does not reproduce the full graph on {len(pixels)} images: embedding differs by "
            f"{diff_embedding:.2e}, the head applied to it by {diff_probs:.2e} (tolerance {tolerance:g}); nothing "
            "was written"
        )
    check = CutCheck(len(pixels), diff_embedding, diff_probs, dimension, tensor)
    embedder = EmbedderSpec(
        model_id=model_id or f"{spec.model_id}-penultimate",
        dimension=dimension,
        output=OUTPUT_NAME,
        preprocess=spec.preprocess,
        layout=spec.layout,
        image_input_index=0,
        facts=dict(spec.facts)
        | {
            "architecture": f"{spec.facts.get('architecture', spec.model_id)}, cut at its penultimate layer",
            "cut_at": tensor,
            "cut_from": spec.model_id,
            "metadata": "fixed to the model's 'unknown' encoding" if spec.metadata_encoding else "none",
            "cut_check": {
                "images": check.images,
                "max_abs_diff_embedding": diff_embedding,
                "max_abs_diff_probabilities": diff_probs,
            },
            "dropped_head": {"file": DROPPED_HEAD_FILE, "labels": list(spec.labels)},
        },
    )
    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    onnx.save(cut, str(staging / embedder.model_file))
    embedder.save(staging)
    np.savez(
        staging / DROPPED_HEAD_FILE,
        weight=np.asarray(weight, np.float32).T,
        bias=np.asarray(bias, np.float32),
        labels=np.asarray(spec.labels, dtype=np.str_),
    )
    if out.exists():
        shutil.rmtree(out)
    staging.replace(out)
    return embedder, check


def load_dropped_head(directory: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]] | None:
    """`(weight (classes, dim), bias (classes,), labels)` kept by the cut in an embedder folder, or `None`.

    `None` when the folder has no `dropped_head.npz` (an encoder that was never a classifier, or a folder
    exported before the head was kept).

    Raises:
        ModelSpecError: the file is there but unreadable or inconsistent.
    """
    path = Path(directory).expanduser() / DROPPED_HEAD_FILE
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            weight, bias, labels = data["weight"], data["bias"], tuple(str(x) for x in data["labels"].tolist())
    except (OSError, KeyError, ValueError) as exc:
        raise ModelSpecError(f"cannot read {path}: {exc}") from None
    if weight.ndim != 2 or bias.shape != (weight.shape[0],) or len(labels) != weight.shape[0]:
        raise ModelSpecError(f"{path} is inconsistent: weight {weight.shape}, bias {bias.shape}, {len(labels)} labels")
    return weight.astype(np.float64), bias.astype(np.float64), labels
