"""Model directory specs: what a model expects and how its outputs are labelled.

A model directory holds `model.onnx` plus `spec.json`:

```text
{
  "format": "derm-cloud-model/1",
  "model_id": "sklesion-0.2.2",
  "labels": ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"],     # in output order
  "output": "probabilities",                                       # or "logits" (softmax applied)
  "image_input": {"index": 0, "layout": "NHWC"},                   # inputs bound by position, not name
  "preprocess": {"resize": "squash", "height": 254, "width": 254,
                 "interpolation": "bilinear_half_pixel", "crop": null,
                 "scale": 1.0, "mean": [0, 0, 0], "std": [1, 1, 1],
                 "channel_order": "RGB"},                        # optional; "BGR" reverses channels
  "metadata_input": {"index": 1, "encoding": "sklesion-v1"},      # or null
  "max_batch": null,                                               # 1 for fixed-batch exports
  "model_file": "model.onnx",                                      # or model.tflite (local-tflite, LiteRT)
  "facts": {"architecture": "...", "licence": "...", ...}          # for `derm-cloud models info`
}
```

Inputs are bound by position because the same model exported by two routes gets different input names
(`input_0` vs `input_layer_2` for sklesion). A directory holding `model.onnx` and `labels.json` but no
`spec.json` is read as an Azure AutoML for Images ONNX export (logits, `input1` NCHW, resize 256, centre
crop 224, ImageNet mean/std), as documented by Microsoft.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from derm_cloud.errors import ModelSpecError

__all__ = [
    "AUTOML_PREPROCESS",
    "IMAGENET_EVAL_PREPROCESS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "SPEC_FORMAT",
    "ModelSpec",
    "Preprocess",
]

SPEC_FORMAT = "derm-cloud-model/1"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

Resize = Literal["squash", "shorter_side", "crop_to_aspect", "none"]
ChannelOrder = Literal["RGB", "BGR"]
Interpolation = Literal["bilinear_half_pixel", "pil_bilinear", "pil_bicubic", "nearest"]


@dataclass(frozen=True)
class Preprocess:
    """How to turn an RGB image into the model's input tensor.

    Attributes:
        resize: `squash` to exactly height x width (aspect not kept); `shorter_side` scales the shorter side
            to `shorter` keeping the aspect ratio (then `crop` is usually set); `crop_to_aspect` cuts the
            largest centred region with the aspect ratio of height x width, then scales it to that size (what
            Windows ML does when an image is bound to a model's input); `none`.
        height, width: target of a `squash` or `crop_to_aspect` resize.
        shorter: target shorter side of a `shorter_side` resize.
        interpolation: `bilinear_half_pixel` = TensorFlow/ONNX bilinear without antialiasing (what
            `tf.image.resize` does); `pil_bilinear` = Pillow's (antialiased when shrinking, what Hugging Face
            image processors do).
        crop: centre crop `[height, width]` after resizing, or `None`.
        scale: multiply pixel values (0..255) by this (`1/255` for most models; 1.0 when the model
            normalises itself).
        mean, std: per-channel normalisation applied after `scale`, in the model's channel order.
        channel_order: `RGB`, or `BGR` for models that take their channels reversed (Custom Vision's
            TensorFlow/TFLite exports; ONNX exports fold the flip into the graph instead).
    """

    resize: Resize = "squash"
    height: int = 224
    width: int = 224
    shorter: int | None = None
    interpolation: Interpolation = "pil_bilinear"
    crop: tuple[int, int] | None = None
    scale: float = 1 / 255
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    channel_order: ChannelOrder = "RGB"

    @property
    def output_size(self) -> tuple[int, int]:
        """(height, width) of the tensor this produces."""
        if self.crop is not None:
            return self.crop
        return (self.height, self.width)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "preprocess") -> Preprocess:
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ModelSpecError(f"{where}: unknown key(s) {unknown}; allowed keys are {sorted(known)}")
        values = dict(data)
        for key in ("mean", "std"):
            if key in values:
                v = values[key]
                if not (isinstance(v, (list, tuple)) and len(v) == 3):
                    raise ModelSpecError(f"{where}.{key} must be a list of 3 numbers, got {v!r}")
                values[key] = tuple(float(x) for x in v)
        if values.get("crop") is not None:
            crop = values["crop"]
            if not (isinstance(crop, (list, tuple)) and len(crop) == 2):
                raise ModelSpecError(f"{where}.crop must be [height, width] or null, got {crop!r}")
            values["crop"] = (int(crop[0]), int(crop[1]))
        pre = cls(**values)
        if pre.resize not in ("squash", "shorter_side", "crop_to_aspect", "none"):
            raise ModelSpecError(
                f"{where}.resize must be squash, shorter_side, crop_to_aspect or none, got {pre.resize!r}"
            )
        if pre.interpolation not in ("bilinear_half_pixel", "pil_bilinear", "pil_bicubic", "nearest"):
            raise ModelSpecError(f"{where}.interpolation {pre.interpolation!r} is not supported")
        if pre.channel_order not in ("RGB", "BGR"):
            raise ModelSpecError(f"{where}.channel_order must be RGB or BGR, got {pre.channel_order!r}")
        if pre.resize == "shorter_side" and not pre.shorter:
            raise ModelSpecError(f"{where}: resize 'shorter_side' needs 'shorter' (e.g. 256)")
        if any(s == 0 for s in pre.std):
            raise ModelSpecError(f"{where}.std must not contain 0")
        return pre

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["crop"] = list(self.crop) if self.crop else None
        d["mean"], d["std"] = list(self.mean), list(self.std)
        if self.channel_order == "RGB":
            del d["channel_order"]  # the default; specs written before the key existed stay byte-identical
        return d


# torchvision's ImageNet evaluation transform: Resize(256) keeping the aspect ratio, CenterCrop(224), ImageNet
# mean/std. Used by torchvision-trained models (MobileNetV2) and by Azure AutoML for Images ONNX exports
# (how-to-inference-onnx-automl-image-models.md), whose training pipeline is torchvision's.
IMAGENET_EVAL_PREPROCESS = Preprocess(
    resize="shorter_side",
    shorter=256,
    height=256,
    width=256,
    interpolation="pil_bilinear",
    crop=(224, 224),
    scale=1 / 255,
    mean=IMAGENET_MEAN,
    std=IMAGENET_STD,
)
AUTOML_PREPROCESS = IMAGENET_EVAL_PREPROCESS


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to run a model directory and label its outputs.

    Example:
        >>> spec = ModelSpec.load("~/.cache/derm-cloud/models/sklesion-0.2.2")  # doctest: +SKIP
        >>> spec.labels[:2]
        ('akiec', 'bcc')
    """

    model_id: str
    labels: tuple[str, ...]
    preprocess: Preprocess
    output: Literal["probabilities", "logits"] = "probabilities"
    layout: Literal["NCHW", "NHWC"] = "NCHW"
    image_input_index: int = 0
    metadata_input_index: int | None = None
    metadata_encoding: str | None = None
    max_batch: int | None = None
    facts: dict[str, Any] = field(default_factory=dict)
    model_file: str = "model.onnx"
    source_layout: str = "derm-cloud"

    @classmethod
    def load(cls, directory: str | Path) -> ModelSpec:
        """Read the spec of a model directory (`spec.json`, or an Azure AutoML `labels.json` export).

        Raises:
            ModelSpecError: the directory, model file or spec is missing or invalid.
        """
        d = Path(directory).expanduser()
        if not d.is_dir():
            raise ModelSpecError(
                f"model directory {str(d)!r} does not exist; run `derm-cloud models fetch sklesion` or pass "
                "a folder holding model.onnx and spec.json"
            )
        spec_path = d / "spec.json"
        labels_path = d / "labels.json"
        if spec_path.is_file():
            try:
                data = json.loads(spec_path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as exc:
                raise ModelSpecError(f"{spec_path}: invalid JSON at line {exc.lineno}: {exc.msg}") from None
            spec = cls.from_dict(data, where=str(spec_path))
        elif labels_path.is_file():
            spec = cls.automl(labels_path)
        else:
            raise ModelSpecError(
                f"{str(d)!r} has neither spec.json nor labels.json; a derm-cloud model directory needs "
                "spec.json (see `derm-cloud models export-hf`), an Azure AutoML export needs labels.json"
            )
        if not (d / spec.model_file).is_file():
            raise ModelSpecError(f"{str(d)!r} has no {spec.model_file}; the model file is missing")
        return spec

    @classmethod
    def automl(cls, labels_path: Path) -> ModelSpec:
        """Spec of an Azure AutoML for Images multi-class ONNX export (`model.onnx` + `labels.json`)."""
        try:
            labels = json.loads(labels_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ModelSpecError(f"{labels_path}: invalid JSON at line {exc.lineno}: {exc.msg}") from None
        if not (isinstance(labels, list) and labels and all(isinstance(x, str) for x in labels)):
            raise ModelSpecError(f"{labels_path} must be a JSON list of class names in output order")
        return cls(
            model_id=f"azureml-automl:{labels_path.parent.name}",
            labels=tuple(labels),
            preprocess=AUTOML_PREPROCESS,
            output="logits",
            layout="NCHW",
            facts={
                "architecture": "Azure AutoML for Images classifier (ONNX export)",
                "source": "Azure Machine Learning AutoML train_artifacts/model.onnx",
            },
            source_layout="azureml-automl",
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "spec.json") -> ModelSpec:
        """Validate and build a spec from its JSON form; errors name the bad key."""
        if not isinstance(data, dict):
            raise ModelSpecError(f"{where}: expected a JSON object")
        fmt = data.get("format")
        if fmt != SPEC_FORMAT:
            raise ModelSpecError(f"{where}: 'format' must be {SPEC_FORMAT!r}, got {fmt!r}")
        for key in ("model_id", "labels", "preprocess"):
            if key not in data:
                raise ModelSpecError(f"{where}: missing required key {key!r}")
        labels = data["labels"]
        if not (isinstance(labels, list) and labels and all(isinstance(x, str) for x in labels)):
            raise ModelSpecError(f"{where}: 'labels' must be a non-empty list of strings in output order")
        output = data.get("output", "probabilities")
        if output not in ("probabilities", "logits"):
            raise ModelSpecError(f"{where}: 'output' must be 'probabilities' or 'logits', got {output!r}")
        image_input = data.get("image_input") or {}
        layout = image_input.get("layout", "NCHW")
        if layout not in ("NCHW", "NHWC"):
            raise ModelSpecError(f"{where}: image_input.layout must be NCHW or NHWC, got {layout!r}")
        meta = data.get("metadata_input")
        if meta is not None and "encoding" not in meta:
            raise ModelSpecError(f"{where}: metadata_input needs an 'encoding' (e.g. 'sklesion-v1')")
        max_batch = data.get("max_batch")
        if max_batch is not None and (not isinstance(max_batch, int) or max_batch < 1):
            raise ModelSpecError(f"{where}: max_batch must be a positive integer or null, got {max_batch!r}")
        return cls(
            model_id=str(data["model_id"]),
            labels=tuple(labels),
            preprocess=Preprocess.from_dict(dict(data["preprocess"]), f"{where}: preprocess"),
            output=output,
            layout=layout,
            image_input_index=int(image_input.get("index", 0)),
            metadata_input_index=None if meta is None else int(meta.get("index", 1)),
            metadata_encoding=None if meta is None else str(meta["encoding"]),
            max_batch=max_batch,
            facts=dict(data.get("facts") or {}),
            model_file=str(data.get("model_file", "model.onnx")),
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON form written to `spec.json`."""
        return {
            "format": SPEC_FORMAT,
            "model_id": self.model_id,
            "labels": list(self.labels),
            "output": self.output,
            "image_input": {"index": self.image_input_index, "layout": self.layout},
            "preprocess": self.preprocess.to_dict(),
            "metadata_input": None
            if self.metadata_encoding is None
            else {"index": self.metadata_input_index, "encoding": self.metadata_encoding},
            "max_batch": self.max_batch,
            "model_file": self.model_file,
            "facts": self.facts,
        }

    def save(self, directory: str | Path) -> Path:
        """Write `spec.json` into `directory` (atomically) and return its path."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        tmp = d / "spec.json.tmp"
        tmp.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        tmp.replace(d / "spec.json")
        return d / "spec.json"

    def with_facts(self, **facts: Any) -> ModelSpec:
        """A copy with extra facts merged in."""
        return replace(self, facts={**self.facts, **facts})
