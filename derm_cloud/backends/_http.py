"""Small HTTP facts shared by the remote backends: is an endpoint an emulator, and what a `requests`
transport failure means.

Internal to `derm_cloud.backends`; `requests` is imported only when a failure is translated.
"""

from __future__ import annotations

import ipaddress
from typing import Any
from urllib.parse import urlsplit

from derm_cloud.errors import DeadlineExceededError, RemoteError, ServiceError

__all__ = ["cut_off_error", "is_cut_off", "is_loopback", "requests_failure"]


def is_loopback(url: str | None) -> bool:
    """Whether `url` points at this machine (an emulator): `localhost` or a loopback IP address.

    Accepts full URLs and bare `host[:port]` endpoints (gRPC and google-api-core take those).

    Example:
        >>> is_loopback("http://127.0.0.1:8080/score"), is_loopback("localhost:443"), is_loopback(None)
        (True, True, False)
    """
    text = url or ""
    host = urlsplit(text if "//" in text else f"//{text}").hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# Exception class names, anywhere in the cause chain, that mean the answer stopped before its declared end:
# requests, urllib3 and http.client (IncompleteRead), botocore (streaming errors), protobuf and gRPC (a message
# that does not decode because bytes are missing).
_CUT_OFF_TYPES = frozenset(
    {"ChunkedEncodingError", "IncompleteRead", "IncompleteReadError", "ResponseStreamingError", "DecodeError"}
)
_CUT_OFF_WORDS = ("incompleteread", "incomplete chunked read", "without sending complete message body")


def is_cut_off(exc: BaseException) -> bool:
    """Whether `exc` (or what it wraps) says the provider's answer was cut off in transit."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if type(current).__name__ in _CUT_OFF_TYPES:
            return True
        text = str(current).lower()
        if any(word in text for word in _CUT_OFF_WORDS):
            return True
        inner = getattr(current, "inner_exception", None)  # msrest wraps without a __cause__
        current = current.__cause__ or current.__context__ or (inner if isinstance(inner, BaseException) else None)
    return False


def cut_off_error(service: str, exc: BaseException, **common: Any) -> ServiceError:
    """The one rule for a truncated answer, in every backend: a retryable `ServiceError`.

    A body that stops before its declared length (or a gRPC message that no longer decodes) says nothing about
    what the provider meant to answer; inference is idempotent, so the call is simply made again.
    """
    return ServiceError(
        f"the answer of {service} was cut off in transit ({type(exc).__name__}); retried like any transient failure",
        retryable=True,
        **common,
    )


def requests_failure(
    exc: BaseException, *, backend: str, target: str | None, check: str, timeout: float | None = None
) -> RemoteError | None:
    """The derm-cloud error for a transport failure raised by `requests`, or `None` for anything else.

    Args:
        exc: what the HTTP call raised (an SDK's inner exception, where it wraps one).
        backend: registry name, for the error.
        target: the URL or endpoint called, for messages.
        check: what the user should check when the host cannot be reached, e.g. `"endpoint="`.
        timeout: the socket timeout that expired, when known.

    Example:
        >>> import requests
        >>> requests_failure(requests.ConnectTimeout(), backend="azure-ml", target="https://x", check="the URI")
        DeadlineExceededError('no answer from https://x within the timeout')
    """
    import requests

    if isinstance(exc, requests.Timeout):
        within = "the timeout" if timeout is None else f"{round(timeout, 2):g} s"
        return DeadlineExceededError(f"no answer from {target} within {within}", backend=backend)
    if isinstance(exc, (requests.exceptions.ChunkedEncodingError, requests.exceptions.ContentDecodingError)):
        return cut_off_error(target or backend, exc, backend=backend)
    if isinstance(exc, requests.ConnectionError):
        return ServiceError(
            f"cannot reach {target} ({type(exc).__name__}); check {check} and the network",
            backend=backend,
            retryable=True,
        )
    return None
