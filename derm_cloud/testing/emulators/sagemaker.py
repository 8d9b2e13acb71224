"""SageMaker runtime emulator: `POST /endpoints/{name}/invocations` on 127.0.0.1, driven through real boto3.

Hosts endpoints by name, each backed by a real model (`ModelServer`, answering in the
JumpStart, Hugging Face DLC, built-in algorithm or derm-cloud adapter shape) or by scripted container responses.
It reproduces the service's wire behaviour that clients must handle (docs/reference/cloud-apis.md section 2):

* response headers `x-Amzn-Invoked-Production-Variant` and `x-amzn-RequestId`; variants chosen round-robin
  or by `TargetVariant`;
* errors as botocore parses them (code from `x-amzn-ErrorType`): `ValidationError` 400 (unknown endpoint or
  variant), `ModelError` 424 with `OriginalStatusCode` / `OriginalMessage` / `LogStreamArn` when the
  container answers 4xx/5xx, `ModelNotReadyException` 429 during a cold start, `ThrottlingException` 400 (AWS's
  common error, answered with 400, not 429), `InternalFailure` 500, `ServiceUnavailable` 503; each status is
  the one botocore's service model or AWS's Common Errors page gives (tests/fidelity/test_fidelity_aws.py checks);
* payload limits: 6 MiB real-time, 4 MB serverless; larger bodies come back as `ModelError` with original
  status 413, as the service reports them.

Example:
    >>> with SageMakerRuntimeEmulator() as emu:  # doctest: +SKIP
    ...     emu.add_endpoint("derm", model_dir, response_format="jumpstart")
    ...     clf = sagemaker_backend_for(emu, "derm")
    ...     clf.predict("lesion.jpg")
"""

from __future__ import annotations

import os
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from derm_cloud.errors import ConfigError
from derm_cloud.serving import ModelServer, SageMakerFormat, error_response
from derm_cloud.testing.emulators.base import EmulatorServer, Fault, Response, retry_after_header
from derm_cloud.testing.emulators.sagemaker_endpoints import (
    ContainerResponse,
    HostedEndpoint,
    as_container,
    forward_to_container,
)

if TYPE_CHECKING:
    from derm_cloud.backends.aws_sagemaker import AwsSagemakerClassifier

__all__ = ["SageMakerRuntimeEmulator", "sagemaker_backend_for"]

_INVOKE = re.compile(r"^/endpoints/(?P<name>[^/]+)/invocations$")
_ERROR_TYPE_SUFFIX = ":http://internal.amazon.com/coral/com.amazon.sagemaker/"


