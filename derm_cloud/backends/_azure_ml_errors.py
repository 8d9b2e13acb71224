"""Error translation of the `azure-ml` backend: the one place where a failed call becomes a derm-cloud error.

Scoring calls (`requests`) and workspace look-ups (`azure-ai-ml`, `management=True`) both land here; the
message names the fix, and an echoed image never reaches it (base64 runs are elided).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from derm_cloud.backends._azure_ml_wire import DEFAULT_MAX_REQUEST_BYTES
from derm_cloud.backends._azure_workspace import KEY_ENV
from derm_cloud.backends._http import requests_failure
from derm_cloud.errors import (
    AuthenticationError,
    DeadlineExceededError,
    DermCloudError,
    NotFoundError,
    PayloadTooLargeError,
    ServiceError,
    ThrottledError,
)
from derm_cloud.retry import retry_after_seconds

__all__ = ["BACKEND_NAME", "translate_error"]

#: ``AzureMlClassifier.backend_name``, here so that the translation needs nothing from the classifier's module.
BACKEND_NAME = "azure-ml"
_B64_RUN = re.compile(r"[A-Za-z0-9+/=]{64,}")


def translate_error(
    failure: Any,
    *,
    uri: str,
    deployment: str | None = None,
    timeout: float | None = None,
    max_request_bytes: int | None = None,
    management: bool = False,
) -> DermCloudError:
    """Turn a failed scoring call or workspace lookup (`management=True`) into a derm-cloud error.

    `failure` is a `requests` exception, a non-200 `requests.Response`, or an `azure.core` exception
    raised by `azure-ai-ml` in `AzureMlClassifier.from_workspace`.
    """
    name = BACKEND_NAME
    if isinstance(failure, BaseException):
        transport = requests_failure(failure, backend=name, target=uri, check="the URI", timeout=timeout)
        if transport is not None:
            return transport
        response = getattr(failure, "response", None)
        status = getattr(failure, "status_code", None)
        if status is None:
            kind = AuthenticationError if "Authentication" in type(failure).__name__ else ServiceError
            return kind(f"{type(failure).__name__}: {failure}", backend=name, retryable=False)
        headers: Mapping[str, str] = getattr(response, "headers", None) or {}
        detail = _excerpt(getattr(failure, "message", None) or str(failure))
    else:
        status, headers, detail = failure.status_code, failure.headers, _excerpt(failure.content)
    return _error_for_status(
        int(status),
        headers,
        detail,
        uri=uri,
        deployment=deployment,
        max_request_bytes=max_request_bytes,
        management=management,
    )


def _error_for_status(
    status: int,
    headers: Mapping[str, str],
    detail: str,
    *,
    uri: str,
    deployment: str | None,
    max_request_bytes: int | None,
    management: bool,
) -> DermCloudError:
    """The derm-cloud error for an HTTP status of the endpoint or the workspace (`management=True`)."""
    name = BACKEND_NAME
    common: dict[str, Any] = {
        "backend": name,
        "status": status,
        "request_id": headers.get("x-request-id") or headers.get("x-ms-request-id"),
    }
    retry_after = retry_after_seconds(headers.get("Retry-After"))
    if status in (401, 403) and management:
        return AuthenticationError(
            f"the workspace refused MLClient's credential ({detail}); run `az login` or give the identity a role "
            "on the workspace (e.g. AzureML Data Scientist)",
            **common,
        )
    if status in (401, 403):
        return AuthenticationError(
            f"the endpoint refused the credentials ({detail}). Check key= (or {KEY_ENV}): the endpoint's primary "
            "or secondary key from `az ml online-endpoint get-credentials -n <endpoint>`; with token auth, check "
            "that the identity may score this endpoint",
            **common,
        )
    if status == 404:
        where = f"deployment {deployment!r} at " if deployment else ""
        return NotFoundError(
            f"{where}{uri} was not found ({detail}); check the endpoint and deployment names", **common
        )
    if status in (408, 504):
        return DeadlineExceededError(
            f"the endpoint timed out ({detail}); raise the deployment's request_timeout_ms or send fewer images per "
            "request",
            **common,
        )
    if status == 413:
        return PayloadTooLargeError(
            f"the endpoint refused the request size ({detail}); lower images_per_request= or max_request_bytes= "
            f"(now {max_request_bytes or DEFAULT_MAX_REQUEST_BYTES:,})"
        )
    if status == 429:
        return ThrottledError(f"the endpoint is rate limiting ({detail})", retry_after=retry_after, **common)
    if status == 424:  # Azure ML's "model error": the scoring script raised
        return ServiceError(f"the scoring script failed ({detail})", retryable=False, **common)
    if status >= 500:
        return ServiceError(f"the endpoint failed ({detail})", retry_after=retry_after, **common)
    return ServiceError(f"the endpoint refused the request ({detail})", retryable=False, **common)


def _excerpt(content: bytes | str | None) -> str:
    text = content.decode("utf-8", "replace") if isinstance(content, bytes) else str(content or "")
    # An echoing scoring script could return the image; never carry base64 payloads into messages or logs.
    text = _B64_RUN.sub("<base64 elided>", " ".join(text.split()))
    return text[:240] or "empty body"
