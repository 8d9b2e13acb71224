"""Azure Custom Vision compact-domain ONNX exports (float32 and ``OnnxFloat16``) as derm-cloud model folders.

What an export holds and how its model is fed, from Microsoft's ``customvision-export-samples``
(``samples/python/onnx/classification*/predict.py``):

* ``labels.txt``: one tag per line, in output order; ``model.onnx`` with one input ``[N, 3, H, W]`` (float32, or
  float16 for the ``OnnxFloat16`` flavor);
* the input convention is in the ONNX metadata: ``Image.BitmapPixelFormat == "Bgr8"`` means BGR channel order,
  ``Image.NominalPixelRange == "NominalRange_0_255"`` means pixels stay 0..255 (otherwise divided by 255);
* the sample resizes with Pillow's default filter (bicubic) straight to ``W x H``, without keeping the aspect ratio;
* older compact exports end in a ``ZipMap`` (``loss``: a list of ``{tag: score}``) plus a ``classLabel`` output,
  the newer ``[S1]`` ones in a plain score tensor.

An optional ``cvexport.manifest`` (JSON) is read for provenance when present. The BGR flip, float16 casts and
ZipMap are folded into the graph (:mod:`.onnx_adapt`) so the folder runs under ``local-onnx`` like any model.

Microsoft notes that the sample's preprocessing "differs slightly" from the prediction API's; the API's own
resize is not published, so an imported export is compared with its cloud endpoint by measurement, never
assumed equal (``derm-cloud compare`` pairs them; docs/reversible.md has the figures).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from derm_cloud.errors import ModelSpecError
from derm_cloud.models.spec import ModelSpec, Preprocess

__all__ = ["is_custom_vision_export", "write_model_dir"]


def is_custom_vision_export(folder: Path) -> bool:
    """A folder with ``labels.txt`` and exactly one ``.onnx`` file."""
    return (folder / "labels.txt").is_file() and len(list(folder.glob("*.onnx"))) == 1


def write_model_dir(folder: Path, out: Path, provenance: dict[str, Any]) -> ModelSpec:
    """Adapt the export in ``folder`` into a derm-cloud model directory ``out``; returns its spec."""
    import onnx

    from derm_cloud.models.imports.onnx_adapt import adapt_classifier_graph

    labels = [line.strip() for line in (folder / "labels.txt").read_text(encoding="utf-8").splitlines()]
    labels = [x for x in labels if x]
    if not labels:
        raise ModelSpecError(f"{folder / 'labels.txt'} lists no tags")
    model_path = next(folder.glob("*.onnx"))
    try:
        model = onnx.load(str(model_path))
    except Exception as exc:  # onnx raises DecodeError and friends
        raise ModelSpecError(f"{model_path.name} is not a readable ONNX model ({type(exc).__name__})") from None
    props = {p.key: p.value for p in model.metadata_props}
    bgr = props.get("Image.BitmapPixelFormat") == "Bgr8"
    range_255 = props.get("Image.NominalPixelRange") == "NominalRange_0_255"
    adapted = adapt_classifier_graph(model, bgr=bgr)
    if adapted.zipmap_labels is not None:
        if set(adapted.zipmap_labels) != set(labels):
            raise ModelSpecError(
                f"labels.txt ({len(labels)} tags) and the model's own labels ({len(adapted.zipmap_labels)}) differ"
            )
        labels = list(adapted.zipmap_labels)
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
    spec = ModelSpec(
        model_id=_model_id(provenance, model_path),
        labels=tuple(labels),
        preprocess=Preprocess(
            resize="squash",
            height=height,
            width=width,
            interpolation="pil_bicubic",
            scale=1.0 if range_255 else 1 / 255,
        ),
        output="probabilities",
        layout="NCHW",
        max_batch=1 if adapted.fixed_batch else None,
        facts={
            "architecture": "Azure Custom Vision compact-domain image classifier (ONNX export)",
            "provenance": provenance,
            "input_conventions": {
                "channel_order": "BGR (folded into the graph)" if bgr else "RGB",
                "pixel_range": "0-255" if range_255 else "0-1",
                "dtype": "float16 (casts folded into the graph)" if adapted.float16 else "float32",
            },
            "preprocessing_source": (
                "Microsoft customvision-export-samples, python/onnx/classification/predict.py: Pillow resize "
                "(bicubic) to the input size; Microsoft notes the prediction API's preprocessing differs slightly"
            ),
            "manifest": manifest or None,
        },
    )
    out.mkdir(parents=True, exist_ok=True)
    onnx.save(adapted.model, str(out / "model.onnx"))
    shutil.copyfile(folder / "labels.txt", out / "labels.txt")
    spec.save(out)
    return spec


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
