"""Cloud vs home: a cloud endpoint beside the local run of its own export (`export_of` in a backend entry).

A model trained in a managed service and brought home with `derm-cloud models import` should answer like the
endpoint it came from. The pair is not the same model file (the export is converted, sometimes to float16), so
it is reported apart from the same-model check: the largest and mean probability gap, top-1 agreement, Cohen's
kappa of the top-1 calls and the melanoma calls that differ, with the preprocessing facts that can explain a gap
(what the export's spec says it does, whether the service publishes its own preprocessing, float16 weights,
patient metadata sent to one side only).

Example config:

```toml
[[backends]]
name = "custom-vision"
type = "azure-custom-vision"
...
[[backends]]
name = "custom-vision@home"
type = "local-onnx"
options = { model_dir = "models/cv-iteration3" }
export_of = "custom-vision"
```
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from derm_cloud.compare.analysis.agreement import cohen_kappa
from derm_cloud.taxonomy import CLASS_CODES

__all__ = ["EXPORT_TOLERANCE", "export_parity_report"]

#: A gap up to this is read as numeric noise (float32 arithmetic, confidences rounded by the service).
EXPORT_TOLERANCE = 1e-4
_MEL = CLASS_CODES.index("mel")
# Services whose prediction-time preprocessing is not published, so an export's cannot be shown to match it.
_UNPUBLISHED = {
    "azure-custom-vision": "the Custom Vision prediction API's resize is not published; Microsoft notes the export "
    "sample's preprocessing differs slightly from it",
    "vertex": "Vertex AI AutoML's serving-time preprocessing is not published",
    "rekognition-custom-labels": "Rekognition Custom Labels does not export models or publish its preprocessing",
}


def export_parity_report(
    infos: Mapping[str, Mapping[str, Any]],
    probs: Mapping[str, Mapping[str, Sequence[float]]],
    tolerance: float = EXPORT_TOLERANCE,
) -> tuple[dict[str, Any], list[str]]:
    """Agreement of every `export_of` pair, and a warning for each pair that differs beyond `tolerance`.

    Args:
        infos: backend name -> facts (`export_of`, `type`, `model_facts`, `metadata_used`).
        probs: backend name -> image id -> probabilities (successful answers of the quality pass).
    """
    pairs: list[dict[str, Any]] = []
    warnings: list[str] = []
    for home, facts in infos.items():
        cloud = facts.get("export_of")
        if not cloud or cloud not in infos:
            continue
        shared = sorted(set(probs.get(home, {})) & set(probs.get(cloud, {})))
        pair: dict[str, Any] = {"cloud": cloud, "home": home, "images": len(shared)}
        pair["explanations"] = _explanations(infos[cloud], facts)
        if shared:
            a = np.asarray([probs[cloud][i] for i in shared], dtype=np.float64)
            b = np.asarray([probs[home][i] for i in shared], dtype=np.float64)
            diff = np.abs(a - b)
            row = int(np.argmax(diff.max(axis=1)))
            top_a = [CLASS_CODES[int(k)] for k in a.argmax(axis=1)]
            top_b = [CLASS_CODES[int(k)] for k in b.argmax(axis=1)]
            mel_a, mel_b = a.argmax(axis=1) == _MEL, b.argmax(axis=1) == _MEL
            pair.update(
                max_abs_gap=float(diff.max()),
                mean_abs_gap=float(diff.mean()),
                image_id=shared[row],
                top1_agreement=float(np.mean([x == y for x, y in zip(top_a, top_b)])),
                kappa=cohen_kappa(top_a, top_b),
                melanoma_call_disagreements=int(np.sum(mel_a != mel_b)),
                differs=bool(diff.max() > tolerance),
            )
            if pair["differs"]:
                warnings.append(
                    f"CLOUD VS HOME: {home} (the export of {cloud}) differs from it by up to "
                    f"{pair['max_abs_gap']:.3g} (top-1 agreement {pair['top1_agreement']:.1%}, "
                    f"{pair['melanoma_call_disagreements']} melanoma calls differ); likely causes: "
                    + "; ".join(pair["explanations"] or ["none recorded"])
                )
        else:
            pair.update(max_abs_gap=None, differs=None)
        pairs.append(pair)
    return {"tolerance": tolerance, "pairs": pairs}, warnings


def _explanations(cloud: Mapping[str, Any], home: Mapping[str, Any]) -> list[str]:
    """Preprocessing and input facts that can make an export answer differently from its endpoint."""
    out: list[str] = []
    facts = home.get("model_facts") or {}
    conventions = facts.get("input_conventions") or {}
    if "float16" in str(conventions.get("dtype", "")) or "16" in str((facts.get("provenance") or {}).get("flavor")):
        out.append("the export is float16 (gaps around 1e-4 are its rounding)")
    source = facts.get("preprocessing_source")
    if source:
        out.append(f"home preprocessing: {source}")
    note = _UNPUBLISHED.get(str(cloud.get("type")))
    if note:
        out.append(note)
    if bool(cloud.get("metadata_used")) != bool(home.get("metadata_used")):
        out.append("patient metadata reached one side only")
    return out
