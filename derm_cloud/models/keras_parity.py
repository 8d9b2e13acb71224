"""Measure how closely a converted ONNX model reproduces its Keras original on real images.

Keras runs on the torch backend (no TensorFlow); both runtimes get the very same preprocessed arrays, so the
report measures the conversion alone. See `derm_cloud.models.keras_convert` for the conversion.

Example:
    >>> from derm_cloud.models.sklesion import MODEL_INPUTS
    >>> report = parity_check(Path("model.keras"), Path("model.onnx"), paths, MODEL_INPUTS)  # doctest: +SKIP
    >>> report.passed, report.top1_agreement  # doctest: +SKIP
    (True, 1.0)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from derm_cloud.errors import ConfigError
from derm_cloud.models._keras_runtime import fixed_batch, keras_predict, load_keras_model, ort_predict, ort_session

if TYPE_CHECKING:
    from derm_cloud.models.keras_inputs import ImageMetadataInputs

__all__ = ["ParityReport", "parity_check"]


@dataclass(frozen=True)
class ParityReport:
    """Agreement between the Keras model (torch backend) and the ONNX model on real images.

    Attributes:
        n_images: number of images compared.
        atol: tolerance on max |Δp| used for `passed`.
        max_abs_diff: max over images and classes of |p_keras - p_onnx|.
        mean_abs_diff: mean of |p_keras - p_onnx| over images and classes.
        top1_agree: number of images whose argmax is the same in both.
        top1_agreement: `top1_agree / n_images`.
        passed: `max_abs_diff <= atol`.
        disagreements: names of the images whose argmax differs.
        batch_size: batch size used for both runtimes.
        keras_seconds: wall time of the Keras forward passes.
        onnx_seconds: wall time of the onnxruntime runs.
        preprocessing: description of the image and metadata preprocessing used.

    Example:
        >>> report.passed, report.top1_agreement  # doctest: +SKIP
        (True, 1.0)
    """

    n_images: int
    atol: float
    max_abs_diff: float
    mean_abs_diff: float
    top1_agree: int
    top1_agreement: float
    passed: bool
    disagreements: tuple[str, ...]
    batch_size: int
    keras_seconds: float
    onnx_seconds: float
    preprocessing: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict."""
        data = asdict(self)
        data["disagreements"] = list(self.disagreements)
        return data


def parity_check(
    keras_path: Path,
    onnx_path: Path,
    images: Sequence[Path],
    inputs: ImageMetadataInputs,
    atol: float = 1e-4,
    *,
    metadata: Sequence[NDArray[np.float32]] | None = None,
    batch_size: int = 8,
    progress: Callable[[int], None] | None = None,
) -> ParityReport:
    """Compare Keras (torch backend) and onnxruntime outputs on real images with the model's own preprocessing.

    Both runtimes get the very same preprocessed arrays (`inputs.preprocess`), so the report measures the
    conversion alone.

    Args:
        keras_path: the original `model.keras`.
        onnx_path: the converted model.
        images: image files.
        inputs: the model's preprocessing and metadata layout.
        atol: tolerance on max |Δp| for `passed`.
        metadata: one vector per image; `None` uses `inputs.missing_metadata` for every image.
        batch_size: images per forward pass (a fixed-batch ONNX model is run one image at a time).
        progress: called with the number of images just compared, after each batch (for a bar or an ETA).

    Returns:
        A `ParityReport`.

    Raises:
        ConfigError: no images, or `metadata` does not have one vector per image.

    Example:
        >>> parity_check(keras_path, onnx_path, paths, MODEL_INPUTS, metadata=metas).passed  # doctest: +SKIP
        True
    """
    if not images:
        raise ConfigError("parity_check needs at least one image")
    if metadata is not None and len(metadata) != len(images):
        raise ConfigError(f"got {len(metadata)} metadata vectors for {len(images)} images")
    unknown = np.asarray(inputs.missing_metadata, dtype=np.float32)
    model = load_keras_model(Path(keras_path))
    session = ort_session(Path(onnx_path))
    keras_seconds = onnx_seconds = 0.0
    keras_out: list[NDArray[np.float32]] = []
    onnx_out: list[NDArray[np.float32]] = []
    # Chunked so memory stays bounded however many images are checked.
    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size]
        x = np.stack([inputs.preprocess(Path(p)) for p in chunk])
        m = np.stack(
            [unknown if metadata is None else np.asarray(metadata[start + i], np.float32) for i in range(len(chunk))]
        )
        t0 = time.perf_counter()
        keras_out.append(keras_predict(model, x, m))
        t1 = time.perf_counter()
        onnx_out.append(ort_predict(session, x, m, batch_size=batch_size))
        t2 = time.perf_counter()
        keras_seconds += t1 - t0
        onnx_seconds += t2 - t1
        if progress is not None:
            progress(len(chunk))
    pk = np.concatenate(keras_out)
    po = np.concatenate(onnx_out)
    diff = np.abs(pk - po)
    agree = pk.argmax(axis=1) == po.argmax(axis=1)
    max_diff = float(diff.max())
    return ParityReport(
        n_images=len(images),
        atol=atol,
        max_abs_diff=max_diff,
        mean_abs_diff=float(diff.mean()),
        top1_agree=int(agree.sum()),
        top1_agreement=float(agree.mean()),
        passed=max_diff <= atol,
        disagreements=tuple(Path(images[int(i)]).name for i in np.flatnonzero(~agree)),
        batch_size=batch_size if fixed_batch(session) is None else 1,
        keras_seconds=round(keras_seconds, 2),
        onnx_seconds=round(onnx_seconds, 2),
        preprocessing=inputs.preprocessing,
        extra={"metadata": "per-image" if metadata is not None else "unknown"},
    )
