"""Each cloud's request and response formats, over the model server core of `derm_cloud.serving`.

`CloudFormats` holds the public request methods of `derm_cloud.serving.ModelServer` (SageMaker,
Azure ML, Vertex AI) and the parsing of request bodies they share; the shapes are listed in
`derm_cloud.serving`. Request values quoted in an error are shortened, never the image bytes.
"""

from __future__ import annotations

import base64
import binascii
import json
import reprlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import unquote

from derm_cloud.backends._sagemaker_formats import CUSTOM_ATTRIBUTE_PREFIX
from derm_cloud.base import as_metadata
from derm_cloud.errors import ConfigError
from derm_cloud.serving_decode import DecodeScope, in_decode_scope
from derm_cloud.serving_errors import (
    BadRequestError,
    NotAcceptableError,
    RequestTooLargeError,
    Served,
    UnsupportedMediaTypeError,
)
from derm_cloud.types import PatientMetadata

if TYPE_CHECKING:
    from derm_cloud.images import PreparedImage

__all__ = [
    "SAGEMAKER_FORMATS",
    "CloudFormats",
    "SageMakerFormat",
    "SageMakerRequest",
    "metadata_from_custom_attributes",
]

SageMakerFormat = Literal["adapter", "jumpstart", "hf", "builtin"]
SAGEMAKER_FORMATS: tuple[str, ...] = ("adapter", "jumpstart", "hf", "builtin")
_JSON = "application/json"
_VERBOSE = "application/json;verbose"
# Image content types each impersonated SageMaker container accepts (docs/reference/cloud-apis.md section 2.2).
_IMAGE_TYPES: dict[str, frozenset[str]] = {
    "adapter": frozenset({"application/x-image", "image/jpeg", "image/png", "image/bmp", "image/webp", "image/tiff"}),
    "jumpstart": frozenset({"application/x-image"}),
    "hf": frozenset(
        {"application/x-image", "image/jpeg", "image/png", "image/tiff", "image/bmp", "image/gif", "image/webp"}
    ),
    "builtin": frozenset({"application/x-image", "image/jpeg", "image/png"}),
}


# --- metadata in SageMaker custom attributes ---------------------------------------------------------------------


def metadata_from_custom_attributes(value: str | None) -> PatientMetadata:
    """Inverse of `custom_attributes_for`; tokens without the `derm.` prefix are ignored.

    Raises:
        BadRequestError: a `derm.` value is invalid (an age that is not a number ...).
    """
    fields: dict[str, Any] = {}
    for token in (value or "").split(";"):
        key, sep, raw = token.strip().partition("=")
        if sep and key.startswith(CUSTOM_ATTRIBUTE_PREFIX):
            fields[key[len(CUSTOM_ATTRIBUTE_PREFIX) :]] = unquote(raw)
    return _metadata(fields or None, "custom attributes")


def _metadata(value: Any, where: str) -> PatientMetadata:
    if value is not None and not isinstance(value, dict):
        raise BadRequestError(f"{where}: metadata must be an object with age, sex and site")
    try:
        return as_metadata(value)
    except ConfigError as exc:
        raise BadRequestError(f"{where}: {_clip(str(exc))}") from None


_MESSAGE_LIMIT = 300


def _clip(text: str) -> str:
    """A message that may quote request values, cut to a length fit for an error body and a log line."""
    return text if len(text) <= _MESSAGE_LIMIT else text[: _MESSAGE_LIMIT - 3] + "..."


def _brief(value: Any) -> str:
    """`repr` of a request value, shortened (long lists, strings, deep nesting) for an error message."""
    return reprlib.repr(value)


@dataclass(frozen=True)
class SageMakerRequest:
    """A decoded `/invocations` request (the `input_fn` stage of the SageMaker handler contract)."""

    images: list[PreparedImage]
    metadata: list[PatientMetadata]
    response_format: SageMakerFormat
    batch: bool = False
    top_k: int | None = None


