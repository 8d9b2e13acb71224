"""An Azure AI Foundry / Azure ML managed online endpoint serving MedImageInsight's published embedding API.

A stand-in for a MedImageInsight deployment from the Foundry model catalog: the managed online endpoint of
`AzureMLEmulator` (key or token auth, deployments and traffic, the management routes `azure-ai-ml` calls,
`x-request-id`, injected faults) with a deployment that answers MedImageInsight's request schema from a real
image encoder (`HostedEncoder`), not Microsoft's model.

Request and response, as published
(https://learn.microsoft.com/azure/ai-foundry/how-to/healthcare-ai/deploy-medimageinsight, "Reference for
REST API"):

```text
POST /score   Authorization: Bearer <key or token>
{"input_data": {"columns": ["image", "text"], "index": [0, ...], "data": [["<base64 PNG>", "<text>"], ...]},
 "params": {"get_scaling_factor": true}}
->  {"image_features": [[...], ...], "text_features": [[...], ...], "scaling_factor": 4.516357}
```

An empty string in a cell means "no image" or "no text" for that row; `image_features` holds one vector per
row that has an image, `text_features` one per row that has text, in row order. Images must be PNG (the page:
"The deployed model API supports images encoded in PNG format"); at most 1024 rows (`index` 0-1024).

Refusals as Azure ML reports them
(https://learn.microsoft.com/azure/machine-learning/how-to-troubleshoot-online-endpoints#http-status-codes): a
request the scoring container rejects becomes 424 "model error" with `ms-azureml-model-error-statuscode` and
`ms-azureml-model-error-reason`; the router's own 401, 404, 408, 429 and 5xx come from `AzureMLEmulator`.

Text: see `embedding_host.TEXT_EMBEDDING_NOTE`. `scaling_factor` is a fixed value, 4.516357, the one in the page's
"Response example", not learnt with the stand-in encoder: the zero-shot temperature is `exp(scaling_factor)` (91.5),
so scores through this emulator are as sharp as through a MedImageInsight deployment answering that value.

Example:
    >>> with MedImageInsightEmulator(embed_model_dir) as emu:  # doctest: +SKIP
    ...     emb = medimageinsight_embedder_for(emu)
    ...     emb.embed("lesion.png").dimension
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from typing import TYPE_CHECKING, Any

from derm_cloud.errors import InvalidImageError
from derm_cloud.testing.emulators.azure_ml import DEFAULT_ENDPOINT_KEY, AuthMode, AzureMLEmulator
from derm_cloud.testing.emulators.base import Response
from derm_cloud.testing.emulators.embedding_host import HostedEncoder

if TYPE_CHECKING:
    from derm_cloud.embedders.azure_medimageinsight import MedImageInsightEmbedder
    from derm_cloud.embedders.base import Embedder

__all__ = ["EMULATED_SCALING_FACTOR", "MAX_ROWS", "MedImageInsightEmulator", "medimageinsight_embedder_for"]

#: The emulator's `scaling_factor`, fixed: the value of the "Response example" of
#: https://learn.microsoft.com/azure/ai-foundry/how-to/healthcare-ai/deploy-medimageinsight (MedImageInsight's log
#: temperature as Microsoft's deployment answers it), not one learnt with the stand-in encoder. The former 1.0
#: (exp(1) = 2.7 on cosines) gave zero-shot scores far softer than the published model's.
EMULATED_SCALING_FACTOR = 4.516357
#: The page's range for `index` ("0 - 1024"): rows one request may carry.
MAX_ROWS = 1024
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class _ModelRefusalError(Exception):
    """The scoring container rejected the request (HTTP 400 inside the container, 424 outside)."""


class MedImageInsightEmulator(AzureMLEmulator):
    """One managed online endpoint with a MedImageInsight deployment hosting a real image encoder.

    Args:
        model: embedding model directory (`model.onnx` + `embedder.json`) or an `Embedder`; `None`: an endpoint
            without deployments (add them with `add_medimageinsight_deployment`).
        endpoint_name, deployment: as in the page's example (`medimageinsight`, `medimageinsight-v1`).
        instance_type: the deployment's SKU, reported to `online_deployments.get` (a GPU SKU by default).
        Other arguments: as `AzureMLEmulator`.
    """

    name = "azure-medimageinsight"

    def __init__(
        self,
        model: str | os.PathLike[str] | Embedder | None = None,
        *,
        endpoint_name: str = "medimageinsight",
        deployment: str = "medimageinsight-v1",
        key: str = DEFAULT_ENDPOINT_KEY,
        auth_mode: AuthMode = "key",
        location: str = "eastus",
        instance_type: str = "Standard_NC4as_T4_v3",
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        super().__init__(
            None, endpoint_name=endpoint_name, key=key, auth_mode=auth_mode, location=location, host=host, port=port
        )
        self.encoders: dict[str, HostedEncoder] = {}
        if model is not None:
            self.add_medimageinsight_deployment(deployment, model, traffic=100, instance_type=instance_type)

    def add_medimageinsight_deployment(
        self,
        name: str,
        model: str | os.PathLike[str] | Embedder,
        *,
        traffic: int = 0,
        instance_type: str = "Standard_NC4as_T4_v3",
        instance_count: int = 1,
    ) -> HostedEncoder:
        """Add a deployment answering MedImageInsight's schema from `model`; loaded now."""
        encoder = HostedEncoder(model)
        self.encoders[name] = encoder
        self.add_deployment(
            name,
            respond=lambda body: _score(encoder, body),
            traffic=traffic,
            instance_type=instance_type,
            instance_count=instance_count,
        )
        return encoder

    @property
    def last_image_bytes(self) -> bytes | None:
        """The last image of the last scoring request, decoded from base64 (`None` before any, or without one)."""
        if not self.calls:
            return None
        try:
            rows = json.loads(self.calls[-1].body)["input_data"]["data"]
            images = [_decode_image(row[0]) for row in rows if isinstance(row, list) and row and row[0]]
        except (ValueError, KeyError, TypeError, IndexError, _ModelRefusalError):
            return None
        return images[-1] if images else None