class SageMakerRuntimeEmulator(EmulatorServer):
    """The `sagemaker-runtime` data plane on 127.0.0.1 (see the module docstring).

    Args:
        account_id: shown in error messages, like the real service.
        region: the region clients should be built for (signatures are not checked).
    """

    name = "sagemaker"

    def __init__(
        self, *, host: str = "127.0.0.1", port: int = 0, account_id: str = "123456789012", region: str = "us-east-1"
    ) -> None:
        super().__init__(host=host, port=port)
        self.account_id = account_id
        self.region = region
        self.endpoints: dict[str, HostedEndpoint] = {}
        self._servers: dict[Path, ModelServer] = {}
        self._clients: dict[tuple[float, float], Any] = {}  # a new boto3 session costs ~0.2 s: reuse clients
        self._endpoint_lock = threading.Lock()

    # --- hosting -----------------------------------------------------------------------------------------------

    def add_endpoint(
        self,
        name: str,
        model: str | os.PathLike[str] | ModelServer | None = None,
        *,
        response_format: SageMakerFormat = "adapter",
        variants: Iterable[str] = ("AllTraffic",),
        serverless: bool = False,
        cold_start_calls: int = 0,
        model_latency: float = 0.0,
        scripted: Iterable[ContainerResponse | bytes | str | dict[str, Any] | list[Any]] = (),
        container_url: str | None = None,
    ) -> HostedEndpoint:
        """Host an endpoint backed by `model` (a model directory, loaded once, or a ModelServer), by a running
        container at `container_url`, or by scripted responses only.

        Raises:
            ConfigError: nothing to answer with, or no variant.
        """
        server = self._server_for(model) if model is not None else None
        queue = deque(as_container(r) for r in scripted)
        if server is None and not queue and container_url is None:
            raise ConfigError(
                f"endpoint {name!r} needs a model directory, a ModelServer, a container_url or scripted responses"
            )
        names = tuple(variants)
        if not names:
            raise ConfigError("an endpoint needs at least one production variant")
        endpoint = HostedEndpoint(
            name=name,
            server=server,
            response_format=response_format,
            variants=names,
            serverless=serverless,
            cold_start_calls=cold_start_calls,
            model_latency=model_latency,
            scripted=queue,
            container_url=container_url.rstrip("/") if container_url else None,
        )
        with self._endpoint_lock:
            self.endpoints[name] = endpoint
        return endpoint

    def script(self, endpoint_name: str, *responses: ContainerResponse | bytes | str | dict[str, Any]) -> None:
        """Queue container responses for an endpoint (served before its model)."""
        with self._endpoint_lock:
            self.endpoints[endpoint_name].scripted.extend(as_container(r) for r in responses)

    def remove_endpoint(self, name: str) -> None:
        with self._endpoint_lock:
            self.endpoints.pop(name, None)

    @property
    def last_image_bytes(self) -> bytes | None:
        """The image of the last invocation as received: the raw body, or the base64 `inputs` of a JSON body.

        `None` before any invocation, or when the last JSON body carries no decodable image.
        """
        import base64
        import binascii

        with self._lock:
            invocations = [r for r in self.requests if _INVOKE.match(r.path.split("?")[0])]
        if not invocations:
            return None
        last = invocations[-1]
        if not (last.header("Content-Type") or "").startswith("application/json"):
            return last.body
        try:
            return base64.b64decode(last.json()["inputs"], validate=True)
        except (ValueError, KeyError, TypeError, binascii.Error):
            return None

    def runtime_client(self, *, connect_timeout: float = 2.0, read_timeout: float = 10.0) -> Any:
        """A boto3 `sagemaker-runtime` client for this emulator: dummy keys, one attempt; cached per timeouts."""
        import boto3
        from botocore.config import Config

        key = (connect_timeout, read_timeout)
        with self._endpoint_lock:
            if key not in self._clients:
                config = Config(
                    retries={"total_max_attempts": 1}, connect_timeout=connect_timeout, read_timeout=read_timeout
                )
                self._clients[key] = boto3.session.Session().client(
                    "sagemaker-runtime",
                    region_name=self.region,
                    endpoint_url=self.url,
                    aws_access_key_id="testing",
                    aws_secret_access_key="testing",
                    config=config,
                )
            return self._clients[key]

    def _server_for(self, model: str | os.PathLike[str] | ModelServer) -> ModelServer:
        if isinstance(model, ModelServer):
            return model
        key = Path(model).expanduser().resolve()
        if key not in self._servers:
            self._servers[key] = ModelServer(key)
        return self._servers[key]

    # --- the wire contract -------------------------------------------------------------------------------------

    def handle(self, method: str, path: str, headers: Mapping[str, str], body: bytes) -> Response:
        h = {k.lower(): v for k, v in headers.items()}
        match = _INVOKE.match(path.split("?")[0])
        if method != "POST" or match is None:
            return _aws_error(404, "UnknownOperationException", f"{method} {path} is not a sagemaker-runtime API")
        name = unquote(match.group("name"))
        with self._endpoint_lock:
            endpoint = self.endpoints.get(name)
            if endpoint is None:
                return _aws_error(400, "ValidationError", f"Endpoint {name} of account {self.account_id} not found.")
            target = h.get("x-amzn-sagemaker-target-variant")
            if target and target not in endpoint.variants:
                return _aws_error(
                    400, "ValidationError", f"Variant {target} is not a production variant of endpoint {name}."
                )
            variant = target or endpoint.variants[endpoint.invocations % len(endpoint.variants)]
            endpoint.invocations += 1
            cold = endpoint.invocations <= endpoint.cold_start_calls
            scripted = endpoint.scripted.popleft() if (endpoint.scripted and not cold) else None
        if cold:
            return _not_ready(name, variant)
        if len(body) > endpoint.max_body_bytes:
            limit = "4 MB (serverless)" if endpoint.serverless else "6 MiB"
            return self._model_error(endpoint, variant, 413, f"Request payload of {len(body)} bytes exceeds {limit}")
        if endpoint.model_latency:
            time.sleep(endpoint.model_latency)
        container = scripted or self._invoke_model(endpoint, h, body)
        if not 200 <= container.status < 300:
            return self._model_error(
                endpoint, variant, container.status, container.encoded().decode("utf-8", "replace")
            )
        return Response(
            200,
            container.encoded(),
            {"Content-Type": container.content_type, "x-Amzn-Invoked-Production-Variant": variant, **_request_id()},
        )

    def _invoke_model(self, endpoint: HostedEndpoint, h: Mapping[str, str], body: bytes) -> ContainerResponse:
        if endpoint.container_url is not None:
            return forward_to_container(endpoint.container_url, h, body)
        if endpoint.server is None:
            return ContainerResponse({"error": "no scripted response left and no model hosted"}, status=500)
        try:
            served = endpoint.server.sagemaker_invocations(
                body,
                h.get("content-type"),
                h.get("accept"),
                custom_attributes=h.get("x-amzn-sagemaker-custom-attributes"),
                response_format=endpoint.response_format,
            )
        except Exception as exc:  # the container answers every failure with a status, as a real one does
            status, err = error_response(exc)
            return ContainerResponse(err.body, status=status, content_type=err.content_type)
        return ContainerResponse(served.body, content_type=served.content_type)

    def _model_error(self, endpoint: HostedEndpoint, variant: str, status: int, message: str) -> Response:
        kind = "client" if status < 500 else "server"
        log_group = f"/aws/sagemaker/Endpoints/{endpoint.name}"
        payload = {
            "ErrorCode": "CLIENT_ERROR_FROM_MODEL" if status < 500 else "SERVER_ERROR_FROM_MODEL",
            "Message": (
                f'Received {kind} error ({status}) from {variant} with message "{message[:500]}". '
                f"See the CloudWatch log group {log_group} in account {self.account_id} for more information."
            ),
            "OriginalStatusCode": status,
            "OriginalMessage": message[:500],
            "LogStreamArn": f"arn:aws:logs:{self.region}:{self.account_id}:log-group:{log_group}",
        }
        return _aws_payload(424, "ModelError", payload)

    def fault_response(self, fault: Fault) -> Response:
        """Injected faults in SageMaker's own error shapes (see the module docstring)."""
        if fault.kind == "throttle":
            # HTTP 400, as AWS's Common Errors page documents and real SageMaker answers show
            # (opensearch-project/ml-commons#2429); a Retry-After is sent only to test clients that honour one.
            return _aws_error(400, "ThrottlingException", "Rate exceeded", retry_after_header(fault.retry_after))
        if fault.kind == "not_ready":
            return _not_ready("endpoint", "AllTraffic")
        if fault.kind == "malformed":
            return Response(200, b"<html><body>502 Bad Gateway</body></html>", {"Content-Type": "text/html"})
        if fault.kind == "truncated":
            body = {"labels": ["akiec", "bcc"], "probabilities": [0.5, 0.5], "predicted_label": "akiec"}
            return Response.json(body, headers=_request_id())
        if fault.kind == "error":
            return self._fault_error(fault.status)
        return super().fault_response(fault)

    def _fault_error(self, status: int) -> Response:
        named = {
            500: "InternalFailure",
            503: "ServiceUnavailable",
            530: "InternalDependencyException",
            403: "AccessDeniedException",
        }
        if status in named:
            return _aws_error(status, named[status], f"injected {named[status]}")
        if status == 401:  # AWS has no 401: an unknown key is UnrecognizedClientException with 403 (REST-JSON)
            return _aws_error(
                403, "UnrecognizedClientException", "The security token included in the request is invalid."
            )
        if status == 404:
            return _aws_error(400, "ValidationError", f"Endpoint injected of account {self.account_id} not found.")
        if status == 429:
            return _aws_error(400, "ThrottlingException", "Rate exceeded")
        fake = HostedEndpoint(name="injected", server=None)
        return self._model_error(fake, "AllTraffic", 500 if status == 424 else status, "injected container failure")


