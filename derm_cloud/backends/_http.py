"""Small HTTP facts shared by the remote backends: is an endpoint an emulator, and what a ``requests``
transport failure means.

Internal to :mod:`derm_cloud.backends`; ``requests`` is imported only when a failure is translated.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from derm_cloud.errors import DeadlineExceededError, InvalidResponseError, RemoteError, ServiceError

__all__ = ["is_loopback", "requests_failure"]


def is_loopback(url: str | None) -> bool:
    """Whether ``url`` points at this machine (an emulator): ``localhost`` or a loopback IP address.

    Accepts full URLs and bare ``host[:port]`` endpoints (gRPC and google-api-core take those).

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


def requests_failure(
    exc: BaseException, *, backend: str, target: str | None, check: str, timeout: float | None = None
) -> RemoteError | None:
    """The derm-cloud error for a transport failure raised by ``requests``, or ``None`` for anything else.

    Args:
        exc: what the HTTP call raised (an SDK's inner exception, where it wraps one).
        backend: registry name, for the error.
        target: the URL or endpoint called, for messages.
        check: what the user should check when the host cannot be reached, e.g. ``"endpoint="``.
        timeout: the socket timeout that expired, when known.

    Example:
        >>> import requests
        >>> requests_failure(requests.ConnectTimeout(), backend="azure-ml", target="https://x", check="the URI")
        DeadlineExceededError('no answer from https://x within the timeout')
    """
    import requests

    if isinstance(exc, requests.Timeout):
        within = "the timeout" if timeout is None else f"{timeout:g} s"
        return DeadlineExceededError(f"no answer from {target} within {within}", backend=backend)
    if isinstance(exc, (requests.exceptions.ChunkedEncodingError, requests.exceptions.ContentDecodingError)):
        return InvalidResponseError(f"the answer was cut off or undecodable ({type(exc).__name__})", backend=backend)
    if isinstance(exc, requests.ConnectionError):
        return ServiceError(
            f"cannot reach {target} ({type(exc).__name__}); check {check} and the network",
            backend=backend,
            retryable=True,
        )
    return None
