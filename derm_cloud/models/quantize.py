"""INT8 quantisation of an ONNX model directory, validated on the user's own images.

Quantisation changes answers: on sklesion, INT8 flipped the top class on 1 of 3 inputs (docs/reference/local-models.md
section 2). So `quantize` always writes a **new** model directory (the fp32 source is never touched) and
measures, on the images given, how often the INT8 model's top class agrees with fp32 and the largest change in
any probability. Those figures go into the new `spec.json` facts, where `derm-cloud models info` shows them.

Methods (onnxruntime.quantization, after `quant_pre_process`):

* `dynamic`: INT8 weights, activations quantised at run time. Helps transformer MatMuls (ViT ~3x faster);
  makes CNNs slower (ConvInteger kernels).
* `static`: QDQ, per-channel INT8 weights, UINT8 activations calibrated on the given images. The fast
  choice for CNNs (MobileNetV2 258 -> 618 img/s on 2 cores), and the one that needs representative images.

Example:
    >>> report = quantize("~/.cache/derm-cloud/models/mobilenet-v2-imagenet", "mnv2-int8",  # doctest: +SKIP
    ...                   images=["a.jpg", "b.jpg"], method="static")
    >>> report.top1_agreement
    1.0
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from derm_cloud.errors import ConfigError, DermCloudError, MissingDependencyError
from derm_cloud.models.spec import ModelSpec

__all__ = ["QuantizeReport", "quantize"]

Method = Literal["dynamic", "static"]
_FP32_MEASUREMENTS = frozenset(
    {"parity", "parity_max_abs_diff", "preprocess_max_abs_diff", "export", "fetch_seconds", "converted_with"}
)


@dataclass(frozen=True)
class QuantizeReport:
    """What `quantize` wrote and measured.

    Attributes:
        model_dir: the new INT8 model directory.
        method: `dynamic` or `static`.
        n_images: images the agreement was measured on.
        top1_agreement: fraction of images whose top label is the same as fp32's.
        max_abs_dp: largest |p_int8 - p_fp32| over all images and labels.
        fp32_bytes, int8_bytes: sizes of the two `model.onnx` files.
        fp32_ms_per_image, int8_ms_per_image: mean batch latency per image on those images (indicative only:
            measure throughput with the comparator, on an idle machine).
        seconds: total time taken.
    """

    model_dir: Path
    method: Method
    n_images: int
    top1_agreement: float
    max_abs_dp: float
    fp32_bytes: int
    int8_bytes: int
    fp32_ms_per_image: float
    int8_ms_per_image: float
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["model_dir"] = str(self.model_dir)
        return d


def quantize(
    model_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    images: Sequence[str | os.PathLike[str]],
    method: Method = "dynamic",
    *,
    overwrite: bool = False,
    per_channel: bool = True,
    min_agreement: float | None = None,
) -> QuantizeReport:
    """Quantise `model_dir` into a new directory and validate it against fp32 on `images`.

    Args:
        model_dir: an fp32 derm-cloud ONNX model directory (`spec.json` + `model.onnx`) or a short name.
        out_dir: the new directory; refused if it is `model_dir` or exists (unless `overwrite`).
        images: images for validation (and calibration, for `static`): use real, representative ones.
        method: `dynamic` or `static`.
        overwrite: replace an existing `out_dir` (never the source).
        per_channel: per-channel weight scales (static); usually more accurate for CNNs.
        min_agreement: raise instead of writing when top-1 agreement is below this fraction.

    Raises:
        ConfigError: bad method, no images, or an `out_dir` that would overwrite something.
        MissingDependencyError: onnxruntime (with its quantization tools) or onnx is missing.
        DermCloudError: agreement below `min_agreement` (nothing is written).
    """
    from derm_cloud.models.cache import resolve_model_dir

    if method not in ("dynamic", "static"):
        raise ConfigError(f"method must be 'dynamic' or 'static', got {method!r}")
    if not images:
        raise ConfigError(
            "quantize needs images: INT8 changes answers, so it is validated against fp32 on real images "
            "(static also calibrates on them); pass a few representative lesion images"
        )
    src = resolve_model_dir(model_dir).resolve()
    spec = ModelSpec.load(src)
    out = Path(out_dir).expanduser().resolve()
    if out == src:
        raise ConfigError(f"out_dir is the source model directory {src}; quantize writes a new directory")
    if out.exists() and not overwrite:
        raise ConfigError(f"{out} already exists; choose another directory or pass overwrite=True (--overwrite)")
    try:
        import onnx  # noqa: F401
        from onnxruntime import quantization as q
        from onnxruntime.quantization.shape_inference import quant_pre_process
    except ImportError as exc:
        raise MissingDependencyError(
            f"quantize needs onnxruntime and onnx ({exc.name} is missing); run: pip install 'derm-cloud[convert]'"
        ) from exc

    start = time.perf_counter()
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        pre_path, stage = work / "preprocessed.onnx", work / "model"
        stage.mkdir()
        with warnings.catch_warnings(), _quiet_onnxruntime_logs():
            # The quantisation tools warn about ops they leave in fp32; the agreement figures below decide.
            warnings.simplefilter("ignore")
            # Required first (shape inference + graph clean-up), or quantisation misses nodes.
            quant_pre_process(str(src / spec.model_file), str(pre_path), skip_symbolic_shape=True)
            if method == "dynamic":
                q.quantize_dynamic(str(pre_path), str(stage / "model.onnx"), weight_type=q.QuantType.QInt8)
            else:
                q.quantize_static(
                    str(pre_path),
                    str(stage / "model.onnx"),
                    _Calibration(src, spec, images),
                    quant_format=q.QuantFormat.QDQ,
                    per_channel=per_channel,
                    weight_type=q.QuantType.QInt8,
                    activation_type=q.QuantType.QUInt8,
                )
        # Measurements of the fp32 export (parity, timings) do not describe the INT8 graph: not carried over.
        kept = {k: v for k, v in spec.facts.items() if k not in _FP32_MEASUREMENTS}
        new_spec = replace(spec, model_id=f"{spec.model_id}-int8-{method}", model_file="model.onnx", facts=kept)
        new_spec.save(stage)
        fp32, fp32_ms = _probabilities(src, images)
        int8, int8_ms = _probabilities(stage, images)
        agreement = float(np.mean(fp32.argmax(axis=1) == int8.argmax(axis=1)))
        max_dp = float(np.abs(fp32 - int8).max())
        if min_agreement is not None and agreement < min_agreement:
            raise DermCloudError(
                f"INT8 {method} top-1 agreement with fp32 is {agreement:.3f} on {len(images)} images, below "
                f"min_agreement={min_agreement} (max |dp| {max_dp:.3g}); nothing written. Keep fp32 or try "
                "the other method"
            )
        report = QuantizeReport(
            model_dir=out,
            method=method,
            n_images=len(images),
            top1_agreement=agreement,
            max_abs_dp=max_dp,
            fp32_bytes=(src / spec.model_file).stat().st_size,
            int8_bytes=(stage / "model.onnx").stat().st_size,
            fp32_ms_per_image=fp32_ms,
            int8_ms_per_image=int8_ms,
            seconds=time.perf_counter() - start,
        )
        facts = {k: v for k, v in report.to_dict().items() if k not in ("model_dir", "seconds")}
        facts.update(source_model_id=spec.model_id, source_dir=str(src))
        facts["fp32_ms_per_image"] = round(fp32_ms, 2)
        facts["int8_ms_per_image"] = round(int8_ms, 2)
        facts["max_abs_dp"] = float(f"{max_dp:.3g}")
        new_spec.with_facts(quantization=facts).save(stage)
        if out.exists():
            shutil.rmtree(out)
        stage.rename(out)
        return report
    finally:
        shutil.rmtree(work, ignore_errors=True)


@contextmanager
def _quiet_onnxruntime_logs() -> Iterator[None]:
    """Drop onnxruntime.quantization's root-logger chatter (per-channel axis notes) for the duration."""

    def keep(record: logging.LogRecord) -> bool:
        return "onnxruntime" not in record.pathname or record.levelno >= logging.ERROR

    root = logging.getLogger()
    root.addFilter(keep)
    try:
        yield
    finally:
        root.removeFilter(keep)