class CloudFormats(DecodeScope):
    """The request methods of `derm_cloud.serving.ModelServer`, one group per cloud.

    The model server sets the attributes below and decodes and classifies the images these methods parse.
    """

    labels: list[str]
    model_id: str
    sagemaker_format: SageMakerFormat
    max_body_bytes: int
    max_instances: int
    hf_top_k: int

    if TYPE_CHECKING:  # defined by ModelServer, the core that runs the model

        def predict(
            self, images: Sequence[PreparedImage], metadata: Sequence[PatientMetadata]
        ) -> list[list[float]]: ...

        def _decode_all(self, encoded: Sequence[tuple[bytes, str]]) -> list[PreparedImage]: ...

    # --- SageMaker -----------------------------------------------------------------------------------------

    @in_decode_scope
    def sagemaker_invocations(
        self,
        body: bytes,
        content_type: str | None,
        accept: str | None = None,
        *,
        custom_attributes: str | None = None,
        response_format: SageMakerFormat | None = None,
    ) -> Served:
        """Answer one SageMaker `/invocations` request (input, predict and output stages in one call)."""
        request = self.sagemaker_input(
            body, content_type, custom_attributes=custom_attributes, response_format=response_format
        )
        return self.sagemaker_output(request, self.predict(request.images, request.metadata), accept)

    def sagemaker_input(
        self,
        body: bytes | str,
        content_type: str | None,
        *,
        custom_attributes: str | None = None,
        response_format: SageMakerFormat | None = None,
    ) -> SageMakerRequest:
        """Decode a SageMaker request body (`input_fn`).

        Raises:
            BadRequestError, RequestTooLargeError, UnsupportedMediaTypeError: the request is not usable.
        """
        fmt = response_format or self.sagemaker_format
        if fmt not in SAGEMAKER_FORMATS:
            raise ConfigError(f"response_format must be one of {', '.join(SAGEMAKER_FORMATS)}")
        raw = body.encode() if isinstance(body, str) else bytes(body)
        self._check_size(raw)
        ctype = (content_type or "").split(";")[0].strip().lower()
        meta = metadata_from_custom_attributes(custom_attributes) if fmt == "adapter" else PatientMetadata()
        if ctype == _JSON and fmt in ("adapter", "hf"):
            payload = _json(raw)
            if fmt == "hf":
                if not isinstance(payload, dict) or not isinstance(payload.get("inputs"), str):
                    raise BadRequestError('JSON requests must look like {"inputs": "<base64 image>", "parameters": {}}')
                top_k = (payload.get("parameters") or {}).get("top_k")
                if top_k is not None and not (isinstance(top_k, int) and top_k > 0):
                    raise BadRequestError(f"parameters.top_k must be a positive integer, got {_brief(top_k)}")
                image = self._decode(_b64(payload["inputs"], "inputs"), "inputs")
                return SageMakerRequest([image], [meta], "hf", top_k=top_k)
            if isinstance(payload, dict) and "instances" in payload:
                images, metas = self._instances(payload["instances"], "b64")
                return SageMakerRequest(images, metas, "adapter", batch=True)
            images, metas = self._instances([payload], "b64")
            return SageMakerRequest(images, metas, "adapter")
        if ctype not in _IMAGE_TYPES[fmt]:
            accepted = sorted(_IMAGE_TYPES[fmt] | ({_JSON} if fmt in ("adapter", "hf") else set()))
            raise UnsupportedMediaTypeError(
                f"content type {content_type!r} is not supported by this endpoint ({fmt} format); "
                f"send one of: {', '.join(accepted)}"
            )
        return SageMakerRequest([self._decode(raw, "body")], [meta], fmt)

    def sagemaker_output(
        self, request: SageMakerRequest, probabilities: list[list[float]], accept: str | None
    ) -> Served:
        """Encode predictions for the requested `Accept` (`output_fn`)."""
        wanted = (accept or "").replace(" ", "").lower()
        if wanted not in ("", "*/*", "application/*", _JSON, _VERBOSE):
            raise NotAcceptableError(f"Accept {accept!r} is not supported; use {_JSON} or {_VERBOSE}")
        verbose = wanted == _VERBOSE
        fmt = request.response_format
        if fmt == "adapter" and request.batch:
            payload: Any = {"predictions": [self._ours(p) for p in probabilities]}
        elif fmt == "adapter":
            payload = self._verbose(probabilities[0]) if verbose else self._ours(probabilities[0])
        elif fmt == "jumpstart":
            payload = self._verbose(probabilities[0]) if verbose else {"probabilities": probabilities[0]}
        elif fmt == "hf":
            k = max(1, min(request.top_k or self.hf_top_k, len(self.labels)))
            ranked = sorted(zip(self.labels, probabilities[0], strict=True), key=lambda x: -x[1])[:k]
            payload = [{"label": label, "score": score} for label, score in ranked]
        else:
            payload = {"prediction": probabilities[0]}
        verbose_shape = verbose and fmt in ("adapter", "jumpstart") and not request.batch
        return Served(json.dumps(payload).encode(), _VERBOSE if verbose_shape else _JSON)

    # --- Azure ML ------------------------------------------------------------------------------------------

    def azureml_score(self, body: bytes | str) -> Served:
        """Answer an Azure ML AutoML-for-Images scoring request."""
        raw = body.encode() if isinstance(body, str) else body
        self._check_size(raw)
        return Served(json.dumps(self.azureml_predictions(_json(raw))).encode(), _JSON)

    @in_decode_scope
    def azureml_predictions(self, payload: Any) -> list[dict[str, Any]]:
        """`{"input_data": {"columns": [...], "data": [...]}}` -> `[{"probs": [...], "labels": [...]}]`."""
        table = payload.get("input_data") if isinstance(payload, dict) else None
        if not isinstance(table, dict) or not isinstance(table.get("data"), list):
            raise BadRequestError('expected {"input_data": {"columns": ["image"], "data": ["<base64 image>", ...]}}')
        columns = table.get("columns") or ["image"]
        if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
            raise BadRequestError(f"input_data.columns must be a list of column names, got {_brief(columns)}")
        if "image" not in columns:
            raise BadRequestError(f"input_data.columns must include 'image', got {_brief(columns)}")
        unknown = sorted(set(columns) - {"image", "age", "sex", "site"})
        if unknown:
            raise BadRequestError(f"unknown input_data column(s) {_brief(unknown)}; allowed: image, age, sex, site")
        instances = []
        for i, row in enumerate(table["data"]):
            values = row if isinstance(row, list) else [row]
            if len(values) != len(columns):
                raise BadRequestError(f"input_data.data[{i}] has {len(values)} value(s) for {len(columns)} column(s)")
            record = dict(zip(columns, values, strict=True))
            image = record.pop("image")
            if isinstance(image, str) and image.lstrip().startswith("{"):
                image = _automl_item(image, i)
            instances.append({"b64": image, "metadata": {k: v for k, v in record.items() if v is not None}})
        images, metas = self._instances(instances, "b64")
        return [{"probs": p, "labels": list(self.labels)} for p in self.predict(images, metas)]

    # --- Vertex AI -------------------------------------------------------------------------------------------

    @in_decode_scope
    def vertex_automl_predict(self, body: bytes | str) -> Served:
        """Answer a Vertex AutoML image classification request (`ids` / `displayNames` / `confidences`)."""
        payload = self._vertex_payload(body)
        params = payload.get("parameters") or {}
        try:
            threshold = float(params.get("confidenceThreshold", 0.0))
            limit = int(params.get("maxPredictions", 10))
        except (TypeError, ValueError):
            raise BadRequestError(
                "parameters.confidenceThreshold must be a number, maxPredictions an integer"
            ) from None
        images, metas = self._instances(payload["instances"], "content")
        predictions = []
        for probs in self.predict(images, metas):
            ranked = sorted(enumerate(probs), key=lambda x: -x[1])
            kept = [(i, p) for i, p in ranked if p >= threshold][: max(0, limit)]
            predictions.append(
                {
                    "ids": [str(i) for i, _ in kept],  # int64 ids are rendered as strings by Vertex
                    "displayNames": [self.labels[i] for i, _ in kept],
                    "confidences": [p for _, p in kept],
                }
            )
        return Served(json.dumps({"predictions": predictions}).encode(), _JSON)

    @in_decode_scope
    def vertex_custom_predict(self, body: bytes | str) -> Served:
        """Answer the derm-cloud Vertex custom container request (`{"instances": [{"b64", "metadata"}]}`)."""
        payload = self._vertex_payload(body)
        images, metas = self._instances(payload["instances"], "b64")
        predictions = [self._ours(p) for p in self.predict(images, metas)]
        return Served(json.dumps({"predictions": predictions}).encode(), _JSON)

    # --- helpers -----------------------------------------------------------------------------------------------

    def _ours(self, probs: list[float]) -> dict[str, Any]:
        return {**self._verbose(probs), "model_id": self.model_id}

    def _verbose(self, probs: list[float]) -> dict[str, Any]:
        best = max(range(len(probs)), key=probs.__getitem__)
        return {"labels": list(self.labels), "probabilities": probs, "predicted_label": self.labels[best]}

    def _vertex_payload(self, body: bytes | str) -> dict[str, Any]:
        raw = body.encode() if isinstance(body, str) else body
        self._check_size(raw)
        payload = _json(raw)
        if not isinstance(payload, dict) or not isinstance(payload.get("instances"), list):
            raise BadRequestError('expected {"instances": [...], "parameters": {...}}')
        return payload

    def _check_size(self, raw: bytes) -> None:
        if len(raw) > self.max_body_bytes:
            raise RequestTooLargeError(
                f"request body is {len(raw):,} bytes, over this server's limit of {self.max_body_bytes:,}; "
                "send a smaller (re-encoded or downscaled) image"
            )

    def _instances(self, instances: Any, key: str) -> tuple[list[PreparedImage], list[PatientMetadata]]:
        if not isinstance(instances, list) or not instances:
            raise BadRequestError("'instances' must be a non-empty list")
        if len(instances) > self.max_instances:
            raise BadRequestError(f"{len(instances)} instances in one request; the limit is {self.max_instances}")
        encoded, metas = [], []
        for i, item in enumerate(instances):
            where = f"instances[{i}]"
            if not isinstance(item, dict) or not isinstance(item.get(key), str):
                raise BadRequestError(f'{where} must be an object with "{key}": "<base64 image>"')
            encoded.append((_b64(item[key], f"{where}.{key}"), where))
            metas.append(_metadata(item.get("metadata"), f"{where}.metadata"))
        return self._decode_all(encoded), metas

    def _decode(self, data: bytes, where: str) -> PreparedImage:
        return self._decode_all([(data, where)])[0]


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadRequestError(f"request body is not valid JSON ({exc}); send a JSON object") from None
    except RecursionError:  # the C parser stops cleanly at Python's recursion limit (~1,000 levels)
        raise BadRequestError(
            "request body has JSON arrays or objects nested deeper than this server parses (about 1,000 levels); "
            "a valid request nests 4 levels at most: send the documented request shape"
        ) from None


def _b64(text: str, where: str) -> bytes:
    if text.startswith("data:") and "," in text:
        text = text.split(",", 1)[1]  # data URLs: drop the "data:image/jpeg;base64," prefix
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise BadRequestError(f"{where} is not valid standard base64") from None


def _automl_item(item: str, index: int) -> str:
    """An AutoML data item given as a JSON string (the explainability form)."""
    parsed = _json(item.encode())
    if not isinstance(parsed, dict) or not isinstance(parsed.get("image_base64"), str):
        raise BadRequestError(f'input_data.data[{index}] JSON must hold "image_base64"')
    if parsed.get("model_explainability"):
        raise BadRequestError("model_explainability is not supported by the derm-cloud adapter")
    return str(parsed["image_base64"])
