"""The Keras (torch backend) and onnxruntime calls shared by `derm_cloud.models.keras_convert` and
`derm_cloud.models.keras_parity`: load, run, and bind a two-input `[image, metadata]` model.

Internal: the public entry points are in those two modules. keras, torch and onnxruntime are imported inside
the functions, so importing this module costs only numpy.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from derm_cloud.errors import ConfigError, MissingDependencyError

__all__ = ["fixed_batch", "import_keras_torch", "keras_predict", "load_keras_model", "ort_predict", "ort_session"]


def import_keras_torch() -> Any:
    """Import Keras on the torch backend (no TensorFlow needed).

    `KERAS_BACKEND` is read once, when keras is first imported, so it is set here before the import; if
    keras was already imported with another backend the process cannot switch and an error says so.

    Returns:
        The `keras` module.

    Raises:
        MissingDependencyError: keras or torch is not installed.
        ConfigError: keras is already imported with a backend other than torch.

    Example:
        >>> keras = import_keras_torch()  # doctest: +SKIP
        >>> keras.backend.backend()  # doctest: +SKIP
        'torch'
    """
    if "keras" not in sys.modules:
        os.environ["KERAS_BACKEND"] = "torch"
    try:
        import keras  # type: ignore[import-untyped,unused-ignore]
        import torch  # noqa: F401  (fail here, clearly, rather than deep inside keras)
    except ImportError as exc:
        raise MissingDependencyError(
            "converting a Keras model needs keras on the torch backend: pip install keras torch==2.13.0 "
            f"onnx onnxscript onnxruntime ({exc})"
        ) from exc
    backend = str(keras.backend.backend())
    if backend != "torch":
        raise ConfigError(
            f"keras is already imported with the {backend!r} backend; run the Keras conversion in a fresh "
            "process (or set KERAS_BACKEND=torch before anything imports keras)"
        )
    return keras


def load_keras_model(keras_path: Path) -> Any:
    """Load `model.keras` (uncompiled) with Keras on the torch backend."""
    keras = import_keras_torch()
    model = keras.saving.load_model(str(keras_path), compile=False)
    return model


def keras_predict(model: Any, images: NDArray[np.float32], meta: NDArray[np.float32]) -> NDArray[np.float32]:
    """One Keras forward pass without gradients; float32 probabilities."""
    import torch

    with torch.no_grad():
        out = model([torch.from_numpy(images), torch.from_numpy(meta)], training=False)
    return np.asarray(out.detach().cpu().numpy(), dtype=np.float32)


def ort_session(onnx_path: Path) -> Any:
    """A CPU onnxruntime session for `onnx_path`."""
    try:
        import onnxruntime as ort  # type: ignore[import-untyped,unused-ignore]
    except ImportError as exc:
        raise MissingDependencyError(
            f"running the ONNX model needs onnxruntime: pip install onnxruntime ({exc})"
        ) from exc
    return ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])


def fixed_batch(session: Any) -> int | None:
    """The model's fixed batch size, or `None` when the batch dimension is symbolic."""
    dim = session.get_inputs()[0].shape[0]
    return dim if isinstance(dim, int) else None


def ort_predict(
    session: Any, images: NDArray[np.float32], meta: NDArray[np.float32], batch_size: int
) -> NDArray[np.float32]:
    """onnxruntime probabilities in chunks of `batch_size` (of 1 for a fixed-batch model)."""
    # Inputs are bound by position (image first, metadata second), not by name: the two conversion routes
    # name them differently.
    names = [i.name for i in session.get_inputs()]
    fixed = fixed_batch(session)
    step = fixed if fixed is not None else batch_size
    outs = [
        session.run(None, {names[0]: images[i : i + step], names[1]: meta[i : i + step]})[0]
        for i in range(0, len(images), step)
    ]
    return np.concatenate(outs).astype(np.float32, copy=False)
