"""Referral policy: when a classifier's output must go to a clinician first (human in the loop).

A `ReferralPolicy` holds explicit rules:

* **malignant probability**: refer when any malignant class (mel, bcc, akiec) has probability at or above its
  threshold;
* **low confidence**: refer when the top class's probability is below `min_confidence`;
* **disagreement**: with several backends, refer when their top-1 classes (or their benign/malignant calls)
  differ;
* a model whose labels do not map onto the lesion classes cannot triage: always refer.

`ReferralPolicy.evaluate` turns one or several predictions into a `ReferralDecision` with the
reasons. `ReferralClassifier` applies a policy to every prediction of a
classifier, and `evaluate_referral` fits the malignant threshold to a
target sensitivity on labelled data.

Referral is triage support, never a diagnosis: a clinician reviews every result, referred or not.

Example:
    >>> ReferralPolicy(malignant_threshold=0.2, refer_on_disagreement=False).describe()
    'refer when any of akiec, bcc, mel has probability >= 0.2'
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from derm_cloud.errors import ConfigError
from derm_cloud.taxonomy import CLASS_CODES, MALIGNANT_CODES
from derm_cloud.types import Prediction

__all__ = ["HUMAN_REVIEW", "MALIGNANT", "ReferralDecision", "ReferralPolicy"]

#: The malignant classes in canonical order (akiec is pre-malignant / in situ and triaged as "refer").
MALIGNANT: tuple[str, ...] = tuple(c for c in CLASS_CODES if c in MALIGNANT_CODES)
HUMAN_REVIEW = "Triage support, not a diagnosis: a clinician reviews every result, referred or not."

Disagreement = Literal["top1", "malignancy"]


@dataclass(frozen=True)
class ReferralDecision:
    """Whether to refer, and why.

    Attributes:
        refer: `True` when any rule fired.
        reasons: one sentence per fired rule, naming the figure, the threshold and the backend.
        rules: the rule ids that fired (`malignant_probability`, `low_confidence`, `disagreement`,
            `unmapped`), for counting and logs.
        predictions: the predictions the decision was made from.
        note: the human-review statement every decision carries.
    """

    refer: bool
    reasons: list[str]
    rules: tuple[str, ...] = ()
    predictions: tuple[Prediction, ...] = field(default=(), compare=False, repr=False)
    note: str = HUMAN_REVIEW

    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible (predictions included as their dicts)."""
        return {
            "refer": self.refer,
            "reasons": list(self.reasons),
            "rules": list(self.rules),
            "note": self.note,
            "predictions": [p.to_dict() for p in self.predictions],
        }


