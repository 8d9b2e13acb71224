"""The end-to-end fetch: download, convert, check parity, write `spec.json`, rename into place."""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from derm_cloud.errors import ConfigError, ConversionError
from derm_cloud.models.keras_convert import DEFAULT_OPSET, ConversionInfo
from derm_cloud.models.keras_parity import ParityReport
from derm_cloud.models.sklesion.convert import convert_to_onnx, parity_check
from derm_cloud.models.sklesion.release import (
    IMAGE_SIZE,
    KERAS_SHA256,
    LABELS,
    MODEL_ID,
    SOURCE_URL,
    WHEEL_SHA256,
    download_wheel,
    extract_keras_model,
)

__all__ = ["build_spec_dict", "fetch_sklesion", "is_complete_model_dir"]


def build_spec_dict(conversion: ConversionInfo, parity: ParityReport) -> dict[str, Any]:
    """Build the model spec written as `spec.json` (a plain dict until the shared spec class exists).

    Args:
        conversion: the result of `convert_to_onnx`.
        parity: the result of `parity_check` on the verification images.

    Returns:
        A JSON-serialisable dict in the `derm-cloud-model/1` layout.
    """
    return {
        "format": "derm-cloud-model/1",
        "model_id": MODEL_ID,
        "labels": list(LABELS),
        "output": "probabilities",
        "image_input": {"index": 0, "layout": "NHWC"},
        "preprocess": {
            "resize": "squash",
            "height": IMAGE_SIZE,
            "width": IMAGE_SIZE,
            "interpolation": "bilinear_half_pixel",
            "crop": None,
            "scale": 1.0,
            "mean": [0.0, 0.0, 0.0],
            "std": [1.0, 1.0, 1.0],
        },
        "metadata_input": {"index": 1, "encoding": "sklesion-v1"},
        "max_batch": conversion.max_batch,
        "facts": {
            "architecture": "Xception + metadata MLP",
            "parameters": conversion.parameters,
            "licence": "MIT (weights); trained on HAM10000 CC BY-NC 4.0",
            "training_data": "HAM10000",
            "intended_use": (
                "Research comparison of skin-lesion classifiers on dermoscopic images (seven HAM10000 "
                "classes). Not a medical device; not for diagnosis or for commercial use of HAM10000-derived "
                "results."
            ),
            "source": SOURCE_URL,
            "sha256_wheel": WHEEL_SHA256,
            "sha256_keras": KERAS_SHA256,
            "author_test_metrics": {
                "note": "author's own split (n=1511), split method undocumented: treat as optimistic",
                "accuracy": 0.825,
                "balanced_accuracy": 0.723,
                "melanoma_recall": 0.579,
                "macro_f1": 0.732,
                "n": 1511,
            },
            "converted_with": {
                "route": conversion.route,
                "dynamic_batch": conversion.dynamic_batch,
                "opset": conversion.opset,
                "export_seconds": conversion.export_seconds,
                "onnx_inputs": [
                    {"name": n, "shape": list(s)}
                    for n, s in zip(conversion.input_names, conversion.input_shapes, strict=True)
                ],
                "onnx_outputs": list(conversion.output_names),
                "batch_check_max_abs_diff": {str(k): v for k, v in conversion.batch_check_max_abs_diff.items()},
                "fallback_reason": conversion.fallback_reason,
                "versions": dict(conversion.versions),
            },
            "parity": {
                "n_images": parity.n_images,
                "max_abs_diff": parity.max_abs_diff,
                "mean_abs_diff": parity.mean_abs_diff,
                "top1_agreement": parity.top1_agreement,
                "atol": parity.atol,
                "metadata": parity.extra.get("metadata"),
            },
        },
    }


