"""The wire formats of SageMaker endpoints for image classification (docs/reference/cloud-apis.md 2.2).

Requests carry patient metadata in `X-Amzn-SageMaker-Custom-Attributes` (`custom_attributes_for`), which
the derm-cloud adapter reads back (`derm_cloud.serving.metadata_from_custom_attributes`). Responses come in
the shapes of the containers people deploy:

* `jumpstart`: JumpStart image classification, `{"probabilities": [...]}` or, with
  `Accept: application/json;verbose`, `{"labels": [...], "probabilities": [...], "predicted_label": ...}`;
* `hf`: the Hugging Face DLC pipeline, `[{"label": ..., "score": ...}, ...]` (top 5 by default);
* `builtin`: the built-in Image Classification algorithm, `{"prediction": [...]}`;
* `adapter`: the derm-cloud adapter (`adapters/sagemaker`), JumpStart's verbose shape plus `model_id`.

Shapes without labels take them from `class_names`. Internal to
`AwsSagemakerClassifier`, which maps the labels afterwards.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Literal
from urllib.parse import quote

from derm_cloud.errors import ConfigError, DermCloudError, InvalidResponseError
from derm_cloud.types import PatientMetadata

__all__ = ["CUSTOM_ATTRIBUTE_PREFIX", "RESPONSE_FORMATS", "ResponseFormat", "custom_attributes_for", "parse_response"]

#: Custom-attribute keys that carry patient metadata (other keys are the caller's own).
CUSTOM_ATTRIBUTE_PREFIX = "derm."

ResponseFormat = Literal["jumpstart", "hf", "builtin", "adapter", "auto"]
RESPONSE_FORMATS: tuple[str, ...] = ("jumpstart", "hf", "builtin", "adapter", "auto")
# Response shapes each format accepts: the adapter's JSON is a superset of JumpStart's verbose shape.
_ACCEPTED_SHAPES: dict[str, frozenset[str]] = {
    "auto": frozenset({"jumpstart", "hf", "builtin", "adapter"}),
    "adapter": frozenset({"adapter", "jumpstart"}),
    "jumpstart": frozenset({"adapter", "jumpstart"}),
    "hf": frozenset({"hf"}),
    "builtin": frozenset({"builtin"}),
}


def custom_attributes_for(metadata: PatientMetadata) -> str:
    """Encode patient metadata for `X-Amzn-SageMaker-Custom-Attributes` (`derm.age=45;derm.sex=male;...`).

    Values are percent-encoded so the header stays visible ASCII, as SageMaker requires.

    Example:
        >>> custom_attributes_for(PatientMetadata(age=45, sex="male", site="lower extremity"))
        'derm.age=45;derm.sex=male;derm.site=lower%20extremity'
    """
    parts = []
    if metadata.age is not None:
        parts.append(f"{CUSTOM_ATTRIBUTE_PREFIX}age={metadata.age:g}")
    if metadata.sex != "unknown":
        parts.append(f"{CUSTOM_ATTRIBUTE_PREFIX}sex={quote(metadata.sex, safe='')}")
    if metadata.site:
        parts.append(f"{CUSTOM_ATTRIBUTE_PREFIX}site={quote(metadata.site, safe='')}")
    return ";".join(parts)


def parse_response(
    body: bytes,
    content_type: str,
    *,
    response_format: ResponseFormat,
    class_names: Sequence[str],
    endpoint_name: str,
    backend: str,
    request_id: str | None,
) -> tuple[list[tuple[str, float]], str, dict[str, Any]]:
    """Recognise an endpoint's answer and return `(scores, detected_shape, extra)`.

    Args:
        body: the response body.
        content_type: its content type, for messages.
        response_format: the shape the caller expects (`auto` accepts any).
        class_names: labels, in output order, for the shapes that carry none (`builtin`, plain JumpStart).
        endpoint_name, backend, request_id: for error messages.

    Returns:
        `(label, probability)` pairs in the endpoint's order, the shape detected, and extra facts
        (`endpoint_model_id` from the adapter).

    Raises:
        InvalidResponseError: the body is not JSON, not a known shape, or a shape `response_format` excludes.
        ConfigError: a shape without labels has another length than `class_names`.

    Example:
        >>> parse_response(b'[{"label": "nv", "score": 0.9}]', "application/json", response_format="auto",
        ...                class_names=(), endpoint_name="derm", backend="sagemaker", request_id=None)
        ([('nv', 0.9)], 'hf', {})
    """

    def bad(why: str) -> InvalidResponseError:
        preview = body[:120].decode("utf-8", "replace")
        return InvalidResponseError(
            f"endpoint {endpoint_name!r} answered {why} (content type {content_type!r}, starts "
            f"{preview!r}); check response_format={response_format!r} matches the deployed container",
            backend=backend,
            request_id=request_id,
        )

    def with_class_names(probs: list[float]) -> list[tuple[str, float]]:
        if len(probs) != len(class_names):
            raise ConfigError(
                f"endpoint {endpoint_name!r} returned {len(probs)} probabilities without labels but "
                f"class_names has {len(class_names)}; pass class_names=[...] in the model's output order"
            )
        return list(zip(class_names, probs, strict=True))

    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise bad("with a body that is not JSON") from None
    extra: dict[str, Any] = {}
    try:
        if isinstance(payload, list):
            detected = "hf"
            scores = [(str(item["label"]), float(item["score"])) for item in payload]
        elif isinstance(payload, dict) and "prediction" in payload:
            detected = "builtin"
            scores = with_class_names([float(p) for p in payload["prediction"]])
        elif isinstance(payload, dict) and "labels" in payload and "probabilities" in payload:
            detected = "adapter" if "model_id" in payload else "jumpstart"
            labels = [str(x) for x in payload["labels"]]
            probs = [float(p) for p in payload["probabilities"]]
            if len(labels) != len(probs):
                raise bad(f"{len(labels)} labels but {len(probs)} probabilities")
            scores = list(zip(labels, probs, strict=True))
            if "model_id" in payload:
                extra["endpoint_model_id"] = str(payload["model_id"])
        elif isinstance(payload, dict) and "probabilities" in payload:
            detected = "jumpstart"
            scores = with_class_names([float(p) for p in payload["probabilities"]])
        else:
            raise bad("JSON of an unknown shape")
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, DermCloudError):
            raise
        raise bad(f"JSON missing or mistyping a field ({type(exc).__name__}: {exc})") from None
    if detected not in _ACCEPTED_SHAPES[response_format]:
        raise bad(f"in the {detected} shape")
    return scores, detected, extra
