"""Custom Vision's failures as derm-cloud errors: the one translator of SDK, msrest and requests exceptions.

Each status gets the error a caller can act on (the key of the *prediction* resource, the publish name, the
4 MB limit, a quota that renews), with the service's request id and `Retry-After` kept.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from derm_cloud.backends._http import requests_failure
from derm_cloud.errors import (
    AuthenticationError,
    ConfigError,
    DeadlineExceededError,
    DermCloudError,
    InvalidResponseError,
    ModelNotReadyError,
    NotFoundError,
    PayloadTooLargeError,
    ServiceError,
    ThrottledError,
)
from derm_cloud.retry import retry_after_seconds

__all__ = ["ENDPOINT_ENV", "KEY_ENV", "PredictionCall", "response_header", "translate_error"]

KEY_ENV = "VISION_PREDICTION_KEY"  # the names Microsoft's Custom Vision quickstarts use
ENDPOINT_ENV = "VISION_PREDICTION_ENDPOINT"


class PredictionCall(Protocol):
    """What an error message names about the call (an `AzureCustomVisionClassifier` is one)."""

    @property
    def backend_name(self) -> str: ...

    @property
    def endpoint(self) -> str | None: ...

    @property
    def project_id(self) -> str: ...

    @property
    def published_name(self) -> str: ...

    @property
    def max_image_bytes(self) -> int: ...


def translate_error(exc: BaseException, clf: PredictionCall) -> DermCloudError | None:
    """The one place where SDK, msrest and requests exceptions become derm-cloud errors.

    Returns `None` for exceptions that are not about the call (programming errors propagate unchanged).
    """
    from azure.cognitiveservices.vision.customvision.prediction.models import CustomVisionErrorException
    from azure.core.exceptions import DeserializationError  # what msrest raises for a malformed body
    from msrest.exceptions import ClientRequestError, ValidationError

    name = clf.backend_name
    if isinstance(exc, CustomVisionErrorException):
        return _from_status(exc, clf)
    if isinstance(exc, DeserializationError):
        return InvalidResponseError(
            f"Custom Vision answered a body that is not an ImagePrediction: {exc}", backend=name
        )
    if isinstance(exc, ValidationError):
        return ConfigError(f"Custom Vision SDK refused a parameter: {exc}")
    cause = exc.inner_exception if isinstance(exc, ClientRequestError) else exc
    transport = requests_failure(cause, backend=name, target=clf.endpoint, check="endpoint=")
    if transport is not None:
        return transport
    if isinstance(exc, ClientRequestError):
        return ServiceError(f"the request failed: {exc}", backend=name, retryable=False)
    return None


def _from_status(exc: Any, clf: PredictionCall) -> DermCloudError:
    response = exc.response
    status = int(getattr(response, "status_code", 0) or 0)
    code, message = _error_fields(exc)
    request_id = response_header(response, "apim-request-id")
    retry_after = retry_after_seconds(response_header(response, "Retry-After"))
    where = f"project {clf.project_id} / published iteration {clf.published_name!r}"
    detail = f"{code}: {message}" if code else message
    common: dict[str, Any] = {"backend": clf.backend_name, "status": status, "request_id": request_id}
    if status == 403 and "quota" in message.lower():
        return ThrottledError(
            f"the Custom Vision call quota is used up ({detail}); wait for the quota to renew or move the resource "
            "to the S0 tier",
            retryable=False,
            **common,
        )
    if status in (401, 403):
        return AuthenticationError(
            f"Custom Vision refused the prediction key ({detail}). Check prediction_key= (or {KEY_ENV}): it must be "
            "a key of the *prediction* resource (not the training resource), and endpoint= must be that "
            "resource's endpoint",
            **common,
        )
    if status == 404:
        return NotFoundError(
            f"{where} was not found ({detail}). Check project_id= and published_name= (the publish name, not the "
            "iteration id) and that the iteration is published to this prediction resource",
            **common,
        )
    if status == 429:
        return ThrottledError(f"Custom Vision is rate limiting ({detail})", retry_after=retry_after, **common)
    if status in (408, 504):
        return DeadlineExceededError(f"Custom Vision timed out ({detail})", **common)
    if status == 400 and code == "BadRequestImageSizeBytes":
        return PayloadTooLargeError(
            f"Custom Vision refused the image size ({detail}); lower max_image_bytes= (now {clf.max_image_bytes:,})"
        )
    if status == 503 and code == "ErrorPredictionModelNotCached":
        return ModelNotReadyError(f"the iteration is still loading ({detail})", retry_after=retry_after, **common)
    if status >= 500:
        return ServiceError(f"Custom Vision failed ({detail})", retry_after=retry_after, **common)
    return ServiceError(f"Custom Vision refused the request ({detail})", retryable=False, **common)


def _error_fields(exc: Any) -> tuple[str, str]:
    """`(code, message)` from either error body shape, or the HTTP reason when the body is not JSON."""
    error = getattr(exc, "error", None)
    code = getattr(error, "code", None)
    message = getattr(error, "message", None)
    if code or message:
        return str(code or ""), str(message or "")
    gateway = (getattr(error, "additional_properties", None) or {}).get("error")
    if isinstance(gateway, Mapping):
        return str(gateway.get("code") or ""), str(gateway.get("message") or "")
    return "", str(exc)


def response_header(response: Any, name: str) -> str | None:
    """A response header's value, or `None` (msrest responses and test doubles alike)."""
    headers = getattr(response, "headers", None)
    if headers is None:
        return None
    value = headers.get(name)
    return str(value) if value is not None else None
