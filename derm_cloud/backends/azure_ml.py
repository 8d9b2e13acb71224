"""`azure-ml`: an Azure Machine Learning managed online endpoint (AutoML for images or the derm-cloud adapter).

The hot path is one HTTPS POST to the endpoint's scoring URI with a `requests.Session` (keep-alive), in the
AutoML for Images contract (docs/reference/cloud-apis.md section 4.3):

```text
POST {scoring_uri}   Authorization: Bearer <key or token>   azureml-model-deployment: <name> (optional)
{"input_data": {"columns": ["image"], "data": ["<base64 image>", ...]}}  ->  [{"probs": [...], "labels": [...]}]
```

Why not `azure-ai-ml`'s `online_endpoints.invoke`: it makes three HTTP calls per prediction (GET the
endpoint, POST listKeys, POST score; ~3.3 ms of client time against ~0.6 ms here), its azure-core retry policy
retries 429/5xx four times over ~4.8 s and even retries a 401 that carries `Retry-After`, which we cannot
switch off per call, and importing it takes ~1.4 s with dozens of marshmallow warnings (docs/reference/cloud-apis.md
4.4, 10).
`azure-ai-ml` is used once, optionally, by `AzureMlClassifier.from_workspace` to look up the scoring URI
and the key.

Several images can share one request (`images_per_request`), within `max_request_bytes`. Keys and tokens
are never logged and `repr()` does not show them; patient metadata is only sent when `send_metadata=True`
(the derm-cloud adapter reads `age`/`sex`/`site` columns; AutoML's scoring script accepts `image` only).
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

from derm_cloud.backends._azure_ml_errors import BACKEND_NAME, _excerpt, translate_error
from derm_cloud.backends._azure_ml_wire import (
    DEFAULT_MAX_REQUEST_BYTES,
    HttpSession,
    _new_session,
    _region_from_uri,
    _row_json,
    request_headers,
)
from derm_cloud.backends._azure_workspace import AML_SCOPE, TokenCredential, authorization, resolve_endpoint
from derm_cloud.backends._http import is_loopback
from derm_cloud.base import BackendInfo, Classifier, RawResult
from derm_cloud.errors import ConfigError, DermCloudError, InvalidResponseError
from derm_cloud.images import DEFAULT_LIMITS, ImageLimits, PreparedImage
from derm_cloud.redaction import redact_url
from derm_cloud.retry import RetryPolicy, call_timeout
from derm_cloud.taxonomy import LabelMap
from derm_cloud.types import PatientMetadata

__all__ = [
    "AML_SCOPE",
    "DEFAULT_MAX_REQUEST_BYTES",
    "AzureMlClassifier",
    "HttpSession",
    "TokenCredential",
]

_URI_ENV = "AZUREML_SCORING_URI"


class AzureMlClassifier(Classifier):
    """Classify with an Azure ML managed online endpoint that speaks the AutoML for Images contract.

    Args:
        scoring_uri: `https://<endpoint>.<region>.inference.ml.azure.com/score` (env `AZUREML_SCORING_URI`).
        key: the endpoint key (env `AZUREML_ENDPOINT_KEY`; `az ml online-endpoint get-credentials`).
        token_provider: instead of a key, a callable returning a current `aml_token`/`aad_token`.
        credential: instead of a key, an azure-identity credential (or `"default"` for
            `DefaultAzureCredential`); tokens for `https://ml.azure.com/.default` are cached and renewed.
        deployment: route every call to this deployment (`azureml-model-deployment` header); default: the
            endpoint's traffic split.
        images_per_request: images sent together in one request by `predict_batch`.
        max_request_bytes: largest JSON body sent; images are re-encoded to fit and chunks split to stay under.
        send_metadata: add `age`, `sex` and `site` columns (for the derm-cloud adapter, not for AutoML).
        labels: the model's labels to build the label map now; default: learnt from the first answer.
        label_overrides: `{label: canonical_code}` for class names other than HAM10000 codes or names.
        allow_unmapped: accept labels that are not the seven lesion classes (latency/cost baseline only).
        timeout: seconds per HTTP call (the endpoint's own `request_timeout_ms` defaults to 5 s).
        instance_type, instance_count: the deployment's SKU, for cost reports.
        region, endpoint_name: for reports when the scoring URI does not show them.
        retry: the shared retry policy (default: 4 attempts within 60 s).
        session: a `requests.Session`-like object (default: a new keep-alive session).

    Example:
        >>> clf = AzureMlClassifier("https://derm.westeurope.inference.ml.azure.com/score",  # doctest: +SKIP
        ...                         key=key, instance_type="Standard_DS3_v2")
        >>> clf.predict_batch(paths, batch_size=16)  # doctest: +SKIP
    """

    backend_name = BACKEND_NAME
    #: managed deployments queue requests beyond max_concurrent_requests_per_instance (default 1) and then 429.
    default_concurrency = 1

    def __init__(
        self,
        scoring_uri: str | None = None,
        *,
        key: str | None = None,
        token_provider: Callable[[], str] | None = None,
        credential: TokenCredential | str | None = None,
        deployment: str | None = None,
        images_per_request: int = 1,
        max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
        send_metadata: bool = False,
        labels: Sequence[str] | None = None,
        label_overrides: Mapping[str, str] | None = None,
        allow_unmapped: bool = False,
        timeout: float = 60.0,
        instance_type: str | None = None,
        instance_count: int = 1,
        region: str | None = None,
        endpoint_name: str | None = None,
        retry: RetryPolicy | None = None,
        session: HttpSession | None = None,
        image_limits: ImageLimits = DEFAULT_LIMITS,
        concurrency: int | None = None,
    ) -> None:
        uri = scoring_uri or os.environ.get(_URI_ENV)
        if not uri or urlsplit(uri).scheme not in ("http", "https"):
            raise ConfigError(
                f"scoring_uri is required: the endpoint's REST URI (https://<endpoint>.<region>.inference.ml.azure"
                f".com/score, shown by `az ml online-endpoint show`); pass it or set {_URI_ENV}"
            )
        if images_per_request < 1:
            raise ConfigError(f"images_per_request must be 1 or more, got {images_per_request}")
        if max_request_bytes < 16 * 1024:
            raise ConfigError(f"max_request_bytes must be at least 16 KiB, got {max_request_bytes}")
        self._overrides = dict(label_overrides or {})
        self._allow_unmapped = allow_unmapped
        self._learn_labels = labels is None
        label_map = (
            LabelMap.canonical()
            if labels is None
            else LabelMap.for_labels(list(labels), overrides=self._overrides, allow_unmapped=allow_unmapped)
        )
        host = urlsplit(uri).hostname or ""
        self.endpoint_name = endpoint_name or (host.split(".")[0] if host.endswith(".inference.ml.azure.com") else None)
        super().__init__(
            label_map=label_map,
            model_id=f"azureml:{self.endpoint_name or host}" + (f"/{deployment}" if deployment else ""),
            retry=retry if retry is not None else RetryPolicy.for_timeout(timeout),
            image_limits=image_limits,
            concurrency=concurrency,
        )
        self.scoring_uri = uri
        self.deployment = deployment
        self.images_per_request = images_per_request
        self.max_request_bytes = max_request_bytes
        self.send_metadata = send_metadata
        self.timeout = timeout
        self.instance_type = instance_type
        self.instance_count = instance_count
        self.region = region or _region_from_uri(uri)
        self._authorization = authorization(key, token_provider, credential)
        self._map_lock = threading.Lock()
        self._owns_session = session is None
        self._session: HttpSession = session if session is not None else _new_session()

    @classmethod
    def from_workspace(
        cls,
        endpoint_name: str,
        *,
        ml_client: Any = None,
        subscription_id: str | None = None,
        resource_group: str | None = None,
        workspace: str | None = None,
        credential: TokenCredential | None = None,
        **options: Any,
    ) -> AzureMlClassifier:
        """Look up an endpoint's scoring URI, auth and deployment SKU with `azure-ai-ml`, then score directly.

        Needs `pip install 'derm-cloud[azure-ml-sdk]'` (and azure-identity when no credential is given).

        Example:
            >>> clf = AzureMlClassifier.from_workspace(  # doctest: +SKIP
            ...     "derm-triage", subscription_id="...", resource_group="rg", workspace="ws")
        """
        resolved = resolve_endpoint(
            endpoint_name,
            ml_client=ml_client,
            subscription_id=subscription_id,
            resource_group=resource_group,
            workspace=workspace,
            credential=credential,
            deployment=options.get("deployment"),
            translate_error=translate_error,
        )
        for name, value in resolved.items():
            options.setdefault(name, value)
        return cls(**options)

    # --- the call ---------------------------------------------------------------------------------------------

    def _predict_one(self, image: PreparedImage, metadata: PatientMetadata, timeout: float | None) -> RawResult:
        return self._post(self._encode([image], [metadata]), timeout)[0]

    def _predict_many(
        self, images: Sequence[PreparedImage], metadata: Sequence[PatientMetadata]
    ) -> list[tuple[RawResult, int, float]]:
        rows = self._encode(images, metadata)  # once, outside the retry loop
        chunks = self._chunks(rows)

        def send(chunk: list[Any]) -> list[tuple[RawResult, int, float]]:
            start = time.perf_counter()
            if self.retry is None:
                raws, attempts = self._post(chunk, None), 1
            else:
                raws, attempts = self.retry.call(lambda t: self._post(chunk, t), backend=self.backend_name)
            per_image_ms = (time.perf_counter() - start) * 1000 / len(chunk)
            return [(raw, attempts, per_image_ms) for raw in raws]

        if self.concurrency == 1 or len(chunks) == 1:
            return [item for chunk in chunks for item in send(chunk)]
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(chunks))) as pool:
            return [item for done in pool.map(send, chunks) for item in done]

    def _encode(self, images: Sequence[PreparedImage], metadata: Sequence[PatientMetadata]) -> list[Any]:
        # base64 grows 4/3; keep room for the JSON envelope and metadata columns.
        max_image = (self.max_request_bytes - 1024) * 3 // 4
        rows: list[Any] = []
        for image, meta in zip(images, metadata, strict=True):
            b64, _mime = image.upload_base64(max_bytes=max_image, formats=("JPEG", "PNG"))
            rows.append([b64, meta.age, meta.sex, meta.site] if self.send_metadata else b64)
        return rows

    def _chunks(self, rows: list[Any]) -> list[list[Any]]:
        chunks: list[list[Any]] = []
        size = 0
        for row in rows:
            row_bytes = len(_row_json(row)) + 2
            if (
                chunks
                and len(chunks[-1]) < self.images_per_request
                and size + row_bytes <= self.max_request_bytes - 256
            ):
                chunks[-1].append(row)
                size += row_bytes
            else:
                chunks.append([row])
                size = row_bytes
        return chunks

    def _body(self, rows: list[Any]) -> bytes:
        """`json.dumps({"input_data": {"columns": [...], "data": rows}})`, built without rescanning the images.

        json.dumps scans every character of a 100 kB base64 string for escapes (0.2 ms an image, most of what
        this backend adds to a call); base64 text never needs escaping, so each row is spliced in as is.
        """
        columns = ["image", "age", "sex", "site"] if self.send_metadata else ["image"]
        envelope = json.dumps({"input_data": {"columns": columns, "data": []}})
        head, tail = envelope[: -len("]}}")], "]}}"
        return (head + ", ".join(_row_json(row) for row in rows) + tail).encode("ascii")

    def _post(self, rows: list[Any], timeout: float | None) -> list[RawResult]:
        import requests

        seconds = call_timeout(self.timeout, timeout)
        headers = request_headers(self._authorization, self.deployment, backend=self.backend_name)
        try:
            response = self._session.post(self.scoring_uri, data=self._body(rows), headers=headers, timeout=seconds)
        except requests.RequestException as exc:
            raise self._translate(exc, timeout=seconds) from exc
        if response.status_code != 200:
            raise self._translate(response)
        request_id = response.headers.get("x-request-id") or response.headers.get("x-ms-request-id")
        return self._parse(response, len(rows), request_id)

    def _parse(self, response: Any, expected: int, request_id: str | None) -> list[RawResult]:
        def bad(why: str) -> InvalidResponseError:
            return InvalidResponseError(
                f"the endpoint's answer is not the AutoML contract [{{'probs': [...], 'labels': [...]}}]: {why}",
                backend=self.backend_name,
                status=response.status_code,
                request_id=request_id,
            )

        try:
            payload = json.loads(response.content)
            if isinstance(payload, str):  # score.py that returns json.dumps(...) gets encoded twice
                payload = json.loads(payload)
        except (ValueError, UnicodeDecodeError):
            raise bad(f"not JSON ({_excerpt(response.content)!r})") from None
        if not isinstance(payload, list) or len(payload) != expected:
            got = f"{len(payload)} item(s)" if isinstance(payload, list) else type(payload).__name__
            raise bad(f"expected a list of {expected} result(s), got {got}")
        deployment = response.headers.get("azureml-model-deployment")
        out = []
        for item in payload:
            probs = item.get("probs") if isinstance(item, dict) else None
            labels = item.get("labels") if isinstance(item, dict) else None
            if not isinstance(probs, list) or not isinstance(labels, list) or len(probs) != len(labels) or not probs:
                raise bad("each result needs 'probs' and 'labels' lists of the same length")
            if not all(isinstance(p, (int, float)) and math.isfinite(p) for p in probs):
                raise bad("'probs' holds a value that is not a finite number")
            self._learn_label_map([str(label) for label in labels])
            extra: dict[str, Any] = {"deployment": deployment}
            if expected > 1:
                extra["batch_size"] = expected
            scores = [(str(label), float(p)) for label, p in zip(labels, probs, strict=True)]
            out.append(RawResult(scores=scores, request_id=request_id, extra=extra))
        return out

    def _learn_label_map(self, labels: list[str]) -> None:
        if not self._learn_labels or labels == list(self.label_map.provider_labels):
            return
        with self._map_lock:
            if labels != list(self.label_map.provider_labels):
                self.label_map = LabelMap.for_labels(
                    labels, overrides=self._overrides, allow_unmapped=self._allow_unmapped
                )

    def _translate(self, failure: Any, timeout: float | None = None) -> DermCloudError:
        """`timeout`: the seconds the failed call was given (`timeout=`, or less when the retry deadline
        had less left), so a timeout message names the limit that fired."""
        return translate_error(
            failure,
            uri=self.scoring_uri,
            deployment=self.deployment,
            timeout=self.timeout if timeout is None else timeout,
            max_request_bytes=self.max_request_bytes,
        )

    # --- facts and lifecycle -------------------------------------------------------------------------------------

    @property
    def uses_metadata(self) -> bool:
        """Whether age, sex and site columns go to the endpoint (`send_metadata`)."""
        return bool(self.send_metadata)

    def describe(self) -> BackendInfo:
        return BackendInfo(
            backend=self.backend_name,
            provider="azure",
            service="Azure Machine Learning managed online endpoint",
            model_id=self.model_id,
            region=self.region,
            endpoint=self.scoring_uri,
            data_leaves_machine=True,
            stores_images=False,  # online endpoints do not keep request bodies unless the scoring script does
            emulated=is_loopback(self.scoring_uri),
            labels_mapped=self.label_map.mapped,
            billing={
                "sku": f"azure.ml.online.{self.instance_type}" if self.instance_type else None,
                "instance_type": self.instance_type,
                "instances": self.instance_count,
                "unit": "instance-hour",
            },
            model_facts={
                "endpoint_name": self.endpoint_name,
                "deployment": self.deployment,
                "images_per_request": self.images_per_request,
                "sends_metadata": self.send_metadata,
            },
        )

    def _close(self) -> None:
        if self._owns_session:
            self._session.close()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(scoring_uri={redact_url(self.scoring_uri)!r}, deployment={self.deployment!r}, "
            "auth=<redacted>)"
        )
