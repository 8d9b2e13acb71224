"""`azure-medimageinsight`: Microsoft's MedImageInsight on an Azure AI Foundry / Azure ML managed online endpoint.

The same HTTP path and auth as the `azure-ml` classifier (one keep-alive POST to the scoring URI, `Authorization:
Bearer <key or token>`, optional `azureml-model-deployment`), in MedImageInsight's published request schema
(https://learn.microsoft.com/azure/ai-foundry/how-to/healthcare-ai/deploy-medimageinsight, "Reference for REST
API"):

```text
{"input_data": {"columns": ["image", "text"], "index": [0, 1, ...], "data": [["<base64 PNG>", ""], ...]},
 "params": {"get_scaling_factor": true}}
->  {"image_features": [[...], ...], "text_features": [[...], ...], "scaling_factor": 4.5}
```

Images go as PNG (the page: the deployed model API supports PNG); the page advises keeping rows per request "in
the dozens" (`images_per_request`, default 8) and resizes images to 512x512 itself. Text (zero-shot prompts) goes
in the `text` column with an empty image; the `scaling_factor` (the model's temperature for cosine similarities)
is kept in each embedding's `extra`.

Errors, as Azure ML documents them for managed online endpoints
(https://learn.microsoft.com/azure/machine-learning/how-to-troubleshoot-online-endpoints#http-status-codes): 401
-> `AuthenticationError`; 408, 429, 500 (and 502-504) -> retryable `RemoteError`s with `Retry-After` kept; 424
"model error" whose `ms-azureml-model-error-statuscode` is 4xx -> `InvalidImageError` (the model refused the
input, retrying changes nothing); 413 -> `PayloadTooLargeError`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

from derm_cloud.backends._azure_ml_errors import _excerpt, translate_error
from derm_cloud.backends._azure_ml_wire import HttpSession, _new_session, _region_from_uri, request_headers
from derm_cloud.backends._azure_workspace import TokenCredential, authorization
from derm_cloud.backends._http import is_loopback
from derm_cloud.base import BackendInfo
from derm_cloud.embedders.base import Embedder, RawEmbedding
from derm_cloud.errors import ConfigError, DermCloudError, InvalidImageError, InvalidResponseError
from derm_cloud.images import DEFAULT_LIMITS, ImageLimits, PreparedImage
from derm_cloud.redaction import redact_url
from derm_cloud.retry import RetryPolicy, call_timeout

__all__ = ["MedImageInsightEmbedder"]

_URI_ENV = "MEDIMAGEINSIGHT_SCORING_URI"
#: Largest body sent: Azure ML publishes no payload limit; its bandwidth cap is 5 MBPS per endpoint.
DEFAULT_MAX_REQUEST_BYTES = 4 * 1024 * 1024
#: MedImageInsight's dimension per the page ("a 1024-dimensional vector representing the image").
PUBLISHED_DIMENSION = 1024


class MedImageInsightEmbedder(Embedder):
    """Embeddings (images and text) from a MedImageInsight managed online endpoint.

    Args:
        scoring_uri: `https://<endpoint>.<region>.inference.ml.azure.com/score` (env `MEDIMAGEINSIGHT_SCORING_URI`).
        key, token_provider, credential: the endpoint's auth, exactly one (key: env `AZUREML_ENDPOINT_KEY`).
        deployment: route to this deployment (`azureml-model-deployment`); default: the traffic split.
        images_per_request: rows per request (micro-batch).
        max_request_bytes: largest body sent; images are re-encoded smaller and requests split to stay under it.
        dimension: the vector length to insist on (1024 for Microsoft's model); `None`: learnt from the first answer.
        timeout, retry: per-call seconds and the shared retry policy.
        instance_type, instance_count, region, endpoint_name: for cost reports (VM instance-hours, always on).
        session: a `requests.Session`-like object (default: a new keep-alive session).

    Example:
        >>> emb = MedImageInsightEmbedder("https://mii.eastus.inference.ml.azure.com/score", key=key)  # doctest: +SKIP
        >>> emb.embed_texts(["dermoscopy skin melanoma"])[0].dimension  # doctest: +SKIP
    """

    backend_name = "azure-medimageinsight"
    #: managed deployments queue beyond max_concurrent_requests_per_instance (default 1), then answer 429.
    default_concurrency = 1
    default_max_batch = 8
    embeds_text = True

    def __init__(
        self,
        scoring_uri: str | None = None,
        *,
        key: str | None = None,
        token_provider: Callable[[], str] | None = None,
        credential: TokenCredential | str | None = None,
        deployment: str | None = None,
        images_per_request: int | None = None,
        max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
        dimension: int | None = None,
        timeout: float = 60.0,
        retry: RetryPolicy | None = None,
        instance_type: str | None = None,
        instance_count: int = 1,
        region: str | None = None,
        endpoint_name: str | None = None,
        session: HttpSession | None = None,
        image_limits: ImageLimits = DEFAULT_LIMITS,
        concurrency: int | None = None,
    ) -> None:
        uri = scoring_uri or os.environ.get(_URI_ENV)
        if not uri or urlsplit(uri).scheme not in ("http", "https"):
            raise ConfigError(
                "scoring_uri is required: the MedImageInsight endpoint's REST URI (https://<endpoint>.<region>"
                f".inference.ml.azure.com/score, shown by `az ml online-endpoint show`); pass it or set {_URI_ENV}"
            )
        if max_request_bytes < 64 * 1024:
            raise ConfigError(f"max_request_bytes must be at least 64 KiB, got {max_request_bytes}")
        host = urlsplit(uri).hostname or ""
        self.endpoint_name = endpoint_name or (host.split(".")[0] if host.endswith(".inference.ml.azure.com") else None)
        super().__init__(
            model_id=f"azureml:{self.endpoint_name or host}" + (f"/{deployment}" if deployment else ""),
            dimension=dimension,
            retry=retry if retry is not None else RetryPolicy.for_timeout(timeout),
            image_limits=image_limits,
            concurrency=concurrency,
            max_batch=images_per_request,
        )
        self.scoring_uri = uri
        self.deployment = deployment
        self.max_request_bytes = max_request_bytes
        self.timeout = timeout
        self.instance_type = instance_type
        self.instance_count = instance_count
        self.region = region or _region_from_uri(uri)
        self._authorization = authorization(key, token_provider, credential)
        self._owns_session = session is None
        self._session: HttpSession = session if session is not None else _new_session()

    # --- the call ------------------------------------------------------------------------------------------

    def _embed_many(self, images: Sequence[PreparedImage], timeout: float | None) -> list[RawEmbedding]:
        budget = (self.max_request_bytes - 1024) * 3 // 4
        rows = [[image.upload_base64(max_bytes=budget, formats=("PNG",))[0], ""] for image in images]
        return self._send(rows, "image", timeout)

    def _embed_text_many(self, texts: Sequence[str], timeout: float | None) -> list[RawEmbedding]:
        return self._send([["", text] for text in texts], "text", timeout)

    def _send(self, rows: list[list[str]], kind: str, timeout: float | None) -> list[RawEmbedding]:
        """One POST per group of rows that fits `max_request_bytes`, in order."""
        groups: list[list[list[str]]] = []
        size = 1024
        for row in rows:
            cost = len(row[0]) + len(row[1]) * 2 + 16
            if groups and size + cost <= self.max_request_bytes:
                groups[-1].append(row)
                size += cost
            else:
                groups.append([row])
                size = 1024 + cost
        return [raw for group in groups for raw in self._post(group, kind, timeout)]

    def _post(self, rows: list[list[str]], kind: str, timeout: float | None) -> list[RawEmbedding]:
        import requests

        seconds = call_timeout(self.timeout, timeout)
        headers = request_headers(self._authorization, self.deployment, backend=self.backend_name)
        body = {
            "input_data": {"columns": ["image", "text"], "index": list(range(len(rows))), "data": rows},
            "params": {"get_scaling_factor": True},
        }
        try:
            response = self._session.post(
                self.scoring_uri, data=json.dumps(body).encode("ascii"), headers=headers, timeout=seconds
            )
        except requests.RequestException as exc:
            raise self._translate(exc, seconds) from exc
        if response.status_code != 200:
            raise self._translate(response, seconds)
        return self._parse(response, len(rows), kind)

    def _parse(self, response: Any, expected: int, kind: str) -> list[RawEmbedding]:
        request_id = response.headers.get("x-request-id") or response.headers.get("x-ms-request-id")

        def bad(why: str) -> InvalidResponseError:
            return InvalidResponseError(
                f"the endpoint's answer is not MedImageInsight's schema {{'image_features', 'text_features', "
                f"'scaling_factor'}}: {why}; check the endpoint serves MedImageInsight",
                backend=self.backend_name,
                status=response.status_code,
                request_id=request_id,
            )

        try:
            payload = json.loads(response.content)
        except (ValueError, UnicodeDecodeError):
            raise bad(f"not JSON ({_excerpt(response.content)!r})") from None
        if not isinstance(payload, dict):
            raise bad(f"a {type(payload).__name__}, not an object")
        vectors = payload.get(f"{kind}_features")
        if not isinstance(vectors, list) or len(vectors) != expected:
            got = f"{len(vectors)} vector(s)" if isinstance(vectors, list) else "nothing"
            raise bad(f"'{kind}_features' holds {got} for {expected} {kind}(s)")
        scale = payload.get("scaling_factor")
        if scale is not None and (isinstance(scale, bool) or not isinstance(scale, (int, float))):
            raise bad(f"'scaling_factor' is {scale!r}, not a number")
        extra: dict[str, Any] = {"deployment": response.headers.get("azureml-model-deployment")}
        if scale is not None:
            extra["scaling_factor"] = float(scale)
        out = []
        for i, vector in enumerate(vectors):
            if not isinstance(vector, list) or not all(
                isinstance(x, (int, float)) and not isinstance(x, bool) for x in vector
            ):
                raise bad(f"vector {i} is not a list of numbers")
            out.append(RawEmbedding(vector=vector, request_id=request_id, extra=extra))
        if self.dimension is None and out:
            self.dimension = len(out[0].vector)  # learnt once; every later answer must match it
        return out

    def _translate(self, failure: Any, seconds: float) -> DermCloudError:
        status = getattr(failure, "status_code", None)
        headers = getattr(failure, "headers", None) or {}
        model_status = str(headers.get("ms-azureml-model-error-statuscode", ""))
        if status == 424 and model_status.startswith("4"):
            return InvalidImageError(
                f"the MedImageInsight model refused the request (model status {model_status}: "
                f"{_excerpt(failure.content)}); send PNG images (the endpoint takes PNG only) and non-empty rows"
            )
        return translate_error(
            failure,
            uri=self.scoring_uri,
            deployment=self.deployment,
            timeout=seconds,
            max_request_bytes=self.max_request_bytes,
        )

    # --- facts and lifecycle -------------------------------------------------------------------------------

    def describe(self) -> BackendInfo:
        emulated = is_loopback(self.scoring_uri)
        facts: dict[str, Any] = {
            "endpoint_name": self.endpoint_name,
            "deployment": self.deployment,
            "dimension": self.dimension,
            "embeds_text": True,
            "images_per_request": self.max_batch,
            "image_format": "PNG",
        }
        if emulated:
            from derm_cloud.embedders.vertex_answers import STAND_IN_NOTE, TEXT_NOTE

            facts["stand_in"] = STAND_IN_NOTE.format(model="Microsoft's MedImageInsight")
            facts["text_embeddings"] = TEXT_NOTE
        return BackendInfo(
            backend=self.backend_name,
            provider="azure",
            service="Azure AI Foundry / Azure ML managed online endpoint serving MedImageInsight",
            model_id=self.model_id,
            region=self.region,
            endpoint=self.scoring_uri,
            data_leaves_machine=True,
            stores_images=False,
            emulated=emulated,
            labels_mapped=False,
            billing={
                "sku": f"azure.ml.online.{self.instance_type}" if self.instance_type else None,
                "instance_type": self.instance_type,
                "instances": self.instance_count,
                "unit": "instance-hour",
            },
            model_facts=facts,
        )

    def _close(self) -> None:
        if self._owns_session:
            self._session.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(scoring_uri={redact_url(self.scoring_uri)!r}, auth=<redacted>)"
