"""Typed values that cross the library's seams: patient metadata and predictions.

All are frozen dataclasses: a `Prediction` from any backend can be hashed, compared, stored and turned into
JSON the same way, which is what lets the comparator treat every provider alike.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from derm_cloud.errors import ConfigError
from derm_cloud.taxonomy import CLASS_CODES, CLASSES, MALIGNANT_CODES, class_info

__all__ = ["LabelScore", "PatientMetadata", "Prediction", "Route", "Sex", "SkippedDeployment"]

Sex = str  # "male" | "female" | "unknown"; kept as str so CSV values pass through unchanged

_SEXES = ("female", "male", "unknown")


@dataclass(frozen=True)
class PatientMetadata:
    """Optional patient facts that some models use (sklesion does; most image-only models ignore them).

    Attributes:
        age: age in years, `None` if unknown.
        sex: `"female"`, `"male"` or `"unknown"`.
        site: anatomical site as in HAM10000 `localization` (`"back"`, `"lower extremity"`...).
        fitzpatrick: Fitzpatrick skin type 1-6 when recorded (used for fairness reports, not by models).

    Example:
        >>> PatientMetadata(age=35, sex="female", site="upper extremity").age
        35.0
    """

    age: float | None = None
    sex: Sex = "unknown"
    site: str | None = None
    fitzpatrick: int | None = None

    def __post_init__(self) -> None:
        age = self.age
        if age is not None:
            try:
                age = float(age)
            except (TypeError, ValueError):
                raise ConfigError(f"age must be a number of years, got {self.age!r}") from None
            if math.isnan(age):
                age = None
            elif not 0 <= age <= 130:
                raise ConfigError(f"age must be between 0 and 130 years, got {age}")
        object.__setattr__(self, "age", age)
        if self.sex is not None and not isinstance(self.sex, str):
            raise ConfigError(f"sex must be one of {', '.join(_SEXES)}, got {self.sex!r}")
        sex = (self.sex or "unknown").strip().lower()
        if sex not in _SEXES:
            raise ConfigError(f"sex must be one of {', '.join(_SEXES)}, got {self.sex!r}")
        object.__setattr__(self, "sex", sex)
        if self.site is not None and not isinstance(self.site, str):
            raise ConfigError(f"site must be an anatomical site name such as 'back', got {self.site!r}")
        site = self.site.strip().lower() if isinstance(self.site, str) and self.site.strip() else None
        object.__setattr__(self, "site", site)
        if self.fitzpatrick is not None and self.fitzpatrick not in range(1, 7):
            raise ConfigError(f"fitzpatrick must be a skin type 1-6, got {self.fitzpatrick!r}")

    @property
    def is_empty(self) -> bool:
        """True when nothing is known (the model then uses its 'unknown' encoding)."""
        return self.age is None and self.sex == "unknown" and self.site is None


@dataclass(frozen=True, order=True)
class LabelScore:
    """A label with its score: a canonical class or a provider's own label."""

    score: float
    label: str

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "score": self.score}


@dataclass(frozen=True)
class SkippedDeployment:
    """A deployment a `Router` did not take its answer from, and why.

    Attributes:
        deployment: the deployment's name in the router.
        reason: `"cooldown"` (its circuit is open), `"error"` (it failed), `"deadline"` (no answer within
            its share of the deadline) or `"hedge_lost"` (a hedged request answered first).
        detail: the error class and message, or the cooldown time left; never image bytes or patient fields.
    """

    deployment: str
    reason: str
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"deployment": self.deployment, "reason": self.reason, "detail": self.detail}


