"""Azure ML endpoint auth and workspace lookup, for `AzureMlClassifier`.

Kept apart from the hot path: the `Authorization` header for each auth mode (endpoint key, `aml_token` from
the workspace, Entra ID `aad_token` from an azure-identity credential, with cached, renewed tokens), and
`resolve_endpoint`, which uses `azure-ai-ml` once to find an endpoint's scoring URI, auth mode and SKU.
Secrets live only in closures and token caches: never logged, never in `repr()`.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from derm_cloud.errors import ConfigError, MissingDependencyError

__all__ = ["AML_SCOPE", "KEY_ENV", "TokenCredential", "authorization", "resolve_endpoint"]

#: Entra ID scope of Azure ML endpoints (``aad_token`` auth mode).
AML_SCOPE = "https://ml.azure.com/.default"
#: Environment variable holding the endpoint key.
KEY_ENV = "AZUREML_ENDPOINT_KEY"
_TOKEN_MARGIN_S = 300.0  # refresh Entra tokens five minutes before they expire


class TokenCredential(Protocol):
    """An azure-identity style credential: `get_token(scope)` returns an object with `token`, `expires_on`."""

    def get_token(self, *scopes: str, **kwargs: Any) -> Any: ...


def authorization(
    key: str | None, token_provider: Callable[[], str] | None, credential: TokenCredential | str | None
) -> Callable[[], str]:
    """A function returning the `Authorization` header value; the secret lives only in its closure.

    Exactly one of `key` (or `$AZUREML_ENDPOINT_KEY` when no other is given), `token_provider` or
    `credential` must be given.

    Raises:
        ConfigError: none or several of them were given.
    """
    key = key or (os.environ.get(KEY_ENV) if token_provider is None and credential is None else None)
    given = [name for name, v in (("key", key), ("token_provider", token_provider), ("credential", credential)) if v]
    if len(given) != 1:
        raise ConfigError(
            f"pass exactly one of key= (or {KEY_ENV}), token_provider= or credential= for the endpoint's auth "
            f"mode; got {', '.join(given) or 'none'}"
        )
    if key:
        header = f"Bearer {key}"
        return lambda: header
    if token_provider is not None:
        provider = token_provider
        return lambda: f"Bearer {provider()}"
    return _entra_header(_credential(credential))


def _credential(credential: TokenCredential | str | None) -> TokenCredential:
    if not isinstance(credential, str):
        assert credential is not None
        return credential
    if credential != "default":
        raise ConfigError(f"credential must be a credential object or 'default', got {credential!r}")
    try:
        from azure.identity import DefaultAzureCredential
    except ImportError as exc:
        raise MissingDependencyError(
            "credential='default' needs azure-identity; run: pip install azure-identity"
        ) from exc
    return DefaultAzureCredential()  # type: ignore[no-any-return]


class _RenewingToken:
    """A token kept until its renewal time (epoch seconds) passes, then fetched again; thread-safe.

    Args:
        fetch: returns a new `(token, renew_at)`.
    """

    def __init__(self, fetch: Callable[[], tuple[str, float]]) -> None:
        self._fetch = fetch
        self._lock = threading.Lock()
        self._token = ""
        self._renew_at = 0.0

    def __call__(self) -> str:
        with self._lock:
            if time.time() >= self._renew_at:
                self._token, self._renew_at = self._fetch()
            return self._token


def _entra_header(credential: TokenCredential) -> Callable[[], str]:
    """Entra ID tokens for `AML_SCOPE`, renewed five minutes before expiry."""

    def fetch() -> tuple[str, float]:
        access = credential.get_token(AML_SCOPE)
        return str(access.token), float(access.expires_on) - _TOKEN_MARGIN_S

    token = _RenewingToken(fetch)
    return lambda: f"Bearer {token()}"


def _aml_token(ml_client: Any, endpoint_name: str) -> Callable[[], str]:
    """`aml_token` auth: short-lived tokens from `get_keys`, fetched again after `refresh_after_time_utc`."""

    def fetch() -> tuple[str, float]:
        token = ml_client.online_endpoints.get_keys(endpoint_name)
        expiry = float(token.expiry_time_utc or 0)
        return str(token.access_token), float(token.refresh_after_time_utc or 0) or expiry - _TOKEN_MARGIN_S

    return _RenewingToken(fetch)


def resolve_endpoint(
    endpoint_name: str,
    *,
    ml_client: Any,
    subscription_id: str | None,
    resource_group: str | None,
    workspace: str | None,
    credential: TokenCredential | None,
    deployment: str | None,
    translate_error: Callable[..., Exception],
) -> dict[str, Any]:
    """Constructor options for an endpoint: scoring URI, auth, region and the deployment's SKU.

    Used by `from_workspace`; `azure-ai-ml` is imported
    here, once, off the hot path. `translate_error` is the backend's one error translator, handed in so that
    this helper, which the backend imports, does not import the backend back.

    Raises:
        MissingDependencyError: azure-ai-ml is not installed.
        ConfigError: neither `ml_client` nor the three workspace identifiers were given.
        RemoteError: the workspace refused or failed the lookup (translated by the backend's one translator).
    """
    try:
        from azure.ai.ml import MLClient
        from azure.core.exceptions import AzureError
    except ImportError as exc:
        raise MissingDependencyError(
            "AzureMlClassifier.from_workspace needs azure-ai-ml; run: pip install 'derm-cloud[azure-ml-sdk]' "
            "(or pass scoring_uri= and key= directly)"
        ) from exc
    if ml_client is None:
        if not (subscription_id and resource_group and workspace):
            raise ConfigError("pass ml_client=, or subscription_id=, resource_group= and workspace=")
        ml_client = MLClient(credential or _credential("default"), subscription_id, resource_group, workspace)
    try:
        endpoint = ml_client.online_endpoints.get(endpoint_name)
        out: dict[str, Any] = {
            "scoring_uri": endpoint.scoring_uri,
            "endpoint_name": endpoint_name,
            "region": endpoint.location,
        }
        mode = (endpoint.auth_mode or "key").lower()
        if mode == "key":
            out["key"] = ml_client.online_endpoints.get_keys(endpoint_name).primary_key
        elif mode == "aml_token":
            out["token_provider"] = _aml_token(ml_client, endpoint_name)
        else:  # aad_token: Entra tokens from the caller's credential (the one MLClient was built with)
            out["credential"] = credential or getattr(ml_client, "_credential", None) or "default"
        traffic = dict(endpoint.traffic or {})
        name = deployment or (max(traffic, key=lambda k: traffic[k]) if traffic else None)
        if name:
            spec = ml_client.online_deployments.get(name=name, endpoint_name=endpoint_name)
            out["instance_type"] = getattr(spec, "instance_type", None)
            out["instance_count"] = int(getattr(spec, "instance_count", None) or 1)
    except AzureError as exc:
        where = f"online endpoint {endpoint_name!r}"
        raise translate_error(exc, uri=where, deployment=deployment, management=True) from exc
    return out
