"""Export a Hugging Face image-classification folder to a derm-cloud ONNX model directory, with a parity check.

The result runs on the `local-onnx` backend and in every serving adapter with onnxruntime only (no torch or
transformers at run time). `spec.json` is derived from the model itself: preprocessing from its image
processor (size, resample, rescale, mean/std; the Anwarkh1 fallback of `derm_cloud.backends.local_hf`
applies), labels from `config.id2label`, output `logits`; facts from the config, the safetensors and the model
card. The legacy TorchScript exporter is used (`dynamo=False`: no onnxscript needed, dynamic batch axis).

The export is refused unless onnxruntime reproduces torch's logits within `atol` (1e-4) on seeded noise and on
the optional real images, and unless derm-cloud's preprocessing reproduces the image processor's tensors.

Example:
    >>> report = export_hf("models/Skin_Cancer-Image_Classification", "models/anwarkh1-onnx")  # doctest: +SKIP
    >>> report.max_abs_diff < 1e-4
    True
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from derm_cloud.errors import ConfigError, DermCloudError, MissingDependencyError, ModelSpecError
from derm_cloud.models.spec import ModelSpec, Preprocess

if TYPE_CHECKING:
    import torch

__all__ = [
    "ExportReport",
    "export_hf",
    "onnx_parity",
    "preprocess_from_processor",
    "require_export_deps",
    "torch_to_onnx",
]

_RESAMPLE = {0: "nearest", 2: "pil_bilinear", 3: "pil_bicubic"}  # PIL.Image.Resampling values


@dataclass(frozen=True)
class ExportReport:
    """What `export_hf` produced and measured.

    Attributes:
        model_dir: the new ONNX model directory.
        max_abs_diff: largest |torch - onnxruntime| logit difference over the parity inputs.
        preprocess_max_abs_diff: largest pixel difference between the HF image processor and `spec.json`
            preprocessing on the verification images (`None` without images).
        parameters: parameter count of the torch model.
        onnx_bytes: size of `model.onnx`.
        export_seconds: time spent in `torch.onnx.export`.
        preprocessing_note: set when image-processor defaults had to be used (Anwarkh1 quirk).
    """

    model_dir: Path
    max_abs_diff: float
    preprocess_max_abs_diff: float | None
    parameters: int
    onnx_bytes: int
    export_seconds: float
    preprocessing_note: str | None


def require_export_deps() -> None:
    """Raise `MissingDependencyError` unless torch, onnx and onnxruntime import."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
        import torch  # noqa: F401
    except ImportError as exc:
        raise MissingDependencyError(
            f"exporting models needs torch, onnx and onnxruntime ({exc.name} is missing); run: "
            "pip install 'derm-cloud[convert]'"
        ) from exc


def torch_to_onnx(
    module: torch.nn.Module,
    path: Path,
    input_chw: tuple[int, int, int],
    *,
    opset: int = 17,
    input_name: str = "pixel_values",
    output_name: str = "logits",
) -> float:
    """Export an image classifier (NCHW float32 -> logits) with a dynamic batch axis; returns seconds taken."""
    import torch

    example = torch.zeros((1, *input_chw), dtype=torch.float32)
    start = time.perf_counter()
    with warnings.catch_warnings():
        # Tracer warnings about Python control flow are expected for HF models; the parity check decides.
        warnings.simplefilter("ignore", getattr(torch.jit, "TracerWarning", UserWarning))
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\.onnx")
        torch.onnx.export(
            module,
            (example,),
            str(path),
            input_names=[input_name],
            output_names=[output_name],
            dynamic_axes={input_name: {0: "batch"}, output_name: {0: "batch"}},
            opset_version=opset,
            dynamo=False,
        )
    return time.perf_counter() - start


def onnx_parity(
    module: torch.nn.Module,
    onnx_path: Path,
    input_chw: tuple[int, int, int],
    *,
    images: Sequence[str | os.PathLike[str]] = (),
    preprocess: Preprocess | None = None,
    seed: int = 0,
) -> float:
    """Max |torch - onnxruntime| over seeded noise (batch 3, exercising the dynamic axis) and real images."""
    import onnxruntime as ort
    import torch

    batches = [np.random.default_rng(seed).normal(0, 1, size=(3, *input_chw)).astype(np.float32)]
    if images:
        if preprocess is None:
            raise ConfigError("onnx_parity needs the spec's preprocess to use real images")
        batches.append(_tensors(images, preprocess))
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    worst = 0.0
    for batch in batches:
        with torch.inference_mode():
            expected = module(torch.from_numpy(batch)).numpy()
        got = session.run(None, {name: batch})[0]
        worst = max(worst, float(np.abs(expected - got).max()))
    return worst


