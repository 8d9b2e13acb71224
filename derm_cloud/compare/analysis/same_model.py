"""The same-model check: backends serving the very same model must give the same probabilities.

Two backends that host one model file (local onnxruntime and an emulated SageMaker endpoint serving the same
`model.onnx`, say) differ only in the path an image takes to the model. Any gap between their probabilities
is then an input or preprocessing mismatch (re-encoded pixels, metadata sent to one and not the other, a
different resize), not a difference between providers, and the report must say so.

A model is identified by its fingerprint (the SHA-256 of its `spec.json` and model file, taken by the run stage:
`derm_cloud.compare.run.facts.model_fingerprint`). Backends are
compared only when they also answer in the same metadata mode (a `+metadata` variant row is expected to differ),
and never for zero-shot LLM backends (their emulators write the hosted model's scores as rounded text).

A known cause is named: when a provider's limits made the library re-encode an image for one backend only (a
3.5 MB PNG over Vertex's request limit sent as JPEG, say; the run stores the note as
`extra["payload_reencoded"]`), each pair counts the re-encoded images and how many of the images above the
tolerance they explain, and the warning says so.
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
    reencoded: Mapping[str, Mapping[str, str]] | None = None,
) -> tuple[dict[str, Any], list[str]]:
    """Largest probability gap between every backend and the first backend serving the same model.

    Args:
        infos: backend name -> facts (`model_fingerprint`, `metadata_used`).
        probs: backend name -> image id -> probabilities (the quality pass's successful answers).
        tolerance: a gap above this is flagged as an input or preprocessing mismatch.
        reencoded: backend name -> image id -> the note of a re-encode made for that backend only.

    Returns:
        `(report, warnings)`: `report["groups"]` holds one entry per model and metadata mode with its pairs
        (`reference`, `backend`, `images`, `max_abs_gap`, `image_id` where it occurs, `class`, `mismatch`,
        and `reencoded`: the images re-encoded for one of the two, with how many of them are above the
        tolerance); `warnings` name every mismatch and its known cause.
    """
    out: list[dict[str, Any]] = []
    warnings: list[str] = []
    for (fp, with_meta), names in _groups(infos).items():
        if len(names) < 2:
            continue
        pairs = [_pair(names[0], other, probs, tolerance, reencoded or {}) for other in names[1:]]
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


def _pair(
    ref: str,
    other: str,
    probs: Mapping[str, Mapping[str, Sequence[float]]],
    tolerance: float,
    reencoded: Mapping[str, Mapping[str, str]],
) -> dict[str, Any]:
    """The largest gap between two backends on the images both answered, and the re-encodes that explain it."""
    shared = sorted(set(probs.get(ref, {})) & set(probs.get(other, {})))
    changed = {i: name for name in (ref, other) for i in reencoded.get(name, {}) if i in set(shared)}
    pair: dict[str, Any] = {"reference": ref, "backend": other, "images": len(shared)}
    if not shared:
        pair.update(max_abs_gap=None, mismatch=None, reencoded=_reencode_facts(changed, set(), reencoded))
        return pair
    a = np.asarray([probs[ref][i] for i in shared], dtype=np.float64)
    b = np.asarray([probs[other][i] for i in shared], dtype=np.float64)
    diff = np.abs(a - b)
    row, col = np.unravel_index(int(np.argmax(diff)), diff.shape)
    gap = float(diff[row, col])
    over = {shared[i] for i in np.flatnonzero(diff.max(axis=1) > tolerance)}
    pair.update(
        max_abs_gap=gap,
        image_id=shared[int(row)],
        **{"class": CLASS_CODES[int(col)]},
        images_over_tolerance=len(over),
        mismatch=gap > tolerance,
        reencoded=_reencode_facts(changed, over, reencoded),
    )
    return pair


def _reencode_facts(
    changed: Mapping[str, str], over: set[str], reencoded: Mapping[str, Mapping[str, str]]
) -> dict[str, Any]:
    """Which shared images were re-encoded for one backend of the pair, and which of them are above tolerance."""
    ids = sorted(changed)
    return {
        "images": len(ids),
        "above_tolerance": sum(1 for i in ids if i in over),
        "unexplained_above_tolerance": len(over - set(ids)),
        "image_ids": ids[:20],
        "for_backend": {i: changed[i] for i in ids[:20]},
        "note": reencoded[changed[ids[0]]][ids[0]] if ids else None,
    }


def _mismatch_warning(pair: Mapping[str, Any], fingerprint: str, tolerance: float) -> str:
    head = (
        f"SAME MODEL, DIFFERENT ANSWERS: {pair['backend']} and {pair['reference']} serve the same model (fingerprint "
        f"{fingerprint[:12]}) but their probabilities differ by up to {pair['max_abs_gap']:.4g} ({pair['class']} on "
        f"{pair['image_id']}; {pair['images_over_tolerance']} of {pair['images']} images above "
        f"{tolerance:g})"
    )
    enc = pair.get("reencoded") or {}
    if enc.get("above_tolerance"):
        rest = enc["unexplained_above_tolerance"]
        cause = (
            f": CAUSE: {enc['above_tolerance']} of them were re-encoded for "
            f"{' and '.join(sorted(set(enc['for_backend'].values())))} only "
            f"({', '.join(enc['image_ids'][:5])}{' ...' if enc['images'] > 5 else ''}; {enc['note']}), so that "
            "backend's model saw other pixels"
        )
        if rest:
            cause += (
                f"; the other {rest} above {tolerance:g} have no recorded cause: an input or preprocessing "
                "mismatch (or an answer format that loses precision)"
            )
        return head + cause + "; not a difference between the models (per image: predictions.csv, reencoded)"
    return (
        head + ": an input or preprocessing mismatch (or an answer format that loses "
        "precision, such as rounded probabilities written by an LLM), not a difference between "
        "the models"
    )