def _probabilities(model_dir: Path, images: Sequence[str | os.PathLike[str]]) -> tuple[np.ndarray, float]:
    """Probabilities in the model's label order through LocalOnnxClassifier, and ms per image."""
    from derm_cloud.backends.local_onnx import LocalOnnxClassifier

    # allow_unmapped: generic models (MobileNetV2) are quantised too; their labels need not be lesion classes.
    with LocalOnnxClassifier(model_dir, allow_unmapped=True) as clf:
        clf.predict_batch(images[:1])  # warm-up so the timing is not the session's first run
        start = time.perf_counter()
        preds = clf.predict_batch(images, batch_size=16)
        ms = (time.perf_counter() - start) * 1000 / len(images)
    return np.asarray([[s.score for s in p.provider_scores] for p in preds], dtype=np.float64), ms


class _Calibration:
    """onnxruntime CalibrationDataReader over the given images, preprocessed exactly as at inference."""

    def __init__(self, model_dir: Path, spec: ModelSpec, images: Sequence[str | os.PathLike[str]]) -> None:
        from derm_cloud.backends.local_onnx import OnnxModel
        from derm_cloud.images import load_image
        from derm_cloud.preprocess import encode_metadata
        from derm_cloud.types import PatientMetadata

        model = OnnxModel(model_dir)
        pixels = model.tensors([load_image(p) for p in images])
        meta = encode_metadata(spec, [PatientMetadata()] * len(images))
        self._feeds: list[dict[str, np.ndarray]] = []
        for i in range(len(images)):
            feed = {model.image_input: pixels[i : i + 1]}
            if model.metadata_input is not None and meta is not None:
                feed[model.metadata_input] = meta[i : i + 1]
            self._feeds.append(feed)
        self._iter: Iterator[dict[str, np.ndarray]] = iter(self._feeds)
        del model

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._iter, None)

    def rewind(self) -> None:
        self._iter = iter(self._feeds)
