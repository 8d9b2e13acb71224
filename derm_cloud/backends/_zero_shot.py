"""What the zero-shot LLM baselines (`azure-openai`, `vertex-gemini`) share, so they compare like for like.

Both ask a general multimodal model for one JSON number per HAM10000 class, validate the answer the same way
(all seven keys, finite, within 0..1, not all zero), renormalise it, and keep what the model wrote in
`Prediction.provider_scores` so the calibration gap stays visible. Patient context goes into the prompt only
when the caller opts in (data minimisation).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

from derm_cloud.errors import InvalidResponseError
from derm_cloud.taxonomy import CLASS_CODES
from derm_cloud.types import LabelScore, PatientMetadata, Prediction

if TYPE_CHECKING:
    from derm_cloud.base import RawResult
    from derm_cloud.payload import Payload

__all__ = ["SelfReportedScores", "prompt_with_context", "validated_scores"]


class SelfReportedScores:
    """Mixin for a `Classifier` whose scores are text a model wrote: keeps the raw numbers, declares metadata use.

    The class using it sets `use_metadata` and puts the raw values in `RawResult.extra["self_reported"]`.
    """

    use_metadata: bool

    def _to_prediction(
        self,
        raw: RawResult,
        attempts: int,
        latency_ms: float,
        payload: Payload | None = None,
        reencodes: Sequence[str] = (),
    ) -> Prediction:
        prediction: Prediction = super()._to_prediction(  # type: ignore[misc]
            raw, attempts, latency_ms, payload, reencodes
        )
        # provider_scores keep what the model wrote, before renormalisation, so the calibration gap stays visible.
        reported = raw.extra.get("self_reported") or {}
        return dataclasses.replace(
            prediction, provider_scores=tuple(LabelScore(float(v), k) for k, v in reported.items())
        )

    @property
    def uses_metadata(self) -> bool:
        """Whether age, sex and site are added to the prompt (`use_metadata`)."""
        return bool(self.use_metadata)


def prompt_with_context(prompt: str, metadata: PatientMetadata | None) -> str:
    """`prompt`, plus one sentence of patient context when `metadata` is given and not empty."""
    if metadata is None or metadata.is_empty:
        return prompt
    facts = []
    if metadata.age is not None:
        facts.append(f"age {metadata.age:g} years")
    if metadata.sex != "unknown":
        facts.append(f"sex {metadata.sex}")
    if metadata.site:
        facts.append(f"site {metadata.site}")
    return prompt + " Patient context: " + ", ".join(facts) + "."


def validated_scores(content: str | None, request_id: str | None) -> dict[str, float]:
    if not content:
        raise InvalidResponseError("the model answered an empty message", request_id=request_id)
    try:
        data = json.loads(content)
    except ValueError:
        raise InvalidResponseError(
            f"the model's answer is not JSON ({content[:80]!r}); the deployment's api-version must support "
            "response_format json_schema (structured outputs)",
            request_id=request_id,
        ) from None
    if not isinstance(data, dict) or set(data) != set(CLASS_CODES):
        keys = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise InvalidResponseError(
            f"the answer must have exactly the keys {list(CLASS_CODES)}, got {keys}", request_id=request_id
        )
    out: dict[str, float] = {}
    for code in CLASS_CODES:
        value = data[code]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise InvalidResponseError(f"score for {code!r} is not a number: {value!r}", request_id=request_id)
        if not 0.0 <= value <= 1.0:
            raise InvalidResponseError(f"score for {code!r} is outside 0..1: {value!r}", request_id=request_id)
        out[code] = float(value)
    if sum(out.values()) <= 0:
        raise InvalidResponseError("every score is 0; nothing to renormalise", request_id=request_id)
    return out
