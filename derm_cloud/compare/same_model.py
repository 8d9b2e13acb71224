"""The same-model check: backends serving the very same model must give the same probabilities.

Two backends that host one model file (local onnxruntime and an emulated SageMaker endpoint serving the same
``model.onnx``, say) differ only in the path an image takes to the model. Any gap between their probabilities
is then an input or preprocessing mismatch (re-encoded pixels, metadata sent to one and not the other, a
different resize), not a difference between providers, and the report must say so.

A model is identified by its fingerprint: the SHA-256 of its ``spec.json`` and model file. Backends are
compared only when they also answer in the same metadata mode (a ``+metadata`` variant row is expected to differ),
and never for zero-shot LLM backends (their emulators write the hosted model's scores as rounded text).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from derm_cloud.taxonomy import CLASS_CODES

__all__ = ["MISMATCH_TOLERANCE", "model_fingerprint", "same_model_report"]

#: Largest probability gap between two backends serving the same model that is still read as numeric noise.
MISMATCH_TOLERANCE = 1e-4

_CACHE: dict[tuple[str, int, float], str] = {}


def model_fingerprint(model_dir: str | Path | None) -> str | None:
    """SHA-256 of a model directory's ``spec.json`` and model file(s), or ``None`` when it has none.

    Cached per file size and modification time: a comparison fingerprints the same 80 MB model once.
    """
    if model_dir is None:
        return None
    directory = Path(model_dir)
    files = sorted(p for p in directory.glob("*") if p.is_file() and p.suffix in (".json", ".onnx", ".safetensors"))
    files = [p for p in files if p.name == "spec.json" or p.suffix != ".json"]
    if not any(p.suffix != ".json" for p in files):
        return None
    digest = hashlib.sha256()
    for path in files:
        stat = path.stat()
        key = (str(path.resolve()), stat.st_size, stat.st_mtime)
        if key not in _CACHE:
            h = hashlib.sha256()
            with path.open("rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
            _CACHE[key] = h.hexdigest()
        digest.update(path.name.encode() + b"\0" + _CACHE[key].encode())
    return digest.hexdigest()


def same_model_report(
    infos: Mapping[str, Mapping[str, Any]],
    probs: Mapping[str, Mapping[str, Sequence[float]]],
    tolerance: float = MISMATCH_TOLERANCE,
) -> tuple[dict[str, Any], list[str]]:
    """Largest probability gap between every backend and the first backend serving the same model.

    Args:
        infos: backend name -> facts (``model_fingerprint``, ``metadata_used``).
        probs: backend name -> image id -> probabilities (the quality pass's successful answers).
        tolerance: a gap above this is flagged as an input or preprocessing mismatch.

    Returns:
        ``(report, warnings)``: ``report["groups"]`` holds one entry per model and metadata mode with its pairs
        (``reference``, ``backend``, ``images``, ``max_abs_gap``, ``image_id`` where it occurs, ``class``,
        ``mismatch``); ``warnings`` name every mismatch.
    """
    groups: dict[tuple[str, bool], list[str]] = {}
    for name, facts in infos.items():
        fp = facts.get("model_fingerprint")
        # A zero-shot LLM's emulator reports the hosted model's numbers as text, rounded: its gap is the rounding,
        # and the real service never serves that model, so it is not a same-model pair.
        zero_shot = bool((facts.get("model_facts") or {}).get("zero_shot"))
        if fp and facts.get("labels_mapped", True) and not zero_shot:
            groups.setdefault((str(fp), bool(facts.get("metadata_used"))), []).append(name)
    out: list[dict[str, Any]] = []
    warnings: list[str] = []
    for (fp, with_meta), names in groups.items():
        if len(names) < 2:
            continue
        ref = names[0]
        pairs = []
        for other in names[1:]:
            shared = sorted(set(probs.get(ref, {})) & set(probs.get(other, {})))
            pair: dict[str, Any] = {"reference": ref, "backend": other, "images": len(shared)}
            if shared:
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
                if gap > tolerance:
                    warnings.append(
                        f"SAME MODEL, DIFFERENT ANSWERS: {other} and {ref} serve the same model (fingerprint "
                        f"{fp[:12]}) but their probabilities differ by up to {gap:.4g} ({pair['class']} on "
                        f"{pair['image_id']}; {pair['images_over_tolerance']} of {len(shared)} images above "
                        f"{tolerance:g}): an input or preprocessing mismatch (or an answer format that loses "
                        "precision, such as rounded probabilities written by an LLM), not a difference between "
                        "the models"
                    )
            else:
                pair.update(max_abs_gap=None, mismatch=None)
            pairs.append(pair)
        out.append({"fingerprint": fp, "metadata_used": with_meta, "backends": names, "pairs": pairs})
    return {"tolerance": tolerance, "groups": out}, warnings
