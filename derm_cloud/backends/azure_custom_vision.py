"""`azure-custom-vision`: a published Azure AI Custom Vision classification iteration.

Custom Vision retires on 2028-09-25 (docs/reference/cloud-apis.md section 0); the backend warns once per process
when it calls the real service (not when it talks to an emulator on 127.0.0.1, a test double: the pytest fixtures
and emulated comparisons stay quiet under `-W error`) and names the successor: train with Azure ML AutoML for
images and call the endpoint with the `azure-ml` backend, or run its ONNX export on your own machine with
`local-onnx`.

Choices that matter for patient images:

* **No-store by default.** `store_images=False` calls `classify_image_with_no_store` (`/image/nostore`);
  the storing route keeps prediction images for 30 days, so it is opt-in (`store_images=True`), and
  `describe().stores_images` says which one is in use.
* **4 MB limit enforced before sending**: the EXIF-free upload bytes are re-encoded (JPEG quality, then size)
  to fit, so an oversized photo never costs a refused call.
* **Our retries, not the SDK's.** The msrest-based SDK never retries a POST (docs/reference/cloud-apis.md section 3);
its
  urllib3 retry policy is switched off and the shared `RetryPolicy` retries 429, 5xx
  and connection failures, honouring `Retry-After`. 400, 401 and 404 are final.

The prediction key is only ever handed to the SDK's credential object; it is not kept on the classifier, not
logged, and `repr()` does not show it.
"""

from __future__ import annotations

import math
import os
import sys
import threading
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, Protocol
from urllib.parse import urlsplit

from derm_cloud.backends._custom_vision_errors import ENDPOINT_ENV, KEY_ENV, response_header, translate_error
from derm_cloud.backends._http import is_loopback
from derm_cloud.base import BackendInfo, Classifier, RawResult
from derm_cloud.errors import (
    ConfigError,
    DermCloudDeprecationWarning,
    InvalidResponseError,
    MissingDependencyError,
)
from derm_cloud.images import DEFAULT_LIMITS, ImageLimits, PreparedImage
from derm_cloud.redaction import redact_url
from derm_cloud.retry import RetryPolicy, call_timeout
from derm_cloud.taxonomy import LabelMap
from derm_cloud.types import PatientMetadata

__all__ = [
    "MAX_IMAGE_BYTES",
    "RETIREMENT_DATE",
    "AzureCustomVisionClassifier",
    "CustomVisionClient",
]

RETIREMENT_DATE = "2028-09-25"
#: Prediction image limit: "4 MB" in the service docs and the SDK docstring, enforced as decimal megabytes
#: (4,000,000 bytes): reading it as MiB would let 4.0-4.19 MB images through that the service may refuse.
MAX_IMAGE_BYTES = 4_000_000
_SUCCESSOR = (
    "train with Azure Machine Learning AutoML for images and call the endpoint with the 'azure-ml' backend, or "
    "run its ONNX export (model.onnx + labels.json) locally with the 'local-onnx' backend"
)


_warned = False
_warn_lock = threading.Lock()


def _warn_retirement() -> None:
    global _warned
    with _warn_lock:
        if _warned:
            return
        _warned = True
    warnings.warn(
        f"Azure AI Custom Vision retires on {RETIREMENT_DATE} (existing customers are supported until then); "
        f"plan the move now: {_SUCCESSOR}.",
        DermCloudDeprecationWarning,
        stacklevel=_first_caller_outside_package(),
    )


def _first_caller_outside_package() -> int:
    """Stack level of the first frame outside derm_cloud, so the warning points at the user's line whether
    they called the class, `derm_cloud.create` or a testing helper."""
    package_dir = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    frame, level = sys._getframe(1), 1
    while frame.f_back is not None and frame.f_code.co_filename.startswith(package_dir):
        frame, level = frame.f_back, level + 1
    return level


class CustomVisionClient(Protocol):
    """The two methods of `CustomVisionPredictionClient` this backend calls (tests inject one)."""

    def classify_image(self, project_id: str, published_name: str, image_data: Any, **kwargs: Any) -> Any: ...

    def classify_image_with_no_store(
        self, project_id: str, published_name: str, image_data: Any, **kwargs: Any
    ) -> Any: ...


