"""Model cards side by side, with the governance questions each one leaves open.

Built on `derm_cloud.models.facts.model_facts` (which reads ONNX model directories, Hugging Face folders
and hub ids, and falls back to a cited reference table offline). On top of the facts, `model_card_flags`
says what a deployment review must resolve: a permissive weights licence over non-commercial training images,
training data that overlaps the evaluation data, no stated intended use, no published limitations, labels
that are not lesion classes.

Example:
    >>> print(compare_model_cards(["sklesion", "Anwarkh1/Skin_Cancer-Image_Classification"],
    ...                           evaluation_dataset="HAM10000 dev.csv"))  # doctest: +SKIP
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["ModelCard", "compare_model_cards", "model_card", "model_card_flags"]

_NON_COMMERCIAL = re.compile(r"\bnc\b|non[- ]?commercial|by-nc", re.IGNORECASE)
_HAM = re.compile(r"ham[\s_-]*10000|isic[\s_-]*(challenge[\s_-]*)?20(18|19)|marmal88", re.IGNORECASE)
_PERMISSIVE = re.compile(r"\b(mit|apache|bsd)\b", re.IGNORECASE)
_ROWS = (
    ("architecture", "architecture"),
    ("parameters", "parameters"),
    ("size_bytes", "file size"),
    ("labels", "labels"),
    ("training_data", "training data"),
    ("licence", "licence"),
    ("intended_use", "intended use"),
    ("known_limitations", "known limitations"),
    ("provenance", "provenance"),
    ("flags", "governance flags"),
    ("sources", "sources"),
)


@dataclass(frozen=True)
class ModelCard:
    """The facts a governance review compares, and the open questions (`flags`)."""

    model: str
    kind: str | None = None
    architecture: str | None = None
    parameters: int | None = None
    size_bytes: int | None = None
    labels: str | None = None
    maps_to_ham10000: bool | None = None
    training_data: str | None = None
    licence: str | None = None
    intended_use: str | None = None
    known_limitations: str | None = None
    provenance: str | None = None
    sources: tuple[str, ...] = ()
    flags: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def model_card(model: Any, *, evaluation_dataset: str | None = None, offline: bool = True) -> ModelCard:
    """The card of one model.

    Args:
        model: a model directory, a short name (`sklesion`), a Hugging Face id or folder, a
            `ModelFacts`, or a facts dict (`BackendInfo.model_facts`).
        evaluation_dataset: name of the data the model will be evaluated on, to flag training overlap.
        offline: read hub ids from the local cache and the reference table only (no network).
    """
    if isinstance(model, Mapping):
        facts = dict(model)
        name = str(facts.get("model") or facts.get("model_id") or facts.get("model_dir") or "model")
    else:
        from derm_cloud.models.facts import ModelFacts, model_facts

        fm = model if isinstance(model, ModelFacts) else model_facts(str(model), local_files_only=offline or None)
        facts = fm.to_dict()
        name = fm.model
    labels = facts.get("labels") or ()
    label_text = None
    if labels:
        labels = list(labels)
        label_text = f"{len(labels)}: " + ", ".join(map(str, labels[:8])) + (" ..." if len(labels) > 8 else "")
    sources = facts.get("sources") or {}
    urls = sorted({str(v).split(": ", 1)[-1] for v in (sources.values() if isinstance(sources, Mapping) else sources)})
    card = ModelCard(
        model=name,
        kind=facts.get("kind"),
        architecture=_text(facts.get("architecture")),
        parameters=facts.get("parameters"),
        size_bytes=facts.get("file_size_bytes") or facts.get("size_bytes"),
        labels=label_text,
        maps_to_ham10000=facts.get("maps_to_ham10000"),
        training_data=_text(facts.get("training_data")),
        licence=_text(facts.get("licence") or facts.get("license")),
        intended_use=_text(facts.get("intended_use")),
        known_limitations=_text(facts.get("known_limitations")),
        provenance=_provenance(facts),
        sources=tuple(u for u in urls if u),
    )
    return ModelCard(**{**asdict(card), "flags": tuple(model_card_flags(card, evaluation_dataset=evaluation_dataset))})


def model_card_flags(card: ModelCard, *, evaluation_dataset: str | None = None) -> list[str]:
    """Open governance questions raised by a card (empty when none).

    Example:
        >>> flags = model_card_flags(ModelCard("m", licence="apache-2.0", training_data="HAM10000 (CC BY-NC 4.0)"))
        >>> flags[0].startswith("weights licence apache-2.0 looks permissive")
        True
    """
    flags = []
    licence, training = card.licence or "", card.training_data or ""
    # The licence field often adds notes after the licence itself ("MIT (weights); trained on ... CC BY-NC").
    primary = licence.split(";")[0].strip()
    nc_data = bool(_NON_COMMERCIAL.search(training) or _NON_COMMERCIAL.search(licence) or _HAM.search(training))
    if not licence:
        flags.append("no licence stated: do not deploy until the licence is known")
    elif nc_data and _PERMISSIVE.search(primary) and not _NON_COMMERCIAL.search(primary):
        flags.append(
            f"weights licence {primary} looks permissive, but the training images are "
            "non-commercial (HAM10000 family, CC BY-NC): commercial use needs legal review"
        )
    elif nc_data:
        flags.append("trained on non-commercial (CC BY-NC) images: research and non-commercial use only")
    if not training:
        flags.append("training data not declared: overlap with any evaluation set cannot be ruled out")
    elif evaluation_dataset and _HAM.search(training) and _HAM.search(evaluation_dataset):
        flags.append(f"training data overlaps the evaluation data ({evaluation_dataset}): figures on it are optimistic")
    use = card.intended_use or ""
    if not use or "not stated" in use.lower():
        flags.append("intended use not stated by the model's card")
    if not card.known_limitations:
        flags.append("no known limitations published")
    if card.maps_to_ham10000 is False:
        flags.append("labels are not lesion classes: latency/cost baseline only, never triage")
    return flags


def compare_model_cards(
    models: Sequence[Any], *, evaluation_dataset: str | None = None, fmt: str = "markdown", offline: bool = True
) -> str:
    """Several cards side by side (one row per fact, one column per model) as Markdown or plain text."""
    cards = [
        m if isinstance(m, ModelCard) else model_card(m, evaluation_dataset=evaluation_dataset, offline=offline)
        for m in models
    ]
    header = ["", *(c.model for c in cards)]
    rows = [[title, *(_cell(c, key) for c in cards)] for key, title in _ROWS]
    rows = [r for r in rows if any(r[1:])]
    if fmt == "markdown":
        lines = ["| " + " | ".join(_esc(h) for h in header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(_esc(c) for c in row) + " |" for row in rows]
        return "\n".join(lines) + "\n"
    out = []
    for row in rows:
        out.append(row[0])
        out += [f"  {h}: {c or '-'}" for h, c in zip(header[1:], row[1:])]
    return "\n".join(out) + "\n"


def _esc(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _cell(card: ModelCard, key: str) -> str:
    value = getattr(card, key)
    if value is None or value == ():
        return ""
    if key == "parameters":
        return f"{value:,} ({value / 1e6:.1f}M)"
    if key == "size_bytes":
        return f"{value / 1e6:.1f} MB"
    if key in ("flags", "sources"):
        return "; ".join(value)
    return str(value)


def _provenance(facts: Mapping[str, Any]) -> str | None:
    """Where an imported model came from (service, project, iteration, flavor, dates), from its spec facts."""
    extra = facts.get("extra")
    raw = facts.get("provenance") or (extra.get("provenance") if isinstance(extra, Mapping) else None)
    if not isinstance(raw, Mapping):
        return None
    keys = ("service", "project", "iteration", "training_job", "platform", "flavor", "exported", "imported")
    return ", ".join(f"{k} {raw[k]}" for k in keys if raw.get(k)) or None


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, Mapping):
        return "; ".join(f"{k}: {v}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return "; ".join(map(str, value))
    text = str(value).strip()
    return text or None
