"""Upgrade Custom Vision's early ONNX exports to graphs onnxruntime runs, changing no value on the way.

Custom Vision's first ONNX exports (2018, WinMLTools 0.1, IR 3, opset 1) were written for Windows ML and break
ONNX's own rules in ways Windows ML tolerated: nodes out of topological order, initializers not declared as graph
inputs (IR < 4 requires it), a `BatchNormalization` without the `consumed_inputs` opset 1 requires, a
`MaxPool` `dilations` attribute that opset only gained in version 10, a ZipMap output declared as a `map`
instead of a sequence of maps. They also use operators onnxruntime does not have: the Windows-only
`com.microsoft` `LegacyPadding` and ONNX 1.0's experimental `FC` and `ImageScaler`, and onnxruntime only
guarantees opset 7 and later. `upgrade_for_onnxruntime` repairs the first kind, rewrites the operators into
standard ones from their published definitions, and upgrades the opset with `onnx.version_converter`:

* `FC` (`Y = X W^T + b`) becomes `Gemm` with `transB=1`;
* `ImageScaler` (`y = scale * x + bias[c]`) becomes `Identity` (scale 1, no bias, as every export seen
  has) or `Mul` and `Add`;
* `LegacyPadding` pads for a Caffe-style pooling: the window count is `ceil((size + 2 pad - kernel) / stride)
  + 1`, less one if the last window would start in the padding, and the input is padded at the end (with the
  node's `value`, -FLT_MAX before a max pool) so that a `VALID` pooling yields exactly those windows. It
  becomes a `Pad`; the amounts need the tensor's height and width, known once the graph is at opset 7;
* an opset-1 `Add`/`Mul`/`Sub`/`Div` with `broadcast=1` has its constant operand reshaped to line up
  with the input's axes from `axis` before the upgrade: the version converter (onnx 1.23) turns such a `[3]`
  operand at `axis=1` into `Unsqueeze(axes=[1, 2, 3])`, a `[3, 1, 1, 1]` tensor that silently makes the
  batch three images long.

The upgraded graph stays at IR 3 (every new constant is a `Constant` node, never an undeclared initializer).
The tests check it against an independent numpy run of the original graph (tests/customvision_reference.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from derm_cloud.errors import ModelSpecError

__all__ = ["TARGET_OPSET", "Upgraded", "upgrade_for_onnxruntime"]

#: The oldest default-domain opset onnxruntime guarantees to run (its loader says so for anything older).
TARGET_OPSET = 7
_REWRITTEN = {"FC", "ImageScaler", "LegacyPadding"}
_LEGACY_BROADCAST = {"Add", "Sub", "Mul", "Div"}
_PLACEHOLDER = "derm_cloud_placeholder:"


@dataclass(frozen=True)
class Upgraded:
    """What `upgrade_for_onnxruntime` returns.

    Attributes:
        model: the `onnx.ModelProto` (the input, edited in place, or the version converter's copy).
        steps: each change made, in words, for the model's facts (empty when the export needed none).
    """

    model: Any
    steps: tuple[str, ...]


def default_opset(model: Any) -> int:
    """The model's `ai.onnx` opset version."""
    return next((int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)


def upgrade_for_onnxruntime(model: Any) -> Upgraded:
    """Repair and upgrade an export so onnxruntime loads it; a no-op for exports that need nothing.

    Raises:
        ModelSpecError: the export uses an operator that is neither ONNX's nor one this module rewrites while
            its opset is too old for onnxruntime, or the upgrade fails (the message names the cause).
    """
    from onnx import helper

    opset = default_opset(model)
    steps: list[str] = []
    graph = model.graph
    if opset < TARGET_OPSET:
        _refuse_unknown_operators(model, opset)
    moved = _sort_topologically(graph)
    if moved:
        steps.append(f"nodes put in topological order ({moved} were listed before the nodes producing their inputs)")
    if model.ir_version < 4:
        declared = _declare_initializers(graph)
        if declared:
            steps.append(f"{declared} initializers declared as graph inputs, as IR version {model.ir_version} requires")
    for node in graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "BatchNormalization" and opset < 6 and "consumed_inputs" not in attrs:
            # A buffer-reuse hint opset 1 made mandatory; it changes no value (opset 6 dropped it).
            node.attribute.append(helper.make_attribute("consumed_inputs", [0, 0, 0, 1, 1]))
            steps.append("BatchNormalization: the consumed_inputs attribute opset 1 requires was added")
        elif node.op_type == "MaxPool" and opset < 10 and "dilations" in attrs:
            if any(d != 1 for d in attrs["dilations"]):
                raise ModelSpecError(
                    f"MaxPool {node.name!r} has dilations {attrs['dilations']}, which opset {opset} lacks"
                )
            node.attribute.remove(next(a for a in node.attribute if a.name == "dilations"))
            steps.append(
                "MaxPool: dilations=[1, 1] dropped (the attribute exists only from opset 10; 1 is its default)"
            )
        elif node.op_type == "FC":
            _fc_to_gemm(node, attrs, legacy_broadcast=opset < TARGET_OPSET)
            steps.append("FC (ONNX 1.0 experimental) rewritten as Gemm with transB=1: Y = X W^T + b")
        elif node.op_type in ("ImageScaler", "LegacyPadding"):
            # Kept as an Identity until the graph is at opset 7: the converter knows neither operator, and the
            # padding amounts need shapes. The original node travels in the doc string.
            original = node.SerializeToString().hex()
            node.op_type, node.domain = "Identity", ""
            del node.input[1:], node.attribute[:]
            node.doc_string = _PLACEHOLDER + original
    if opset < TARGET_OPSET:
        model = _convert(model, opset, steps)
    steps.extend(_replace_placeholders(model))
    steps.extend(_declare_zipmap_sequences(model.graph))
    _drop_unused_domains(model)
    return Upgraded(model, tuple(dict.fromkeys(steps)))


def _refuse_unknown_operators(model: Any, opset: int) -> None:
    import onnx

    unknown = sorted(
        {
            f"{n.op_type} ({n.domain or 'ai.onnx'})"
            for n in model.graph.node
            if n.op_type not in _REWRITTEN and not onnx.defs.has(n.op_type, n.domain)
        }
    )
    if unknown:
        raise ModelSpecError(
            f"this export is ONNX opset {opset}, older than the opset {TARGET_OPSET} onnxruntime runs, and it uses "
            f"{', '.join(unknown)}: neither an ONNX operator nor one derm-cloud rewrites (LegacyPadding, FC, "
            "ImageScaler), so it cannot be upgraded; export the iteration again (newer exports run as they are)"
        )


def _sort_topologically(graph: Any) -> int:
    """Reorder `graph.node` so every node follows its inputs' producers; how many nodes were out of place."""
    available = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending = list(graph.node)
    ordered: list[Any] = []
    while pending:
        ready = [n for n in pending if all(name in available for name in n.input)]
        if not ready:
            names = sorted({name for n in pending for name in n.input if name not in available})
            raise ModelSpecError(f"the export's graph reads tensors nothing produces: {', '.join(names[:5])}")
        for node in ready:
            ordered.append(node)
            available.update(node.output)
            pending.remove(node)
    moved = sum(a is not b for a, b in zip(ordered, graph.node, strict=True))
    if moved:
        copies = [type(n)() for n in ordered]
        for copy, node in zip(copies, ordered, strict=True):
            copy.CopyFrom(node)
        del graph.node[:]
        graph.node.extend(copies)
    return moved


def _declare_initializers(graph: Any) -> int:
    from onnx import helper

    declared = {i.name for i in graph.input}
    missing = [init for init in graph.initializer if init.name not in declared]
    for init in missing:
        graph.input.append(helper.make_tensor_value_info(init.name, init.data_type, list(init.dims)))
    return len(missing)


def _fc_to_gemm(node: Any, attrs: dict[str, Any], *, legacy_broadcast: bool) -> None:
    if attrs.get("axis", 1) != 1 or attrs.get("axis_w", 1) != 1 or len(node.input) != 3:
        raise ModelSpecError(
            f"FC {node.name!r} flattens at axis {attrs.get('axis')}/{attrs.get('axis_w')}; only 1 is supported"
        )
    from onnx import helper

    node.op_type = "Gemm"
    del node.attribute[:]
    node.attribute.append(helper.make_attribute("transB", 1))
    if legacy_broadcast:  # before opset 7, Gemm adds a [N] bias to [M, N] only when told to broadcast
        node.attribute.append(helper.make_attribute("broadcast", 1))


def _convert(model: Any, opset: int, steps: list[str]) -> Any:
    """opset -> 6 -> 7 with the version converter; legacy broadcasts are made explicit in between."""
    from onnx import shape_inference, version_converter

    try:
        if opset < 6:
            model = version_converter.convert_version(model, 6)
        # The 6 -> 7 adapters (numpy-style broadcasting) need every shape, and concrete ones: the batch axis is
        # fixed to 1 while converting, then given back its name.
        image_name = _image_input(model.graph)
        image = next(i for i in model.graph.input if i.name == image_name).type.tensor_type.shape.dim
        saved = [type(d)() for d in image]
        for copy, d in zip(saved, image, strict=True):
            copy.CopyFrom(d)
        if len(image) and not image[0].HasField("dim_value"):
            image[0].Clear()
            image[0].dim_value = 1
        model = shape_inference.infer_shapes(model)
        steps.extend(_explicit_broadcasts(model))
        model = version_converter.convert_version(model, TARGET_OPSET)
    except (RuntimeError, ValueError) as exc:  # the converter reports failures as RuntimeError
        raise ModelSpecError(
            f"the ONNX version converter cannot upgrade this export from opset {opset} to {TARGET_OPSET} "
            f"({str(exc).splitlines()[0][-200:]}); onnxruntime does not run opset {opset}"
        ) from None
    del model.graph.value_info[:]
    dims = next(i for i in model.graph.input if i.name == image_name).type.tensor_type.shape.dim
    for d, copy in zip(dims, saved, strict=True):
        d.CopyFrom(copy)
    steps.append(f"opset {opset} upgraded to {TARGET_OPSET} with onnx.version_converter")
    return model


def _image_input(graph: Any) -> str:
    initializers = {i.name for i in graph.initializer}
    inputs = [i.name for i in graph.input if i.name not in initializers]
    if len(inputs) != 1:
        raise ModelSpecError(f"expected one image input, the export has {len(inputs)}: {inputs}")
    return str(inputs[0])


def _explicit_broadcasts(model: Any) -> list[str]:
    """Reshape the constant operand of each legacy `broadcast=1` node to line up with numpy broadcasting."""
    from onnx import helper, numpy_helper

    graph = model.graph
    ranks = {v.name: len(v.type.tensor_type.shape.dim) for v in list(graph.value_info) + list(graph.input)}
    inits = {i.name: i for i in graph.initializer}
    steps = []
    replaced: set[str] = set()
    for node in graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type not in _LEGACY_BROADCAST or not attrs.get("broadcast"):
            continue
        if node.input[1] not in inits or node.input[0] not in ranks:
            raise ModelSpecError(
                f"{node.op_type} {node.name!r} broadcasts a computed tensor the legacy way; not supported"
            )
        operand = numpy_helper.to_array(inits[node.input[1]])
        rank = ranks[node.input[0]]
        axis = int(attrs.get("axis", rank - operand.ndim))
        aligned = operand.reshape(operand.shape + (1,) * (rank - axis - operand.ndim))
        replaced.add(node.input[1])
        name = f"{node.input[1]}_aligned"
        graph.initializer.append(numpy_helper.from_array(aligned, name))
        graph.input.append(helper.make_tensor_value_info(name, inits[node.input[1]].data_type, list(aligned.shape)))
        node.input[1] = name
        for attr in [a for a in node.attribute if a.name in ("broadcast", "axis")]:
            node.attribute.remove(attr)
        shapes = f"{list(operand.shape)} at axis {axis} reshaped to {list(aligned.shape)}"
        steps.append(f"{node.op_type}: legacy broadcast operand {shapes}")
    used = {name for n in graph.node for name in n.input}
    for name in sorted(replaced - used):  # the operands replaced above, unless another node reads them too
        graph.initializer.remove(inits[name])
        for declared in [i for i in graph.input if i.name == name]:
            graph.input.remove(declared)
    return steps


def _replace_placeholders(model: Any) -> list[str]:
    """Turn the parked ImageScaler / LegacyPadding nodes into opset-7 standard nodes, first to last."""
    import onnx
    from onnx import shape_inference

    steps: list[str] = []
    while True:
        graph = model.graph
        index = next((i for i, n in enumerate(graph.node) if n.doc_string.startswith(_PLACEHOLDER)), None)
        if index is None:
            return steps
        node = graph.node[index]
        original = onnx.NodeProto()
        original.ParseFromString(bytes.fromhex(node.doc_string[len(_PLACEHOLDER) :]))
        if original.op_type == "ImageScaler":
            new_nodes, step = _image_scaler(original)
        else:
            inferred = shape_inference.infer_shapes(model)
            shapes = {v.name: v for v in list(inferred.graph.value_info) + list(inferred.graph.input)}
            dims = (
                [d.dim_value for d in shapes[original.input[0]].type.tensor_type.shape.dim]
                if original.input[0] in shapes
                else []
            )
            if len(dims) != 4 or not all(dims[2:]):
                raise ModelSpecError(f"cannot tell the height and width reaching LegacyPadding {original.name!r}")
            new_nodes, step = _legacy_padding(original, dims[2], dims[3])
        del graph.node[index]
        for offset, new in enumerate(new_nodes):
            graph.node.insert(index + offset, new)
        steps.append(step)


def _image_scaler(node: Any) -> tuple[list[Any], str]:
    import numpy as np
    from onnx import helper, numpy_helper

    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    scale = float(attrs.get("scale", 1.0))
    bias = [float(b) for b in attrs.get("bias", [])]
    x, y = node.input[0], node.output[0]
    if scale == 1.0 and not any(bias):
        return [
            helper.make_node("Identity", [x], [y], name=node.name)
        ], "ImageScaler (scale 1, no bias) rewritten as Identity"
    k = f"{y}_scale"
    nodes = [
        helper.make_node("Constant", [], [k], value=numpy_helper.from_array(np.array(scale, np.float32), k)),
        helper.make_node("Mul", [x, k], [f"{y}_scaled"]),
    ]
    b = np.asarray(bias or [0.0], np.float32).reshape(1, -1, 1, 1)
    nodes += [
        helper.make_node("Constant", [], [f"{y}_bias"], value=numpy_helper.from_array(b, f"{y}_bias")),
        helper.make_node("Add", [f"{y}_scaled", f"{y}_bias"], [y]),
    ]
    return nodes, f"ImageScaler rewritten as Mul by {scale:g} and Add of the per-channel bias {bias}"


def _legacy_padding(node: Any, height: int, width: int) -> tuple[list[Any], str]:
    from onnx import helper

    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    kernel: Sequence[int] = attrs["kernel_shape"]
    strides: Sequence[int] = attrs.get("strides", [1, 1])
    pads: Sequence[int] = attrs.get("pads", [0, 0])
    top, bottom = _caffe_pool_padding(height, pads[0], kernel[0], strides[0])
    left, right = _caffe_pool_padding(width, pads[1], kernel[1], strides[1])
    pad = helper.make_node(
        "Pad",
        [node.input[0]],
        [node.output[0]],
        name=node.name,
        mode="constant",
        pads=[0, 0, top, left, 0, 0, bottom, right],
        value=float(attrs.get("value", 0.0)),
    )
    return [pad], (
        f"LegacyPadding (com.microsoft, Windows ML only) on {height}x{width} rewritten as Pad "
        f"[top {top}, left {left}, bottom {bottom}, right {right}] by Caffe's pooling rule"
    )


def _caffe_pool_padding(size: int, pad: int, kernel: int, stride: int) -> tuple[int, int]:
    """(before, after) padding that makes a VALID pooling give Caffe's ceil-mode windows.

    Example:
        >>> _caffe_pool_padding(56, 0, 3, 2)  # 28 windows: the last one needs one more row
        (0, 1)
    """
    windows = math.ceil((size + 2 * pad - kernel) / stride) + 1
    if (windows - 1) * stride >= size + pad:  # the last window would start in the padding: Caffe drops it
        windows -= 1
    return pad, (windows - 1) * stride + kernel - size - pad


def _declare_zipmap_sequences(graph: Any) -> list[str]:
    import onnx

    produced_by_zipmap = {o for n in graph.node if n.op_type == "ZipMap" for o in n.output}
    steps = []
    for out in graph.output:
        if out.name in produced_by_zipmap and out.type.HasField("map_type"):
            wrapped = onnx.TypeProto()
            wrapped.sequence_type.elem_type.CopyFrom(out.type)
            out.type.CopyFrom(wrapped)
            steps.append(f"ZipMap output {out.name!r} declared as a sequence of maps, as ZipMap defines it")
    return steps


def _drop_unused_domains(model: Any) -> None:
    used = {n.domain for n in model.graph.node} | {"", "ai.onnx"}
    keep = [o for o in model.opset_import if o.domain in used]
    if len(keep) != len(model.opset_import):
        del model.opset_import[:]
        model.opset_import.extend(keep)
