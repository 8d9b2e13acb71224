"""Small ONNX graph edits that let a service's export run under derm-cloud's one preprocessing path.

An export's own input conventions (BGR channel order, float16 tensors, a `ZipMap` that turns scores into a
sequence of dicts) are folded into the graph itself, so the model directory takes the same RGB float32 NCHW
tensor as every other model and returns one float32 score row per image. The edits are exact: a channel
`Gather` and `Cast` nodes change no value beyond float16 rounding, which the original graph applied too.
New constants are `Constant` nodes, not initializers: an IR 3 graph (Custom Vision's 2018 exports) must declare
every initializer as a graph input too, and onnxruntime would then list the constant as an input to feed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from derm_cloud.errors import ModelSpecError

__all__ = ["Adapted", "adapt_classifier_graph"]


@dataclass(frozen=True)
class Adapted:
    """What `adapt_classifier_graph` changed.

    Attributes:
        model: the edited `onnx.ModelProto`.
        input_hw: (height, width) of the image input, from its shape.
        bgr: a channel flip was added (the export expects BGR).
        float16: casts were added around a float16 graph.
        zipmap_labels: the labels a removed `ZipMap` carried (output order), if there was one.
        fixed_batch: the export's batch axis is fixed to 1.
    """

    model: Any
    input_hw: tuple[int, int]
    bgr: bool
    float16: bool
    zipmap_labels: tuple[str, ...] | None
    fixed_batch: bool


def adapt_classifier_graph(model: Any, *, bgr: bool) -> Adapted:
    """Rewrite a one-input image classifier so it takes RGB float32 NCHW and returns float32 scores.

    Args:
        model: an `onnx.ModelProto` with one image input `[N, 3, H, W]`.
        bgr: whether the model expects its channels in BGR order.

    Raises:
        ModelSpecError: the graph is not a one-input NCHW image classifier with a score output.
    """
    import onnx
    from onnx import TensorProto, helper

    graph = model.graph
    initializer_names = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializer_names]
    if len(inputs) != 1:
        raise ModelSpecError(f"expected one image input, the export has {len(inputs)}: {[i.name for i in inputs]}")
    image = inputs[0]
    tensor_type = image.type.tensor_type
    dims = [d.dim_value if d.HasField("dim_value") else None for d in tensor_type.shape.dim]
    if len(dims) != 4 or dims[1] != 3 or not dims[2] or not dims[3]:
        raise ModelSpecError(f"expected an image input [N, 3, H, W], the export's {image.name!r} is {dims}")
    float16 = tensor_type.elem_type == TensorProto.FLOAT16
    if tensor_type.elem_type not in (TensorProto.FLOAT, TensorProto.FLOAT16):
        raise ModelSpecError(f"the image input {image.name!r} must be float or float16")

    nodes = list(graph.node)
    zipmap_labels: tuple[str, ...] | None = None
    zipmaps = [n for n in nodes if n.op_type == "ZipMap"]
    scores_name: str
    if zipmaps:
        # Older Custom Vision exports end in ZipMap (a sequence of {label: score} maps); the tensor feeding it is
        # the score row, and the map's labels are the output order.
        zipmap = zipmaps[0]
        attrs = {a.name: a for a in zipmap.attribute}
        if "classlabels_strings" not in attrs:
            raise ModelSpecError("the export's ZipMap has no string labels")
        zipmap_labels = tuple(s.decode() for s in attrs["classlabels_strings"].strings)
        scores_name = zipmap.input[0]
        nodes.remove(zipmap)
        # ZipMap's input is tensor(float) by its definition; shape inference cannot always get there (the
        # experimental ImageScaler of ONNX 1.2 exports stops it), so the type is not inferred.
        scores_type: int | None = TensorProto.FLOAT
    else:
        tensor_outputs = [o for o in graph.output if o.type.HasField("tensor_type")]
        if not tensor_outputs:
            raise ModelSpecError("the export has no tensor output holding class scores")
        scores_name = next(
            (
                o.name
                for o in tensor_outputs
                if o.type.tensor_type.elem_type in (TensorProto.FLOAT, TensorProto.FLOAT16)
            ),
            tensor_outputs[0].name,
        )
        scores_type = None
    # A label output (``classLabel``) computed from the scores is dropped; nodes only it needed go with it.
    nodes = _needed_for(nodes, scores_name)

    new_input = "image_rgb"
    front: list[Any] = []
    current = new_input
    if bgr:
        flip = helper.make_tensor("derm_cloud_bgr_order", TensorProto.INT64, [3], [2, 1, 0])
        front.append(helper.make_node("Constant", [], [flip.name], value=flip))
        front.append(helper.make_node("Gather", [current, flip.name], ["derm_cloud_bgr"], axis=1))
        current = "derm_cloud_bgr"
    if float16:
        front.append(helper.make_node("Cast", [current], ["derm_cloud_fp16"], to=TensorProto.FLOAT16))
        current = "derm_cloud_fp16"
    for node in nodes:
        node.input[:] = [current if name == image.name else name for name in node.input]

    if scores_type is None:
        scores_type = _value_type(model, scores_name)
    back: list[Any] = []
    out_name = scores_name
    if scores_type == TensorProto.FLOAT16:
        back.append(helper.make_node("Cast", [scores_name], ["scores"], to=TensorProto.FLOAT))
        out_name = "scores"

    batch = "N" if dims[0] != 1 else 1
    del graph.node[:]
    graph.node.extend(front + nodes + back)
    graph.input.remove(image)
    graph.input.insert(0, helper.make_tensor_value_info(new_input, TensorProto.FLOAT, [batch, 3, dims[2], dims[3]]))
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info(out_name, TensorProto.FLOAT, [batch, None]))
    onnx.checker.check_model(model)
    return Adapted(model, (int(dims[2]), int(dims[3])), bgr, float16, zipmap_labels, dims[0] == 1)


def _needed_for(nodes: list[Any], output: str) -> list[Any]:
    """The nodes `output` depends on, in their original (topological) order."""
    producers = {out: n for n in nodes for out in n.output}
    keep: set[int] = set()
    stack = [output]
    while stack:
        node = producers.get(stack.pop())
        if node is None or id(node) in keep:
            continue
        keep.add(id(node))
        stack.extend(node.input)
    return [n for n in nodes if id(n) in keep]


def _value_type(model: Any, name: str) -> int:
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    for info in list(inferred.graph.value_info) + list(inferred.graph.output) + list(inferred.graph.input):
        if info.name == name:
            return int(info.type.tensor_type.elem_type)
    raise ModelSpecError(f"cannot tell the element type of the export's score tensor {name!r}")
