"""Reading the answers of the HAI-DEF serving APIs on Vertex AI: one typed error per way an answer can be wrong.

`parse_predictions` checks a `PredictResponse` (as a dict) against the published prediction schemata
(https://github.com/Google-Health/derm-foundation/blob/master/python/serving/vertex_schemata/prediction.yaml,
https://github.com/Google-Health/medsiglip/blob/main/python/serving/vertex_schemata/prediction.yaml): one
prediction per instance, each an `embedding` (MedSigLIP: with `input_type` matching what was sent and the two
scaling numbers) or an `error`. A per-instance error is the container refusing that input, not a transient
failure: it is raised as `InvalidImageError` or `AuthenticationError` and not retried.
"""

from __future__ import annotations

import math
from typing import Any

from derm_cloud.embedders.base import RawEmbedding
from derm_cloud.errors import AuthenticationError, DermCloudError, InvalidImageError, InvalidResponseError

__all__ = ["STAND_IN_NOTE", "TEXT_NOTE", "parse_predictions"]

#: `describe()` of an embedder talking to an emulator says this (`{model}`: the provider's model it stands for).
STAND_IN_NOTE = (
    "emulated endpoint on this machine: it hosts a local image encoder as a stand-in for {model}; its vectors, "
    "dimension and any figure computed from them are the stand-in's, not the provider's model's"
)
#: ... and, for a model that embeds text, this.
TEXT_NOTE = (
    "emulated text embeddings come from a stand-in text tower built from the stand-in image model's own classifier "
    "weights (a prompt naming one HAM10000 class gets that class's weight vector, other text a hash vector with no "
    "medical meaning): zero-shot figures from this emulator measure the plumbing (requests, prompts, scoring), never "
    "the provider's model's zero-shot quality, and must not be reported as the provider's"
)
_AUTH_CODES = frozenset({"INVALID_CREDENTIALS_ERROR"})


def parse_predictions(
    payload: dict[str, Any], *, expected: int, kind: str, serving_api: str, backend: str
) -> list[RawEmbedding]:
    """The embeddings of one `predict` answer, in instance order.

    Args:
        payload: the `PredictResponse` as a dict (`json_format.MessageToDict`).
        expected: instances sent.
        kind: `image` or `text` (what was sent; MedSigLIP echoes it as `input_type`).
        serving_api: `derm-foundation` or `medsiglip`.
        backend: registry name, for errors.

    Raises:
        InvalidResponseError: the answer breaks the schema (count, keys, types, non-finite numbers).
        InvalidImageError: the model refused an input (an image it could not read, a request field it rejects).
        AuthenticationError: a Cloud Storage token was refused.
    """
    predictions = payload.get("predictions")

    def bad(why: str) -> InvalidResponseError:
        return InvalidResponseError(
            f"the {serving_api} endpoint's answer breaks its published schema: {why}; check that the endpoint "
            f"serves {serving_api} (a {'MedSigLIP' if serving_api == 'derm-foundation' else 'Derm Foundation'} "
            "endpoint needs the other embedder)",
            backend=backend,
        )

    if not isinstance(predictions, list) or len(predictions) != expected:
        got = f"{len(predictions)} prediction(s)" if isinstance(predictions, list) else "no predictions"
        raise bad(f"{got} for {expected} instance(s)")
    extra_common = {
        k: payload[v] for k, v in (("deployed_model_id", "deployedModelId"), ("model", "model")) if payload.get(v)
    }
    out = []
    for i, prediction in enumerate(predictions):
        if not isinstance(prediction, dict):
            raise bad(f"prediction {i} is not an object")
        if "error" in prediction:
            raise _refusal(prediction["error"], i, expected, serving_api, backend)
        vector = prediction.get("embedding")
        if not isinstance(vector, list) or not vector:
            raise bad(f"prediction {i} has no 'embedding' list (keys: {sorted(prediction)})")
        flat = _flatten(vector)
        if flat is None:
            raise bad(f"prediction {i}'s embedding holds something other than finite numbers")
        extra = dict(extra_common)
        if serving_api == "medsiglip":
            if prediction.get("input_type") != kind:
                raise bad(f"prediction {i} has input_type {prediction.get('input_type')!r}, expected {kind!r}")
            for key in ("model_temperature", "model_bias"):
                value = prediction.get(key)
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                    raise bad(f"prediction {i} lacks a numeric {key!r}")
                extra[key] = float(value)
        out.append(RawEmbedding(vector=flat, extra=extra))
    return out


def _flatten(vector: list[Any]) -> list[float] | None:
    """The numbers of `vector`, flattened (Derm Foundation's notebooks flatten a nested list); `None` if not numbers."""
    flat: list[float] = []
    stack: list[Any] = [vector]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(reversed(item))
        elif isinstance(item, (int, float)) and not isinstance(item, bool) and math.isfinite(item):
            flat.append(float(item))
        else:
            return None
    return flat


def _refusal(error: Any, index: int, total: int, serving_api: str, backend: str) -> DermCloudError:
    code = str(error.get("code", "")) if isinstance(error, dict) else ""
    description = str(error.get("description", "")) if isinstance(error, dict) else str(error)
    where = f"input {index} of {total}"
    if code in _AUTH_CODES:
        return AuthenticationError(
            f"the {serving_api} endpoint could not read {where} with the token sent ({description}); pass a "
            "bearer_token that may read the Cloud Storage object",
            backend=backend,
        )
    detail = f"{code}: {description}" if code else description
    return InvalidImageError(
        f"the {serving_api} endpoint refused {where} ({detail[:300]}); check the image opens and is a JPEG or PNG"
    )
