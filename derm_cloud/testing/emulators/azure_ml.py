"""An Azure Machine Learning managed online endpoint on 127.0.0.1: scoring plus the management routes the SDK uses.

Scoring (docs/reference/cloud-apis.md section 4.3), what the `azure-ml` backend calls:

```text
POST /score   Authorization: Bearer <key or token>   [azureml-model-deployment: <name>]
{"input_data": {"columns": ["image"], "data": ["<base64>", ...]}}  ->  [{"probs": [...], "labels": [...]}]
```

Each deployment hosts a real model directory through `derm_cloud.serving.ModelServer` (the same core
as the Azure ML adapter's `score.py`), or answers with a function of the request body. Without the header,
requests follow the endpoint's traffic split (smooth weighted round robin: deterministic, exact proportions);
answers carry `azureml-model-deployment` and `x-request-id` like the service.

Management plane, just enough for the real `azure-ai-ml` `MLClient` pointed here with
`AZUREML_DEV_URL_MFE` (docs/reference/cloud-apis.md section 4.4 b): `GET onlineEndpoints/{ep}`, `POST
.../listKeys`,
`POST .../token` (`aml_token` auth), `GET .../deployments` and `GET .../deployments/{name}`, so that
`online_endpoints.get`, `get_keys`, `invoke` and `online_deployments.get` work.

Error bodies: the scoring router's 401 (`key_auth_access_denied`) and 404 are reported in community
sources, not in vendor docs (docs/reference/cloud-apis.md 4.3: unverified); a non-200 answer from the model container
reaches
the client as 424 (Azure ML's "model error"), with the container's body; 429/503 carry `Retry-After`.

Example:
    >>> with AzureMLEmulator(model_dir) as emu:  # doctest: +SKIP
    ...     clf = azure_ml_backend_for(emu, images_per_request=4)
"""

from __future__ import annotations

import json
import re
import secrets
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from derm_cloud.testing.emulators.azure_ml_arm import WORKSPACE_ROUTE, arm_error, arm_unauthorized, in_workspace
from derm_cloud.testing.emulators.azure_ml_deployments import Deployment, Deployments
from derm_cloud.testing.emulators.base import EmulatorServer, Fault, Response, header_value, retry_after_header

if TYPE_CHECKING:
    import os

    from derm_cloud.backends.azure_ml import AzureMlClassifier

__all__ = [
    "DEFAULT_ENDPOINT_KEY",
    "AuthMode",
    "AzureMLEmulator",
    "ScoringCall",
    "azure_ml_backend_for",
    "ml_client_for",
]

DEFAULT_ENDPOINT_KEY = "emulator-endpoint-key"
AuthMode = Literal["key", "aml_token", "aad_token"]
_REST_AUTH = {"key": "Key", "aml_token": "AMLToken", "aad_token": "AADToken"}
_MGMT = re.compile(WORKSPACE_ROUTE + r"/onlineEndpoints/(?P<ep>[^/]+)(?P<rest>/.*)?$", flags=re.IGNORECASE)


@dataclass(frozen=True)
class ScoringCall:
    """One scoring request the emulator answered: which deployment served it and what it received."""

    deployment: str
    body: bytes
    routed_by_header: bool

    def images(self) -> list[bytes]:
        """The decoded images of the request, in order."""
        import base64

        data = json.loads(self.body)["input_data"]["data"]
        return [base64.b64decode(row[0] if isinstance(row, list) else row) for row in data]


