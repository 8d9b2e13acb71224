"""Azure Custom Vision compact-domain ONNX exports, of every generation, as derm-cloud model folders.

Three generations of export are public, each published with Microsoft's own way of feeding it:

* "ONNX" (2018): one `.onnx` download, WinMLTools 0.1, IR 3, opset 1 with Windows-only and experimental
  operators, a ZipMap `map` output, no image metadata; fed by a Windows ML app
  (Azure-Samples/cognitive-services-onnx-customvision-sample);
* "ONNX1.2" (2018-19): OnnxMLTools 1.2.2, IR 3, opset 7, `Image.BitmapPixelFormat=Bgr8`, a ZipMap `seq(map)`
  output; fed by a Windows ML app (Azure-Samples/cognitive-services-onnx12-customvision-sample);
* current: a zip of `model.onnx` (a plain score tensor; float16 for `OnnxFloat16`), `labels.txt` and
  `cvexport.manifest`; fed by `predict.py` (Azure-Samples/customvision-export-samples).

How an export is fed, and where each rule comes from:

* pixel format and range: the ONNX metadata `Image.BitmapPixelFormat` and `Image.NominalPixelRange` (keys and
  values case-insensitive, ONNX `docs/MetadataProps.md`); where a key is absent, Windows ML's documented
  defaults: `Bgr8` for a 3-channel input, `NominalRange_0_255`, `SRGB` (MicrosoftDocs/windows-ai-docs
  `docs/windows-ml/bind-a-model.md`). Microsoft's `predict.py` reads an absent range as 0-1 instead; every
  public export without the key takes 0-255 (the ONNX1.2 one subtracts the mean [104, 117, 123] first thing,
  the 2018 ones answer one class for every image when fed 0-1: tests/check_customvision_real_exports.py);
* resize, Windows ML generations (producer WinMLTools or OnnxMLTools): Windows ML's image binding, the largest
  centred region with the input's aspect ratio scaled to the input size (`crop_to_aspect`); the scaler's filter
  is not published and a bilinear one is ASSUMED (`facts.assumptions` says so);
* resize, current generation: `predict.py`, Pillow's default filter (bicubic) straight to the input size;
* the image input's size: the input tensor's height and width.

The 2018 generation does not load in onnxruntime as published; `onnx_legacy` repairs and upgrades it.
The BGR flip, float16 casts and ZipMap are folded into the graph (`onnx_adapt`) so the folder runs under
`local-onnx` like any model; the folder is loaded in onnxruntime before it is written, so an export that
cannot run is refused at import with onnxruntime's own reason. An optional `cvexport.manifest` (JSON) is read
for provenance. Tags need not be lesion classes (`import_model` records `facts.label_space`).

Microsoft notes that the sample's preprocessing "differs slightly" from the prediction API's; the API's own
resize is not published, so an imported export is compared with its cloud endpoint by measurement, never
assumed equal (`derm-cloud compare` pairs them; docs/reversible.md has the figures).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from derm_cloud.errors import MissingDependencyError, ModelSpecError
from derm_cloud.models.spec import Interpolation, ModelSpec, Preprocess, Resize

__all__ = ["is_custom_vision_export", "write_model_dir"]

_WINDOWS_ML_PRODUCERS = ("winmltools", "onnxmltools")
_BIND_A_MODEL = "Windows ML default when the key is absent (windows-ai-docs, windows-ml/bind-a-model.md)"


def is_custom_vision_export(folder: Path) -> bool:
    """A folder with exactly one `.onnx` file and `labels.txt`, or whose model carries its tags in a ZipMap
    (the 2018 exports download as a single `.onnx`)."""
    models = list(folder.glob("*.onnx"))
    if len(models) != 1:
        return False
    return (folder / "labels.txt").is_file() or _zipmap_tags(_load(models[0])) is not None


def write_model_dir(folder: Path, out: Path, provenance: dict[str, Any]) -> ModelSpec:
    """Adapt the export in `folder` into a derm-cloud model directory `out`; returns its spec."""
    import onnx

    from derm_cloud.models.imports.onnx_adapt import adapt_classifier_graph
    from derm_cloud.models.imports.onnx_legacy import default_opset, upgrade_for_onnxruntime

    model_path = next(folder.glob("*.onnx"))
    model = _load(model_path)
    labels = _labels(folder, model)
    origin = {
        "producer": f"{model.producer_name} {model.producer_version}".strip() or None,
        "ir_version": int(model.ir_version),
        "opset": default_opset(model),
    }
    windows_ml = model.producer_name.lower() in _WINDOWS_ML_PRODUCERS
    props = {p.key.lower(): p.value for p in model.metadata_props}
    bgr, scale, mean, conventions = _pixel_conventions(props)
    upgraded = upgrade_for_onnxruntime(model)
    adapted = adapt_classifier_graph(upgraded.model, bgr=bgr)
    if adapted.zipmap_labels is not None:
        if set(adapted.zipmap_labels) != set(labels):
            raise ModelSpecError(
                f"labels.txt ({len(labels)} tags) and the model's own labels ({len(adapted.zipmap_labels)}) differ"
            )
        labels = list(adapted.zipmap_labels)
    _check_onnxruntime_runs(adapted.model)
    manifest = _manifest(folder)
    flavor = provenance.get("flavor") or manifest.get("Flavor") or ("OnnxFloat16" if adapted.float16 else None)
    provenance = {
        "service": "azure-custom-vision",
        "platform": manifest.get("Platform", "ONNX"),
        "flavor": flavor,
        "iteration": provenance.get("iteration") or manifest.get("IterationId"),
        "exported": provenance.get("exported") or manifest.get("ExportedDate"),
        **{k: v for k, v in provenance.items() if v is not None},
    }
    height, width = adapted.input_hw
    resize: Resize
    interpolation: Interpolation
    if windows_ml:
        resize, interpolation = "crop_to_aspect", "pil_bilinear"
        conventions["resize"] = "centre region with the input's aspect ratio, scaled to the input size"
        conventions["resize_source"] = "Windows ML image binding (bind-a-model.md; onnxruntime ImageFeatureValue.cpp)"
        assumptions = ["interpolation: Windows ML's scaler (VideoFrame.CopyToAsync) is not published; bilinear assumed"]
        source = "Windows ML, as Microsoft's sample app for this generation binds a VideoFrame to the model"
    else:
        resize, interpolation = "squash", "pil_bicubic"
        conventions["resize"] = "straight to the input size, Pillow bicubic, aspect ratio not kept"
        conventions["resize_source"] = "Microsoft customvision-export-samples, python/onnx/classification/predict.py"
        assumptions = ["the prediction API's own preprocessing differs slightly (Microsoft's note); not published"]
        source = (
            "Microsoft customvision-export-samples, python/onnx/classification/predict.py: Pillow resize "
            "(bicubic) to the input size; Microsoft notes the prediction API's preprocessing differs slightly"
        )
    conventions["dtype"] = "float16 (casts folded into the graph)" if adapted.float16 else "float32"
    spec = ModelSpec(
        model_id=_model_id(provenance, model_path),
        labels=tuple(labels),
        preprocess=Preprocess(
            resize=resize,
            height=height,
            width=width,
            interpolation=interpolation,
            scale=scale,
            mean=mean,
        ),
        output="probabilities",
        layout="NCHW",
        max_batch=1 if adapted.fixed_batch else None,
        facts={
            "architecture": "Azure Custom Vision compact-domain image classifier (ONNX export)",
            "provenance": provenance,
            "onnx": origin,
            "upgraded": list(upgraded.steps) or None,
            "input_conventions": conventions,
            "assumptions": assumptions,
            "scores": _score_kind(adapted.model),
            "preprocessing_source": source,
            "manifest": manifest or None,
        },
    )
    out.mkdir(parents=True, exist_ok=True)
    onnx.save(adapted.model, str(out / "model.onnx"))
    (out / "labels.txt").write_text("\n".join(labels) + "\n", encoding="utf-8")  # in output order
    spec.save(out)
    return spec


def _load(path: Path) -> Any:
    try:
        import onnx
    except ImportError as exc:
        raise MissingDependencyError(
            "reading an ONNX export needs the onnx package; run: pip install 'derm-cloud[convert]'"
        ) from exc
    try:
        return onnx.load(str(path))
    except Exception as exc:  # onnx raises DecodeError and friends
        raise ModelSpecError(f"{path.name} is not a readable ONNX model ({type(exc).__name__})") from None


def _zipmap_tags(model: Any) -> list[str] | None:
    for node in model.graph.node:
        if node.op_type == "ZipMap":
            for attr in node.attribute:
                if attr.name == "classlabels_strings":
                    return [s.decode() for s in attr.strings]
    return None


def _labels(folder: Path, model: Any) -> list[str]:
    path = folder / "labels.txt"
    if path.is_file():
        labels = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
        labels = [x for x in labels if x]
        if not labels:
            raise ModelSpecError(f"{path} lists no tags")
        return labels
    tags = _zipmap_tags(model)
    if not tags:
        raise ModelSpecError(f"{folder} has no labels.txt and the model names no tags (no ZipMap with string labels)")
    return tags


def _pixel_conventions(props: dict[str, str]) -> tuple[bool, float, tuple[float, float, float], dict[str, Any]]:
    """(BGR?, scale, mean, facts) from the image metadata, with Windows ML's defaults for absent keys."""
    fmt = props.get("image.bitmappixelformat", "").lower()
    if fmt not in ("", "bgr8", "rgb8"):
        raise ModelSpecError(
            f"Image.BitmapPixelFormat={props['image.bitmappixelformat']}: derm-cloud feeds 3-channel RGB or BGR; "
            "a Gray8/Rgba8/Bgra8 input is not a Custom Vision export"
        )
    gamma = props.get("image.colorspacegamma", "").lower()
    if gamma not in ("", "srgb"):
        raise ModelSpecError(
            f"Image.ColorSpaceGamma={props['image.colorspacegamma']}: the model wants linear-light pixels, and "
            "derm-cloud feeds the sRGB-encoded values images carry without linearising them"
        )
    value = props.get("image.nominalpixelrange", "").lower()
    ranges: dict[str, tuple[str, float, float]] = {
        "": ("0-255", 1.0, 0.0),
        "nominalrange_0_255": ("0-255", 1.0, 0.0),
        "normalized_0_1": ("0-1", 1 / 255, 0.0),
        "normalized_1_1": ("-1-1", 2 / 255, 1.0),
    }
    if value not in ranges:
        raise ModelSpecError(
            f"Image.NominalPixelRange={props['image.nominalpixelrange']}: derm-cloud feeds 0-255, 0-1 or -1-1 "
            "pixels (video range 16-235 is not supported, by Windows ML either)"
        )
    label, scale, shift = ranges[value]
    bgr = fmt != "rgb8"
    facts = {
        "channel_order": "BGR (folded into the graph)" if bgr else "RGB",
        "channel_order_source": f"Image.BitmapPixelFormat={props['image.bitmappixelformat']}" if fmt else _BIND_A_MODEL,
        "pixel_range": label,
        "pixel_range_source": f"Image.NominalPixelRange={props['image.nominalpixelrange']}" if value else _BIND_A_MODEL,
    }
    return bgr, scale, (shift, shift, shift), facts


