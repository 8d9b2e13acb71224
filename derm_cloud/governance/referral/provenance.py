"""Whose probabilities a referral threshold belongs to: the model, its metadata mode and the data it was fitted on.

A threshold on `max(p_mel, p_bcc, p_akiec)` is a point on one model's score scale, in one input mode: the same
sklesion weights score a lesion differently with patient metadata than without (on dev.csv a policy fitted with
metadata keeps 0.862 melanoma sensitivity on metadata-free predictions instead of 0.95). So a saved policy
records a `ModelIdentity` and is refused where the predictions it is applied to have another one
(`identity_differences`, `PolicyMismatchError`).

The model is identified by its fingerprint, the SHA-256 of its `spec.json` and weights that the comparator's
same-model check computes (`derm_cloud.compare.run.facts.model_fingerprint`; the command line passes it in,
since this package sits beside the comparator, not above it). A backend without a model directory (a real cloud
endpoint) has no fingerprint: its model id is compared instead, and the check says so.

Example:
    >>> fitted = ModelIdentity("local-onnx", "sklesion-0.2.2", "ab" * 32, "used")
    >>> applied = ModelIdentity("local-onnx", "sklesion-0.2.2", "ab" * 32, "blind")
    >>> [d.field for d in identity_differences(fitted, applied)]
    ['metadata_mode']
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from derm_cloud.taxonomy import CLASS_CODES
from derm_cloud.types import Prediction

__all__ = [
    "METADATA_MODES",
    "SCHEMA_VERSION",
    "Difference",
    "ModelIdentity",
    "data_hash",
    "identity_differences",
    "metadata_words",
]

#: Version of the ``policy.json`` layout: 2 adds ``model``, ``metadata_mode``, ``target``, ``method``,
#: ``data_hash`` and ``expected`` with intervals (files without ``schema_version`` are version 1).
SCHEMA_VERSION = 2

#: The metadata modes, in the words of the comparator's ``predictions.jsonl`` (its ``metadata`` column).
METADATA_MODES = ("used", "blind")


def metadata_words(mode: str | None) -> str:
    """`"used"` -> `"with patient metadata"`; `"blind"` -> `"without patient metadata"`."""
    if mode == "used":
        return "with patient metadata"
    if mode == "blind":
        return "without patient metadata"
    return "with an unrecorded metadata mode"


@dataclass(frozen=True)
class ModelIdentity:
    """The model and input mode that produced a set of probabilities.

    Attributes:
        backend: the backend (registry name, or the comparator's backend name).
        model_id: the model or endpoint id (`None` when unknown).
        fingerprint: SHA-256 of the model's `spec.json` and weights (`None` for a model without a directory).
        metadata_mode: `"used"` (age, sex and site went to the model), `"blind"` (they did not, or the model
            takes none) or `None` when unrecorded.
    """

    backend: str | None
    model_id: str | None
    fingerprint: str | None
    metadata_mode: str | None

    def model_words(self) -> str:
        """`sklesion-0.2.2 (fingerprint 1a2b3c4d5e6f)`, or what is known of the model."""
        name = self.model_id or "an unrecorded model"
        return f"{name} (fingerprint {self.fingerprint[:12]})" if self.fingerprint else name

    def describe(self) -> str:
        """The model and mode in words, for messages."""
        return f"{self.model_words()} {metadata_words(self.metadata_mode)}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> ModelIdentity | None:
        """Inverse of `to_dict`; `None` for `None` or an empty mapping."""
        if not data:
            return None
        mode = data.get("metadata_mode")
        return cls(
            backend=_str_or_none(data.get("backend")),
            model_id=_str_or_none(data.get("model_id")),
            fingerprint=_str_or_none(data.get("fingerprint")),
            metadata_mode=str(mode) if mode in METADATA_MODES else None,
        )


@dataclass(frozen=True)
class Difference:
    """One way the predictions differ from what a policy was fitted on.

    Attributes:
        field: `"model"`, `"metadata_mode"` or `"schema"` (a policy file that records neither).
        policy: the policy's value, in words.
        predictions: the predictions' value, in words.
        how: how the model was compared (`"fingerprint"`, `"model id"`) or why it could not be.
    """

    field: str
    policy: str
    predictions: str
    how: str = ""

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def identity_differences(fitted: ModelIdentity | None, applied: ModelIdentity) -> list[Difference]:
    """How `applied` differs from `fitted` (empty when the policy belongs to these predictions).

    The model matches when both fingerprints are known and equal; when either is missing, when both model ids are
    known and equal (a weaker check, named in `how`). A side that records neither cannot be matched and counts as
    a difference, as does an unrecorded metadata mode: a check that cannot be made is not passed.
    """
    if fitted is None:
        return [
            Difference(
                "schema",
                "no model or metadata mode recorded (a policy file without schema_version)",
                applied.describe(),
                "cannot be checked",
            )
        ]
    out = []
    if fitted.fingerprint and applied.fingerprint:
        if fitted.fingerprint != applied.fingerprint:
            out.append(Difference("model", fitted.model_words(), applied.model_words(), "fingerprint"))
    elif fitted.model_id and applied.model_id:
        if fitted.model_id != applied.model_id:
            out.append(Difference("model", fitted.model_words(), applied.model_words(), "model id"))
    else:
        out.append(Difference("model", fitted.model_words(), applied.model_words(), "unrecorded on one side"))
    if fitted.metadata_mode is None or applied.metadata_mode is None or fitted.metadata_mode != applied.metadata_mode:
        out.append(
            Difference(
                "metadata_mode",
                metadata_words(fitted.metadata_mode),
                metadata_words(applied.metadata_mode),
                "" if fitted.metadata_mode and applied.metadata_mode else "unrecorded on one side",
            )
        )
    return out


def data_hash(image_ids: Sequence[str], labels: Sequence[str | None], predictions: Sequence[Prediction]) -> str:
    """`"sha256:<hex>"` of the labels and probabilities a policy was fitted on, independent of row order.

    Probabilities enter as `repr` of the float (exact), in canonical class order, so the same predictions give
    the same hash on any machine and any different probability gives another.
    """
    lines = sorted(
        "\t".join([str(i), str(lab), *(repr(float(p.probabilities.get(c, 0.0))) for c in CLASS_CODES)])
        for i, lab, p in zip(image_ids, labels, predictions, strict=True)
    )
    digest = hashlib.sha256()
    for line in lines:
        digest.update(line.encode("utf-8") + b"\n")
    return "sha256:" + digest.hexdigest()


def _str_or_none(value: Any) -> str | None:
    return None if value in (None, "") else str(value)
