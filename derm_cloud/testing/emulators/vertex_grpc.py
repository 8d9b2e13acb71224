"""The gRPC side of the Vertex AI emulator: `PredictionService/Predict` on an insecure `127.0.0.1` port.

`VertexGrpcServer` is the base class of `derm_cloud.testing.emulators.vertex.VertexEmulator`: it starts the
gRPC server, answers `Predict` through the emulator's shared core (auth, endpoint lookup, the hosted model)
and applies injected faults the way a gRPC server shows them (status codes, late answers, broken bytes).
"""

from __future__ import annotations

import json
import re
import time
from typing import TYPE_CHECKING, Any

from derm_cloud.testing.emulators.base import EmulatorServer, Fault
from derm_cloud.testing.emulators.vertex_errors import _GoogleError

if TYPE_CHECKING:
    import grpc

__all__ = ["GRPC_PREDICT_METHOD", "VertexGrpcServer"]

GRPC_PREDICT_METHOD = "/google.cloud.aiplatform.v1.PredictionService/Predict"


class VertexGrpcServer(EmulatorServer):
    """The gRPC server of a Vertex emulator; the REST side and the shared core live in the subclass."""

    if TYPE_CHECKING:  # provided by VertexEmulator, which holds the endpoints and the shared core
        _grpc_server: Any
        _grpc_port: int | None

        def _check_auth(self, authorization: str | None) -> None: ...

        def _predict(self, project: str, location: str, endpoint_id: str, body: dict[str, Any], size: int) -> bytes: ...

        @staticmethod
        def _fault_error(fault: Fault) -> _GoogleError: ...

    def _start_grpc(self) -> None:
        from concurrent import futures

        import grpc
        from google.cloud.aiplatform_v1 import PredictRequest

        handler = grpc.method_handlers_generic_handler(
            "google.cloud.aiplatform.v1.PredictionService",
            {
                "Predict": grpc.unary_unary_rpc_method_handler(
                    self._grpc_predict,
                    request_deserializer=PredictRequest.pb().FromString,
                    response_serializer=bytes,  # _grpc_predict returns serialized bytes (or deliberately broken ones)
                )
            },
        )
        limit = 64 * 1024 * 1024  # above any max_request_bytes, so our INVALID_ARGUMENT answers, not grpc's own
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="vertex-grpc"),
            options=[("grpc.max_receive_message_length", limit), ("grpc.max_send_message_length", limit)],
        )
        server.add_generic_rpc_handlers((handler,))
        self._grpc_port = server.add_insecure_port(f"{self._host}:0")
        server.start()
        self._grpc_server = server

    def _grpc_predict(self, request: Any, context: grpc.ServicerContext) -> bytes:
        from google.cloud.aiplatform_v1 import PredictResponse
        from google.protobuf import json_format

        metadata = {k: (v if isinstance(v, str) else "<binary>") for k, v in context.invocation_metadata()}
        body = json_format.MessageToDict(request)
        size = request.ByteSize()
        self._record("GRPC", GRPC_PREDICT_METHOD, metadata, json.dumps(body).encode())
        fault = self._take_fault(GRPC_PREDICT_METHOD)
        try:
            if fault is not None:
                broken = self._grpc_fault(fault, context)
                if broken is not None:
                    return broken
            self._check_auth(metadata.get("authorization"))
            match = re.match(r"^projects/([^/]+)/locations/([^/]+)/endpoints/([^/]+)$", body.get("endpoint", ""))
            if match is None:
                raise _GoogleError(400, f"Invalid resource name: {body.get('endpoint', '')!r}.")
            out = self._predict(match.group(1), match.group(2), match.group(3), body, size)
        except _GoogleError as exc:
            self._abort(context, exc)
        response = json_format.Parse(out, PredictResponse.pb()())
        return bytes(response.SerializeToString())

    def _grpc_fault(self, fault: Fault, context: grpc.ServicerContext) -> bytes | None:
        """Apply a fault to a gRPC call: abort, delay, or return deliberately broken response bytes.

        `slow` and `drip` are the real answer, late, as on REST: a gRPC message cannot be sent a byte at a
        time, and gRPC's deadline covers the whole call anyway, so `drip` delays the answer in small steps
        like `slow`. Every delay ends early when the client gives up (deadline or cancel), as a server would.
        """
        gave_up = _GoogleError(504, "Deadline Exceeded")  # what the client reports itself once its deadline passed
        if fault.kind in ("slow", "drip"):
            if not _wait_for_client(context, fault.delay):
                self._abort(context, gave_up)
            return None
        if fault.kind in ("timeout", "reset"):
            if fault.kind == "timeout" and not _wait_for_client(context, fault.delay):
                self._abort(context, gave_up)  # the client's deadline normally fires first
            self._abort(context, _GoogleError(503, "Connection reset by peer."))
        if fault.kind == "malformed":
            from google.cloud.aiplatform_v1 import PredictResponse
            from google.protobuf import json_format

            wrong = {"predictions": ["<html>not the contract</html>"], "deployedModelId": "0"}
            return bytes(json_format.ParseDict(wrong, PredictResponse.pb()()).SerializeToString())
        if fault.kind == "truncated":
            return b"\x0a\xff\x01\x0a"  # a length-delimited field that claims more bytes than follow
        self._abort(context, self._fault_error(fault))
        return None  # unreachable: abort raises

    @staticmethod
    def _abort(context: grpc.ServicerContext, exc: _GoogleError) -> None:
        import grpc

        code = getattr(grpc.StatusCode, exc.status, grpc.StatusCode.UNKNOWN)
        if exc.retry_after is not None:
            try:
                from google.protobuf import any_pb2, duration_pb2
                from google.rpc import error_details_pb2, status_pb2
                from grpc_status import rpc_status  # type: ignore[import-untyped]

                detail = any_pb2.Any()
                delay = duration_pb2.Duration()
                delay.FromNanoseconds(int(exc.retry_after * 1e9))
                detail.Pack(error_details_pb2.RetryInfo(retry_delay=delay))
                status = status_pb2.Status(code=code.value[0], message=str(exc), details=[detail])
                context.abort_with_status(rpc_status.to_status(status))
            except ImportError:  # grpcio-status missing: the plain status still says RESOURCE_EXHAUSTED
                pass
        context.abort(code, str(exc))


def _wait_for_client(context: grpc.ServicerContext, seconds: float) -> bool:
    """Sleep up to `seconds` in 50 ms steps; `False` as soon as the client has gone (deadline passed, cancelled).

    So an injected delay holds one of the server's worker threads no longer than the client waits for it.
    """
    until = time.monotonic() + seconds
    while (left := until - time.monotonic()) > 0:
        remaining = context.time_remaining()
        if not context.is_active() or (remaining is not None and remaining <= 0):
            return False
        time.sleep(min(0.05, left))
    return True
