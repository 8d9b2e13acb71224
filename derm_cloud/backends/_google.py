"""Google Cloud API plumbing shared by the Vertex AI and Cloud Vision backends.

`translate_google_error` is the one place where google-api-core, google-auth, requests and protobuf errors
become derm-cloud errors (status names for gRPC, Retry-After or `google.rpc.RetryInfo` kept for throttling);
`talks_grpc` tells the retry policy whether a client's timeout bounds the whole call.
"""

from __future__ import annotations

from typing import Any

from derm_cloud.backends._http import cut_off_error, is_loopback
from derm_cloud.errors import (
    AuthenticationError,
    ConfigError,
    DeadlineExceededError,
    DermCloudError,
    InvalidResponseError,
    MissingDependencyError,
    NotFoundError,
    PayloadTooLargeError,
    RemoteError,
    ServiceError,
    ThrottledError,
)
from derm_cloud.retry import retry_after_seconds

__all__ = ["prediction_service_client", "talks_grpc", "translate_google_error"]


def _retry_after(exc: Any) -> float | None:
    """Seconds to wait from a Retry-After header (REST) or a google.rpc.RetryInfo detail (REST or gRPC)."""
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    if headers is not None:
        seconds = retry_after_seconds(headers.get("Retry-After"))
        if seconds is not None:
            return seconds
    for detail in getattr(exc, "details", None) or ():
        if isinstance(detail, dict) and detail.get("@type", "").endswith("google.rpc.RetryInfo"):
            delay = str(detail.get("retryDelay", "")).rstrip("s")
            try:
                return float(delay)
            except ValueError:
                continue
        delay_pb = getattr(detail, "retry_delay", None)
        if delay_pb is not None:
            return float(delay_pb.seconds) + float(delay_pb.nanos) / 1e9
    return None


def talks_grpc(client: Any) -> bool:
    """Whether a Google API client uses its gRPC transport.

    gRPC turns the per-call `timeout` into a deadline on the whole call, so the retry policy can run the
    call on the caller's thread; the REST transport's timeout (requests) bounds each socket read only.
    """
    transport = getattr(client, "transport", None)
    return type(transport).__module__.rsplit(".", 1)[-1] == "grpc"


def translate_google_error(
    exc: BaseException, *, backend: str, service: str, transport: str = "rest", what: str = ""
) -> DermCloudError | None:
    """The one place where google-api-core, google-auth, requests and protobuf errors become derm-cloud errors.

    Returns `None` for anything else (an `AttributeError` or `KeyError` from our own code, say): the caller
    re-raises it unchanged, so a programming error is never disguised as a non-retryable service failure.

    Args:
        exc: what the SDK raised.
        backend: registry name, for the error.
        service: `"Vertex AI"` or `"Cloud Vision"`, for messages.
        transport: `rest` or `grpc` (gRPC errors report the status code name).
        what: the resource called, for not-found messages.
    """
    from google.api_core import exceptions as gexc
    from google.auth import exceptions as auth_exc
    from google.protobuf import json_format
    from google.protobuf import message as pb_message

    if isinstance(exc, RemoteError):
        return exc
    if isinstance(exc, auth_exc.GoogleAuthError):
        hint = (
            "the server answered 401 and anonymous credentials cannot be refreshed; pass real credentials"
            if isinstance(exc, auth_exc.InvalidOperation)
            else "run `gcloud auth application-default login`, set GOOGLE_APPLICATION_CREDENTIALS, or pass credentials="
        )
        return AuthenticationError(f"{service} credentials failed ({exc}); {hint}", backend=backend, status=401)
    if isinstance(exc, json_format.ParseError):
        return InvalidResponseError(
            f"{service} answered a body that is not its documented JSON: {exc}", backend=backend
        )
    if isinstance(exc, pb_message.DecodeError):
        return cut_off_error(service, exc, backend=backend)
    if isinstance(exc, gexc.GoogleAPICallError):
        return _from_api_call_error(exc, backend=backend, service=service, transport=transport, what=what)
    if isinstance(exc, gexc.GoogleAPIError):  # RetryError, DuplicateCredentialArgs ...: SDK-side, not a status
        return ServiceError(f"{service} call failed: {type(exc).__name__}: {exc}", backend=backend, retryable=False)
    try:
        import requests
    except ImportError:  # pragma: no cover - the REST transport depends on requests
        requests = None  # type: ignore[assignment]
    if requests is not None and isinstance(exc, requests.exceptions.RequestException):
        if isinstance(exc, requests.exceptions.Timeout):
            return DeadlineExceededError(f"{service} did not answer in time ({exc})", backend=backend)
        if isinstance(exc, requests.exceptions.SSLError):
            return ServiceError(
                f"TLS handshake with {service} failed ({exc}); for a plain-http emulator pass "
                "api_endpoint='http://127.0.0.1:PORT' (the scheme is required)",
                backend=backend,
                retryable=False,
            )
        if isinstance(exc, (requests.exceptions.ChunkedEncodingError, requests.exceptions.ContentDecodingError)):
            return cut_off_error(service, exc, backend=backend)
        return ServiceError(f"cannot reach {service} ({exc}); check api_endpoint and the network", backend=backend)
    if isinstance(exc, ValueError) and "api_endpoint" in str(exc):
        return ConfigError(f"{service} client options are invalid: {exc}")
    return None


