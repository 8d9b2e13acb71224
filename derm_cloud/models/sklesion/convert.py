"""Keras -> ONNX conversion and the parity check, given sklesion's inputs (`MODEL_INPUTS`).

The generic work is in `derm_cloud.models.keras_convert` and `derm_cloud.models.keras_parity`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final

import numpy as np
from numpy.typing import NDArray

from derm_cloud.models import keras_convert, keras_parity
from derm_cloud.models.keras_convert import DEFAULT_OPSET, ConversionInfo
from derm_cloud.models.keras_inputs import ImageMetadataInputs
from derm_cloud.models.keras_parity import ParityReport
from derm_cloud.models.sklesion.images import preprocess_image
from derm_cloud.models.sklesion.release import IMAGE_SIZE
from derm_cloud.models.sklesion_metadata import METADATA_LENGTH, encode_metadata

__all__ = ["MODEL_INPUTS", "convert_to_onnx", "parity_check"]


def _random_metadata(rng: np.random.Generator, n: int) -> NDArray[np.float32]:
    # Valid one-hots in the author's layout (3 sexes, 5 site groups), an age in 0..1 and some "age missing".
    meta = np.zeros((n, METADATA_LENGTH), dtype=np.float32)
    rows = np.arange(n)
    meta[rows, rng.integers(0, 3, n)] = 1.0
    meta[rows, 3 + rng.integers(0, 5, n)] = 1.0
    meta[:, 8] = rng.uniform(0.0, 1.0, n)
    meta[rows % 3 == 0, 9] = 1.0
    return meta


#: sklesion's inputs, preprocessing and metadata layout, for :mod:`~derm_cloud.models.keras_convert`.
MODEL_INPUTS: Final = ImageMetadataInputs(
    height=IMAGE_SIZE,
    width=IMAGE_SIZE,
    metadata_length=METADATA_LENGTH,
    random_metadata=_random_metadata,
    missing_metadata=tuple(float(v) for v in encode_metadata(None, None, None)),
    preprocess=preprocess_image,
    preprocessing="tf-bilinear-half-pixel-no-antialias 254x254, 0..255; metadata sklesion-v1",
)


def convert_to_onnx(
    keras_path: Path,
    onnx_path: Path,
    *,
    opset: int = DEFAULT_OPSET,
    dynamic_batch: bool = True,
) -> ConversionInfo:
    """Convert sklesion's `model.keras` to ONNX via Keras on the torch backend (route A), with its checks.

    `derm_cloud.models.keras_convert.convert_to_onnx` given `MODEL_INPUTS`: dynamic batch first,
    verified with onnxruntime, else Keras' own fixed-batch export; it documents the arguments, the returned
    `ConversionInfo` and the errors (`ConversionError`, `MissingDependencyError`).

    Example:
        >>> convert_to_onnx(Path("keras/model.keras"), Path("out/model.onnx")).dynamic_batch  # doctest: +SKIP
        True
    """
    return keras_convert.convert_to_onnx(keras_path, onnx_path, MODEL_INPUTS, opset=opset, dynamic_batch=dynamic_batch)


def parity_check(
    keras_path: Path,
    onnx_path: Path,
    images: Sequence[Path],
    atol: float = 1e-4,
    *,
    metadata: Sequence[NDArray[np.float32]] | None = None,
    batch_size: int = 8,
    progress: Callable[[int], None] | None = None,
) -> ParityReport:
    """Compare Keras (torch backend) and onnxruntime outputs on real images with the author's preprocessing.

    `derm_cloud.models.keras_parity.parity_check` given `MODEL_INPUTS`; `metadata` holds one
    10-float vector per image (see `encode_metadata`), `None` the "all unknown" vector for every image.
    Returns a `ParityReport`; raises `ConfigError` for no images or a metadata count that differs.

    Example:
        >>> parity_check(Path("model.keras"), Path("model.onnx"), paths, metadata=metas).passed  # doctest: +SKIP
        True
    """
    return keras_parity.parity_check(
        keras_path, onnx_path, images, MODEL_INPUTS, atol, metadata=metadata, batch_size=batch_size, progress=progress
    )