def _score(encoder: HostedEncoder, body: bytes) -> Response:
    """MedImageInsight's answer to one scoring request, or its container's refusal wrapped in Azure ML's 424."""
    try:
        rows, want_scale = _parse(body)
        image_features: list[list[float]] = []
        text_features: list[list[float]] = []
        for image, text in rows:
            if image:
                try:
                    image_features.append(encoder.embed_image(_decode_image(image)))
                except InvalidImageError:
                    raise _ModelRefusalError("an image could not be decoded as PNG") from None
            if text:
                text_features.append(encoder.embed_text(text))
    except _ModelRefusalError as exc:
        return Response.json(
            {"message": f"Model error: {exc}"},
            424,
            {"ms-azureml-model-error-statuscode": "400", "ms-azureml-model-error-reason": "model_error"},
        )
    answer: dict[str, Any] = {"image_features": image_features, "text_features": text_features}
    if want_scale:
        answer["scaling_factor"] = EMULATED_SCALING_FACTOR
    return Response.json(answer)


def _parse(body: bytes) -> tuple[list[tuple[str, str]], bool]:
    """`[(image_b64, text), ...]` and whether `scaling_factor` is wanted; `_ModelRefusalError` if malformed."""
    try:
        request = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise _ModelRefusalError("the request body is not JSON") from None
    data_in = request.get("input_data") if isinstance(request, dict) else None
    if not isinstance(data_in, dict):
        raise _ModelRefusalError("input_data (an object with columns, index and data) is required")
    columns, data, index = data_in.get("columns"), data_in.get("data"), data_in.get("index")
    if (
        not isinstance(columns, list)
        or not columns
        or len(set(columns)) != len(columns)
        or not set(columns) <= {"image", "text"}
    ):
        raise _ModelRefusalError(f"columns must list 'image' and/or 'text' once each, got {columns!r}")
    if not isinstance(data, list) or not data:
        raise _ModelRefusalError("data must be a non-empty list of rows")
    if len(data) > MAX_ROWS:
        raise _ModelRefusalError(f"{len(data)} rows: at most {MAX_ROWS} inputs per request")
    if isinstance(index, list) and len(index) != len(data):
        raise _ModelRefusalError(f"index has {len(index)} entries for {len(data)} rows")
    rows = []
    for row in data:
        if not isinstance(row, list) or len(row) != len(columns) or not all(isinstance(c, str) for c in row):
            raise _ModelRefusalError(f"each row must be a list of {len(columns)} string(s) in the order of columns")
        cells = dict(zip(columns, row, strict=True))
        image, text = cells.get("image", ""), cells.get("text", "")
        if not image and not text:
            raise _ModelRefusalError("a row has neither an image nor a text")
        rows.append((image, text))
    params = request.get("params") or {}
    if not isinstance(params, dict):
        raise _ModelRefusalError("params must be an object")
    scale = params.get("get_scaling_factor", True)
    # The page's own example sends the string "true": accept booleans and their spellings as strings.
    want_scale = scale if isinstance(scale, bool) else str(scale).strip().lower() == "true"
    return rows, want_scale


def _decode_image(cell: str) -> bytes:
    try:
        data = base64.b64decode("".join(cell.split()), validate=True)  # base64.encodebytes adds newlines
    except binascii.Error:
        raise _ModelRefusalError("an image cell is not base64") from None
    if not data.startswith(_PNG_MAGIC):
        raise _ModelRefusalError("images must be PNG (the deployed model API supports PNG only)")
    return data


def medimageinsight_embedder_for(emulator: MedImageInsightEmulator, **options: Any) -> MedImageInsightEmbedder:
    """A `MedImageInsightEmbedder` scoring against `emulator` (key auth unless `options` say otherwise)."""
    from derm_cloud.embedders.azure_medimageinsight import MedImageInsightEmbedder

    if not {"key", "token_provider", "credential"} & set(options):
        if emulator.auth_mode != "key":
            raise ValueError(f"the emulator uses {emulator.auth_mode} auth; pass token_provider= or credential=")
        options["key"] = emulator.key
    options.setdefault("endpoint_name", emulator.endpoint_name)
    options.setdefault("region", emulator.location)
    return MedImageInsightEmbedder(emulator.scoring_uri, **options)