def _from_api_call_error(exc: Any, *, backend: str, service: str, transport: str, what: str) -> DermCloudError:
    from google.api_core import exceptions as gexc

    code = getattr(exc, "grpc_status_code", None)
    status: int | str | None = code.name if transport == "grpc" and code is not None else exc.code
    message = (exc.message or str(exc)).rstrip(".")
    common: dict[str, Any] = {"backend": backend, "status": status}
    if isinstance(exc, (gexc.TooManyRequests, gexc.ResourceExhausted)):
        return ThrottledError(
            f"{service} quota or capacity exhausted: {message}", retry_after=_retry_after(exc), **common
        )
    if isinstance(exc, (gexc.Unauthorized, gexc.Unauthenticated, gexc.Forbidden, gexc.PermissionDenied)):
        return AuthenticationError(
            f"{service} refused the credentials: {message}. Check the account has the role to call "
            f"{what or 'the resource'} (Vertex: roles/aiplatform.user)",
            **common,
        )
    if isinstance(exc, gexc.NotFound):
        return NotFoundError(
            f"{service} has no {what or 'such resource'}: {message}. Check project, location and id, and that a "
            "model is deployed",
            **common,
        )
    if isinstance(exc, (gexc.DeadlineExceeded, gexc.GatewayTimeout)):
        return DeadlineExceededError(f"{service} did not answer in time: {message}", **common)
    if isinstance(exc, (gexc.BadRequest, gexc.InvalidArgument)) and "api key" in message.lower():
        return AuthenticationError(f"{service} rejected the API key: {message}. Check api_key=", **common)
    if isinstance(exc, (gexc.BadRequest, gexc.InvalidArgument)):
        if "payload size" in message.lower():
            return PayloadTooLargeError(
                f"{service} rejected the request as too large ({message}); lower max_request_bytes so images are "
                "re-encoded smaller"
            )
        hint = "Check schema= matches the deployed model" if service == "Vertex AI" else "Check the image and options"
        return ServiceError(
            f"{service} rejected the request (invalid argument): {message}. {hint}", retryable=False, **common
        )
    if isinstance(exc, gexc.InternalServerError) and "deserializ" in message.lower():
        # gRPC delivered a message whose bytes do not decode: the same rule as a cut-off HTTP body.
        return cut_off_error(service, exc, **common)
    if isinstance(exc, (gexc.ServerError, gexc.Aborted, gexc.Cancelled)):
        return ServiceError(f"{service} failed on its side: {message}", **common)
    return ServiceError(f"{service} error {status}: {message}", retryable=False, **common)


def prediction_service_client(
    *, backend: str, transport: str, api_endpoint: str, credentials: Any, channel: Any = None
) -> Any:
    """A Vertex AI `PredictionServiceClient` for a classifier or an embedder endpoint, errors translated.

    An injected gRPC `channel` carries its own security (the SDK would otherwise insist on TLS). With no
    credentials and an endpoint on this machine (an emulator), anonymous credentials are used: otherwise
    google-auth looks for Application Default Credentials, which a command line cannot pass.
    """
    try:
        from google.cloud import aiplatform_v1
    except ImportError as exc:
        raise MissingDependencyError(
            f"the {backend} backend needs google-cloud-aiplatform; run: pip install 'derm-cloud[vertex]'"
        ) from exc
    try:
        if channel is not None:
            from google.cloud.aiplatform_v1.services.prediction_service.transports.grpc import (
                PredictionServiceGrpcTransport,
            )

            return aiplatform_v1.PredictionServiceClient(transport=PredictionServiceGrpcTransport(channel=channel))
        if credentials is None and is_loopback(api_endpoint):
            from google.auth.credentials import AnonymousCredentials

            credentials = AnonymousCredentials()  # type: ignore[no-untyped-call]
        return aiplatform_v1.PredictionServiceClient(
            transport=transport, credentials=credentials, client_options={"api_endpoint": api_endpoint}
        )
    except Exception as exc:
        translated = translate_google_error(exc, backend=backend, service="Vertex AI")
        if translated is None:
            raise
        raise translated from exc
