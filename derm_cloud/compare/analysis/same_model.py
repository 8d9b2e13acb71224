"""The same-model check: backends serving the very same model must give the same probabilities.

Two backends that host one model file (local onnxruntime and an emulated SageMaker endpoint serving the same
`model.onnx`, say) differ only in the path an image takes to the model. Any gap between their probabilities
is then an input or preprocessing mismatch (re-encoded pixels, metadata sent to one and not the other, a
different resize), not a difference between providers, and the report must say so.

A model is identified by its fingerprint (the SHA-256 of its `spec.json` and model file, taken by the run stage:
`derm_cloud.compare.run.facts.model_fingerprint`). Backends are
compared only when they also answer in the same metadata mode (a `+metadata` variant row is expected to differ),
and never for zero-shot LLM backends (their emulators write the hosted model's scores as rounded text).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from derm_cloud.taxonomy import CLASS_CODES

__all__ = ["MISMATCH_TOLERANCE", "same_model_report"]

#: Largest probability gap between two backends serving the same model that is still read as numeric noise.
MISMATCH_TOLERANCE = 1e-4


def same_model_report(
    infos: Mapping[str, Mapping[str, Any]],
    probs: Mapping[str, Mapping[str, Sequence[float]]],
    tolerance: float = MISMATCH_TOLERANCE,
) -> tuple[dict[str, Any], list[str]]:
    """Largest probability gap between every backend and the first backend serving the same model.

    Args:
        infos: backend name -> facts (`model_fingerprint`, `metadata_used`).
        probs: backend name -> image id -> probabilities (the quality pass's successful answers).
        tolerance: a gap above this is flagged as an input or preprocessing mismatch.

    Returns:
        `(report, warnings)`: `report["groups"]` holds one entry per model and metadata mode with its pairs
        (`reference`, `backend`, `images`, `max_abs_gap`, `image_id` where it occurs, `class`,
        `mismatch`); `warnings` name every mismatch.
    """
    out: list[dict[str, Any]] = []
    warnings: list[str] = []
    for (fp, with_meta), names in _groups(infos).items():
        if len(names) < 2:
            continue
        pairs = [_pair(names[0], other, probs, tolerance) for other in names[1:]]
        warnings += [_mismatch_warning(pair, fp, tolerance) for pair in pairs if pair["mismatch"]]
        out.append({"fingerprint": fp, "metadata_used": with_meta, "backends": names, "pairs": pairs})
    return {"tolerance": tolerance, "groups": out}, warnings


def _groups(infos: Mapping[str, Mapping[str, Any]]) -> dict[tuple[str, bool], list[str]]:
    """Backend names per (model fingerprint, metadata mode), in config order."""
    groups: dict[tuple[str, bool], list[str]] = {}
    for name, facts in infos.items():
        fp = facts.get("model_fingerprint")
        # A zero-shot LLM's emulator reports the hosted model's numbers as text, rounded: its gap is the rounding,
        # and the real service never serves that model, so it is not a same-model pair.
        zero_shot = bool((facts.get("model_facts") or {}).get("zero_shot"))
        if fp and facts.get("labels_mapped", True) and not zero_shot:
            groups.setdefault((str(fp), bool(facts.get("metadata_used"))), []).append(name)
    return groups


def _pair(ref: str, other: str, probs: Mapping[str, Mapping[str, Sequence[float]]], tolerance: float) -> dict[str, Any]:
    """The largest gap between two backends on the images both answered."""
    shared = sorted(set(probs.get(ref, {})) & set(probs.get(other, {})))
    pair: dict[str, Any] = {"reference": ref, "backend": other, "images": len(shared)}
    if not shared:
        pair.update(max_abs_gap=None, mismatch=None)
        return pair
    a = np.asarray([probs[ref][i] for i in shared], dtype=np.float64)
    b = np.asarray([probs[other][i] for i in shared], dtype=np.float64)
    diff = np.abs(a - b)
    row, col = np.unravel_index(int(np.argmax(diff)), diff.shape)
    gap = float(diff[row, col])
    pair.update(
        max_abs_gap=gap,
        image_id=shared[int(row)],
        **{"class": CLASS_CODES[int(col)]},
        images_over_tolerance=int(np.sum(diff.max(axis=1) > tolerance)),
        mismatch=gap > tolerance,
    )
    return pair


def _mismatch_warning(pair: Mapping[str, Any], fingerprint: str, tolerance: float) -> str:
    return (
        f"SAME MODEL, DIFFERENT ANSWERS: {pair['backend']} and {pair['reference']} serve the same model (fingerprint "
        f"{fingerprint[:12]}) but their probabilities differ by up to {pair['max_abs_gap']:.4g} ({pair['class']} on "
        f"{pair['image_id']}; {pair['images_over_tolerance']} of {pair['images']} images above "
        f"{tolerance:g}): an input or preprocessing mismatch (or an answer format that loses "
        "precision, such as rounded probabilities written by an LLM), not a difference between "
        "the models"
    )