def _tensors(images: Sequence[str | os.PathLike[str]], pre: Preprocess) -> np.ndarray:
    from derm_cloud.images import load_image
    from derm_cloud.preprocess import image_tensor

    return np.stack([image_tensor(load_image(p).image, pre, "NCHW") for p in images])


def _size_get(size: Any, key: str) -> Any:
    if size is None:
        return None
    return size.get(key) if isinstance(size, dict) else getattr(size, key, None)


def preprocess_from_processor(processor: Any) -> Preprocess:
    """Translate a transformers image processor into a `Preprocess`.

    Supports fixed `{height, width}` resizes (ViT, DeiT, BEiT, Swin ...) and `shortest_edge` resizes with an
    optional centre crop (MobileNet, ResNet-style). Anything else is refused rather than approximated.

    Raises:
        ModelSpecError: the processor does something `spec.json` cannot express (e.g. `crop_pct`).
    """
    size = getattr(processor, "size", None)
    resample = getattr(processor, "resample", 2)
    interpolation = _RESAMPLE.get(int(resample) if resample is not None else 2)
    if interpolation is None:
        raise ModelSpecError(f"image processor resample={resample!r} is not supported (use bilinear or bicubic)")
    if getattr(processor, "crop_pct", None) is not None:
        raise ModelSpecError(
            f"{type(processor).__name__} uses crop_pct, which spec.json cannot express; write spec.json by hand"
        )
    crop = None
    if getattr(processor, "do_center_crop", False):
        cs = getattr(processor, "crop_size", None)
        crop = (int(_size_get(cs, "height")), int(_size_get(cs, "width")))
    height, width, shortest = (_size_get(size, k) for k in ("height", "width", "shortest_edge"))
    if not getattr(processor, "do_resize", True):
        values: dict[str, Any] = {"resize": "none", "height": int(height or 224), "width": int(width or 224)}
    elif height and width:
        values = {"resize": "squash", "height": int(height), "width": int(width)}
    elif shortest:
        values = {"resize": "shorter_side", "shorter": int(shortest), "height": int(shortest), "width": int(shortest)}
    else:
        raise ModelSpecError(f"image processor size {size!r} is not supported; write spec.json by hand")
    normalise = bool(getattr(processor, "do_normalize", True))
    mean = tuple(float(v) for v in processor.image_mean) if normalise else (0.0, 0.0, 0.0)
    std = tuple(float(v) for v in processor.image_std) if normalise else (1.0, 1.0, 1.0)
    rescale = float(processor.rescale_factor) if getattr(processor, "do_rescale", True) else 1.0
    return Preprocess.from_dict(
        {**values, "interpolation": interpolation, "crop": crop, "scale": rescale, "mean": mean, "std": std}
    )


