"""An independent run of Custom Vision's Windows ML-era ONNX exports, for the fidelity tests. Shares no code with
derm_cloud: written from Microsoft's published descriptions, not from the importer.

Preprocessing (what a Windows ML app such as Azure-Samples/cognitive-services-onnx-customvision-sample does when
it binds a ``VideoFrame`` to the model's image input):

* MicrosoftDocs/windows-ai-docs ``docs/windows-ml/bind-a-model.md``: without image metadata a 4-D float input
  with 3 channels is taken as ``Bgr8``, ``NominalRange_0_255`` and ``SRGB``; without ``BitmapBounds`` "the runtime
  will scale the image to the model size (respecting aspect ratio) and then center crop";
* microsoft/onnxruntime ``winml/lib/Api/ImageFeatureValue.cpp`` (``CenterAndCropBounds``): the crop is taken
  first, at the image's own resolution: the largest centred region with the model's aspect ratio, its size
  rounded as ``(UINT)(ratio * h + 0.5)`` and its offset as ``(w - width) / 2`` in integers; that region is then
  scaled to the input size;
* the scaler itself (``VideoFrame.CopyToAsync``) is not documented: a bilinear resize is ASSUMED here, and the
  importer assumes the same, so the parity below checks everything but that one choice.

The model: onnxruntime runs the ONNX 1.2 exports (opset 7) as they are. It cannot load the 2018 WinMLTools
exports (opset 1 with the Windows-only ``com.microsoft`` ``LegacyPadding`` and the experimental ``FC`` and
``ImageScaler``), so those run here in a small numpy interpreter of the original graph, each operator written
from its published definition: ONNX ``Operators.md`` as of opset 1 (``FC``, ``ImageScaler`` and the legacy
``broadcast``/``axis`` attributes were in ONNX 1.0's experimental set) and, for ``LegacyPadding``, Caffe's
pooling rule (output ``ceil((size + 2 pad - kernel) / stride) + 1``, dropping a last window that would start in
the padding), which onnxmltools' ``calculate_legacy_pad_amount`` also implements.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

Array = np.ndarray


def windows_ml_pixels(path: Path, height: int, width: int, *, resample: int = Image.Resampling.BILINEAR) -> Array:
    """An image file as Windows ML tensorizes it for a Bgr8 / 0-255 input: float32 ``[1, 3, height, width]``."""
    with Image.open(path) as im:
        rgb = im.convert("RGB")
    w, h = rgb.size
    ratio = width / height
    if ratio * h < w:  # too wide: cut left and right
        bw, bh = min(int(ratio * h + 0.5), w), h
        x, y = (w - bw) // 2, 0
    else:  # too tall: cut top and bottom
        bw, bh = w, min(int(w / ratio + 0.5), h)
        x, y = 0, (h - bh) // 2
    region = rgb.crop((x, y, x + bw, y + bh)).resize((width, height), resample)
    bgr = np.asarray(region, dtype=np.float32)[:, :, ::-1]
    return np.ascontiguousarray(bgr.transpose(2, 0, 1)[None])


def run_onnxruntime(model_path: Path, pixels: Array) -> dict[str, float]:
    """The export's own ``{tag: score}`` answer from onnxruntime, read from its ZipMap output."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    outputs = session.run(None, {session.get_inputs()[0].name: pixels})
    maps = [o for o in outputs if isinstance(o, list)]
    return {str(k): float(v) for k, v in maps[0][0].items()}


def run_numpy(model_path: Path, pixels: Array) -> dict[str, float]:
    """The export's ``{tag: score}`` answer computed by the numpy interpreter below (any opset-1 WinMLTools graph)."""
    from onnx import helper
    from threadpoolctl import threadpool_limits  # scikit-learn's dependency (the compare extra)

    with threadpool_limits(1):  # small matrices: BLAS threads only contend (6x slower on a busy 2-core box)
        return _interpret(model_path, pixels, helper)


def _interpret(model_path: Path, pixels: Array, helper: Any) -> dict[str, float]:
    graph, weights = _load(str(model_path))
    values: dict[str, Any] = dict(weights)
    values[graph.input[0].name] = pixels
    pending = list(graph.node)
    while pending:  # the WinMLTools files do not list their nodes in order: run whatever is ready
        ready = [n for n in pending if all(i in values for i in n.input if i)]
        if not ready:
            raise RuntimeError(f"cannot schedule {[n.op_type for n in pending]}")
        for node in ready:
            pending.remove(node)
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            if node.op_type == "ZipMap":
                labels = [s.decode() for s in attrs["classlabels_strings"]]
                return dict(zip(labels, (float(x) for x in values[node.input[0]][0]), strict=True))
            result = _OPS[node.op_type](*[values[i] for i in node.input], **attrs)
            values[node.output[0]] = result
    raise RuntimeError("the graph has no ZipMap output")


@functools.lru_cache(maxsize=4)
def _load(path: str) -> tuple[Any, dict[str, Array]]:
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(path).graph
    return graph, {i.name: numpy_helper.to_array(i) for i in graph.initializer}


