"""An in-memory Cloud Storage that answers the JSON API routes `google-cloud-storage` uses, for batch emulators.

Routes (https://cloud.google.com/storage/docs/json_api/v1/objects): `POST /upload/storage/v1/b/{bucket}/o?
uploadType=multipart` (the client's upload of small objects: a `multipart/related` body, JSON metadata then the
bytes), `GET /storage/v1/b/{bucket}/o?prefix=` (list, one page), `GET /storage/v1/b/{bucket}/o/{object}` (the
object resource) and `GET /download/storage/v1/b/{bucket}/o/{object}?alt=media` (the bytes, with the
`x-goog-hash` header the client checks downloads against). Errors in Google's envelope.

An emulator that holds a `GcsStore` hands it the requests whose path starts with `/storage/`, `/upload/` or
`/download/` (`GcsStore.owns`), and reads or writes objects directly for its jobs.
"""

from __future__ import annotations

import base64
import email.parser
import email.policy
import hashlib
import json
import threading
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

from derm_cloud.testing.emulators.base import Response, header_value

__all__ = ["GcsStore", "gcs_hashes", "split_gs_uri"]


def gcs_hashes(data: bytes) -> str:
    """The `x-goog-hash` header GCS sends: `crc32c=<b64>,md5=<b64>`."""
    import google_crc32c

    crc = base64.b64encode(google_crc32c.value(data).to_bytes(4, "big")).decode()
    md5 = base64.b64encode(hashlib.md5(data).digest()).decode()  # GCS's own checksum, not security
    return f"crc32c={crc},md5={md5}"


def split_gs_uri(uri: str) -> tuple[str, str]:
    """`gs://bucket/a/b` -> `("bucket", "a/b")`.

    Raises:
        ValueError: not a `gs://` URI with a bucket.
    """
    if not uri.startswith("gs://") or len(uri) <= len("gs://"):
        raise ValueError(f"{uri!r} is not a Cloud Storage URI (gs://bucket/path)")
    bucket, _, name = uri[len("gs://") :].partition("/")
    return bucket, name


class GcsStore:
    """Objects by `(bucket, name)`, thread-safe, plus the JSON API routes over them."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], bytes] = {}
        self._lock = threading.Lock()

    def put(self, bucket: str, name: str, data: bytes) -> None:
        with self._lock:
            self.objects[(bucket, name)] = data

    def get(self, bucket: str, name: str) -> bytes | None:
        with self._lock:
            return self.objects.get((bucket, name))

    def names(self, bucket: str, prefix: str) -> list[str]:
        with self._lock:
            return sorted(n for (b, n) in self.objects if b == bucket and n.startswith(prefix))

    @staticmethod
    def owns(path: str) -> bool:
        """Whether a request path is a Cloud Storage route."""
        return path.startswith(("/storage/", "/upload/", "/download/"))

    def handle(self, method: str, path: str, headers: Mapping[str, str], body: bytes, base_url: str) -> Response:
        parts = urlsplit(path)
        query = parse_qs(parts.query)
        segments = parts.path.split("/")
        # /storage/v1/b/{bucket}/o[/{object}], /upload/storage/v1/b/{bucket}/o, /download/storage/v1/b/{bucket}/o/{obj}
        start = 1 if segments[1] == "storage" else 2
        if len(segments) < start + 4 or segments[start + 2] != "b" or segments[start + 4 : start + 5] != ["o"]:
            return _error(404, f"{method} {parts.path} is not a Cloud Storage route this emulator serves")
        bucket = unquote(segments[start + 3])
        name = unquote("/".join(segments[start + 5 :]))
        if segments[1] == "upload" and method == "POST":
            return self._upload(bucket, headers, body, query, base_url)
        if method == "GET" and not name:
            prefix = (query.get("prefix") or [""])[0]
            items = [
                self._resource(bucket, n, self.get(bucket, n) or b"", base_url) for n in self.names(bucket, prefix)
            ]
            return Response.json({"kind": "storage#objects", "items": items})
        if method == "GET":
            data = self.get(bucket, name)
            if data is None:
                return _error(404, f"No such object: {bucket}/{name}")
            if (query.get("alt") or [""])[0] == "media":
                return Response(
                    200, data, {"Content-Type": "application/octet-stream", "x-goog-hash": gcs_hashes(data)}
                )
            return Response.json(self._resource(bucket, name, data, base_url))
        return _error(405, f"{method} is not supported on {parts.path} by this emulator")

    def _upload(
        self, bucket: str, headers: Mapping[str, str], body: bytes, query: dict[str, list[str]], base_url: str
    ) -> Response:
        kind = (query.get("uploadType") or [""])[0]
        if kind == "media":
            name = (query.get("name") or [""])[0]
            data = body
        elif kind == "multipart":
            content_type = header_value(headers, "Content-Type") or ""
            message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
                f"Content-Type: {content_type}\r\n\r\n".encode() + body
            )
            parts = [p for p in message.iter_parts()]  # type: ignore[attr-defined]
            if len(parts) != 2:
                return _error(400, "a multipart upload needs two parts: the JSON metadata, then the object's bytes")
            raw_metadata, raw_data = (part.get_payload(decode=True) for part in parts)
            metadata = json.loads(raw_metadata if isinstance(raw_metadata, bytes) else b"{}")
            name = str(metadata.get("name") or (query.get("name") or [""])[0])
            data = raw_data if isinstance(raw_data, bytes) else b""
        else:
            return _error(400, f"uploadType {kind!r} is not emulated; objects this small upload as multipart")
        if not name:
            return _error(400, "the upload names no object")
        self.put(bucket, name, data)
        return Response.json(self._resource(bucket, name, data, base_url))

    @staticmethod
    def _resource(bucket: str, name: str, data: bytes, base_url: str) -> dict[str, Any]:
        quoted = quote(name, safe="")
        return {
            "kind": "storage#object",
            "id": f"{bucket}/{name}/1",
            "bucket": bucket,
            "name": name,
            "size": str(len(data)),
            "generation": "1",
            "md5Hash": base64.b64encode(hashlib.md5(data).digest()).decode(),  # GCS's own checksum, not security
            "mediaLink": f"{base_url}/download/storage/v1/b/{bucket}/o/{quoted}?generation=1&alt=media",
        }


def _error(status: int, message: str) -> Response:
    names = {400: "INVALID_ARGUMENT", 404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}
    return Response.json(
        {"error": {"code": status, "message": message, "status": names.get(status, "INTERNAL")}}, status
    )
