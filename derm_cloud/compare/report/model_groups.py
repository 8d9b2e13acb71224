"""One model, one quality section: backends that serve one model and gave the same answers are shown once.

The verdict's `models` (from the same-model check: one model fingerprint, the same probabilities on every image)
name the groups; their quality and fairness figures are one, so the report lists them once under the group's
label (`local-onnx = sagemaker = vertex`) and keeps the per-backend sections (latency, cost) where they differ.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["model_labels", "model_notes"]


def model_labels(summary: Mapping[str, Any]) -> dict[str, str | None]:
    """Backend name -> the row label its quality figures are shown under, or `None` when shown with its group."""
    out: dict[str, str | None] = {}
    for group in (summary.get("verdict") or {}).get("models", []):
        first, *rest = group["backends"]
        out[first] = " = ".join(group["backends"])
        out.update(dict.fromkeys(rest))
    return out


def model_notes(summary: Mapping[str, Any]) -> str:
    """The sentence(s) saying which backends share one set of quality figures, for a section's intro."""
    notes = [g["note"] for g in (summary.get("verdict") or {}).get("models", [])]
    return " ".join(f"{n[0].upper()}{n[1:]}." for n in notes)
