"""`google-vision`: Google Cloud Vision label detection, a latency and cost baseline only.

Cloud Vision returns generic labels ("Skin", "Mole", "Close-up" ...), never the seven lesion classes, so every
prediction from this backend has `mapped=False` and empty `probabilities`; the labels and scores are kept in
`provider_scores`. It exists so a comparison can show what a generic, pay-per-image vision API costs and how
fast it answers next to a real lesion model. It cannot triage lesions and must not be used to.
"""

from __future__ import annotations

from typing import Any, Literal

from derm_cloud.backends._google import talks_grpc, translate_google_error
from derm_cloud.backends._http import is_loopback
from derm_cloud.base import BackendInfo, Classifier, RawResult
from derm_cloud.errors import ConfigError, MissingDependencyError, RemoteError, ServiceError, ThrottledError
from derm_cloud.images import DEFAULT_LIMITS, ImageLimits, PreparedImage
from derm_cloud.retry import RetryPolicy, call_timeout
from derm_cloud.taxonomy import LabelMap
from derm_cloud.types import PatientMetadata

__all__ = ["GcpVisionClassifier"]

#: JSON request limit published for Product Search (docs/reference/cloud-apis.md §6); base64 adds ~37%.
#: Both are published as decimal MB ("10 MB", "20 MB"), so they are enforced as decimal bytes.
DEFAULT_MAX_REQUEST_BYTES = 10_000_000
_IMAGE_LIMIT = 20_000_000
_JSON_OVERHEAD = 1024