@dataclass(frozen=True)
class Route:
    """How a `Router` produced a prediction.

    Attributes:
        router: the router's name.
        deployment: the deployment that answered.
        skipped: the deployments tried or passed over before (or beside) it, in order, with the reason.
        hedged: whether a hedged second request was sent.
        attempts: requests sent to providers for this request, across every deployment: retries, calls cut
            at their share of the deadline and the losing side of a hedge included (each may be billed).
        billed_calls: the same requests per deployment, as `(deployment, calls)` pairs in the order tried.
    """

    router: str
    deployment: str
    skipped: tuple[SkippedDeployment, ...] = ()
    hedged: bool = False
    attempts: int = 1
    billed_calls: tuple[tuple[str, int], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "router": self.router,
            "deployment": self.deployment,
            "skipped": [s.to_dict() for s in self.skipped],
            "hedged": self.hedged,
            "attempts": self.attempts,
            "billed_calls": dict(self.billed_calls),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Route:
        """Inverse of `to_dict`."""
        return cls(
            router=str(data["router"]),
            deployment=str(data["deployment"]),
            skipped=tuple(SkippedDeployment(**s) for s in data.get("skipped", ())),
            hedged=bool(data.get("hedged", False)),
            attempts=int(data.get("attempts", 1)),
            billed_calls=tuple((str(k), int(v)) for k, v in dict(data.get("billed_calls", {})).items()),
        )


@dataclass(frozen=True)
class Prediction:
    """One classification result, identical in shape for every backend.

    Attributes:
        probabilities: canonical code -> probability for the 7 HAM10000 classes (empty when the model's labels
            do not map, see `mapped`).
        provider_scores: the provider's own labels and scores, as it returned them.
        backend: registry name of the backend (`"local-onnx"`, `"sagemaker"`...).
        model_id: the model or endpoint identifier.
        latency_ms: wall time of the call as the caller saw it, including retries.
        request_id: the provider's request id when it gave one.
        mapped: `False` for generic baselines whose labels are not lesion classes.
        attempts: how many attempts the retry policy made.
        extra: provider facts worth keeping (variant, deployed model id, token usage ...), JSON-compatible.
        route: set when a `Router` answered: which deployment, and why others were
            skipped; `None` for a direct backend call.

    A prediction supports triage and research; it is never a diagnosis. A clinician reviews every result.
    """

    probabilities: dict[str, float]
    provider_scores: tuple[LabelScore, ...]
    backend: str
    model_id: str
    latency_ms: float = 0.0
    request_id: str | None = None
    mapped: bool = True
    attempts: int = 1
    extra: dict[str, Any] = field(default_factory=dict)
    route: Route | None = None

    def __post_init__(self) -> None:
        if self.mapped:
            if set(self.probabilities) != set(CLASS_CODES):
                raise ValueError(f"probabilities must cover exactly {CLASS_CODES}, got {sorted(self.probabilities)}")
            # Keep canonical order so that iteration and JSON are the same for every backend.
            ordered = {c: float(self.probabilities[c]) for c in CLASS_CODES}
            object.__setattr__(self, "probabilities", ordered)

    def __hash__(self) -> int:
        return hash((self.backend, self.model_id, tuple(self.probabilities.items()), self.request_id))

    @property
    def top_k(self) -> tuple[LabelScore, ...]:
        """Canonical classes by descending probability (ties broken by canonical order)."""
        order = sorted(CLASSES, key=lambda c: (-self.probabilities.get(c.code, 0.0), c.index))
        return tuple(LabelScore(self.probabilities.get(c.code, 0.0), c.code) for c in order)

    def top(self, k: int = 3) -> tuple[LabelScore, ...]:
        """The `k` most probable canonical classes."""
        return self.top_k[:k]

    @property
    def label(self) -> str | None:
        """The most probable canonical class, `None` for unmapped baselines."""
        return self.top_k[0].label if self.mapped else None

    @property
    def confidence(self) -> float:
        """Probability of the top class (0 for unmapped baselines)."""
        return self.top_k[0].score if self.mapped else 0.0

    @property
    def malignant_probability(self) -> float:
        """Summed probability of the malignant classes (mel, bcc, akiec)."""
        return sum(p for c, p in self.probabilities.items() if c in MALIGNANT_CODES)

    def vector(self) -> list[float]:
        """Probabilities as a list in canonical order (for metrics)."""
        return [self.probabilities.get(c, 0.0) for c in CLASS_CODES]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-compatible dict (used by the CLI `--json` and the run store)."""
        d = asdict(self)
        d["provider_scores"] = [s.to_dict() for s in self.provider_scores]
        d["route"] = self.route.to_dict() if self.route is not None else None
        d["top_k"] = [
            {"label": s.label, "name": class_info(s.label).name, "score": s.score}
            for s in (self.top_k if self.mapped else ())
        ]
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Prediction:
        """Inverse of `to_dict` (ignores derived keys)."""
        return cls(
            probabilities=dict(data["probabilities"]),
            provider_scores=tuple(LabelScore(float(s["score"]), str(s["label"])) for s in data["provider_scores"]),
            backend=data["backend"],
            model_id=data["model_id"],
            latency_ms=float(data.get("latency_ms", 0.0)),
            request_id=data.get("request_id"),
            mapped=bool(data.get("mapped", True)),
            attempts=int(data.get("attempts", 1)),
            extra=dict(data.get("extra", {})),
            route=Route.from_dict(data["route"]) if data.get("route") else None,
        )
