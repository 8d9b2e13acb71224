"""Write small, real TFLite classifiers without TensorFlow, straight from the flatbuffers schema.

The `tflite` package carries the generated schema code (builder functions for `Model`, `SubGraph`,
`Tensor`, `Operator` ...); this module uses it to write the same tiny network the ONNX stand-ins use: a
`PAD` and strided `CONV_2D` with fused ReLU, `MEAN` over height and width, `FULLY_CONNECTED`,
`SOFTMAX`. With `input_quant`/`output_quant` the model takes and returns uint8 tensors with quantization
parameters, as quantized edge exports do (`DEQUANTIZE` in front, `QUANTIZE` behind; the arithmetic in between
stays float32, which keeps the stand-in small while exercising exactly what a runner must handle: quantize the
input, dequantize the output).

Example:
    >>> data = tiny_classifier_tflite(conv, dense, bias, height=224, width=224)  # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["Quantization", "tiny_classifier_tflite"]


@dataclass(frozen=True)
class Quantization:
    """Affine uint8 quantization: `real = scale * (q - zero_point)`."""

    scale: float
    zero_point: int


@dataclass
class _Graph:
    """Tensors, buffers and operators collected before serialisation."""

    tensors: list[tuple[str, list[int], int, int, Quantization | None]] = field(default_factory=list)
    buffers: list[bytes] = field(default_factory=lambda: [b""])  # buffer 0 is the empty sentinel
    operators: list[tuple[int, list[int], list[int], int, int]] = field(default_factory=list)
    opcodes: list[int] = field(default_factory=list)

    def tensor(
        self, name: str, shape: list[int], dtype: int, data: np.ndarray | None = None, q: Quantization | None = None
    ) -> int:
        buffer = 0
        if data is not None:
            self.buffers.append(np.ascontiguousarray(data).tobytes())
            buffer = len(self.buffers) - 1
        self.tensors.append((name, shape, dtype, buffer, q))
        return len(self.tensors) - 1

    def op(self, code: int, inputs: list[int], outputs: list[int], options_type: int = 0, options: int = 0) -> None:
        if code not in self.opcodes:
            self.opcodes.append(code)
        self.operators.append((self.opcodes.index(code), inputs, outputs, options_type, options))


def tiny_classifier_tflite(
    conv_ohwi: np.ndarray,
    dense_oi: np.ndarray,
    bias: np.ndarray,
    *,
    height: int = 224,
    width: int = 224,
    input_quant: Quantization | None = None,
    output_quant: Quantization | None = None,
    description: str = "derm-cloud tflite stand-in",
) -> bytes:
    """A TFLite flatbuffer: `[1, H, W, 3]` in, `[1, n_labels]` softmax scores out.

    Args:
        conv_ohwi: convolution filter `[out_channels, 5, 5, 3]` (TFLite's OHWI), stride 4, padding 2, no bias.
        dense_oi: fully connected weights `[n_labels, out_channels]`.
        bias: fully connected bias `[n_labels]`.
        height, width: input size.
        input_quant: make the input uint8 with these parameters (`None`: float32).
        output_quant: make the output uint8 with these parameters (`None`: float32).
        description: the model's description string.
    """
    import flatbuffers
    from tflite.ActivationFunctionType import ActivationFunctionType
    from tflite.BuiltinOperator import BuiltinOperator
    from tflite.BuiltinOptions import BuiltinOptions
    from tflite.Padding import Padding
    from tflite.TensorType import TensorType

    conv_opts, fc_opts, reducer_opts, softmax_opts = _schema(
        "Conv2DOptions", "FullyConnectedOptions", "ReducerOptions", "SoftmaxOptions"
    )

    b = flatbuffers.Builder(4096)
    g = _Graph()
    f32, u8, i32 = TensorType.FLOAT32, TensorType.UINT8, TensorType.INT32
    n_out, n_labels = conv_ohwi.shape[0], dense_oi.shape[0]
    oh, ow = (height - 1) // 4 + 1, (width - 1) // 4 + 1
    image = g.tensor("image", [1, height, width, 3], u8 if input_quant else f32, q=input_quant)
    x = image
    if input_quant:
        x = g.tensor("image_real", [1, height, width, 3], f32)
        g.op(BuiltinOperator.DEQUANTIZE, [image], [x])
    # Explicit PAD + VALID (not SAME, which pads 0 before and 1 after here) so the network is the ONNX
    # stand-in's ``Conv(pads=2, strides=4)`` exactly and the two exports of one model can be compared.
    pads = g.tensor("pads", [4, 2], i32, np.array([[0, 0], [2, 2], [2, 2], [0, 0]], np.int32))
    padded = g.tensor("padded", [1, height + 4, width + 4, 3], f32)
    g.op(BuiltinOperator.PAD, [x, pads], [padded])
    x = padded
    conv_w = g.tensor("conv_w", list(conv_ohwi.shape), f32, conv_ohwi.astype(np.float32))
    conv_b = g.tensor("conv_b", [n_out], f32, np.zeros(n_out, np.float32))
    conv = g.tensor("conv", [1, oh, ow, n_out], f32)
    conv_opts.Start(b)
    conv_opts.AddPadding(b, Padding.VALID)
    conv_opts.AddStrideW(b, 4)
    conv_opts.AddStrideH(b, 4)
    conv_opts.AddDilationWFactor(b, 1)
    conv_opts.AddDilationHFactor(b, 1)
    conv_opts.AddFusedActivationFunction(b, ActivationFunctionType.RELU)
    g.op(BuiltinOperator.CONV_2D, [x, conv_w, conv_b], [conv], BuiltinOptions.Conv2DOptions, conv_opts.End(b))
    axes = g.tensor("axes", [2], i32, np.array([1, 2], np.int32))
    pooled = g.tensor("pooled", [1, n_out], f32)
    reducer_opts.Start(b)
    reducer_opts.AddKeepDims(b, False)
    g.op(BuiltinOperator.MEAN, [conv, axes], [pooled], BuiltinOptions.ReducerOptions, reducer_opts.End(b))
    fc_w = g.tensor("dense_w", [n_labels, n_out], f32, dense_oi.astype(np.float32))
    fc_b = g.tensor("dense_b", [n_labels], f32, bias.astype(np.float32))
    logits = g.tensor("logits", [1, n_labels], f32)
    fc_opts.Start(b)
    fc_opts.AddFusedActivationFunction(b, ActivationFunctionType.NONE)
    g.op(
        BuiltinOperator.FULLY_CONNECTED,
        [pooled, fc_w, fc_b],
        [logits],
        BuiltinOptions.FullyConnectedOptions,
        fc_opts.End(b),
    )
    probs = g.tensor("probabilities", [1, n_labels], f32)
    softmax_opts.Start(b)
    softmax_opts.AddBeta(b, 1.0)
    g.op(BuiltinOperator.SOFTMAX, [logits], [probs], BuiltinOptions.SoftmaxOptions, softmax_opts.End(b))
    out = probs
    if output_quant:
        out = g.tensor("probabilities_q", [1, n_labels], u8, q=output_quant)
        g.op(BuiltinOperator.QUANTIZE, [probs], [out])
    return _serialise(b, g, [image], [out], description)


def _schema(*names: str) -> list[Any]:
    # The generated modules, not the classes ``tflite/__init__`` re-exports under the same names: the builder
    # functions (``Start``, ``AddShape`` ...) live at module level.
    import importlib

    return [importlib.import_module(f"tflite.{name}") for name in names]


def _int_vector(b: object, start: object, values: list[int]) -> int:
    import flatbuffers

    assert isinstance(b, flatbuffers.Builder)
    start(b, len(values))  # type: ignore[operator]
    for v in reversed(values):
        b.PrependInt32(v)
    return int(b.EndVector())


def _offsets(b: object, start: object, offsets: list[int]) -> int:
    import flatbuffers

    assert isinstance(b, flatbuffers.Builder)
    start(b, len(offsets))  # type: ignore[operator]
    for off in reversed(offsets):
        b.PrependUOffsetTRelative(off)
    return int(b.EndVector())


def _serialise(b: object, g: _Graph, inputs: list[int], outputs: list[int], description: str) -> bytes:
    import flatbuffers

    buffer_t, model_t, operator_t, opcode_t, quant_t, subgraph_t, tensor_t = _schema(
        "Buffer", "Model", "Operator", "OperatorCode", "QuantizationParameters", "SubGraph", "Tensor"
    )

    assert isinstance(b, flatbuffers.Builder)
    tensor_offsets = []
    for name, shape, dtype, buffer, q in g.tensors:
        name_off = b.CreateString(name)
        shape_off = _int_vector(b, tensor_t.StartShapeVector, shape)
        q_off = None
        if q is not None:
            quant_t.StartScaleVector(b, 1)
            b.PrependFloat32(q.scale)
            scale_off = b.EndVector()
            quant_t.StartZeroPointVector(b, 1)
            b.PrependInt64(q.zero_point)
            zp_off = b.EndVector()
            quant_t.Start(b)
            quant_t.AddScale(b, scale_off)
            quant_t.AddZeroPoint(b, zp_off)
            q_off = quant_t.End(b)
        tensor_t.Start(b)
        tensor_t.AddShape(b, shape_off)
        tensor_t.AddType(b, dtype)
        tensor_t.AddBuffer(b, buffer)
        tensor_t.AddName(b, name_off)
        if q_off is not None:
            tensor_t.AddQuantization(b, q_off)
        tensor_offsets.append(tensor_t.End(b))
    op_offsets = []
    for opcode_index, op_in, op_out, options_type, options in g.operators:
        in_off = _int_vector(b, operator_t.StartInputsVector, op_in)
        out_off = _int_vector(b, operator_t.StartOutputsVector, op_out)
        operator_t.Start(b)
        operator_t.AddOpcodeIndex(b, opcode_index)
        operator_t.AddInputs(b, in_off)
        operator_t.AddOutputs(b, out_off)
        if options_type:
            operator_t.AddBuiltinOptionsType(b, options_type)
            operator_t.AddBuiltinOptions(b, options)
        op_offsets.append(operator_t.End(b))
    tensors_vec = _offsets(b, subgraph_t.StartTensorsVector, tensor_offsets)
    ops_vec = _offsets(b, subgraph_t.StartOperatorsVector, op_offsets)
    in_vec = _int_vector(b, subgraph_t.StartInputsVector, inputs)
    out_vec = _int_vector(b, subgraph_t.StartOutputsVector, outputs)
    graph_name = b.CreateString("main")
    subgraph_t.Start(b)
    subgraph_t.AddTensors(b, tensors_vec)
    subgraph_t.AddOperators(b, ops_vec)
    subgraph_t.AddInputs(b, in_vec)
    subgraph_t.AddOutputs(b, out_vec)
    subgraph_t.AddName(b, graph_name)
    subgraph = subgraph_t.End(b)
    code_offsets = []
    for code in g.opcodes:
        opcode_t.Start(b)
        opcode_t.AddDeprecatedBuiltinCode(b, min(code, 127))
        opcode_t.AddBuiltinCode(b, code)
        opcode_t.AddVersion(b, 1)
        code_offsets.append(opcode_t.End(b))
    buffer_offsets = []
    for data in g.buffers:
        data_off = None
        if data:
            # 16-byte alignment: the interpreter maps weights in place and some kernels expect aligned data.
            b.StartVector(1, len(data), 16)
            b.head = b.head - len(data)
            b.Bytes[b.head : b.head + len(data)] = data
            data_off = b.EndVector()
        buffer_t.Start(b)
        if data_off is not None:
            buffer_t.AddData(b, data_off)
        buffer_offsets.append(buffer_t.End(b))
    codes_vec = _offsets(b, model_t.StartOperatorCodesVector, code_offsets)
    subgraphs_vec = _offsets(b, model_t.StartSubgraphsVector, [subgraph])
    buffers_vec = _offsets(b, model_t.StartBuffersVector, buffer_offsets)
    desc = b.CreateString(description)
    model_t.Start(b)
    model_t.AddVersion(b, 3)
    model_t.AddOperatorCodes(b, codes_vec)
    model_t.AddSubgraphs(b, subgraphs_vec)
    model_t.AddDescription(b, desc)
    model_t.AddBuffers(b, buffers_vec)
    b.Finish(model_t.End(b), file_identifier=b"TFL3")
    return bytes(b.Output())
