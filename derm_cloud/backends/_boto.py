"""The one way derm-cloud builds a boto3 client and reads its transport failures.

Clients make one attempt per call (the shared RetryPolicy retries) with bounded timeouts and pool; a missing
boto3 or region is an error that names the fix; botocore's own failures (timeouts, credentials, cut-off bodies,
connections) become the same derm-cloud errors in every AWS backend.

Internal to `derm_cloud.backends`; boto3 is imported only when a client is built.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from derm_cloud.backends._http import cut_off_error, is_cut_off
from derm_cloud.errors import (
    AuthenticationError,
    ConfigError,
    DeadlineExceededError,
    DermCloudError,
    MissingDependencyError,
    ServiceError,
)
from derm_cloud.retry import retry_after_seconds

__all__ = ["ClientErrorFacts", "build_boto_client", "client_error_class", "client_error_facts", "translate_botocore"]


def build_boto_client(
    service: str,
    *,
    backend: str,
    region: str | None,
    endpoint_url: str | None,
    connect_timeout: float,
    read_timeout: float,
    pool: int,
) -> Any:
    """A boto3 client for `service` with botocore's own retries off (one attempt per call)."""
    try:
        import boto3
        from botocore.config import Config
        from botocore.exceptions import NoRegionError
    except ImportError as exc:
        raise MissingDependencyError(
            f"the {backend} backend needs boto3; run: pip install 'derm-cloud[sagemaker]'"
        ) from exc
    config = Config(
        retries={"total_max_attempts": 1},  # one attempt: derm-cloud's RetryPolicy owns retries
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        max_pool_connections=pool,
        user_agent_extra="derm-cloud",
    )
    try:
        return boto3.session.Session().client(service, region_name=region, endpoint_url=endpoint_url, config=config)
    except NoRegionError:
        raise ConfigError("no AWS region configured: pass region='eu-west-1' or set AWS_DEFAULT_REGION") from None


def client_error_class() -> type[Exception] | None:
    """botocore's `ClientError` (a service answered with an error), or `None` when botocore is absent."""
    try:
        from botocore.exceptions import ClientError
    except ImportError:
        return None
    error_class: type[Exception] = ClientError
    return error_class


@dataclass(frozen=True)
class ClientErrorFacts:
    """What a botocore `ClientError.response` says: the AWS error code and message, and the keyword arguments
    (backend, status, request id, Retry-After) every derm-cloud error built from it carries."""

    code: str
    message: str
    status: int | None
    common: dict[str, Any]


def client_error_facts(response: Mapping[str, Any], *, backend: str) -> ClientErrorFacts:
    """Read a `ClientError.response` once, the same way for every AWS backend."""
    error = response.get("Error") or {}
    meta = response.get("ResponseMetadata") or {}
    status = meta.get("HTTPStatusCode")
    return ClientErrorFacts(
        code=str(error.get("Code") or ""),
        message=str(error.get("Message") or ""),
        status=status,
        common={
            "backend": backend,
            "status": status,
            "request_id": meta.get("RequestId"),
            "retry_after": retry_after_seconds((meta.get("HTTPHeaders") or {}).get("retry-after")),
        },
    )


def translate_botocore(
    exc: BaseException, *, backend: str, where: str, operation: str, read_timeout: float | None = None
) -> DermCloudError | None:
    """The derm-cloud error for a botocore failure that is not a service answer (`ClientError` is the caller's).

    `read_timeout`: the client's read timeout, named in a timeout's message when known.
    Returns `None` for exceptions that are not botocore's (an injected client's own, or our own bugs).
    """
    try:
        from botocore import exceptions as bx
    except ImportError:  # an injected non-boto client: leave its exceptions alone
        return None
    if is_cut_off(exc):
        return cut_off_error(where, exc, backend=backend)
    if isinstance(exc, bx.ReadTimeoutError) and isinstance(read_timeout, (int, float)):
        return DeadlineExceededError(
            f"{where} did not answer within read_timeout={read_timeout:g} s ({exc})", backend=backend
        )
    if isinstance(exc, (bx.ReadTimeoutError, bx.ConnectTimeoutError)):
        return DeadlineExceededError(f"{where} did not answer in time ({exc})", backend=backend)
    if isinstance(exc, (bx.NoCredentialsError, bx.PartialCredentialsError, bx.CredentialRetrievalError)):
        return AuthenticationError(
            f"no usable AWS credentials ({exc}); configure a profile, environment keys or an IAM role",
            backend=backend,
            retryable=False,
        )
    if isinstance(exc, bx.ParamValidationError):
        return ConfigError(f"invalid {operation} parameters for {where}: {exc}")
    if isinstance(exc, (bx.ConnectionError, bx.HTTPClientError, bx.IncompleteReadError)):
        return ServiceError(f"connection to {where} failed ({type(exc).__name__}: {exc})", backend=backend)
    if type(exc).__module__.startswith("urllib3"):  # a body cut short while reading
        return ServiceError(f"reading the answer of {where} failed ({type(exc).__name__})", backend=backend)
    if isinstance(exc, bx.BotoCoreError):
        return ServiceError(f"{where}: {exc}", backend=backend, retryable=False)
    return None
