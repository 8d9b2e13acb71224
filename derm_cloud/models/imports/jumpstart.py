"""SageMaker JumpStart PyTorch image-classification artefacts (`model.tar.gz`) as derm-cloud model folders.

A JumpStart `pytorch-ic-*` fine-tuning job writes `model.tar.gz` with the trained network and
`class_label_to_prediction_index.json` (`{"daisy": 0, "dandelion": 1, ...}`: the tag of each output index).
The network is converted to ONNX here with `torch.onnx` and checked against PyTorch on the same tensor.
Preprocessing is torchvision's ImageNet evaluation transform (Resize 256, CenterCrop 224, ImageNet mean/std),
the transform JumpStart's PyTorch image-classification scripts use; the endpoint answers softmax probabilities,
so the folder declares logits and derm-cloud applies the same softmax.

Loading: a TorchScript file loads without running code from it. A pickled `nn.Module` (`torch.save(model)`)
runs code while loading, so it is read only with `trust_pickle=True` (your own training job's output), and
unpickling a torchvision model needs torchvision installed.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

from derm_cloud.errors import ConfigError, ConversionError, MissingDependencyError, ModelSpecError
from derm_cloud.models.spec import IMAGENET_EVAL_PREPROCESS, ModelSpec

__all__ = ["LABEL_FILE", "is_jumpstart_ic_artefact", "write_model_dir"]

LABEL_FILE = "class_label_to_prediction_index.json"
_TOLERANCE = 1e-4


def is_jumpstart_ic_artefact(folder: Path) -> bool:
    """A folder with the JumpStart label file and one PyTorch model file."""
    return (folder / LABEL_FILE).is_file() and len(_model_files(folder)) == 1


def _model_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix in (".pt", ".pth") and p.is_file())


def write_model_dir(folder: Path, out: Path, provenance: dict[str, Any], *, trust_pickle: bool = False) -> ModelSpec:
    """Convert the artefact in `folder` into a derm-cloud model directory `out`; returns its spec."""
    try:
        import numpy as np
        import torch
    except ImportError as exc:
        raise MissingDependencyError(
            "importing a JumpStart PyTorch artefact needs torch; run: pip install 'derm-cloud[convert]'"
        ) from exc
    labels = _labels(folder / LABEL_FILE)
    model_file = _model_files(folder)[0]
    module = _load(model_file, trust_pickle)
    module.eval()
    crop = IMAGENET_EVAL_PREPROCESS.output_size
    example = torch.rand(2, 3, *crop, generator=torch.Generator().manual_seed(0))
    out.mkdir(parents=True, exist_ok=True)
    onnx_path = out / "model.onnx"
    with torch.no_grad(), warnings.catch_warnings():
        # The TorchScript exporter warns that script methods carry no Python signature; nothing to act on.
        warnings.simplefilter("ignore", UserWarning)
        reference = module(example).numpy()
        torch.onnx.export(
            module,
            (example,),
            str(onnx_path),
            input_names=["image"],
            output_names=["logits"],
            dynamic_axes={"image": {0: "N"}, "logits": {0: "N"}},
            dynamo=False,  # TorchScript modules go through the TorchScript exporter
        )
    if reference.shape != (2, len(labels)):
        raise ModelSpecError(
            f"{model_file.name} answers {reference.shape[1:]} scores per image but {LABEL_FILE} names {len(labels)}"
        )
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    converted = session.run(None, {"image": example.numpy()})[0]
    gap = float(np.max(np.abs(converted - reference)))
    if gap > _TOLERANCE:
        raise ConversionError(f"the ONNX conversion of {model_file.name} differs from PyTorch by {gap:.2e}")
    spec = ModelSpec(
        model_id=f"jumpstart:{provenance.get('training_job') or model_file.stem}",
        labels=tuple(labels),
        preprocess=IMAGENET_EVAL_PREPROCESS,
        output="logits",
        layout="NCHW",
        facts={
            "architecture": "SageMaker JumpStart PyTorch image classifier (converted to ONNX)",
            "provenance": {"service": "sagemaker-jumpstart", **{k: v for k, v in provenance.items() if v}},
            "conversion": {"route": "torch.onnx (TorchScript exporter)", "max_abs_diff_vs_pytorch": gap},
            "preprocessing_source": "torchvision ImageNet evaluation transform (Resize 256, CenterCrop 224)",
        },
    )
    spec.save(out)
    return spec


def _labels(path: Path) -> list[str]:
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ModelSpecError(f"{path.name} is not valid JSON ({exc})") from None
    if not isinstance(index, dict) or not index or not all(isinstance(v, int) for v in index.values()):
        raise ModelSpecError(f"{path.name} must map each class label to its prediction index")
    if sorted(index.values()) != list(range(len(index))):
        raise ModelSpecError(f"{path.name} must number its classes 0..{len(index) - 1} without gaps")
    return [label for label, _ in sorted(index.items(), key=lambda kv: kv[1])]


def _load(path: Path, trust_pickle: bool) -> Any:
    import torch

    try:
        return torch.jit.load(str(path), map_location="cpu")  # type: ignore[no-untyped-call]
    except RuntimeError:
        pass  # not TorchScript: a pickled module
    if not trust_pickle:
        raise ConfigError(
            f"{path.name} is a pickled PyTorch model: loading it runs code stored in the file. Import it only if "
            "it is your own training job's output, with trust_pickle=True (CLI: --trust-pickle)"
        )
    try:
        module = torch.load(str(path), map_location="cpu", weights_only=False)
    except ModuleNotFoundError as exc:
        raise MissingDependencyError(
            f"{path.name} was pickled with {exc.name!r}, which is not installed here (JumpStart models are "
            "torchvision networks: pip install torchvision)"
        ) from exc
    if not isinstance(module, torch.nn.Module):
        raise ModelSpecError(
            f"{path.name} holds a {type(module).__name__}, not a model (a state_dict needs the network's code)"
        )
    return module