class GcpVisionClassifier(Classifier):
    """Generic image labels from Google Cloud Vision `LABEL_DETECTION` (unmapped baseline).

    Predictions always have `mapped=False`: use them for latency and cost, never for triage.

    Args:
        max_results: labels to ask for (`maxResults`).
        transport: `rest` or `grpc` (the SDK's default).
        api_endpoint: service host; plain-http emulators need the scheme (`http://127.0.0.1:PORT`).
        credentials: google-auth credentials (default: Application Default Credentials).
        api_key: an API key instead of credentials.
        client: a `vision.ImageAnnotatorClient` built elsewhere; the caller keeps ownership: `close`
            leaves it open.
        timeout: seconds per call; retry: the shared retry policy (the helper makes no SDK retries with
            `retry=None`).
        max_request_bytes: request size limit; images are re-encoded/downscaled to fit.

    Example:
        >>> clf = GcpVisionClassifier()  # doctest: +SKIP
        >>> [s.label for s in clf.predict("lesion.jpg").provider_scores]  # doctest: +SKIP
        ['Skin', 'Mole', 'Close-up']
    """

    backend_name = "google-vision"
    default_concurrency = 4

    def __init__(
        self,
        *,
        max_results: int = 10,
        transport: Literal["rest", "grpc"] = "rest",
        api_endpoint: str | None = None,
        credentials: Any = None,
        api_key: str | None = None,
        client: Any = None,
        timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        max_request_bytes: int | None = DEFAULT_MAX_REQUEST_BYTES,
        image_limits: ImageLimits = DEFAULT_LIMITS,
        concurrency: int | None = None,
    ) -> None:
        if transport not in ("rest", "grpc"):
            raise ConfigError(f"transport must be 'rest' or 'grpc', got {transport!r}")
        if max_results < 1:
            raise ConfigError(f"max_results must be at least 1, got {max_results}")
        if api_key is not None and credentials is not None:
            raise ConfigError("pass either credentials= or api_key=, not both")
        # Generic labels: an unmapped map (no lesion classes), reported as a baseline.
        super().__init__(
            label_map=LabelMap.for_labels([], allow_unmapped=True),
            model_id="cloud-vision-label-detection",
            retry=retry if retry is not None else RetryPolicy.for_timeout(timeout),
            image_limits=image_limits,
            concurrency=concurrency,
        )
        self.max_results = max_results
        self.transport = transport
        self.timeout = timeout
        self.max_request_bytes = max_request_bytes
        self.api_endpoint = api_endpoint or (
            "https://vision.googleapis.com" if transport == "rest" else "vision.googleapis.com"
        )
        self._owns_client = client is None  # a caller's client stays the caller's to close
        self._client = client if client is not None else self._build_client(credentials, api_key)
        self.sdk_deadline = talks_grpc(self._client)

    def _build_client(self, credentials: Any, api_key: str | None) -> Any:
        try:
            from google.cloud import vision
        except ImportError as exc:
            raise MissingDependencyError(
                "the google-vision backend needs google-cloud-vision; run: pip install 'derm-cloud[vertex]'"
            ) from exc
        options: dict[str, Any] = {"api_endpoint": self.api_endpoint}
        if api_key is not None:
            options["api_key"] = api_key
        try:
            return vision.ImageAnnotatorClient(
                transport=self.transport, credentials=credentials, client_options=options
            )
        except Exception as exc:
            translated = translate_google_error(exc, backend=self.backend_name, service="Cloud Vision")
            if translated is None:
                raise
            raise translated from exc

    def _predict_one(self, image: PreparedImage, metadata: PatientMetadata, timeout: float | None) -> RawResult:
        from google.cloud import vision

        max_bytes = _IMAGE_LIMIT
        if self.max_request_bytes is not None:
            max_bytes = min(max_bytes, max(1024, (self.max_request_bytes - _JSON_OVERHEAD) * 3 // 4))
        data, _mime = image.upload_bytes(max_bytes=max_bytes, formats=("JPEG", "PNG"))
        seconds = call_timeout(self.timeout, timeout)
        try:
            response = self._client.label_detection(
                image=vision.Image(content=data), max_results=self.max_results, retry=None, timeout=seconds
            )
        except Exception as exc:
            translated = translate_google_error(
                exc, backend=self.backend_name, service="Cloud Vision", transport=self.transport, what="images:annotate"
            )
            if translated is None:
                raise  # not an SDK, transport or protobuf error: a bug, shown as itself
            raise translated from exc
        if response.error.message:
            raise _image_error(response.error.code, response.error.message)
        labels = [(a.description, float(a.score)) for a in response.label_annotations]
        extra = {"labels": [label for label, _ in labels], "baseline_only": True, "transport": self.transport}
        return RawResult(scores=labels, extra=extra)

    def describe(self) -> BackendInfo:
        return BackendInfo(
            backend=self.backend_name,
            provider="gcp",
            service=f"Cloud Vision API label detection ({self.transport})",
            model_id=self.model_id,
            region=None,
            endpoint=self.api_endpoint,
            data_leaves_machine=True,
            stores_images=None,  # retention of annotated images is not in our reference; check Google's terms
            emulated=is_loopback(self.api_endpoint),
            labels_mapped=False,
            billing={"sku": "gcp.vision.label_detection", "unit": "1000 units", "units_per_call": 1},
            model_facts={
                "baseline_only": True,
                "labels": "generic English labels (Skin, Mole ...); not lesion classes",
                "max_results": self.max_results,
            },
        )

    def _close(self) -> None:
        transport = getattr(self._client, "transport", None)
        if self._owns_client and transport is not None:
            transport.close()


def _image_error(code: int, message: str) -> RemoteError:
    """A per-image error inside a 200 answer (`responses[0].error`, a google.rpc.Status)."""
    backend = GcpVisionClassifier.backend_name
    if code == 8:  # RESOURCE_EXHAUSTED
        return ThrottledError(f"Cloud Vision quota exhausted for this image: {message}", backend=backend, status=code)
    retryable = code in (4, 13, 14)  # DEADLINE_EXCEEDED, INTERNAL, UNAVAILABLE
    hint = "" if retryable else "; the image was rejected - check it opens as a JPEG or PNG"
    return ServiceError(
        f"Cloud Vision could not annotate the image (code {code}): {message}{hint}",
        backend=backend,
        status=code,
        retryable=retryable,
    )
