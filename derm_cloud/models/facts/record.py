"""What is known about a model (`ModelFacts`), and the cited reference table that fills the gaps.

Where a model itself is silent, a small table of facts taken from public sources fills the gap
(`KNOWN_FACTS`, each entry citing its URL, in `models/data/known_models.json`); every fact records where it
came from.
"""

from __future__ import annotations

import importlib.resources
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from derm_cloud.errors import UnmappableLabelsError
from derm_cloud.taxonomy import LabelMap

__all__ = ["KNOWN_FACTS", "TEXT_FACTS", "Kind", "ModelFacts", "known_facts", "labels_map", "with_known"]

Kind = Literal["onnx", "tflite", "hf-folder", "hf-hub", "reference"]
#: The facts a model states in words (its spec, its card or the reference table).
TEXT_FACTS = ("architecture", "licence", "training_data", "intended_use", "known_limitations")


def _load_known() -> tuple[dict[str, Any], ...]:
    # A data file (like prices): facts from public sources, each entry citing its URL.
    text = importlib.resources.files("derm_cloud.models").joinpath("data/known_models.json").read_text("utf-8")
    return tuple(json.loads(text)["models"])


#: Facts from public sources for models whose files do not carry them (``models/data/known_models.json``).
KNOWN_FACTS: tuple[dict[str, Any], ...] = _load_known()


@dataclass(frozen=True)
class ModelFacts:
    """What is known about one model, and where each fact came from.

    Attributes:
        model: the id or path as given.
        kind: `onnx` (model directory), `hf-folder`, `hf-hub` or `reference` (table only).
        architecture, parameters, file_size_bytes, opset: structure and size.
        inputs: `(name, shape)` per model input (ONNX graphs).
        labels: output labels in order.
        maps_to_ham10000: whether the labels map onto the seven HAM10000 classes.
        preprocessing: how images are turned into tensors, in words.
        licence, training_data, intended_use, known_limitations: from the model or its card.
        sources: fact name -> where it came from (`spec.json`, `model card`, a URL ...).
        notes: anything the reader should know about these facts (offline hub, fallbacks ...).
        extra: further facts (parity, quantisation agreement ...).
    """

    model: str
    kind: Kind
    architecture: str | None = None
    parameters: int | None = None
    file_size_bytes: int | None = None
    opset: int | None = None
    inputs: tuple[tuple[str, tuple[int | str, ...]], ...] = ()
    labels: tuple[str, ...] = ()
    maps_to_ham10000: bool | None = None
    preprocessing: str | None = None
    licence: str | None = None
    training_data: str | None = None
    intended_use: str | None = None
    known_limitations: str | None = None
    sources: dict[str, str] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible form (`derm-cloud models info --json`)."""
        d = asdict(self)
        d["inputs"] = [{"name": n, "shape": list(s)} for n, s in self.inputs]
        d["labels"], d["notes"] = list(self.labels), list(self.notes)
        return d


def known_facts(*names: str | None) -> dict[str, Any] | None:
    """The `KNOWN_FACTS` entry for the first of `names` that is an alias (case-insensitive).

    Matching is exact: `someone/skin_cancer-image_classification` is not assumed to be Anwarkh1's model.
    """
    for name in names:
        if not name:
            continue
        key = name.strip().lower().rstrip("/")
        for entry in KNOWN_FACTS:
            if key in entry["aliases"]:
                return entry
    return None


def with_known(facts: ModelFacts, entry: dict[str, Any] | None) -> ModelFacts:
    """Fill facts the model did not state from a reference-table entry, recording the source URL."""
    if entry is None:
        return facts
    values = asdict(facts)
    sources = dict(facts.sources)
    for key in (*TEXT_FACTS, "parameters"):
        if values.get(key) in (None, "") and entry.get(key) is not None:
            values[key] = entry[key]
            sources[key] = f"reference table: {entry['source']}"
    values["sources"] = sources
    values["inputs"] = facts.inputs
    values["labels"] = facts.labels
    values["notes"] = facts.notes
    return ModelFacts(**values)


def labels_map(labels: Sequence[str]) -> bool | None:
    """Whether labels map onto the seven HAM10000 classes (`None` when there are no labels)."""
    if not labels:
        return None
    try:
        LabelMap.for_labels(list(labels))
    except UnmappableLabelsError:
        return False
    return True
