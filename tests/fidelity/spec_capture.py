"""Record what an emulator answers while the real SDK drives it, so each answer can be checked against a spec.

The emulators' HTTP server calls ``emulator.handle(...)`` for a normal answer and ``emulator.fault_response(fault)``
for an injected fault; :func:`capturing` wraps both on the instance (nothing in the emulator changes) and keeps
every :class:`Exchange`. Tests drive the emulator through the real SDK and our backend as usual, then validate
``exchange.response`` against the provider's published contract.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from derm_cloud.testing.emulators.base import EmulatorServer, Fault, Response


@dataclass(frozen=True)
class Exchange:
    """One answer the emulator produced: the request it answered and the response before it hit the socket.

    ``fault`` names the injected fault kind (``None`` for a normal answer). A ``truncated`` fault's response is
    the whole body the server then cuts in half, so it is checked like any other answer.
    """

    method: str
    path: str
    request_headers: dict[str, str]
    response: Response
    fault: str | None = None

    def json(self) -> Any:
        return json.loads(self.response.body)

    def header(self, name: str) -> str | None:
        wanted = name.lower()
        return next((v for k, v in self.response.headers.items() if k.lower() == wanted), None)


@contextlib.contextmanager
def capturing(emulator: EmulatorServer) -> Iterator[list[Exchange]]:
    """Collect every answer ``emulator`` gives inside the ``with`` block (normal answers and faults)."""
    seen: list[Exchange] = []
    handle, fault_response = emulator.handle, emulator.fault_response

    def recorded_handle(method: str, path: str, headers: Any, body: bytes) -> Response:
        response = handle(method, path, headers, body)
        seen.append(Exchange(method, path, dict(headers), response))
        return response

    def recorded_fault(fault: Fault) -> Response:
        response = fault_response(fault)
        last = emulator.requests[-1] if emulator.requests else None  # recorded before the fault is taken
        method, path, headers = (last.method, last.path, last.headers) if last else ("", "", {})
        seen.append(Exchange(method, path, dict(headers), response, fault.kind))
        return response

    emulator.handle = recorded_handle  # type: ignore[method-assign]
    emulator.fault_response = recorded_fault  # type: ignore[method-assign]
    try:
        yield seen
    finally:
        del emulator.handle, emulator.fault_response  # the class methods again


def sample_jpeg(size: tuple[int, int] = (96, 72), seed: int = 3) -> bytes:
    """A small noisy RGB JPEG made here (no patient image is needed to exercise a wire contract)."""
    import io

    import numpy as np
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="JPEG", quality=90)
    return out.getvalue()


class Replay(EmulatorServer):
    """A loopback server that answers with fixed responses (a provider's published examples), by HTTP method.

    Lets a real SDK and our backend parse an answer nobody here wrote, exactly as they would parse the service's.
    ``responses`` maps a method (``GET``, ``POST``) or ``*`` to the answer.
    """

    name = "replay"

    def __init__(self, responses: Response | dict[str, Response]) -> None:
        super().__init__()
        self.responses = responses if isinstance(responses, dict) else {"*": responses}

    def handle(self, method: str, path: str, headers: Any, body: bytes) -> Response:
        return self.responses.get(method) or self.responses["*"]
