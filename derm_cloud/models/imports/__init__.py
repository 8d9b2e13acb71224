"""Bring a model trained inside a managed service home: its export becomes a derm-cloud model directory.

`import_model(source)` takes a folder, an archive or the download URL a service gives, recognises the layout,
and writes a folder that `local-onnx` (ONNX) or `local-tflite` (TFLite) loads, with provenance (service,
project, iteration, export flavor, dates, source, SHA-256) in `spec.json` facts, which `derm-cloud models
info` and the model-card comparison show. Layouts understood:

* `azure-custom-vision-onnx`: Custom Vision compact-domain ONNX exports of every generation: the 2018
  single-file `.onnx` (WinMLTools, opset 1, upgraded by `onnx_legacy`), "ONNX1.2" (opset 7) and the
  current zip, float32 and `OnnxFloat16` (`custom_vision`);
* `sagemaker-jumpstart-pytorch-ic`: JumpStart PyTorch image-classification `model.tar.gz` (`jumpstart`);
* `azure-custom-vision-tflite`: Custom Vision `TensorFlowLite` exports (`tflite_exports`);
* `vertex-automl-edge-tflite`: Vertex AI AutoML Edge image classification TFLite exports (`tflite_exports`).

TensorFlow SavedModel exports (Custom Vision's other TensorFlow flavors) are recognised and refused with the
reason: converting them needs TensorFlow, which derm-cloud does not install (docs/reversible.md).

Example:
    >>> result = import_model("customvision-export.zip", provenance={"project": "derm", "iteration": "It3"})
    ... # doctest: +SKIP
    >>> derm_cloud.create("local-onnx", model_dir=result.model_dir)  # doctest: +SKIP
"""

from __future__ import annotations

import datetime as dt
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from derm_cloud.errors import ConfigError, ModelSpecError
from derm_cloud.models.spec import ModelSpec

__all__ = ["LAYOUTS", "ImportResult", "detect_layout", "import_model"]

LAYOUTS = (
    "azure-custom-vision-onnx",
    "sagemaker-jumpstart-pytorch-ic",
    "azure-custom-vision-tflite",
    "vertex-automl-edge-tflite",
)


@dataclass(frozen=True)
class ImportResult:
    """A model directory written by `import_model`."""

    model_dir: Path
    layout: str
    spec: ModelSpec


def detect_layout(folder: Path) -> str:
    """Which service export `folder` holds.

    Raises:
        ModelSpecError: no known layout, or one this version cannot run (the message says which and why).
    """
    from derm_cloud.models.imports import custom_vision, jumpstart, tflite_exports

    if custom_vision.is_custom_vision_export(folder):
        return "azure-custom-vision-onnx"
    if jumpstart.is_jumpstart_ic_artefact(folder):
        return "sagemaker-jumpstart-pytorch-ic"
    if tflite_exports.is_custom_vision_tflite(folder):
        return "azure-custom-vision-tflite"
    if tflite_exports.is_vertex_edge_tflite(folder):
        return "vertex-automl-edge-tflite"
    names = sorted(p.name for p in folder.rglob("*") if p.is_file())[:12]
    if any(n.endswith(".tflite") for n in names):
        raise ModelSpecError(
            f"a TFLite model without its label file in {folder} (files: {', '.join(names)}); a Custom Vision "
            "TensorFlowLite export has labels.txt beside model.tflite, a Vertex AI AutoML Edge export dict.txt"
        )
    if any(n == "saved_model.pb" for n in names):
        raise ModelSpecError(
            "this is a TensorFlow SavedModel export: converting it needs TensorFlow (tf2onnx), which derm-cloud "
            "does not install; export the ONNX flavor where the service offers one"
        )
    raise ModelSpecError(
        f"no known export layout in {folder} (files: {', '.join(names) or 'none'}). Understood: Custom Vision "
        "ONNX (labels.txt + model.onnx, or one .onnx naming its tags in a ZipMap), SageMaker JumpStart PyTorch "
        "IC (class_label_to_prediction_index.json + "
        "model.pt), Custom Vision TFLite (labels.txt + model.tflite), Vertex AI AutoML Edge (dict.txt + model.tflite)"
    )


def import_model(
    source: str | Path,
    out: str | Path | None = None,
    *,
    provenance: Mapping[str, Any] | None = None,
    trust_pickle: bool = False,
    overwrite: bool = False,
) -> ImportResult:
    """Import a service export into a derm-cloud model directory.

    Args:
        source: a folder, `.zip`/`.tar.gz` archive, lone `.onnx` file or `https://` download URL of the
            export.
        out: the model directory to write (default: the model cache, named after the model id).
        provenance: what the caller knows that the files do not say (`project`, `iteration`, `flavor`,
            `exported`, `training_job` ...).
        trust_pickle: allow loading pickled PyTorch models (they run code while loading).
        overwrite: replace `out` if it exists.
    """
    from derm_cloud.models.imports import custom_vision, jumpstart, tflite_exports
    from derm_cloud.models.imports.sources import unpack

    unpacked = unpack(source)
    try:
        layout = detect_layout(unpacked.folder)
        facts: dict[str, Any] = {k: v for k, v in dict(provenance or {}).items() if v is not None}
        facts.update(
            source=unpacked.source,
            source_sha256=unpacked.sha256,
            imported=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        )
        staging = Path(str(out) + ".importing") if out is not None else None
        target = staging or _cache_target()
        if target.exists():
            shutil.rmtree(target)
        if layout == "azure-custom-vision-onnx":
            spec = custom_vision.write_model_dir(unpacked.folder, target, facts)
        elif layout == "azure-custom-vision-tflite":
            spec = tflite_exports.write_custom_vision_tflite(unpacked.folder, target, facts)
        elif layout == "vertex-automl-edge-tflite":
            spec = tflite_exports.write_vertex_edge_tflite(unpacked.folder, target, facts)
        else:
            spec = jumpstart.write_model_dir(unpacked.folder, target, facts, trust_pickle=trust_pickle)
        spec = _with_label_space(spec, target)
        final = Path(out) if out is not None else target.with_name(_slug(spec.model_id))
        if final.exists():
            if not overwrite:
                shutil.rmtree(target)
                raise ConfigError(f"{final} exists; pass overwrite=True (CLI: --overwrite) to replace it")
            shutil.rmtree(final)
        target.replace(final)
        return ImportResult(final, layout, spec)
    finally:
        unpacked.cleanup()


def _with_label_space(spec: ModelSpec, folder: Path) -> ModelSpec:
    """Record whether the export's labels are the HAM10000 classes or a label space of its own (plankton, food):
    such a model imports all the same, and classify shows its own labels (`allow_unmapped`), never lesion ones."""
    from derm_cloud.taxonomy import LabelMap

    mapped = LabelMap.for_labels(spec.labels, allow_unmapped=True).mapped
    spec = spec.with_facts(label_space="ham10000" if mapped else "own")
    spec.save(folder)
    return spec


def _cache_target() -> Path:
    from derm_cloud.models.cache import models_dir

    return models_dir() / f".import-{dt.datetime.now().strftime('%Y%m%d%H%M%S%f')}"


def _slug(model_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", model_id).strip("-") or "imported-model"