def export_hf(
    folder: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    opset: int = 17,
    *,
    model_id: str | None = None,
    verify_images: Sequence[str | os.PathLike[str]] = (),
    atol: float = 1e-4,
    preprocess_atol: float = 1e-2,
    overwrite: bool = False,
) -> ExportReport:
    """Export an HF image-classification folder to `out_dir` (`model.onnx` + `spec.json`).

    Args:
        folder: a `save_pretrained` folder (`config.json` + weights + preprocessor config).
        out_dir: the new model directory; must not exist unless `overwrite`.
        opset: ONNX opset.
        model_id: id written to `spec.json` (default: the folder name).
        verify_images: real images for the parity checks (recommended: a few of your own).
        atol: largest allowed logit difference between torch and onnxruntime.
        preprocess_atol: largest allowed pixel difference between the HF processor and the spec's preprocessing.
        overwrite: replace an existing `out_dir` (only after the new export passed its checks).

    Raises:
        ConfigError: `out_dir` exists, or is the source folder.
        ModelSpecError: the folder is not a loadable image classifier or its processor cannot be expressed.
        DermCloudError: a parity check failed (nothing is written).
    """
    from derm_cloud.backends.local_hf import hf_labels, hub_errors, load_image_processor, resolve_source
    from derm_cloud.models.facts import model_facts

    require_export_deps()
    import onnx
    import torch
    import transformers

    source = resolve_source(folder)
    if source.folder is None:
        raise ConfigError(
            f"{os.fspath(folder)!r} is not a local folder; download the model first "
            "(`hf download OWNER/NAME --local-dir DIR`) and export DIR"
        )
    out = Path(out_dir).expanduser().resolve()
    if out == source.folder:
        raise ConfigError("out_dir is the source folder; choose a new directory for the ONNX model")
    if out.exists() and not overwrite:
        raise ConfigError(f"{out} already exists; choose another directory or pass overwrite=True (--overwrite)")
    with hub_errors(source):
        config = transformers.AutoConfig.from_pretrained(source.ref)
        model = transformers.AutoModelForImageClassification.from_pretrained(source.ref).eval()
    labels = hf_labels(config)
    processor, note = load_image_processor(source, config)
    pre = preprocess_from_processor(processor)
    chw = (3, *pre.output_size)

    class LogitsOnly(torch.nn.Module):
        # HF models return a ModelOutput; the ONNX graph needs a plain tensor output.
        def __init__(self) -> None:
            super().__init__()
            self.inner = model

        def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
            logits: torch.Tensor = self.inner(pixel_values=pixel_values).logits
            return logits

    wrapped = LogitsOnly().eval()
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        export_s = torch_to_onnx(wrapped, work / "model.onnx", chw, opset=opset)
        onnx.checker.check_model(str(work / "model.onnx"))
        diff = onnx_parity(wrapped, work / "model.onnx", chw, images=verify_images, preprocess=pre)
        if diff > atol:
            raise DermCloudError(f"ONNX logits differ from torch by {diff:.3g} (allowed {atol}); export refused")
        pre_diff = _preprocess_diff(processor, pre, verify_images)
        if pre_diff is not None and pre_diff > preprocess_atol:
            raise DermCloudError(
                f"spec.json preprocessing differs from {type(processor).__name__} by {pre_diff:.3g} per pixel "
                f"(allowed {preprocess_atol}); the processor does something spec.json cannot express"
            )
        found = model_facts(source.folder)
        parameters = int(sum(p.numel() for p in model.parameters()))
        facts: dict[str, Any] = {
            key: getattr(found, key)
            for key in ("architecture", "licence", "training_data", "intended_use", "known_limitations")
            if getattr(found, key)
        }
        facts.update(
            parameters=parameters,
            source_model=config.to_dict().get("_name_or_path") or source.folder.name,
            parity_max_abs_diff=float(f"{diff:.3g}"),
            export={"exporter": "torch.onnx legacy (TorchScript)", "opset": opset, "seconds": round(export_s, 2)},
            exported_with={"torch": torch.__version__, "transformers": transformers.__version__},
        )
        if pre_diff is not None:
            facts["preprocess_max_abs_diff"] = float(f"{pre_diff:.3g}")
        if note:
            facts["preprocessing_note"] = note
        ModelSpec(
            model_id=model_id or source.folder.name,
            labels=tuple(labels),
            preprocess=pre,
            output="logits",
            layout="NCHW",
            facts=facts,
        ).save(work)
        if (source.folder / "README.md").is_file():
            shutil.copyfile(source.folder / "README.md", work / "MODEL_CARD.md")  # keep licence text with it
        if out.exists():
            shutil.rmtree(out)
        work.rename(out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return ExportReport(
        model_dir=out,
        max_abs_diff=diff,
        preprocess_max_abs_diff=pre_diff,
        parameters=parameters,
        onnx_bytes=(out / "model.onnx").stat().st_size,
        export_seconds=export_s,
        preprocessing_note=note,
    )


def _preprocess_diff(processor: Any, pre: Preprocess, images: Sequence[str | os.PathLike[str]]) -> float | None:
    if not images:
        return None
    from derm_cloud.images import load_image

    pils = [load_image(p).image for p in images]
    theirs = np.asarray(processor(images=pils, return_tensors="np")["pixel_values"], dtype=np.float32)
    ours = _tensors(images, pre)
    if theirs.shape != ours.shape:
        return float("inf")
    return float(np.abs(theirs - ours).max())
