"""The wire of the `azure-ml` backend: request size, the HTTP session it posts with, one JSON row as sent.

Shared by `derm_cloud.backends.azure_ml` and its error translation (which names the size limit).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Protocol
from urllib.parse import urlsplit

from derm_cloud.errors import MissingDependencyError

__all__ = ["DEFAULT_MAX_REQUEST_BYTES", "HttpSession"]

#: Largest request body we send. The service's payload limit is not documented (docs/reference/cloud-apis.md 4.3); 4 MiB
#: stays far below the 5 MBPS per-endpoint bandwidth cap and fits every derm-cloud adapter.
DEFAULT_MAX_REQUEST_BYTES = 4 * 1024 * 1024


class HttpSession(Protocol):
    """What the backend needs from `requests.Session` (inject one for proxies, mTLS or tests)."""

    def post(self, url: str, *, data: bytes, headers: Mapping[str, str], timeout: float) -> Any: ...

    def close(self) -> None: ...


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
