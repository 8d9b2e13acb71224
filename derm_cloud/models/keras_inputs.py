"""What converting and checking a two-input Keras classifier needs to know about the model, and inputs to try.

A model taking `[image NHWC float32, metadata float32]` is described by an `ImageMetadataInputs`
(`derm_cloud.models.keras_convert` and `derm_cloud.models.keras_parity` both take one);
`synthetic_inputs` draws plausible inputs for the numerical checks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

__all__ = ["ImageMetadataInputs", "synthetic_inputs"]


@dataclass(frozen=True)
class ImageMetadataInputs:
    """What the conversion needs to know about a model taking `[image NHWC float32, metadata float32]`.

    Attributes:
        height: image input height.
        width: image input width.
        metadata_length: length of the metadata vector.
        random_metadata: `(rng, n) -> [n, metadata_length]` plausible metadata (valid one-hots), so the
            synthetic checks exercise the network's real operating range rather than zeros.
        missing_metadata: the "nothing known" vector, used by the parity check when no metadata is given.
        preprocess: image file -> `[height, width, 3]` float32 model input.
        preprocessing: one-line description of `preprocess` and the metadata encoding, for reports.

    Example:
        >>> from derm_cloud.models.sklesion import MODEL_INPUTS
        >>> MODEL_INPUTS.height, MODEL_INPUTS.metadata_length
        (254, 10)
    """

    height: int
    width: int
    metadata_length: int
    random_metadata: Callable[[np.random.Generator, int], NDArray[np.float32]]
    missing_metadata: tuple[float, ...]
    preprocess: Callable[[Path], NDArray[np.float32]]
    preprocessing: str


def synthetic_inputs(
    inputs: ImageMetadataInputs, n: int, seed: int = 0
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """`n` plausible input pairs, seeded: images in 0..255 and valid metadata, drawn in that order.

    The checks then exercise the network's real operating range rather than zeros.
    """
    rng = np.random.default_rng(seed)
    images = rng.uniform(0.0, 255.0, size=(n, inputs.height, inputs.width, 3)).astype(np.float32)
    meta = np.asarray(inputs.random_metadata(rng, n), dtype=np.float32)
    return images, meta
