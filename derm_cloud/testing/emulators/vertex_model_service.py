"""Vertex AI `ModelService.ExportModel` and the Cloud Storage JSON API routes that fetch an export, on one port.

Speaks what the real SDKs send when a model trained in Vertex AI leaves the service:

* `aiplatform_v1.ModelServiceClient` (REST transport, `api_endpoint="http://127.0.0.1:PORT"`):
  `GET /v1/projects/{p}/locations/{l}/models/{m}` (the `Model`, with `supportedExportFormats`),
  `POST .../models/{m}:export` (a long-running `Operation` named `.../models/{m}/operations/{n}`, whose
  `ExportModelOperationMetadata.outputInfo.artifactOutputUri` names the folder the export lands in) and
  `GET .../models/{m}/operations/{n}` (`done` after `polls_until_done` polls; the SDK's REST operations
  client polls it under `/ui/` rather than `/v1/`, the first binding in its `http_options`, so both answer);
* `google.cloud.storage.Client` (`client_options={"api_endpoint": url}`):
  `GET /storage/v1/b/{bucket}` (the bucket), `GET /storage/v1/b/{bucket}/o?prefix=` (list objects) and
  `GET /download/storage/v1/b/{bucket}/o/{object}?alt=media` (object bytes, with `x-goog-hash` so the client
  checks them).

The export is written into the in-memory bucket when the operation finishes, laid out as Vertex writes an AutoML
Edge export: `<outputUriPrefix>/model-<modelId>/<format>/<timestamp>/` + the files the `exporter` builds
(default: `build_vertex_edge_export`, `model.tflite` + `dict.txt`).
Errors use Google's envelope `{"error": {"code", "message", "status"}}`: unknown project/location/model -> 404
`NOT_FOUND`; a format the model does not list -> 400 `FAILED_PRECONDITION` (status assumed, not verified);
a wrong bearer token -> 401/403 when `access_token` is set; an `export_error` makes the operation finish with
that error instead of a response.

Example:
    >>> with VertexModelServiceEmulator() as emu:  # doctest: +SKIP
    ...     folder, uri = export_vertex_model(emu.model_id, project=emu.project, location=emu.location,
    ...         destination="gs://exports/derm", out_dir=tmp, api_endpoint=emu.url, storage_client=emu.storage_client())
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

from derm_cloud.testing.emulators.base import EmulatorServer, Response

__all__ = ["VertexModelServiceEmulator"]

_MODEL = re.compile(r"^/v1/projects/(?P<p>[^/]+)/locations/(?P<l>[^/]+)/models/(?P<m>[^/:]+)(?P<verb>:export)?$")
_OPERATION = re.compile(
    r"^/(?:v1|ui)/(?P<name>projects/[^/]+/locations/[^/]+/models/(?P<m>[^/]+)/operations/(?P<n>\d+))$"
)
_BUCKET = re.compile(r"^/storage/v1/b/(?P<bucket>[^/]+)$")
_LIST = re.compile(r"^/storage/v1/b/(?P<bucket>[^/]+)/o$")
_DOWNLOAD = re.compile(r"^(?:/download)?/storage/v1/b/(?P<bucket>[^/]+)/o/(?P<object>.+)$")
_STATUS = {400: "FAILED_PRECONDITION", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND"}
_TYPE = "type.googleapis.com/google.cloud.aiplatform.v1."


@dataclass
class _Operation:
    name: str
    artifact_uri: str
    export_format: str
    polls_left: int
    done: bool = False


class _GoogleError(Exception):
    def __init__(self, http: int, message: str) -> None:
        super().__init__(message)
        self.http = http

    def response(self) -> Response:
        status = _STATUS.get(self.http, "INTERNAL")
        return Response.json({"error": {"code": self.http, "message": str(self), "status": status}}, self.http)


class VertexModelServiceEmulator(EmulatorServer):
    """A Vertex AI project with one trained AutoML model that can be exported, and the bucket it exports to.

    Args:
        exporter: `folder -> folder` writing the export's files (default: the AutoML Edge TFLite stand-in).
        project, location, model_id: the resource the routes accept; others get 404.
        export_formats: the `supportedExportFormats` ids the model lists.
        polls_until_done: operation polls answered `done: false` before the export is finished.
        timestamp: the `<timestamp>` folder Vertex adds under `<format>/` (fixed so tests can name it).
        access_token: when set, calls must carry `Authorization: Bearer <token>` (401 without, 403 if wrong).
        export_error: finish every export operation with this error message instead of a response.
    """

    name = "vertex-model-service"

    def __init__(
        self,
        exporter: Callable[[Path], Path] | None = None,
        *,
        project: str = "derm-cloud-test",
        location: str = "us-central1",
        model_id: str = "7412345678901234567",
        export_formats: Sequence[str] = ("tflite", "edgetpu-tflite", "tf-saved-model", "core-ml"),
        polls_until_done: int = 2,
        timestamp: str = "2026-12-01T10:20:30.123456Z",
        access_token: str | None = None,
        export_error: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        super().__init__(host=host, port=port)
        self.exporter = exporter
        self.project = project
        self.location = location
        self.model_id = model_id
        self.export_formats = tuple(export_formats)
        self.polls_until_done = polls_until_done
        self.timestamp = timestamp
        self.access_token = access_token
        self.export_error = export_error
        #: ``{(bucket, object name): bytes}``: what Cloud Storage holds.
        self.objects: dict[tuple[str, str], bytes] = {}
        self.operations: dict[str, _Operation] = {}
        self._lock = threading.Lock()

    def storage_client(self) -> Any:
        """A `google.cloud.storage.Client` pointed at this emulator with anonymous credentials."""
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        return storage.Client(
            project=self.project,
            credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
            client_options={"api_endpoint": self.url},
        )

    # --- routes ----------------------------------------------------------------------------------------------------

    def handle(self, method: str, path: str, headers: Mapping[str, str], body: bytes) -> Response:
        parts = urlsplit(path)
        route = parts.path if parts.path.startswith(("/storage/", "/download/")) else unquote(parts.path)
        try:
            self._check_auth({k.lower(): v for k, v in headers.items()}.get("authorization"))
            if route.startswith(("/v1/", "/ui/")):
                return self._model_service(method, route, body)
            return self._storage(method, route, parse_qs(parts.query))
        except _GoogleError as exc:
            return exc.response()

    def _model_service(self, method: str, route: str, body: bytes) -> Response:
        operation = _OPERATION.match(route)
        if operation is not None and method == "GET":
            return Response.json(self._poll(operation.group("name")))
        match = _MODEL.match(route)
        if match is None:
            raise _GoogleError(404, f"The requested URL {route} was not found on this server.")
        name = f"projects/{match['p']}/locations/{match['l']}/models/{match['m']}"
        if (match["p"], match["l"], match["m"]) != (self.project, self.location, self.model_id):
            raise _GoogleError(404, f"The Model does not exist: {name}")
        if method == "GET" and not match["verb"]:
            return Response.json(self._model_resource(name))
        if method == "POST" and match["verb"]:
            return Response.json(self._start_export(name, json.loads(body or b"{}")))
        raise _GoogleError(404, f"{method} {route} is not supported by this emulator.")

    def _model_resource(self, name: str) -> dict[str, Any]:
        return {
            "name": name,
            "displayName": "derm-edge",
            "versionId": "1",
            "supportedExportFormats": [{"id": f, "exportableContents": ["ARTIFACT"]} for f in self.export_formats],
            "createTime": "2026-11-30T12:00:00Z",
        }

    def _start_export(self, model_name: str, request: dict[str, Any]) -> dict[str, Any]:
        config = request.get("outputConfig") or {}
        export_format = str(config.get("exportFormatId") or "")
        prefix = str((config.get("artifactDestination") or {}).get("outputUriPrefix") or "")
        if export_format not in self.export_formats:
            raise _GoogleError(
                400, f"Exporting model in format '{export_format}' is not supported. Supported: {self.export_formats}"
            )
        if not prefix.startswith("gs://"):
            raise _GoogleError(400, "outputConfig.artifactDestination.outputUriPrefix must be a gs:// URI.")
        artifact_uri = f"{prefix.rstrip('/')}/model-{self.model_id}/{export_format}/{self.timestamp}"
        with self._lock:
            number = str(1_000_000 + len(self.operations))
            op = _Operation(f"{model_name}/operations/{number}", artifact_uri, export_format, self.polls_until_done)
            self.operations[op.name] = op
        return self._operation_json(op)

    def _poll(self, name: str) -> dict[str, Any]:
        with self._lock:
            op = self.operations.get(name)
            if op is None:
                raise _GoogleError(404, f"Operation {name} not found.")
            if not op.done:
                if op.polls_left > 0:
                    op.polls_left -= 1
                else:
                    if self.export_error is None:
                        self._write_export(op.artifact_uri)
                    op.done = True
            return self._operation_json(op)

    def _write_export(self, artifact_uri: str) -> None:
        from derm_cloud.testing.service_exports import build_vertex_edge_export

        bucket, _, prefix = artifact_uri[len("gs://") :].partition("/")
        with tempfile.TemporaryDirectory() as tmp:
            folder = (self.exporter or build_vertex_edge_export)(Path(tmp) / "export")
            for path in sorted(p for p in folder.rglob("*") if p.is_file()):
                self.objects[(bucket, f"{prefix}/{path.relative_to(folder).as_posix()}")] = path.read_bytes()

    def _operation_json(self, op: _Operation) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": op.name,
            "metadata": {
                "@type": _TYPE + "ExportModelOperationMetadata",
                "genericMetadata": {"createTime": "2026-12-01T10:20:30Z", "updateTime": "2026-12-01T10:20:31Z"},
                "outputInfo": {"artifactOutputUri": op.artifact_uri},
            },
            "done": op.done,
        }
        if op.done and self.export_error is not None:
            out["error"] = {"code": 13, "message": self.export_error}
        elif op.done:
            out["response"] = {"@type": _TYPE + "ExportModelResponse"}
        return out

    def _storage(self, method: str, route: str, query: dict[str, list[str]]) -> Response:
        bucket = _BUCKET.match(route)
        if method == "GET" and bucket is not None:  # the storage client reads the bucket before its objects
            return Response.json({"kind": "storage#bucket", "name": bucket["bucket"], "location": "US"})
        listing = _LIST.match(route)
        if method == "GET" and listing is not None:
            return Response.json(self._list(listing["bucket"], (query.get("prefix") or [""])[0]))
        download = _DOWNLOAD.match(route)
        if method == "GET" and download is not None:
            key = (download["bucket"], unquote(download["object"]))
            data = self.objects.get(key)
            if data is None:
                raise _GoogleError(404, f"No such object: {key[0]}/{key[1]}")
            if (query.get("alt") or [""])[0] != "media":
                return Response.json(self._object_resource(*key, data))
            return Response(200, data, {"Content-Type": "application/octet-stream", "x-goog-hash": _hashes(data)})
        raise _GoogleError(404, f"{method} {route} is not supported by this emulator.")

    def _list(self, bucket: str, prefix: str) -> dict[str, Any]:
        with self._lock:
            found = sorted((n, d) for (b, n), d in self.objects.items() if b == bucket and n.startswith(prefix))
        return {"kind": "storage#objects", "items": [self._object_resource(bucket, n, d) for n, d in found]}

    def _object_resource(self, bucket: str, name: str, data: bytes) -> dict[str, Any]:
        quoted = quote(name, safe="")
        return {
            "kind": "storage#object",
            "bucket": bucket,
            "name": name,
            "size": str(len(data)),
            "generation": "1",
            "md5Hash": base64.b64encode(hashlib.md5(data).digest()).decode(),  # GCS's own checksum, not security
            "mediaLink": f"{self.url}/download/storage/v1/b/{bucket}/o/{quoted}?generation=1&alt=media",
        }

    def _check_auth(self, authorization: str | None) -> None:
        if self.access_token is None:
            return
        if not authorization or not authorization.startswith("Bearer "):
            raise _GoogleError(401, "Request had invalid authentication credentials.")
        if authorization[len("Bearer ") :] != self.access_token:
            raise _GoogleError(403, "Permission 'aiplatform.models.export' denied on resource (or it may not exist).")


def _hashes(data: bytes) -> str:
    """The `x-goog-hash` header GCS sends: `crc32c=<b64>,md5=<b64>`."""
    import google_crc32c

    crc = base64.b64encode(google_crc32c.value(data).to_bytes(4, "big")).decode()
    md5 = base64.b64encode(hashlib.md5(data).digest()).decode()  # GCS's own checksum, not security
    return f"crc32c={crc},md5={md5}"