# --- error shapes ----------------------------------------------------------------------------------------------


def _request_id() -> dict[str, str]:
    return {"x-amzn-RequestId": str(uuid.uuid4())}


def _aws_payload(status: int, code: str, payload: dict[str, Any], headers: Mapping[str, str] | None = None) -> Response:
    return Response.json(
        payload, status, {"x-amzn-ErrorType": code + _ERROR_TYPE_SUFFIX, **_request_id(), **(headers or {})}
    )


def _aws_error(status: int, code: str, message: str, headers: Mapping[str, str] | None = None) -> Response:
    return _aws_payload(status, code, {"message": message}, headers)


def _not_ready(endpoint: str, variant: str) -> Response:
    return _aws_error(
        429, "ModelNotReadyException", f"Model for endpoint {endpoint} variant {variant} is not ready. Retry later."
    )


def sagemaker_backend_for(
    emulator: SageMakerRuntimeEmulator,
    endpoint_name: str,
    *,
    connect_timeout: float = 2.0,
    read_timeout: float = 10.0,
    **options: Any,
) -> AwsSagemakerClassifier:
    """An `AwsSagemakerClassifier` whose boto3 client points at `emulator` (dummy credentials).

    Options not given are taken from the hosted endpoint: `serverless`, `response_format` and, for the
    built-in format, `class_names` from the model's labels.

    Example:
        >>> clf = sagemaker_backend_for(emu, "derm", retry=RetryPolicy(max_attempts=2))  # doctest: +SKIP
    """
    from derm_cloud.backends.aws_sagemaker import AwsSagemakerClassifier

    client = emulator.runtime_client(connect_timeout=connect_timeout, read_timeout=read_timeout)
    endpoint = emulator.endpoints.get(endpoint_name)
    defaults: dict[str, Any] = {}
    if endpoint is not None:
        defaults["serverless"] = endpoint.serverless
        defaults["response_format"] = endpoint.response_format
        if endpoint.server is not None and endpoint.response_format in ("builtin", "hf", "jumpstart"):
            defaults["class_names"] = endpoint.server.labels
    return AwsSagemakerClassifier(endpoint_name, client=client, region=emulator.region, **{**defaults, **options})
