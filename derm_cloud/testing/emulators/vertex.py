"""Vertex AI online prediction emulator: REST and gRPC, hosting real models through `derm_cloud.serving`.

Speaks what `google-cloud-aiplatform` sends (docs/reference/cloud-apis.md §5):

* REST `POST /v1/projects/{p}/locations/{l}/endpoints/{e}:predict` -> `{"predictions": [...], "deployedModelId",
  "model", "modelDisplayName", "modelVersionId"}`, and `GET /v1/projects/{p}/locations/{l}/endpoints/{e}` (the
  endpoint resource that high-level `aiplatform.Endpoint.predict` reads before its first call);
* gRPC `google.cloud.aiplatform.v1.PredictionService/Predict` on an insecure `127.0.0.1` port (generic
  handlers; the client needs an injected `grpc.insecure_channel`), recorded in `requests` like REST calls
  with method `"GRPC"`, the call metadata as headers and the request as JSON;
* errors in Google's envelope `{"error": {"code", "message", "status"}}` (REST) or as gRPC status codes: 404
  `NOT_FOUND` for unknown endpoints, 400 `INVALID_ARGUMENT` for bad instances or an oversized request, 401
  `UNAUTHENTICATED` / 403 `PERMISSION_DENIED` when `access_token` is set, and injected `Fault` s
  (429 `RESOURCE_EXHAUSTED` with `Retry-After` and a `RetryInfo` detail, 503 `UNAVAILABLE` ...). Bodies
  round-trip through the SDK's own proto types (`tests/fidelity/test_fidelity_vertex.py` checks).

Each endpoint hosts a real model directory in one of two shapes: `automl` (AutoML image classification:
instance `{"content": b64}`, parameters `confidenceThreshold` / `maxPredictions`, predictions `ids` as
strings, `displayNames`, `confidences`) or `custom` (the derm-cloud custom container: instance `{"b64",
"metadata"}` -> `{"labels", "probabilities", ...}`).

The request size limit defaults to 1.5 MB (`max_request_bytes`): that figure is stated in places but is
unverified in our reference (docs/reference/cloud-apis.md §5.1), so it is an option, not a fact.

Example:
    >>> with VertexEmulator(model_dir) as emu:  # doctest: +SKIP
    ...     clf = vertex_backend_for(emu, transport="grpc")
    ...     clf.predict("lesion.jpg").top(3)
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from derm_cloud.testing.emulators.base import Fault, Response
from derm_cloud.testing.emulators.vertex_errors import _GoogleError
from derm_cloud.testing.emulators.vertex_grpc import GRPC_PREDICT_METHOD, VertexGrpcServer

if TYPE_CHECKING:
    from derm_cloud.backends.gcp_vertex import GcpVertexClassifier
    from derm_cloud.serving import ModelServer

__all__ = ["GRPC_PREDICT_METHOD", "HostedEndpoint", "VertexEmulator", "vertex_backend_for"]

#: Unverified default (see module docstring); override with ``max_request_bytes``.
DEFAULT_MAX_REQUEST_BYTES = 1_500_000

Schema = Literal["automl", "custom"]
_RESOURCE = re.compile(r"^/v1/projects/(?P<p>[^/]+)/locations/(?P<l>[^/]+)/endpoints/(?P<e>[^/:]+)(?P<verb>:predict)?$")


@dataclass
class HostedEndpoint:
    """One Vertex endpoint with one deployed model."""

    endpoint_id: str
    server: ModelServer
    schema: Schema
    deployed_model_id: str
    display_name: str


class VertexEmulator(VertexGrpcServer):
    """A Vertex AI project with prediction endpoints, over REST and (optionally) gRPC.

    Args:
        model_dir: model directory hosted on the first endpoint (`None`: add endpoints with `add_endpoint`).
        schema: `automl` or `custom` for that endpoint.
        project, location: the resource path the emulator answers for; other projects/locations get 404.
        endpoint_id: id of the first endpoint.
        max_request_bytes: request size limit (1.5 MB default is unverified); `None` disables it.
        access_token: when set, calls must carry `Authorization: Bearer <token>` (401 without, 403 if wrong).
        grpc: also start the gRPC server (needs `grpcio`).
    """

    name = "vertex"

    def __init__(
        self,
        model_dir: str | os.PathLike[str] | None = None,
        *,
        schema: Schema = "automl",
        project: str = "derm-cloud-test",
        location: str = "us-central1",
        endpoint_id: str = "1234567890",
        max_request_bytes: int | None = DEFAULT_MAX_REQUEST_BYTES,
        access_token: str | None = None,
        grpc: bool = True,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        super().__init__(host=host, port=port)
        self.project = project
        self.location = location
        self.max_request_bytes = max_request_bytes
        self.access_token = access_token
        self.enable_grpc = grpc
        self.endpoints: dict[str, HostedEndpoint] = {}
        #: the first instance's image bytes of the last predict call, base64-decoded (to assert no EXIF arrived).
        self.last_image_bytes: bytes | None = None
        self._grpc_server: Any = None  # grpc.Server once started
        self._grpc_port: int | None = None
        if model_dir is not None:
            self.add_endpoint(endpoint_id, model_dir, schema=schema)

    def add_endpoint(
        self,
        endpoint_id: str,
        model_dir: str | os.PathLike[str],
        *,
        schema: Schema = "automl",
        deployed_model_id: str | None = None,
        display_name: str | None = None,
    ) -> HostedEndpoint:
        """Deploy a model directory to a (new) endpoint; the model is loaded now, not on the first call."""
        from derm_cloud.serving import ModelServer

        if schema not in ("automl", "custom"):
            raise ValueError(f"schema must be 'automl' or 'custom', got {schema!r}")
        # The emulator's own max_request_bytes is the limit that matters; the serving one must not trip first.
        server = ModelServer(model_dir, max_body_bytes=64 * 1024 * 1024)
        hosted = HostedEndpoint(
            endpoint_id=endpoint_id,
            server=server,
            schema=schema,
            deployed_model_id=deployed_model_id or str(5_000_000_000 + len(self.endpoints)),
            display_name=display_name or server.model_id,
        )
        self.endpoints[endpoint_id] = hosted
        return hosted

    @property
    def endpoint_id(self) -> str:
        """Id of the first endpoint."""
        if not self.endpoints:
            raise RuntimeError("no endpoint deployed; pass model_dir or call add_endpoint()")
        return next(iter(self.endpoints))

    def resource_name(self, endpoint_id: str | None = None) -> str:
        """`projects/{p}/locations/{l}/endpoints/{e}` of an endpoint (default: the first)."""
        return f"projects/{self.project}/locations/{self.location}/endpoints/{endpoint_id or self.endpoint_id}"

    # --- lifecycle ---------------------------------------------------------------------------------------------

    def start(self) -> VertexEmulator:
        super().start()
        if self.enable_grpc and self._grpc_server is None:
            self._start_grpc()
        return self

    def stop(self) -> None:
        if self._grpc_server is not None:
            self._grpc_server.stop(grace=None).wait(5)
            self._grpc_server = None
            self._grpc_port = None
        super().stop()

    @property
    def grpc_target(self) -> str:
        """`127.0.0.1:PORT` of the gRPC server, for `grpc.insecure_channel`."""
        if self._grpc_port is None:
            raise RuntimeError("the gRPC server is not running; construct with grpc=True and call start()")
        return f"{self._host}:{self._grpc_port}"

    # --- the shared core ----------------------------------------------------------------------------------------

    def _predict(self, project: str, location: str, endpoint_id: str, body: dict[str, Any], size: int) -> bytes:
        """The JSON PredictResponse for one request, or raise `_GoogleError`."""
        from derm_cloud.serving import ServingError

        hosted = self._endpoint(project, location, endpoint_id)
        if self.max_request_bytes is not None and size > self.max_request_bytes:
            raise _GoogleError(400, f"Request payload size exceeds the limit: {self.max_request_bytes} bytes.")
        self._remember_image(body.get("instances"))
        payload = json.dumps({"instances": body.get("instances"), "parameters": body.get("parameters") or {}})
        try:
            if hosted.schema == "automl":
                served = hosted.server.vertex_automl_predict(payload)
            else:
                served = hosted.server.vertex_custom_predict(payload)
        except ServingError as exc:
            raise _GoogleError(400 if exc.status < 500 else 500, str(exc)) from None
        predictions = json.loads(served.body)["predictions"]
        response = {
            "predictions": predictions,
            "deployedModelId": hosted.deployed_model_id,
            "model": f"projects/{self.project}/locations/{self.location}/models/{hosted.deployed_model_id}",
            "modelDisplayName": hosted.display_name,
            "modelVersionId": "1",
        }
        return json.dumps(response).encode()

    def _remember_image(self, instances: Any) -> None:
        import base64
        import binascii

        first = instances[0] if isinstance(instances, list) and instances else None
        encoded = (first.get("content") or first.get("b64")) if isinstance(first, dict) else None
        if isinstance(encoded, str):
            with contextlib.suppress(binascii.Error, ValueError):  # a bad one gets the model server's 400
                self.last_image_bytes = base64.b64decode(encoded, validate=True)

    def _endpoint(self, project: str, location: str, endpoint_id: str) -> HostedEndpoint:
        hosted = self.endpoints.get(endpoint_id)
        if project != self.project or location != self.location or hosted is None:
            raise _GoogleError(
                404, f"Endpoint `projects/{project}/locations/{location}/endpoints/{endpoint_id}` not found."
            )
        return hosted

    def _check_auth(self, authorization: str | None) -> None:
        if self.access_token is None:
            return
        if not authorization or not authorization.startswith("Bearer "):
            raise _GoogleError(
                401,
                "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or "
                "other valid authentication credential.",
            )
        if authorization[len("Bearer ") :] != self.access_token:
            raise _GoogleError(
                403, "Permission 'aiplatform.endpoints.predict' denied on resource (or it may not exist)."
            )

    # --- REST ----------------------------------------------------------------------------------------------------

    def handle(self, method: str, path: str, headers: Mapping[str, str], body: bytes) -> Response:
        match = _RESOURCE.match(urlsplit(path).path)
        lower = {k.lower(): v for k, v in headers.items()}
        try:
            self._check_auth(lower.get("authorization"))
            if match is None:
                raise _GoogleError(404, f"The requested URL {urlsplit(path).path} was not found on this server.")
            project, location, endpoint_id = match.group("p"), match.group("l"), match.group("e")
            if method == "GET" and not match.group("verb"):
                return Response.json(self._endpoint_resource(self._endpoint(project, location, endpoint_id)))
            if method != "POST" or not match.group("verb"):
                raise _GoogleError(404, f"{method} {urlsplit(path).path} is not supported by this emulator.")
            try:
                request = json.loads(body)
            except ValueError:
                raise _GoogleError(400, "Invalid JSON payload received.") from None
            if not isinstance(request, dict):
                raise _GoogleError(400, "Invalid JSON payload received. Expected an object.")
            out = self._predict(project, location, endpoint_id, request, len(body))
            return Response(200, out, {"Content-Type": "application/json; charset=UTF-8"})
        except _GoogleError as exc:
            return exc.response()

    def _endpoint_resource(self, hosted: HostedEndpoint) -> dict[str, Any]:
        name = self.resource_name(hosted.endpoint_id)
        return {
            "name": name,
            "displayName": hosted.endpoint_id,
            "deployedModels": [
                {
                    "id": hosted.deployed_model_id,
                    "model": f"projects/{self.project}/locations/{self.location}/models/{hosted.deployed_model_id}",
                    "displayName": hosted.display_name,
                    "modelVersionId": "1",
                }
            ],
            "trafficSplit": {hosted.deployed_model_id: 100},
            "createTime": "2026-01-01T00:00:00Z",
        }

    def fault_response(self, fault: Fault) -> Response:
        if fault.kind == "truncated":  # a whole PredictResponse, which the base server then cuts half-way
            automl = {"ids": ["1", "2"], "displayNames": ["mel", "nv"], "confidences": [0.5, 0.5]}
            return Response.json({"predictions": [automl], "deployedModelId": "5000000000", "modelVersionId": "1"})
        if fault.kind == "malformed":
            return super().fault_response(fault)  # a 200 whose body breaks the contract
        return self._fault_error(fault).response()

    @staticmethod
    def _fault_error(fault: Fault) -> _GoogleError:
        if fault.kind == "throttle":
            return _GoogleError(
                429,
                "Quota exceeded for aiplatform.googleapis.com/online_prediction_requests_per_base_model.",
                fault.retry_after,
            )
        if fault.kind == "not_ready":
            return _GoogleError(503, "The deployed model is not ready to serve predictions yet.")
        if fault.kind == "error":
            return _GoogleError(fault.status, "Injected failure.")
        raise ValueError(f"fault {fault.kind!r} has no Google error form")


def vertex_backend_for(
    emulator: VertexEmulator, transport: Literal["rest", "grpc"] = "rest", **options: Any
) -> GcpVertexClassifier:
    """A `GcpVertexClassifier` wired to a running emulator.

    REST uses `api_endpoint="http://127.0.0.1:PORT"` (the scheme is required); gRPC gets an injected
    `grpc.insecure_channel` (the SDK would otherwise build a TLS channel). Both use anonymous credentials
    unless `credentials=` is passed. Other options (`schema`, `retry`, `timeout` ...) pass through;
    `schema` defaults to the endpoint's.
    """
    from derm_cloud.backends.gcp_vertex import GcpVertexClassifier

    endpoint_id = options.pop("endpoint_id", emulator.endpoint_id)
    options.setdefault("schema", emulator.endpoints[endpoint_id].schema)
    options.setdefault("labels", tuple(emulator.endpoints[endpoint_id].server.labels))
    if transport == "grpc":
        import grpc

        options.setdefault("channel", grpc.insecure_channel(emulator.grpc_target))
    else:
        options.setdefault("api_endpoint", emulator.url)
    if "credentials" not in options and transport == "rest":
        from google.auth.credentials import AnonymousCredentials

        options["credentials"] = AnonymousCredentials()  # type: ignore[no-untyped-call]
    return GcpVertexClassifier(
        endpoint_id, project=emulator.project, location=emulator.location, transport=transport, **options
    )
