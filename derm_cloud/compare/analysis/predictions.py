"""Per-image answers of every backend, as rows anyone can re-score with another tool.

One row per image and backend, in dataset order: truth, lesion, the metadata mode the backend answered in,
whether it answered, its label, its 7 probabilities in the canonical order of `CLASS_CODES`, and `reencoded`:
why this backend got other bytes than the rest (a provider limit made the library re-encode the image for it;
empty when it got the shared bytes), so a gap between backends serving one model is explained per image. The report
stage writes them as `predictions.csv`, `predictions.jsonl` and ISIC 2018 submissions
(`derm_cloud.compare.report.exports`). No image bytes and no secrets are in them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from derm_cloud.taxonomy import CLASS_CODES

if TYPE_CHECKING:
    from derm_cloud.compare.run.results import RunResults

__all__ = ["PREDICTION_FIELDS", "prediction_rows", "reencoded_images"]

#: The columns of every prediction row, in the order the CSV export writes them.
PREDICTION_FIELDS = (
    "image_id",
    "lesion_id",
    "truth",
    "backend",
    "metadata",
    "ok",
    "error_type",
    "label",
    "provider_label",
    *(f"p_{c}" for c in CLASS_CODES),
    "reencoded",
)


def reencoded_images(results: RunResults) -> dict[str, dict[str, str]]:
    """Backend name -> image id -> the note of the re-encode its quality-pass request needed (only those)."""
    out: dict[str, dict[str, str]] = {}
    for name in results.backends:
        notes = {i: str(r.extra["payload_reencoded"]) for i, r in results.answers(name).items() if _note(r)}
        if notes:
            out[name] = notes
    return out


def _note(row: Any) -> bool:
    return bool((row.extra or {}).get("payload_reencoded"))


def prediction_rows(results: RunResults) -> list[dict[str, Any]]:
    """Every backend's quality-pass answer for every image of the dataset (`None` where there is none)."""
    rows: list[dict[str, Any]] = []
    for name, facts in results.backends.items():
        answers = results.answers(name)
        for sample in results.dataset.samples:
            r = answers.get(sample.image_id)
            probs = dict(zip(CLASS_CODES, r.probs, strict=True)) if r is not None and r.ok and r.probs else None
            rows.append(
                {
                    "image_id": sample.image_id,
                    "lesion_id": sample.lesion_id,
                    "truth": sample.label,
                    "backend": name,
                    "metadata": "used" if facts.get("metadata_used") else "blind",
                    "ok": None if r is None else r.ok,
                    "error_type": None if r is None else r.error_type,
                    # Ties go to the first class in canonical order, as Prediction.top_k breaks them.
                    "label": max(CLASS_CODES, key=lambda c: probs[c]) if probs else None,
                    "provider_label": None if r is None else r.label,
                    **{f"p_{c}": (probs[c] if probs else None) for c in CLASS_CODES},
                    "reencoded": (r.extra or {}).get("payload_reencoded") if r is not None else None,
                }
            )
    return rows
