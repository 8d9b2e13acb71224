"""`local-tflite`: a TFLite model directory run by LiteRT (`ai-edge-litert`) on this machine, no TensorFlow.

A directory holds `model.tflite` and a `spec.json` with `"model_file": "model.tflite"` and an NHWC
`image_input`, as `derm-cloud models import` writes for Custom Vision `TensorFlowLite` and Vertex AI AutoML
Edge exports. Preprocessing, label mapping and batching are the ones `local-onnx` uses
(`ModelRunner`); only the execution differs:

* a uint8/int8 input is fed quantized with the interpreter's own parameters (`q = round(x / scale + zero_point)`),
  so a spec describing the real-valued input the model means stays runtime-neutral;
* a quantized output is dequantized (`(q - zero_point) * scale`) before the scores are labelled.

Nothing leaves the machine.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import numpy as np

from derm_cloud.backends._runner import ModelRunner
from derm_cloud.backends.local_onnx import LocalOnnxClassifier
from derm_cloud.base import BackendInfo
from derm_cloud.errors import MissingDependencyError, ModelSpecError
from derm_cloud.models.cache import resolve_model_dir
from derm_cloud.models.spec import ModelSpec

__all__ = ["LocalTfliteClassifier", "TfliteModel"]


class TfliteModel(ModelRunner):
    """A TFLite model directory loaded into a LiteRT interpreter.

    Args:
        model_dir: directory holding `spec.json` and the `.tflite` file it names.
        num_threads: interpreter threads (default: LiteRT's choice).

    Raises:
        MissingDependencyError: `ai-edge-litert` is not installed.
        ModelSpecError: the file does not load, or its input/output does not match the spec.
    """

    def __init__(self, model_dir: str | os.PathLike[str], *, num_threads: int | None = None) -> None:
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError as exc:
            raise MissingDependencyError(
                "the local-tflite backend needs LiteRT; run: pip install 'derm-cloud[tflite]'"
            ) from exc
        self.directory: Path = resolve_model_dir(model_dir)
        self.spec: ModelSpec = ModelSpec.load(self.directory)
        path = self.directory / self.spec.model_file
        if self.spec.metadata_encoding is not None:
            raise ModelSpecError(f"{self.directory}: local-tflite runs image-only models; remove metadata_input")
        if self.spec.layout != "NHWC":
            raise ModelSpecError(f"{self.directory}: TFLite models take NHWC input; set image_input.layout NHWC")
        try:
            self.interpreter = Interpreter(model_path=str(path), num_threads=num_threads)
            self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:  # LiteRT reports a bad flatbuffer or op as these
            raise ModelSpecError(f"LiteRT cannot load {path}: {exc}") from None
        inputs = self.interpreter.get_input_details()
        if len(inputs) != 1:
            raise ModelSpecError(f"{path} has {len(inputs)} inputs; local-tflite runs single-image-input models")
        self._input: dict[str, Any] = inputs[0]
        self._output: dict[str, Any] = self.interpreter.get_output_details()[0]
        shape = tuple(int(d) for d in self._input["shape"])
        expected = self.spec.preprocess.output_size
        if len(shape) != 4 or shape[1:3] != expected or shape[3] != 3:
            raise ModelSpecError(
                f"{path} takes input {list(shape)} but spec.json preprocesses to {list(expected)} x 3 (NHWC); "
                "fix preprocess height/width"
            )
        n_out = int(self._output["shape"][-1])
        if n_out != len(self.spec.labels):
            raise ModelSpecError(f"{path} has {n_out} outputs but spec.json lists {len(self.spec.labels)} labels")
        self.max_batch = 1 if shape[0] == 1 else self.spec.max_batch
        # One interpreter holds one set of tensors: concurrent requests (a threaded emulator) take turns.
        self._lock = threading.Lock()

    @property
    def input_quantization(self) -> tuple[float, int] | None:
        """`(scale, zero_point)` of a quantized input, `None` for a float input."""
        return _quantization(self._input)

    @property
    def output_quantization(self) -> tuple[float, int] | None:
        """`(scale, zero_point)` of a quantized output, `None` for a float output."""
        return _quantization(self._output)

    def _run_batch(self, pixels: np.ndarray, meta: np.ndarray | None) -> np.ndarray:
        feed = self._to_input_dtype(pixels)
        with self._lock:
            self.interpreter.set_tensor(self._input["index"], feed)
            self.interpreter.invoke()
            raw = np.array(self.interpreter.get_tensor(self._output["index"]))
        quant = self.output_quantization
        if quant is not None:
            scale, zero_point = quant
            return (raw.astype(np.float64) - zero_point) * scale
        return raw.astype(np.float64)

    def _to_input_dtype(self, pixels: np.ndarray) -> np.ndarray:
        dtype = np.dtype(self._input["dtype"])
        if dtype == np.float32:
            return pixels.astype(np.float32, copy=False)
        if dtype.kind not in "iu":
            raise ModelSpecError(f"{self.directory}: input dtype {dtype} is not supported (float32, uint8, int8)")
        scale, zero_point = self.input_quantization or (1.0, 0)
        info = np.iinfo(dtype)
        return np.clip(np.rint(pixels / scale + zero_point), info.min, info.max).astype(dtype)

    def close(self) -> None:
        del self.interpreter


def _quantization(detail: dict[str, Any]) -> tuple[float, int] | None:
    scale, zero_point = detail.get("quantization", (0.0, 0))
    if np.dtype(detail["dtype"]) == np.float32 or not scale:
        return None
    return float(scale), int(zero_point)


class LocalTfliteClassifier(LocalOnnxClassifier):
    """Run a TFLite model directory with LiteRT; same options and answers' shape as `local-onnx`.

    Args:
        model_dir: a model directory whose `spec.json` names a `.tflite` `model_file`.
        intra_op_threads: LiteRT interpreter threads.
        inter_op_threads: ignored (LiteRT has one pool); accepted so configs can switch backends freely.
        label_overrides, allow_unmapped, use_metadata, image_limits: as for `local-onnx`.

    Example:
        >>> with LocalTfliteClassifier("~/models/vertex-edge") as clf:  # doctest: +SKIP
        ...     print(clf.predict("lesion.jpg").top(3))
    """

    backend_name = "local-tflite"

    def _load_model(
        self, model_dir: str | os.PathLike[str], *, intra_op_threads: int | None, inter_op_threads: int | None
    ) -> ModelRunner:
        return TfliteModel(model_dir, num_threads=intra_op_threads)

    def describe(self) -> BackendInfo:
        info = super().describe()
        return BackendInfo(
            backend=self.backend_name,
            provider="local",
            service="LiteRT (TFLite) on this machine",
            model_id=info.model_id,
            endpoint=None,
            data_leaves_machine=False,
            stores_images=False,
            labels_mapped=info.labels_mapped,
            billing={"sku": "local.cpu"},
            model_facts=info.model_facts,
        )
