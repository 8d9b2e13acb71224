"""Facts from a derm-cloud model directory: `spec.json` and the ONNX graph or the TFLite file beside it."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from derm_cloud.models.facts.record import TEXT_FACTS, Kind, ModelFacts, known_facts, labels_map, with_known
from derm_cloud.models.spec import ModelSpec, Preprocess

__all__ = ["describe_preprocess", "model_dir_facts"]


def describe_preprocess(pre: Preprocess) -> str:
    """A spec's preprocessing in words, e.g. `resize 224x224 pil_bilinear, x1/255, mean [0.5 ...]`."""
    if pre.resize == "squash":
        steps = [f"resize {pre.height}x{pre.width} {pre.interpolation} (aspect not kept)"]
    elif pre.resize == "shorter_side":
        steps = [f"shorter side {pre.shorter} {pre.interpolation}"]
    elif pre.resize == "crop_to_aspect":
        region = f"centre region with the {pre.width}:{pre.height} aspect"
        steps = [f"{region}, resized {pre.height}x{pre.width} {pre.interpolation}"]
    else:
        steps = ["no resize"]
    if pre.crop:
        steps.append(f"centre crop {pre.crop[0]}x{pre.crop[1]}")
    steps.append("x1/255" if abs(pre.scale - 1 / 255) < 1e-9 else f"x{pre.scale:g}")
    if pre.mean != (0.0, 0.0, 0.0) or pre.std != (1.0, 1.0, 1.0):
        steps.append(f"mean {[round(m, 3) for m in pre.mean]} std {[round(s, 3) for s in pre.std]}")
    if pre.channel_order != "RGB":
        steps.append(f"channels {pre.channel_order}")
    return ", ".join(steps)


def _spec_text_facts(facts: dict[str, Any]) -> dict[str, str]:
    out = {k: str(facts[k]) for k in TEXT_FACTS if facts.get(k)}
    if "licence" not in out and facts.get("license"):
        out["licence"] = str(facts["license"])
    return out


def model_dir_facts(path: Path, name: str) -> ModelFacts:
    spec = ModelSpec.load(path)
    model_file = path / spec.model_file
    values: dict[str, Any] = {"labels": spec.labels, "preprocessing": describe_preprocess(spec.preprocess)}
    sources = {"labels": "spec.json", "preprocessing": "spec.json"}
    notes: list[str] = []
    extra = {k: v for k, v in spec.facts.items() if k not in (*TEXT_FACTS, "license", "parameters")}
    for key, value in _spec_text_facts(spec.facts).items():
        values[key], sources[key] = value, "spec.json"
    kind: Kind = "onnx"
    if spec.model_file.endswith(".tflite"):
        kind = "tflite"
        values["inputs"], tflite_note = _tflite_inputs(model_file)
        sources["inputs"] = "LiteRT interpreter"
        notes.extend(tflite_note)
    else:
        _read_onnx_graph(model_file, spec, values, sources, notes, extra)
    values["file_size_bytes"] = model_file.stat().st_size
    facts = ModelFacts(model=name, kind=kind, sources=sources, notes=tuple(notes), extra=extra, **values)
    facts = replace(facts, maps_to_ham10000=labels_map(facts.labels))
    return with_known(facts, known_facts(spec.model_id, spec.facts.get("source_model"), path.name))


def _tflite_inputs(model_file: Path) -> tuple[tuple[tuple[str, tuple[Any, ...]], ...] | None, list[str]]:
    """Input names and shapes of a TFLite file, and notes giving each input's dtype and quantization."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        return None, ["ai-edge-litert is not installed: TFLite inputs not read (pip install 'derm-cloud[tflite]')"]
    details = Interpreter(model_path=str(model_file)).get_input_details()
    notes = []
    for d in details:
        scale, zero_point = d["quantization"]
        quant = f", quantization scale {scale:g} zero point {zero_point}" if scale else ""
        notes.append(f"TFLite input {d['name']}: {d['dtype'].__name__}{quant}")
    return tuple((d["name"], tuple(int(x) for x in d["shape"])) for d in details), notes


def _read_onnx_graph(
    model_file: Path,
    spec: ModelSpec,
    values: dict[str, Any],
    sources: dict[str, str],
    notes: list[str],
    extra: dict[str, Any],
) -> None:
    try:
        import onnx
    except ImportError:
        notes.append("onnx is not installed: graph facts (parameters, opset, inputs) not read")
    else:
        graph_model = onnx.load(str(model_file), load_external_data=False)
        initializers = {i.name for i in graph_model.graph.initializer}
        count = 0
        for init in graph_model.graph.initializer:
            n = 1
            for dim in init.dims:
                n *= int(dim)
            count += n
        values["parameters"], sources["parameters"] = count, "ONNX initializers"
        if spec.facts.get("parameters") not in (None, count):
            extra["parameters_original_model"] = spec.facts["parameters"]
        values["opset"] = next((o.version for o in graph_model.opset_import if o.domain in ("", "ai.onnx")), None)
        values["inputs"] = tuple(
            (i.name, tuple(d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim))
            for i in graph_model.graph.input
            if i.name not in initializers
        )