def _score_kind(model: Any) -> str:
    producer = {o: n.op_type for n in model.graph.node for o in n.output}
    current = model.graph.output[0].name
    while producer.get(current) == "Cast":
        current = next(n.input[0] for n in model.graph.node if current in n.output)
    kind = producer.get(current, "")
    if kind == "Sigmoid":
        return "sigmoid per tag: independent scores that need not sum to 1"
    if kind == "Softmax":
        return "softmax over the tags"
    return f"the output of {kind or 'the graph'}, as the export computes it"


def _check_onnxruntime_runs(model: Any) -> None:
    try:
        import onnxruntime
    except ImportError:
        return  # the folder is written either way; local-onnx says what to install when it is used
    try:
        onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own Fail / InvalidGraph / NotImplemented types
        raise ModelSpecError(f"onnxruntime cannot run this export: {str(exc).splitlines()[0]}") from None


def _manifest(folder: Path) -> dict[str, Any]:
    path = folder / "cvexport.manifest"
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _model_id(provenance: dict[str, Any], model_path: Path) -> str:
    project = provenance.get("project") or "project"
    iteration = provenance.get("iteration") or model_path.stem
    flavor = provenance.get("flavor")
    return f"customvision:{project}/{iteration}" + (f"/{flavor}" if flavor else "")