@dataclass(frozen=True)
class ReferralPolicy:
    """Explicit, inspectable referral rules.

    Args:
        malignant_threshold: refer when any malignant class has probability >= this (`None` switches the rule
            off unless `thresholds` is given).
        thresholds: per-class thresholds (`{"mel": 0.1, "bcc": 0.3, "akiec": 0.3}`); override
            `malignant_threshold` for the classes they name. Any class may be listed.
        min_confidence: refer when the top-1 probability is below this (`None` = off).
        refer_on_disagreement: with several predictions, refer when they disagree.
        disagreement: `"top1"` (different top classes) or `"malignancy"` (one calls it malignant, another
            benign).

    Raises:
        ConfigError: a threshold outside [0, 1] or an unknown class.

    Example:
        >>> policy = ReferralPolicy(malignant_threshold=0.3)
        >>> policy.class_thresholds()
        {'akiec': 0.3, 'bcc': 0.3, 'mel': 0.3}
    """

    malignant_threshold: float | None = 0.3
    thresholds: Mapping[str, float] | None = None
    min_confidence: float | None = None
    refer_on_disagreement: bool = True
    disagreement: Disagreement = "top1"

    def __post_init__(self) -> None:
        for name, value in (("malignant_threshold", self.malignant_threshold), ("min_confidence", self.min_confidence)):
            if value is not None and not 0.0 <= float(value) <= 1.0:
                raise ConfigError(f"{name} must be a probability in [0, 1], got {value}")
        for code, value in (self.thresholds or {}).items():
            if code not in CLASS_CODES:
                raise ConfigError(f"thresholds: {code!r} is not a class code ({', '.join(CLASS_CODES)})")
            if not 0.0 <= float(value) <= 1.0:
                raise ConfigError(f"thresholds[{code!r}] must be a probability in [0, 1], got {value}")
        if self.disagreement not in ("top1", "malignancy"):
            raise ConfigError(f"disagreement must be 'top1' or 'malignancy', got {self.disagreement!r}")
        object.__setattr__(self, "thresholds", dict(self.thresholds) if self.thresholds else None)

    def class_thresholds(self) -> dict[str, float]:
        """The threshold per class that the malignant-probability rule checks."""
        out = {c: float(self.malignant_threshold) for c in MALIGNANT} if self.malignant_threshold is not None else {}
        out.update({c: float(v) for c, v in (self.thresholds or {}).items()})
        return {c: out[c] for c in CLASS_CODES if c in out}

    def with_threshold(self, threshold: float) -> ReferralPolicy:
        """The same policy with one malignant threshold for mel, bcc and akiec (per-class overrides dropped)."""
        return ReferralPolicy(
            malignant_threshold=min(1.0, max(0.0, threshold)),
            min_confidence=self.min_confidence,
            refer_on_disagreement=self.refer_on_disagreement,
            disagreement=self.disagreement,
        )

    def evaluate(self, predictions: Prediction | Sequence[Prediction]) -> ReferralDecision:
        """Apply the rules to one prediction, or to the predictions of several backends for the same image.

        Example:
            >>> p = Prediction({"akiec": 0, "bcc": 0, "bkl": 0.1, "df": 0, "mel": 0.35, "nv": 0.55, "vasc": 0},
            ...                (), "local-onnx", "demo")
            >>> ReferralPolicy(malignant_threshold=0.3).evaluate(p).reasons
            ['mel probability 0.350 >= 0.300 (local-onnx / demo)']
        """
        preds = (predictions,) if isinstance(predictions, Prediction) else tuple(predictions)
        if not preds:
            raise ConfigError("a referral decision needs at least one prediction")
        reasons: list[str] = []
        rules: list[str] = []
        thresholds = self.class_thresholds()
        for p in preds:
            who = f"{p.backend} / {p.model_id}"
            if not p.mapped:
                reasons.append(f"{who}: its labels are not lesion classes, so it cannot triage")
                rules.append("unmapped")
                continue
            for code, t in thresholds.items():
                prob = p.probabilities[code]
                if prob >= t:
                    reasons.append(f"{code} probability {prob:.3f} >= {t:.3f} ({who})")
                    rules.append("malignant_probability")
            if self.min_confidence is not None and p.confidence < self.min_confidence:
                reasons.append(
                    f"top class {p.label} has probability {p.confidence:.3f} < {self.min_confidence:.3f} ({who})"
                )
                rules.append("low_confidence")
        mapped = [p for p in preds if p.mapped]
        if self.refer_on_disagreement and len(mapped) > 1:
            if self.disagreement == "top1":
                calls = {f"{p.backend} / {p.model_id}": str(p.label) for p in mapped}
            else:
                calls = {
                    f"{p.backend} / {p.model_id}": "malignant" if p.label in MALIGNANT_CODES else "benign"
                    for p in mapped
                }
            if len(set(calls.values())) > 1:
                reasons.append("backends disagree: " + ", ".join(f"{k} says {v}" for k, v in calls.items()))
                rules.append("disagreement")
        return ReferralDecision(bool(rules), reasons, tuple(dict.fromkeys(rules)), preds)

    def to_dict(self) -> dict[str, Any]:
        return {
            "malignant_threshold": self.malignant_threshold,
            "thresholds": dict(self.thresholds) if self.thresholds else None,
            "min_confidence": self.min_confidence,
            "refer_on_disagreement": self.refer_on_disagreement,
            "disagreement": self.disagreement,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ReferralPolicy:
        """Inverse of `to_dict`; unknown keys are an error naming them."""
        known = {"malignant_threshold", "thresholds", "min_confidence", "refer_on_disagreement", "disagreement"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown referral policy key(s) {unknown}; allowed: {sorted(known)}")
        return cls(**dict(data))

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the policy as JSON (`derm-cloud governance referral --out` writes the fitted one)."""
        with open(path, "w", encoding="utf-8") as fh:
            json.dump(self.to_dict(), fh, indent=2)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ReferralPolicy:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
        return cls.from_dict(data.get("policy", data))

    def describe(self) -> str:
        """The rules in one sentence, for reports."""
        parts = []
        thresholds = self.class_thresholds()
        if thresholds:
            if len(set(thresholds.values())) == 1:
                parts.append(f"any of {', '.join(thresholds)} has probability >= {next(iter(thresholds.values())):.4g}")
            else:
                parts.append("; ".join(f"{c} probability >= {t:.4g}" for c, t in thresholds.items()))
        if self.min_confidence is not None:
            parts.append(f"the top class has probability < {self.min_confidence:.4g}")
        if self.refer_on_disagreement:
            parts.append(f"backends disagree ({'top-1 class' if self.disagreement == 'top1' else 'benign/malignant'})")
        return "refer when " + " or ".join(parts) if parts else "never refer automatically"
