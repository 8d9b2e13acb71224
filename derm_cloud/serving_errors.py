"""Errors a serving adapter answers with, each carrying the HTTP status to send, and the response they become.

Split from `derm_cloud.serving` (which re-exports every name) so that the HTTP layer and the decode budget
(`derm_cloud.serving_limits`) can raise them without importing the model server.
"""

from __future__ import annotations

import json
import logging
from typing import NamedTuple

from derm_cloud.errors import DermCloudError

__all__ = [
    "BadRequestError",
    "NotAcceptableError",
    "RequestTooLargeError",
    "Served",
    "ServerBusyError",
    "ServingError",
    "UnsupportedMediaTypeError",
    "error_response",
]

logger = logging.getLogger("derm_cloud.serving")
_JSON = "application/json"


class Served(NamedTuple):
    """A response body and its content type."""

    body: bytes
    content_type: str


class ServingError(DermCloudError):
    """A request the server cannot answer; `status` is the HTTP status the adapter sends.

    Server-side only: a backend calling a hosted model sees the cloud's error instead (e.g. SageMaker ModelError).
    """

    status = 500
    code = "InternalError"

    def response(self) -> Served:
        """The JSON error body: `{"error": {"code": ..., "message": ...}}`."""
        return Served(json.dumps({"error": {"code": self.code, "message": str(self)}}).encode(), _JSON)


class BadRequestError(ServingError):
    """The body is not a valid request (bad JSON, missing field, not an image): HTTP 400."""

    status = 400
    code = "BadRequest"


class RequestTooLargeError(ServingError):
    """The body exceeds the server's limit: HTTP 413."""

    status = 413
    code = "PayloadTooLarge"


class UnsupportedMediaTypeError(ServingError):
    """The request content type is not one this format accepts: HTTP 415."""

    status = 415
    code = "UnsupportedMediaType"


class NotAcceptableError(ServingError):
    """The `Accept` header asks for a type the server cannot produce: HTTP 406."""

    status = 406
    code = "NotAcceptable"


class ServerBusyError(ServingError):
    """The server is at its concurrency or decode-memory limit right now: HTTP 503 with `Retry-After`.

    Attributes:
        retry_after: whole seconds the client should wait before retrying (sent as the `Retry-After` header).
    """

    status = 503
    code = "ServiceUnavailable"

    def __init__(self, message: str, *, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = max(1, int(retry_after))


def error_response(exc: BaseException) -> tuple[int, Served]:
    """Status and body for any exception; unexpected ones become a 500 that reveals no internals."""
    if isinstance(exc, ServingError):
        return exc.status, exc.response()
    logger.error("unhandled %s while serving a request", type(exc).__name__, exc_info=exc)
    internal = ServingError(f"internal error ({type(exc).__name__}); see the server log")
    return 500, internal.response()