class AzureMLEmulator(EmulatorServer):
    """One managed online endpoint with named deployments, hosting real models.

    Args:
        model_dir: model directory of the first deployment (`None`: add deployments with `add_deployment`).
        endpoint_name: the endpoint's name in the management routes.
        deployment: the first deployment's name (it gets 100 % of traffic).
        key: the primary key; a secondary key is generated.
        auth_mode: `key`, `aml_token` (tokens issued by the token route) or `aad_token` (tokens listed in
            `aad_tokens`).
        subscription_id, resource_group, workspace, location: the identifiers the management routes answer to.
        instance_type, instance_count: the first deployment's SKU (reported to `online_deployments.get`).
        host, port: where to listen.
    """

    name = "azure-ml"

    def __init__(
        self,
        model_dir: str | os.PathLike[str] | None = None,
        *,
        endpoint_name: str = "derm-triage",
        deployment: str = "blue",
        key: str = DEFAULT_ENDPOINT_KEY,
        auth_mode: AuthMode = "key",
        subscription_id: str = "00000000-0000-0000-0000-000000000000",
        resource_group: str = "derm-rg",
        workspace: str = "derm-ws",
        location: str = "westeurope",
        instance_type: str = "Standard_DS3_v2",
        instance_count: int = 1,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        super().__init__(host=host, port=port)
        if auth_mode not in _REST_AUTH:
            raise ValueError(f"auth_mode must be one of {', '.join(_REST_AUTH)}, got {auth_mode!r}")
        self.endpoint_name = endpoint_name
        self.key = key
        self.secondary_key = secrets.token_urlsafe(24)
        self.auth_mode: AuthMode = auth_mode
        self.subscription_id = subscription_id
        self.resource_group = resource_group
        self.workspace = workspace
        self.location = location
        self.aad_tokens: set[str] = {"emulator-aad-token"}
        self.aml_token_lifetime = 3600.0
        self.calls: list[ScoringCall] = []
        self._tokens: dict[str, float] = {}  # aml_token -> expiry (epoch seconds)
        self._deployments = Deployments()
        if model_dir is not None:
            self.add_deployment(
                deployment, model_dir, traffic=100, instance_type=instance_type, instance_count=instance_count
            )

    def add_deployment(
        self,
        name: str,
        model_dir: str | os.PathLike[str] | None = None,
        *,
        respond: Callable[[bytes], Response] | None = None,
        traffic: int = 0,
        instance_type: str = "Standard_DS3_v2",
        instance_count: int = 1,
    ) -> None:
        """Add a deployment hosting `model_dir` (or answering `respond(body)`) with a traffic share in %."""
        from derm_cloud.serving import ModelServer

        if (model_dir is None) == (respond is None):
            raise ValueError("pass exactly one of model_dir or respond")
        server = ModelServer(model_dir) if model_dir is not None else None
        self._deployments.add(Deployment(name, server, respond, instance_type, instance_count, traffic))

    def set_traffic(self, traffic: Mapping[str, int]) -> None:
        """Set the traffic split, e.g. `{"blue": 90, "green": 10}` (deployments not named get 0)."""
        self._deployments.set_traffic(traffic)

    @property
    def scoring_uri(self) -> str:
        return f"{self.url}/score"

    @property
    def last_image_bytes(self) -> bytes | None:
        """The last image of the last scoring request, decoded from base64 (`None` before any)."""
        try:
            return self.calls[-1].images()[-1] if self.calls else None
        except (ValueError, KeyError, TypeError, IndexError):
            return None  # the last request was not the AutoML contract

    def reset(self) -> None:
        """Forget recorded requests, scoring calls and pending faults."""
        super().reset()
        self.calls.clear()

    # --- routing ---------------------------------------------------------------------------------------------

    def handle(self, method: str, path: str, headers: Mapping[str, str], body: bytes) -> Response:
        route = urlsplit(path).path
        if route.rstrip("/") == "/score":
            if method != "POST":
                return Response(405, b"Method Not Allowed", {"Content-Type": "text/plain"})
            return self._score(headers, body)
        mgmt = _MGMT.match(route)
        if mgmt is not None:
            return self._management(method, mgmt, headers)
        return arm_error(404, "NotFound", f"{method} {route} is not served by this emulator")

    def _score(self, headers: Mapping[str, str], body: bytes) -> Response:
        if not self._authorized(header_value(headers, "Authorization")):
            return Response(401, b"key_auth_access_denied" if self.auth_mode == "key" else b"token_auth_access_denied")
        wanted = header_value(headers, "azureml-model-deployment")
        if wanted:
            deployment = self._deployments.get(wanted)
            if deployment is None:
                names = ", ".join(sorted(self._deployments)) or "none"
                return Response.json({"message": f"No deployment named {wanted!r}; deployments: {names}"}, 404)
        else:
            deployment = self._deployments.pick()
            if deployment is None:
                return Response.json({"message": "No valid deployments to route to: no deployment has traffic"}, 503)
        self.calls.append(ScoringCall(deployment.name, body, routed_by_header=bool(wanted)))
        answer = self._answer(deployment, body)
        extra = {"azureml-model-deployment": deployment.name, "x-request-id": str(uuid.uuid4())}
        return Response(answer.status, answer.body, {**answer.headers, **extra})

    def _answer(self, deployment: Deployment, body: bytes) -> Response:
        if deployment.respond is not None:
            return deployment.respond(body)
        from derm_cloud.serving import ServingError

        assert deployment.server is not None
        try:
            served = deployment.server.azureml_score(body)
        except ServingError as exc:
            # Any non-200 from the model container reaches the client as Azure ML's 424 "model error".
            status, payload = 424, exc.response()
        else:
            status, payload = 200, served
        return Response(status, payload.body, {"Content-Type": payload.content_type})

    def _authorized(self, header: str | None) -> bool:
        scheme, _, token = (header or "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            return False
        if self.auth_mode == "key":
            return secrets.compare_digest(token, self.key) or secrets.compare_digest(token, self.secondary_key)
        if self.auth_mode == "aml_token":
            return self._tokens.get(token, 0.0) > time.time()
        return token in self.aad_tokens

    # --- management plane ---------------------------------------------------------------------------------------

    def _management(self, method: str, match: re.Match[str], headers: Mapping[str, str]) -> Response:
        if (refused := arm_unauthorized(headers)) is not None:
            return refused
        same = in_workspace(match, self.subscription_id, self.resource_group, self.workspace)
        if not (same and match["ep"] == self.endpoint_name):
            return arm_error(404, "ResourceNotFound", f"Online endpoint {match['ep']!r} was not found")
        base = match.group(0)[: len(match.group(0)) - len(match["rest"] or "")]
        rest = (match["rest"] or "").rstrip("/")
        if method == "GET" and rest == "":
            return Response.json(self._endpoint_json(base))
        if method == "POST" and rest == "/listKeys":
            if self.auth_mode != "key":
                return arm_error(400, "BadArgument", "Keys are only available for endpoints with key auth")
            return Response.json({"primaryKey": self.key, "secondaryKey": self.secondary_key})
        if method == "POST" and rest == "/token":
            if self.auth_mode != "aml_token":
                return arm_error(400, "BadArgument", "Tokens are only issued for endpoints with AMLToken auth")
            token, now = secrets.token_urlsafe(32), time.time()
            self._tokens[token] = now + self.aml_token_lifetime
            return Response.json(
                {
                    "accessToken": token,
                    "expiryTimeUtc": int(now + self.aml_token_lifetime),
                    "refreshAfterTimeUtc": int(now + self.aml_token_lifetime / 2),
                    "tokenType": "Bearer",
                }
            )
        if method == "GET" and rest == "/deployments":
            return Response.json({"value": [self._deployment_json(base, d) for d in self._deployments.values()]})
        if method == "GET" and rest.startswith("/deployments/"):
            found = self._deployments.get(rest.split("/")[2])
            if found is None:
                return arm_error(404, "ResourceNotFound", f"Deployment {rest.split('/')[2]!r} was not found")
            return Response.json(self._deployment_json(base, found))
        return arm_error(404, "NotFound", f"{method} {rest or '/'} is not implemented by this emulator")

    def _endpoint_json(self, resource_id: str) -> dict[str, Any]:
        return {
            "id": resource_id,
            "name": self.endpoint_name,
            "type": "Microsoft.MachineLearningServices/workspaces/onlineEndpoints",
            "location": self.location,
            "kind": "Managed",
            "properties": {
                "authMode": _REST_AUTH[self.auth_mode],
                "scoringUri": self.scoring_uri,
                "swaggerUri": f"{self.url}/swagger.json",
                "provisioningState": "Succeeded",
                "traffic": {d.name: d.traffic for d in self._deployments.values()},
            },
        }

    def _deployment_json(self, endpoint_id: str, d: Deployment) -> dict[str, Any]:
        return {
            "id": f"{endpoint_id}/deployments/{d.name}",
            "name": d.name,
            "type": "Microsoft.MachineLearningServices/workspaces/onlineEndpoints/deployments",
            "location": self.location,
            "kind": "Managed",
            "properties": {
                "endpointComputeType": "Managed",
                "provisioningState": "Succeeded",
                "instanceType": d.instance_type,
                "scaleSettings": {"scaleType": "Default"},  # mandatory for the SDK's deserializer
                "requestSettings": {"maxConcurrentRequestsPerInstance": 1, "requestTimeout": "PT5S"},
            },
            "sku": {"name": "Default", "capacity": d.instance_count},
        }

    def fault_response(self, fault: Fault) -> Response:
        """Injected failures as the scoring router sends them."""
        retry = retry_after_header(fault.retry_after)
        if fault.kind == "throttle":
            return Response.json({"message": "Too many requests: the endpoint's rate limit is exceeded"}, 429, retry)
        if fault.kind == "not_ready":
            return Response.json({"message": "Service Unavailable: no healthy upstream"}, 503, retry)
        if fault.kind == "error":
            return Response.json({"message": "An unexpected error occurred in scoring script"}, fault.status)
        if fault.kind == "malformed":
            return Response.json({"predictions": "this is not the AutoML contract"})
        if fault.kind == "truncated":
            probs = [{"probs": [1 / 7] * 7, "labels": ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]}]
            return Response.json(probs)  # the base server cuts the body half-way and closes the connection
        return super().fault_response(fault)


def azure_ml_backend_for(emulator: AzureMLEmulator, **options: Any) -> AzureMlClassifier:
    """An `azure-ml` backend scoring against `emulator` (key auth unless `options` say otherwise).

    Extra `options` go to `AzureMlClassifier`.
    """
    from derm_cloud.backends.azure_ml import AzureMlClassifier

    if not {"key", "token_provider", "credential"} & set(options):
        if emulator.auth_mode != "key":
            raise ValueError(f"the emulator uses {emulator.auth_mode} auth; pass token_provider= or credential=")
        options["key"] = emulator.key
    options.setdefault("endpoint_name", emulator.endpoint_name)
    options.setdefault("region", emulator.location)
    return AzureMlClassifier(emulator.scoring_uri, **options)


def ml_client_for(emulator: AzureMLEmulator, credential: Any = None) -> Any:
    """A real `azure.ai.ml.MLClient` whose management calls go to `emulator`.

    Builds it with `AZUREML_DEV_URL_MFE` set to the emulator (the SDK's developer override of
    `https://management.azure.com`; an `http://` value turns off its HTTPS check), then restores the
    variable. Uses a static token credential unless one is given.
    """
    import os

    from azure.ai.ml import MLClient
    from azure.core.credentials import AccessToken

    class _StaticToken:
        def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
            return AccessToken("emulator-management-token", int(time.time()) + 3600)

    # MLClient reads the override once, when it is built; restore the variable so other clients are unaffected.
    saved = os.environ.get("AZUREML_DEV_URL_MFE")
    os.environ["AZUREML_DEV_URL_MFE"] = emulator.url
    try:
        return MLClient(
            credential or _StaticToken(),
            subscription_id=emulator.subscription_id,
            resource_group_name=emulator.resource_group,
            workspace_name=emulator.workspace,
        )
    finally:
        if saved is None:
            del os.environ["AZUREML_DEV_URL_MFE"]
        else:
            os.environ["AZUREML_DEV_URL_MFE"] = saved
