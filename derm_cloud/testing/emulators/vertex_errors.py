"""Google's error answers for the Vertex AI emulators: the REST JSON envelope and the gRPC status names.

Shared by `vertex.py` (REST), `vertex_grpc.py` (gRPC) and `cloud_vision.py`, which answer in the same forms.
"""

from __future__ import annotations

from typing import Any

from derm_cloud.testing.emulators.base import Response, retry_after_header

_GRPC_CODES = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND"}
_GRPC_CODES |= {409: "ABORTED", 429: "RESOURCE_EXHAUSTED", 499: "CANCELLED", 500: "INTERNAL", 501: "UNIMPLEMENTED"}
_GRPC_CODES |= {503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}


class _GoogleError(Exception):
    """An error answer: HTTP status, gRPC status name, message, optional retry delay in seconds."""

    def __init__(self, http: int, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.http = http
        self.status = _GRPC_CODES.get(http, "UNKNOWN")
        self.retry_after = retry_after

    def envelope(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.http, "message": str(self), "status": self.status}
        if self.retry_after is not None:
            error["details"] = [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": _duration(self)}]
        return {"error": error}

    def response(self) -> Response:
        """The REST answer: the JSON envelope, with `Retry-After` when a retry delay is set."""
        return Response.json(self.envelope(), self.http, retry_after_header(self.retry_after))


def _duration(error: _GoogleError) -> str:
    """`retry_after` as protobuf's JSON printer writes a Duration (`"0.500s"`, `"2s"`), as Google sends it."""
    from google.protobuf import duration_pb2

    delay = duration_pb2.Duration()
    delay.FromNanoseconds(round((error.retry_after or 0.0) * 1e9))
    return str(delay.ToJsonString())
