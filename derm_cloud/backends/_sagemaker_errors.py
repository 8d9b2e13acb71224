"""Error translation of the `sagemaker` backend: an `invoke_endpoint` `ClientError` as a derm-cloud error.

The one place SageMaker's error codes are read; each message names the endpoint and, where there is one, the fix.
"""

from __future__ import annotations

from typing import Any

from derm_cloud.backends._boto import client_error_facts
from derm_cloud.errors import (
    AuthenticationError,
    ConfigError,
    DermCloudError,
    InvalidImageError,
    ModelNotReadyError,
    NotFoundError,
    ServiceError,
    ThrottledError,
)

__all__ = ["translate_client_error"]

_AUTH_CODES = frozenset(
    {
        "AccessDeniedException",
        "AccessDenied",
        "UnrecognizedClientException",
        "InvalidSignatureException",
        "IncompleteSignature",
        "MissingAuthenticationToken",
        "ExpiredTokenException",
        "InvalidClientTokenId",
    }
)
_THROTTLE_CODES = frozenset({"ThrottlingException", "Throttling", "TooManyRequestsException"})
_SERVER_CODES = frozenset(
    {"InternalFailure", "ServiceUnavailable", "InternalDependencyException", "InternalStreamFailure"}
)
# A model answering one of these is overloaded or behind a failing proxy; another attempt may succeed. Other
# statuses from the model (400 bad input, 500 crash on this image) would fail the same way again.
_TRANSIENT_MODEL_STATUSES = frozenset({429, 502, 503, 504})


def translate_client_error(exc: Any, where: str, *, backend: str, region: str | None) -> DermCloudError:
    """A botocore `ClientError` from `invoke_endpoint` on `where` (the endpoint, for messages) as our error."""
    response = exc.response
    facts = client_error_facts(response, backend=backend)
    code, message, status, common = facts.code, facts.message, facts.status, facts.common
    if code == "ModelNotReadyException":
        return ModelNotReadyError(
            f"{where} is not ready yet (serverless cold start or model loading): {message}", **common
        )
    if code == "ModelError":
        original = response.get("OriginalStatusCode")
        common["status"] = original if original is not None else status
        detail = str(response.get("OriginalMessage") or message)[:300]
        logs = f"; container logs: {response['LogStreamArn']}" if response.get("LogStreamArn") else ""
        return ServiceError(
            f"the model behind {where} failed with HTTP {original}: {detail}{logs}",
            retryable=original in _TRANSIENT_MODEL_STATUSES,
            **common,
        )
    if code in _THROTTLE_CODES or status == 429:
        return ThrottledError(f"{where} is throttling requests: {message or code}", **common)
    if code in _AUTH_CODES or status in (401, 403):
        return AuthenticationError(
            f"AWS refused the credentials or permissions for {where} ({code}: {message}); the caller needs "
            "sagemaker:InvokeEndpoint on the endpoint",
            **common,
        )
    lowered = message.lower()
    if code == "ValidationError" and "endpoint" in lowered and "not found" in lowered:
        return NotFoundError(
            f"{where} does not exist in region {region!r} ({message}); check endpoint_name and region",
            **common,
        )
    if code == "ValidationError":
        if any(word in lowered for word in ("too large", "payload", "body", "content")):
            return InvalidImageError(f"{where} rejected the request body: {message}")
        return ConfigError(f"{where} rejected the request: {message}; check target_variant and options")
    if code in _SERVER_CODES or (isinstance(status, int) and status >= 500):
        return ServiceError(f"{where} failed on the AWS side ({code}: {message})", **common)
    if status == 404:
        return NotFoundError(f"{where} not found ({code}: {message})", **common)
    return ServiceError(f"{where} call failed ({code}: {message})", retryable=False, **common)
