"""Load any local model directory with the runtime its `model_file` needs: LiteRT for `.tflite`, else ONNX.

The serving adapters and emulators load models through `load_model`, so any model directory can be hosted
behind any emulated cloud API. It stands above both runtimes (`local_onnx`, `local_tflite`) and
their shared base (`_runner`), which therefore import neither it nor each other's loader.
"""

from __future__ import annotations

import os

from derm_cloud.backends._runner import ModelRunner
from derm_cloud.models.cache import resolve_model_dir
from derm_cloud.models.spec import ModelSpec

__all__ = ["load_model"]


def load_model(model_dir: str | os.PathLike[str], *, intra_op_threads: int | None = None) -> ModelRunner:
    """Load a model directory with the runtime its `model_file` needs (`.tflite`: LiteRT, else onnxruntime).

    Raises:
        ModelSpecError: the directory or its spec is invalid.
        MissingDependencyError: the runtime is not installed (the message names the extra).
    """
    directory = resolve_model_dir(model_dir)
    spec = ModelSpec.load(directory)
    if spec.model_file.endswith(".tflite"):
        from derm_cloud.backends.local_tflite import TfliteModel

        return TfliteModel(directory, num_threads=intra_op_threads)
    from derm_cloud.backends.local_onnx import OnnxModel

    return OnnxModel(directory, intra_op_threads=intra_op_threads)