class AzureCustomVisionClassifier(Classifier):
    """Classify with a published Custom Vision iteration (retiring 2028-09-25).

    Args:
        project_id: the project GUID (Custom Vision portal > project settings).
        published_name: the name the iteration was published under (not the iteration id).
        endpoint: the *prediction* resource endpoint, e.g. `https://westeurope.api.cognitive.microsoft.com`
            (env `VISION_PREDICTION_ENDPOINT`).
        prediction_key: the prediction resource key (env `VISION_PREDICTION_KEY`); never logged or shown.
        store_images: `False` (default) uses the no-store route; `True` lets the service keep each image for
            30 days (only with consent and a data-processing agreement).
        application: optional application name sent as `?application=` (service-side usage reports).
        tags: the iteration's tag names, to build the label map now; default: learnt from the first answer.
        label_overrides: `{tag_name: canonical_code}` for tags named other than HAM10000 codes or names.
        allow_unmapped: accept tags that are not the seven lesion classes (latency/cost baseline only).
        timeout: seconds per HTTP call (the retry policy's deadline may shorten it).
        max_image_bytes: the image limit enforced before sending (re-encoded to fit).
        region: Azure region for reports, when the endpoint (a custom subdomain) does not show it.
        retry: the shared retry policy (default: 4 attempts within 60 s).
        client: a `CustomVisionPredictionClient` built elsewhere (tests, proxies).

    Example:
        >>> clf = AzureCustomVisionClassifier("0f3c...", "Iteration3",  # doctest: +SKIP
        ...     endpoint="https://westeurope.api.cognitive.microsoft.com", prediction_key=key,
        ...     label_overrides={"Mole": "nv"})
        >>> clf.predict("lesion.jpg").top(3)  # doctest: +SKIP
    """

    backend_name = "azure-custom-vision"
    #: S0 allows 20 no-store transactions per second; four calls in flight stay well inside it.
    default_concurrency = 4

    def __init__(
        self,
        project_id: str,
        published_name: str,
        *,
        endpoint: str | None = None,
        prediction_key: str | None = None,
        store_images: bool = False,
        application: str | None = None,
        tags: Sequence[str] | None = None,
        label_overrides: Mapping[str, str] | None = None,
        allow_unmapped: bool = False,
        timeout: float = 30.0,
        max_image_bytes: int = MAX_IMAGE_BYTES,
        region: str | None = None,
        retry: RetryPolicy | None = None,
        client: CustomVisionClient | None = None,
        image_limits: ImageLimits = DEFAULT_LIMITS,
        concurrency: int | None = None,
    ) -> None:
        if not project_id or not published_name:
            raise ConfigError(
                "project_id and published_name are required: the project GUID and the name the iteration was "
                "published under (Custom Vision portal > Performance > Publish)"
            )
        self._overrides = dict(label_overrides or {})
        self._allow_unmapped = allow_unmapped
        self._learn_tags = tags is None
        label_map = (
            LabelMap.canonical()
            if tags is None
            else LabelMap.for_labels(list(tags), overrides=self._overrides, allow_unmapped=allow_unmapped)
        )
        super().__init__(
            label_map=label_map,
            model_id=f"customvision:{project_id}/{published_name}",
            retry=retry if retry is not None else RetryPolicy.for_timeout(timeout),
            image_limits=image_limits,
            concurrency=concurrency,
        )
        self.project_id = project_id
        self.published_name = published_name
        self.store_images = bool(store_images)
        self.application = application
        self.timeout = timeout
        self.max_image_bytes = max_image_bytes
        self.endpoint = (endpoint or os.environ.get(ENDPOINT_ENV) or "").rstrip("/") or None
        self.region = region or _region_from_endpoint(self.endpoint)
        if not is_loopback(self.endpoint):
            # The retirement concerns code that calls the real service; an emulator on this machine is a test double.
            _warn_retirement()
        self._map_lock = threading.Lock()
        self._owns_client = client is None
        self._client: CustomVisionClient = client if client is not None else self._build_client(prediction_key)

    def _build_client(self, prediction_key: str | None) -> CustomVisionClient:
        try:
            from azure.cognitiveservices.vision.customvision.prediction import CustomVisionPredictionClient
            from msrest.authentication import ApiKeyCredentials
        except ImportError as exc:
            raise MissingDependencyError(
                "the azure-custom-vision backend needs azure-cognitiveservices-vision-customvision; "
                "run: pip install 'derm-cloud[azure]'"
            ) from exc
        if not self.endpoint:
            raise ConfigError(
                f"endpoint is required: the prediction resource endpoint (https://<region>.api.cognitive."
                f"microsoft.com or https://<resource>.cognitiveservices.azure.com); pass it or set {ENDPOINT_ENV}"
            )
        key = prediction_key or os.environ.get(KEY_ENV)
        if not key:
            raise ConfigError(
                f"prediction_key is required: the prediction resource's key (Azure portal > the resource > Keys "
                f"and Endpoint); pass it or set {KEY_ENV}"
            )
        credentials = ApiKeyCredentials(in_headers={"Prediction-key": key})
        client = CustomVisionPredictionClient(self.endpoint, credentials)  # type: ignore[no-untyped-call]
        # msrest would retry connection errors 3 times with its own backoff (never a POST on a status); the
        # shared RetryPolicy does it instead so every backend spends the same attempts on the same fault.
        client.config.retry_policy.retries = 0
        client.config.enable_http_logger = False  # its logger prints request headers, i.e. the key
        return client  # type: ignore[no-any-return]

    # --- the call ---------------------------------------------------------------------------------------------

    def _predict_one(self, image: PreparedImage, metadata: PatientMetadata, timeout: float | None) -> RawResult:
        # Metadata is not sent: a Custom Vision classifier takes pixels only.
        data, _mime = image.upload_bytes(max_bytes=self.max_image_bytes, formats=("JPEG", "PNG"))
        call = self._client.classify_image if self.store_images else self._client.classify_image_with_no_store
        seconds = call_timeout(self.timeout, timeout)
        kwargs: dict[str, Any] = {"raw": True, "timeout": seconds}
        if self.application:
            kwargs["application"] = self.application
        try:
            answer = call(self.project_id, self.published_name, data, **kwargs)
        except Exception as exc:
            translated = translate_error(exc, self)
            if translated is None:
                raise
            raise translated from exc
        return self._parse(answer)

    def _parse(self, answer: Any) -> RawResult:
        result = getattr(answer, "output", answer)
        response = getattr(answer, "response", None)
        request_id = response_header(response, "apim-request-id") or getattr(result, "id", None)
        predictions = getattr(result, "predictions", None)
        if not predictions:
            raise InvalidResponseError(
                "Custom Vision answered without predictions; check that the iteration is a classification "
                "iteration with trained tags",
                backend=self.backend_name,
                request_id=request_id,
            )
        scores: list[tuple[str, float]] = []
        regular: list[str] = []
        for p in predictions:
            tag, prob = getattr(p, "tag_name", None), getattr(p, "probability", None)
            if not isinstance(tag, str) or not isinstance(prob, (int, float)) or not math.isfinite(prob):
                raise InvalidResponseError(
                    f"Custom Vision returned a prediction without a tag name and probability ({tag!r}: {prob!r})",
                    backend=self.backend_name,
                    request_id=request_id,
                )
            scores.append((tag, float(prob)))
            if getattr(p, "tag_type", "Regular") != "Negative":  # the "Negative" tag is not a lesion class
                regular.append(tag)
        self._learn_label_map(regular)
        extra = {
            "prediction_id": getattr(result, "id", None),
            "iteration_id": getattr(result, "iteration", None),
            "stored": self.store_images,
        }
        return RawResult(scores=scores, request_id=request_id, extra=extra)

    def _learn_label_map(self, tags: list[str]) -> None:
        if not self._learn_tags or set(tags) == set(self.label_map.provider_labels):
            return
        with self._map_lock:
            if set(tags) != set(self.label_map.provider_labels):
                # Sorted, so the map does not depend on this answer's probability order.
                self.label_map = LabelMap.for_labels(
                    sorted(tags), overrides=self._overrides, allow_unmapped=self._allow_unmapped
                )

    # --- facts and lifecycle -------------------------------------------------------------------------------------

    def describe(self) -> BackendInfo:
        return BackendInfo(
            backend=self.backend_name,
            provider="azure",
            service=f"Azure AI Custom Vision prediction (retiring {RETIREMENT_DATE})",
            model_id=self.model_id,
            region=self.region,
            endpoint=self.endpoint,
            data_leaves_machine=True,
            stores_images=self.store_images,
            emulated=is_loopback(self.endpoint),
            labels_mapped=self.label_map.mapped,
            billing={"sku": "azure.custom_vision.s0.prediction", "unit": "1000 transactions", "transactions": 1},
            model_facts={
                "project_id": self.project_id,
                "published_name": self.published_name,
                "route": "image" if self.store_images else "image/nostore",
                "retirement": RETIREMENT_DATE,
                "successor": _SUCCESSOR,
            },
        )

    def _close(self) -> None:
        close = getattr(self._client, "close", None)
        if self._owns_client and callable(close):
            close()

    def __repr__(self) -> str:
        endpoint = redact_url(self.endpoint) if self.endpoint else None
        return (
            f"{type(self).__name__}(endpoint={endpoint!r}, project_id={self.project_id!r}, "
            f"published_name={self.published_name!r}, store_images={self.store_images}, prediction_key=<redacted>)"
        )


def _region_from_endpoint(endpoint: str | None) -> str | None:
    """`https://westeurope.api.cognitive.microsoft.com` -> `westeurope`; custom subdomains carry no region."""
    host = urlsplit(endpoint or "").hostname or ""
    suffix = ".api.cognitive.microsoft.com"
    return host[: -len(suffix)] if host.endswith(suffix) and host.count(".") == 4 else None
