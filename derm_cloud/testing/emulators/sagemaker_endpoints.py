"""What one emulated SageMaker endpoint holds, and the container answers it relays.

An endpoint is backed by a model (`ModelServer`), by a running serving container it
forwards `/invocations` to (as SageMaker does), or by scripted `ContainerResponse` values served in order.
"""

from __future__ import annotations

import http.client
import json
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from derm_cloud.backends.aws_sagemaker import REALTIME_MAX_BODY_BYTES, SERVERLESS_MAX_BODY_BYTES
from derm_cloud.serving import ModelServer, SageMakerFormat

__all__ = ["ContainerResponse", "HostedEndpoint", "as_container", "forward_to_container"]


@dataclass(frozen=True)
class ContainerResponse:
    """What the model container answers (a scripted response); non-2xx becomes a `ModelError`."""

    body: bytes | str | Any = b""
    status: int = 200
    content_type: str = "application/json"

    def encoded(self) -> bytes:
        if isinstance(self.body, bytes):
            return self.body
        if isinstance(self.body, str):
            return self.body.encode()
        return json.dumps(self.body).encode()


@dataclass
class HostedEndpoint:
    """One emulated endpoint.

    Attributes:
        name: endpoint name.
        server: the model behind it (`None` for scripted-only endpoints).
        response_format: which container's shape the model answers in.
        variants: production variant names; calls rotate through them unless `TargetVariant` is set.
        serverless: 4 MB payload limit instead of 6 MiB.
        cold_start_calls: the first N calls answer `ModelNotReadyException`.
        model_latency: seconds the "container" takes per call.
        scripted: container responses served before the model (in order).
        container_url: a running serving container (`adapters/sagemaker/serve.py`) to forward
            `/invocations` to, as SageMaker forwards to the container, instead of an in-process model.
        invocations: calls that reached the endpoint (after routing errors).
    """

    name: str
    server: ModelServer | None
    response_format: SageMakerFormat = "adapter"
    variants: tuple[str, ...] = ("AllTraffic",)
    serverless: bool = False
    cold_start_calls: int = 0
    model_latency: float = 0.0
    scripted: deque[ContainerResponse] = field(default_factory=deque)
    container_url: str | None = None
    invocations: int = 0

    @property
    def max_body_bytes(self) -> int:
        return SERVERLESS_MAX_BODY_BYTES if self.serverless else REALTIME_MAX_BODY_BYTES


def forward_to_container(url: str, h: Mapping[str, str], body: bytes) -> ContainerResponse:
    """POST to a container's `/invocations` with the headers SageMaker passes through."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 8080, timeout=60)
    passed = ("content-type", "accept", "x-amzn-sagemaker-custom-attributes")
    headers = {k: h[k] for k in passed if h.get(k)}
    try:
        conn.request("POST", "/invocations", body=body, headers=headers)
        reply = conn.getresponse()
        data = reply.read()
        return ContainerResponse(data, reply.status, reply.getheader("Content-Type") or "application/octet-stream")
    except OSError as exc:
        return ContainerResponse({"error": f"container at {url} unreachable: {exc}"}, status=502)
    finally:
        conn.close()


def as_container(item: ContainerResponse | bytes | str | dict[str, Any] | list[Any]) -> ContainerResponse:
    """A scripted response as the container would send it (bytes, text or JSON-able values become its body)."""
    return item if isinstance(item, ContainerResponse) else ContainerResponse(item)