def is_complete_model_dir(model_dir: Path) -> bool:
    """Whether `model_dir` is a finished fetch (`model.onnx` and a `spec.json` for this model id).

    Args:
        model_dir: candidate directory.

    Returns:
        `True` if both files exist and the spec names `MODEL_ID`.
    """
    spec_path = model_dir / "spec.json"
    if not (model_dir / "model.onnx").is_file() or not spec_path.is_file():
        return False
    try:
        spec = json.loads(spec_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(spec, dict) and spec.get("model_id") == MODEL_ID


def fetch_sklesion(
    cache_dir: Path,
    *,
    verify_images: Sequence[Path],
    verify_metadata: Sequence[NDArray[np.float32]] | None = None,
    atol: float = 1e-4,
    min_top1_agreement: float = 0.99,
    keep_keras: bool = True,
    force: bool = False,
    opset: int = DEFAULT_OPSET,
    progress: Callable[[str], None] | None = None,
    verify_description: str | None = None,
    parity_progress: Callable[[str, int], Callable[[int], None]] | None = None,
) -> Path:
    """Download, verify, convert and parity-check sklesion; install it as `<cache_dir>/sklesion-0.2.2/`.

    Everything happens in a hidden temporary directory inside `cache_dir` which is renamed to the final
    name only after every check passed, so a crashed or failed fetch never leaves a directory that looks
    complete. An existing complete directory is returned as is unless `force` is set.

    Args:
        cache_dir: parent directory of the model directory (created if missing).
        verify_images: real images for the parity check (at least one; 20 or more recommended).
        verify_metadata: one metadata vector per verification image; `None` uses "unknown" metadata.
        atol: maximum allowed |Δp| between Keras and ONNX.
        min_top1_agreement: minimum fraction of images with the same argmax.
        keep_keras: also keep the verified `model.keras` in the model directory (86 MB), so the parity can be
            re-checked later without the network.
        force: rebuild even if a complete directory exists (it is replaced only once the new one is ready).
        opset: ONNX opset to target.
        progress: called with one line per stage as it starts (and with what the previous stage took).
        verify_description: what the verification images are, recorded in `spec.json` beside the parity
            figures (real dermoscopy or the generated fallback set).
        parity_progress: `parity_progress(task, total)` returns a counter of images compared (a
            `derm_cloud.progress.Progress`: a bar with an ETA in a terminal, plain lines elsewhere).

    Returns:
        The model directory containing `model.onnx`, `spec.json` and (if kept) `model.keras`.

    Raises:
        ChecksumMismatchError: the wheel or the model file does not have its pinned digest.
        ConversionError: download or export failed, or parity is below the thresholds.
        ConfigError: no verification images.
    """
    cache_dir = Path(cache_dir)
    final = cache_dir / MODEL_ID
    if not force and is_complete_model_dir(final):
        return final
    if not verify_images:
        raise ConfigError("fetch_sklesion needs verify_images: real images for the Keras/ONNX parity check")
    # Checked before the minute of download and conversion, not after it.
    missing = [str(p) for p in verify_images if not Path(p).is_file()]
    if missing:
        raise ConfigError(f"{len(missing)} verification image(s) not found, e.g. {missing[0]}")
    cache_dir.mkdir(parents=True, exist_ok=True)
    # Same parent as the final directory, so the closing rename is atomic (same file system).
    work = Path(tempfile.mkdtemp(prefix=f".{MODEL_ID}.", suffix=".partial", dir=cache_dir))
    step = _StageReporter(progress)
    try:
        stage = work / MODEL_ID
        step("1/3 download the sklesion 0.2.2 wheel from PyPI and check its SHA-256")
        wheel = download_wheel(work / "download")
        keras_path = extract_keras_model(wheel, work / "keras")
        step("2/3 convert Keras -> ONNX with a dynamic batch")
        conversion = convert_to_onnx(keras_path, stage / "model.onnx", opset=opset)
        step(f"3/3 parity check Keras vs onnxruntime on {len(verify_images)} images")
        tick = parity_progress("parity", len(verify_images)) if parity_progress is not None else None
        parity = parity_check(
            keras_path, stage / "model.onnx", list(verify_images), atol, metadata=verify_metadata, progress=tick
        )
        if not parity.passed or parity.top1_agreement < min_top1_agreement:
            raise ConversionError(
                f"parity check failed on {parity.n_images} images: max |dp| = {parity.max_abs_diff:.3g} "
                f"(allowed {atol}), top-1 agreement {parity.top1_agreement:.3f} "
                f"(required {min_top1_agreement})"
            )
        step(None)
        spec = build_spec_dict(conversion, parity)
        if verify_description:
            spec["facts"]["parity"]["images"] = verify_description
        (stage / "spec.json").write_text(json.dumps(spec, indent=2) + "\n", encoding="utf-8")
        if keep_keras:
            keras_path.replace(stage / "model.keras")
        if final.exists():
            # Replaced only now (force, or an incomplete leftover); moved aside first so the rename below
            # never meets a non-empty target.
            old = work / "previous"
            final.rename(old)
        try:
            stage.rename(final)
        except OSError:
            # Another process finished first; its directory is as good as ours.
            if is_complete_model_dir(final):
                return final
            raise
        return final
    finally:
        shutil.rmtree(work, ignore_errors=True)


class _StageReporter:
    """Reports each stage as it starts, with the time the previous one took (silent without a callback)."""

    def __init__(self, callback: Callable[[str], None] | None) -> None:
        self._callback = callback
        self._started: float | None = None

    def __call__(self, line: str | None) -> None:
        now = time.perf_counter()
        if self._callback is not None and self._started is not None:
            self._callback(f"   done in {now - self._started:.1f} s")
        self._started = now
        if self._callback is not None and line is not None:
            self._callback(line)
