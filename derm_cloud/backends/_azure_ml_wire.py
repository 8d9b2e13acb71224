"""The wire of the `azure-ml` backend: request size, the HTTP session it posts with, one JSON row as sent.

Shared by `derm_cloud.backends.azure_ml`, its error translation (which names the size limit) and the
MedImageInsight embedder, which posts to a managed online endpoint the same way.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any, Protocol
from urllib.parse import urlsplit

from derm_cloud.errors import AuthenticationError, MissingDependencyError

__all__ = ["DEFAULT_MAX_REQUEST_BYTES", "HttpSession", "request_headers"]

#: Largest request body we send. The service's payload limit is not documented (docs/reference/cloud-apis.md 4.3); 4 MiB
#: stays far below the 5 MBPS per-endpoint bandwidth cap and fits every derm-cloud adapter.
DEFAULT_MAX_REQUEST_BYTES = 4 * 1024 * 1024


class HttpSession(Protocol):
    """What the backend needs from `requests.Session` (inject one for proxies, mTLS or tests)."""

    def post(self, url: str, *, data: bytes, headers: Mapping[str, str], timeout: float) -> Any: ...

    def close(self) -> None: ...


def request_headers(authorization: Callable[[], str], deployment: str | None, *, backend: str) -> dict[str, str]:
    """One scoring request's headers: JSON both ways, `Authorization`, and the deployment to route to, if any.

    Raises:
        AuthenticationError: the credential or token provider could not give a token.
    """
    try:
        header = authorization()
    except Exception as exc:  # azure-identity and user token providers raise their own types
        raise AuthenticationError(
            f"could not get a token for the endpoint ({type(exc).__name__}: {exc}); check the credential "
            "(az login, managed identity) or pass key=",
            backend=backend,
        ) from exc
    headers = {"Content-Type": "application/json", "Accept": "application/json", "Authorization": header}
    if deployment:
        headers["azureml-model-deployment"] = deployment
    return headers


def _region_from_uri(uri: str) -> str | None:
    host = urlsplit(uri).hostname or ""
    parts = host.split(".")
    return parts[1] if host.endswith(".inference.ml.azure.com") and len(parts) == 6 else None


def _new_session() -> HttpSession:
    try:
        import requests
    except ImportError as exc:
        raise MissingDependencyError(
            "the azure-ml backend needs requests; run: pip install 'derm-cloud[azure]'"
        ) from exc
    return requests.Session()  # type: ignore[no-any-return]


def _row_json(row: Any) -> str:
    """One `data` row as json.dumps writes it: the base64 image (never escaped) spliced in, then the rest."""
    if isinstance(row, str):
        return '"' + row + '"'
    image: str = row[0]
    return '["' + image + '", ' + json.dumps(row[1:], ensure_ascii=True)[1:]