def _conv(x: Array, w: Array, b: Array | None = None, **a: Any) -> Array:
    if a.get("group", 1) != 1 or any(d != 1 for d in a.get("dilations", [1, 1])):
        raise NotImplementedError("grouped or dilated convolution")
    x = _pad_for(x, a, w.shape[2:], 0.0)
    sh, sw = a.get("strides", [1, 1])
    if w.shape[2:] == (1, 1):  # a 1x1 convolution is a matrix product over the channels
        y = np.tensordot(w[:, :, 0, 0], x[:, :, ::sh, ::sw], axes=([1], [1])).transpose(1, 0, 2, 3)
        return y + b.reshape(1, -1, 1, 1) if b is not None else y
    windows = np.lib.stride_tricks.sliding_window_view(x, w.shape[2:], axis=(2, 3))[:, :, ::sh, ::sw]
    n, c, oh, ow, kh, kw = windows.shape
    columns = windows.transpose(0, 2, 3, 1, 4, 5).reshape(n * oh * ow, c * kh * kw)  # im2col
    out = (columns @ w.reshape(w.shape[0], -1).T).reshape(n, oh, ow, -1).transpose(0, 3, 1, 2)
    return out + b.reshape(1, -1, 1, 1) if b is not None else out


def _max_pool(x: Array, **a: Any) -> Array:
    x = _pad_for(x, a, a["kernel_shape"], -np.inf)
    (kh, kw), (sh, sw) = a["kernel_shape"], a.get("strides", [1, 1])
    oh, ow = (x.shape[2] - kh) // sh + 1, (x.shape[3] - kw) // sw + 1
    out: Array = np.full((*x.shape[:2], oh, ow), -np.inf, x.dtype)
    for i in range(kh):  # the max over the window, one kernel offset at a time
        for j in range(kw):
            np.maximum(out, x[:, :, i : i + sh * oh : sh, j : j + sw * ow : sw], out=out)
    return out


def _pad_for(x: Array, a: dict[str, Any], kernel: Any, value: float) -> Array:
    if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", b"VALID", "NOTSET", "VALID"):
        raise NotImplementedError(f"auto_pad {a['auto_pad']!r}")
    pads = a.get("pads", [0, 0, 0, 0])
    if not any(pads):
        return x
    return np.pad(x, ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])), constant_values=value)


def _legacy_padding(x: Array, **a: Any) -> Array:
    """Caffe's pooling padding: pad the end so that a ceil-mode pooling window fits, never starting in padding."""

    def amounts(size: int, pad: int, kernel: int, stride: int) -> tuple[int, int]:
        out = math.ceil((size + 2 * pad - kernel) / stride) + 1
        if (out - 1) * stride >= size + pad:
            out -= 1
        return pad, (out - 1) * stride + kernel - size - pad

    top, bottom = amounts(x.shape[2], a["pads"][0], a["kernel_shape"][0], a["strides"][0])
    left, right = amounts(x.shape[3], a["pads"][1], a["kernel_shape"][1], a["strides"][1])
    return np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)), constant_values=a.get("value", 0.0))


def _legacy_broadcast(b: Array, x: Array, a: dict[str, Any]) -> Array:
    """Opset-1 ``broadcast=1``: ``b`` lines up with ``x``'s axes from ``axis`` (default: the trailing axes)."""
    if not a.get("broadcast"):
        return b
    axis = a.get("axis", x.ndim - b.ndim)
    return b.reshape((1,) * axis + b.shape + (1,) * (x.ndim - axis - b.ndim))


def _batch_norm(x: Array, scale: Array, bias: Array, mean: Array, var: Array, **a: Any) -> Array:
    shape = (1, -1, 1, 1)
    eps = a.get("epsilon", 1e-5)
    out: Array = (x - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + eps) * scale.reshape(shape)
    return out + bias.reshape(shape)


def _image_scaler(x: Array, **a: Any) -> Array:
    out: Array = x * a.get("scale", 1.0) + np.asarray(a.get("bias", [0.0] * x.shape[1]), np.float32).reshape(
        1, -1, 1, 1
    )
    return out


def _fc(x: Array, w: Array, b: Array, **a: Any) -> Array:
    """ONNX 1.0 experimental FC: ``Y = X W^T + b`` with X flattened at ``axis`` and W at ``axis_w``."""
    x2 = x.reshape(int(np.prod(x.shape[: a.get("axis", 1)])), -1)
    w2 = w.reshape(int(np.prod(w.shape[: a.get("axis_w", 1)])), -1)
    out: Array = x2 @ w2.T + b
    return out


def _softmax(x: Array, **a: Any) -> Array:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    out: Array = e / e.sum(axis=1, keepdims=True)
    return out


_OPS: dict[str, Callable[..., Any]] = {
    "Conv": _conv,
    "Relu": lambda x, **a: np.maximum(x, 0),
    "MaxPool": _max_pool,
    "LegacyPadding": _legacy_padding,
    "Concat": lambda *xs, **a: np.concatenate(xs, axis=a.get("axis", 1)),
    "BatchNormalization": _batch_norm,
    "ImageScaler": _image_scaler,
    "Mul": lambda x, b, **a: x * _legacy_broadcast(b, x, a),
    "Add": lambda x, b, **a: x + _legacy_broadcast(b, x, a),
    "GlobalAveragePool": lambda x, **a: x.mean(axis=(2, 3), keepdims=True),
    "Flatten": lambda x, **a: x.reshape(int(np.prod(x.shape[: a.get("axis", 1)])), -1),
    "FC": _fc,
    "Gemm": lambda x, w, b, **a: x @ (w.T if a.get("transB") else w) + b,
    "Sigmoid": lambda x, **a: 1 / (1 + np.exp(-x)),
    "Softmax": _softmax,
    "Identity": lambda x, **a: x,
    # The label outputs (classLabel) are not what the tests compare; their nodes are skipped harmlessly.
    "Constant": lambda **a: None,
    "ArgMax": lambda x, **a: None,
    "ArrayFeatureExtractor": lambda *xs, **a: None,
}
