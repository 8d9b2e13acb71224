"""What a comparison's figures rest on, and the model's own stated figures beside the measured ones.

* `evidence_line`: the summary's first line, how many images, lesions and labels the figures rest on
  (a CI over 40 images of 33 lesions means something else than one over 10,000).
* `stated_test_figures` and `overlap_in_context`: where a model's card or package states its own
  test figures (sklesion's wheel: accuracy 0.825, balanced accuracy 0.723, melanoma recall 0.579 on the author's
  split), the training-overlap warning puts them beside the figures measured here, so a reader sees how far an
  overlapping evaluation inflates them.
* `overlap_warnings`: one such warning per model and dataset, naming every backend that serves the model.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from derm_cloud.taxonomy import CLASS_CODES

if TYPE_CHECKING:
    from derm_cloud.compare.run.results import RunResults
    from derm_cloud.data import Sample

__all__ = ["evidence_line", "overlap_in_context", "overlap_warnings", "stated_test_figures"]

# stated key -> (measured key path in a quality entry, wording)
_FIGURES: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("accuracy", ("accuracy",), "accuracy"),
    ("balanced_accuracy", ("balanced_accuracy",), "balanced accuracy"),
    ("melanoma_recall", ("melanoma", "sensitivity"), "melanoma recall"),
)


def evidence_line(scored: Sequence[Sample], n_images: int) -> dict[str, Any]:
    """How many images, lesions and labels the quality figures rest on, as data and as the summary's first line.

    Args:
        scored: the labelled images every backend was scored on (the common set).
        n_images: images in the dataset (labelled or not).
    """
    labels = Counter(str(s.label) for s in scored if s.label is not None)
    known = [s.lesion_id for s in scored if s.lesion_id]
    lesions = len(set(known)) + (len(scored) - len(known))
    mix = ", ".join(f"{c} {labels[c]}" for c in CLASS_CODES if labels.get(c))
    if not scored:
        text = f"Quality figures rest on no labelled image ({n_images} images in the dataset, none scored)."
    else:
        lesion_text = (
            f"{lesions} lesions"
            if len(known) == len(scored)
            else f"{lesions} lesions ({len(scored) - len(known)} images without lesion_id counted as lesions "
            "of their own)"
        )
        text = (
            f"Quality figures rest on {len(scored)} labelled images of {lesion_text}, "
            f"{len(labels)} of 7 classes ({mix}); {n_images} images in the dataset."
        )
    return {
        "images": len(scored),
        "dataset_images": n_images,
        "lesions": lesions,
        "lesion_ids_known": len(known),
        "labels": dict(labels),
        "classes": len(labels),
        "text": text,
    }


def stated_test_figures(model_facts: Mapping[str, Any], *names: str | None) -> dict[str, Any] | None:
    """The model's own stated test figures: its spec's `author_test_metrics`, else the reference table's.

    Args:
        model_facts: the backend's model facts (`spec.json` facts for hosted/local models).
        names: model ids to look up in `derm_cloud.models.facts.KNOWN_FACTS`.
    """
    from derm_cloud.models.facts import known_facts

    entry = known_facts(*names) or {}
    stated = {**(entry.get("stated_test_metrics") or {}), **(model_facts.get("author_test_metrics") or {})}
    if not any(key in stated for key, _path, _word in _FIGURES):
        return None
    return stated


def _measured(quality: Mapping[str, Any], path: Sequence[str]) -> float | None:
    value: Any = quality
    for key in path:
        value = value.get(key) if isinstance(value, Mapping) else None
    return float(value) if isinstance(value, (int, float)) else None


def overlap_in_context(overlap: str, stated: Mapping[str, Any] | None, quality: Mapping[str, Any]) -> str:
    """The overlap warning with the model's stated test figures beside the measured ones (when it states any)."""
    if not stated:
        return overlap
    pairs = []
    for key, path, word in _FIGURES:
        if key not in stated:
            continue
        got = _measured(quality, path)
        pairs.append(f"{word} {stated[key]:.3f} stated vs {'n/a' if got is None else f'{got:.3f}'} measured here")
    where = f" (n={stated['n']:,})" if isinstance(stated.get("n"), int) else ""
    note = f"; {stated['note']}" if stated.get("note") else ""
    return (
        f"{overlap} The model's own test report{where} states: {'; '.join(pairs)}{note}. Figures far above the "
        "stated ones suggest the evaluation images were seen in training."
    )


def overlap_warnings(results: RunResults, quality: Mapping[str, Any]) -> list[str]:
    """A warning for each model whose training data overlaps the evaluation images, with its stated figures.

    Backends hosting one model on one dataset share the warning: said once, naming all of them.
    """
    from derm_cloud.data import dataset_overlap_warning

    overlaps: dict[str, list[str]] = {}
    for name, facts in results.backends.items():
        overlap = dataset_overlap_warning(facts.get("model_facts") or {}, results.dataset)
        if overlap and facts.get("labels_mapped", True):
            model_facts = facts.get("model_facts") or {}
            hosted = (facts.get("hosted_model") or {}).get("model_id")
            stated = stated_test_figures(model_facts, hosted, facts.get("model_id"))
            measured = quality.get("backends", {}).get(name, {})
            overlaps.setdefault(overlap_in_context(overlap, stated, measured), []).append(name)
    return [f"{', '.join(names)}: {text}" for text, names in overlaps.items()]
