"""An in-memory Azure Blob Storage answering the calls `azure-storage-blob` makes for small blocks, path-style.

Addresses are Azurite's path style, `http://127.0.0.1:PORT/<account>/<container>/<blob>`, which the SDK uses when
`account_url` carries the account as a path. Routes (https://learn.microsoft.com/rest/api/storageservices/):
`PUT` Put Blob (`x-ms-blob-type: BlockBlob`, one request: what `upload_blob` sends below 64 MiB), `GET
?restype=container&comp=list&prefix=` List Blobs (one XML page), `GET` Get Blob (a ranged read answers 206 with
`Content-Range`, as the SDK's first download request asks). Errors carry `x-ms-error-code`.
"""

from __future__ import annotations

import base64
import hashlib
import threading
import uuid
from collections.abc import Mapping
from email.utils import formatdate
from urllib.parse import parse_qs, unquote, urlsplit
from xml.sax.saxutils import escape

from derm_cloud.testing.emulators.base import Response, header_value

__all__ = ["BlobStore"]

_VERSION = "2025-01-05"


class BlobStore:
    """Blobs by `(container, name)` for one storage account, plus the REST routes over them."""

    def __init__(self, account: str = "devstoreaccount1") -> None:
        self.account = account
        self.blobs: dict[tuple[str, str], bytes] = {}
        self._lock = threading.Lock()

    def owns(self, path: str) -> bool:
        """Whether a request path addresses this account."""
        return urlsplit(path).path.startswith(f"/{self.account}/")

    def put(self, container: str, name: str, data: bytes) -> None:
        with self._lock:
            self.blobs[(container, name)] = data

    def get(self, container: str, name: str) -> bytes | None:
        with self._lock:
            return self.blobs.get((container, name))

    def names(self, container: str, prefix: str) -> list[str]:
        with self._lock:
            return sorted(n for (c, n) in self.blobs if c == container and n.startswith(prefix))

    def handle(self, method: str, path: str, headers: Mapping[str, str], body: bytes) -> Response:
        parts = urlsplit(path)
        query = parse_qs(parts.query)
        container, _, name = parts.path[len(f"/{self.account}/") :].partition("/")
        container, name = unquote(container), unquote(name)
        if method == "GET" and not name and (query.get("comp") or [""])[0] == "list":
            return self._list(container, (query.get("prefix") or [""])[0])
        if method == "PUT" and name:
            if (header_value(headers, "x-ms-blob-type") or "") != "BlockBlob":
                return _error(400, "InvalidHeaderValue", "only x-ms-blob-type BlockBlob (Put Blob) is emulated")
            self.put(container, name, body)
            return Response(201, b"", {**_common(), **_etag(body), "x-ms-request-server-encrypted": "true"})
        if method in ("GET", "HEAD") and name:
            data = self.get(container, name)
            if data is None:
                return _error(404, "BlobNotFound", "The specified blob does not exist.")
            return self._download(data, header_value(headers, "x-ms-range") or header_value(headers, "Range"))
        return _error(400, "UnsupportedHttpVerb", f"{method} {parts.path} is not emulated")

    def _download(self, data: bytes, wanted: str | None) -> Response:
        headers = {
            **_common(),
            **_etag(data),
            "x-ms-blob-type": "BlockBlob",
            "Content-Type": "application/octet-stream",
        }
        if not wanted or not data:
            return Response(200, data, headers)
        first, _, last = wanted.partition("=")[2].partition("-")
        start, end = int(first or 0), min(int(last or len(data) - 1), len(data) - 1)
        headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
        return Response(206, data[start : end + 1], headers)

    def _list(self, container: str, prefix: str) -> Response:
        items = []
        for name in self.names(container, prefix):
            data = self.get(container, name) or b""
            items.append(
                f"<Blob><Name>{escape(name)}</Name><Properties><Last-Modified>{formatdate(usegmt=True)}"
                f"</Last-Modified><Etag>{_etag(data)['ETag']}</Etag><Content-Length>{len(data)}</Content-Length>"
                "<Content-Type>application/octet-stream</Content-Type><BlobType>BlockBlob</BlobType>"
                "</Properties></Blob>"
            )
        xml = (
            '<?xml version="1.0" encoding="utf-8"?>'
            f'<EnumerationResults ServiceEndpoint="http://127.0.0.1/{self.account}" '
            f'ContainerName="{escape(container)}">'
            f"<Prefix>{escape(prefix)}</Prefix><Blobs>{''.join(items)}</Blobs><NextMarker /></EnumerationResults>"
        )
        return Response(200, xml.encode(), {**_common(), "Content-Type": "application/xml"})


def _common() -> dict[str, str]:
    return {"x-ms-request-id": str(uuid.uuid4()), "x-ms-version": _VERSION, "Date": formatdate(usegmt=True)}


def _etag(data: bytes) -> dict[str, str]:
    digest = hashlib.md5(data).digest()  # the service's Content-MD5, not security
    return {
        "ETag": f'"0x{digest.hex()[:16].upper()}"',
        "Last-Modified": formatdate(usegmt=True),
        "Content-MD5": base64.b64encode(digest).decode(),
    }


def _error(status: int, code: str, message: str) -> Response:
    body = (
        f'<?xml version="1.0" encoding="utf-8"?><Error><Code>{code}</Code><Message>{escape(message)}</Message></Error>'
    )
    return Response(status, body.encode(), {**_common(), "x-ms-error-code": code, "Content-Type": "application/xml"})
