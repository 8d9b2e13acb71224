"""Vertex AI batch prediction on 127.0.0.1: `JobService` batch prediction jobs over REST, and Cloud Storage.

What `aiplatform_v1.JobServiceClient(transport="rest")` sends
(https://cloud.google.com/vertex-ai/docs/reference/rest/v1/projects.locations.batchPredictionJobs):
`POST /v1/projects/{p}/locations/{l}/batchPredictionJobs` (create), `GET .../batchPredictionJobs/{id}` (get),
`POST .../batchPredictionJobs/{id}:cancel`. The job reads JSON Lines instances from Cloud Storage, one AutoML
image instance per line (`{"content": "gs://bucket/image.jpg", "mimeType": "image/jpeg"}`,
https://cloud.google.com/vertex-ai/docs/image-data/classification/get-predictions), runs the hosted model
(`derm_cloud.serving.ModelServer`, AutoML image classification shape, every label returned) and writes, under
`outputUriPrefix/prediction-<model display name>-<timestamp>/`, `predictions_NNNNN.jsonl` (`{"instance",
"prediction": {"ids", "displayNames", "confidences"}}`) and `errors_NNNNN.jsonl` (`{"instance", "status"}`),
a new pair of files every `shard_size` instances, so a job that fails half-way leaves what it finished.

Google's HAI-DEF embedding models (`add_embedding_model`) run as a custom container would: each instance line
goes to the container's predict logic, the one the emulated online endpoint runs (`VertexEmbeddingEmulator.
container_answers`, hosting the same stand-in encoder), and the answers land in `prediction.results-NNNNN-of-MMMMM`
(`{"instance", "prediction"}`; a per-instance refusal of the container is a prediction `{"error": ...}`, as
online) and `prediction.errors_stats-NNNNN-of-MMMMM` (`{"instance", "error": {"code", "message"}}` for a request
the container refused whole), the names the HAI-DEF Model Garden notebooks read. The container reads `gs://`
objects of this emulator's Cloud Storage as the job's service account: a Derm Foundation instance with no token
and a MedSigLIP one with `access_credential: "application_default"` may read them; an anonymous MedSigLIP read
(no credential) is refused, since the emulated bucket is private.

States: `JOB_STATE_PENDING` -> `JOB_STATE_RUNNING` -> `JOB_STATE_SUCCEEDED` (per-instance failures do not fail
the job; `completionStats.failedCount` counts them), `JOB_STATE_FAILED` with `error` when a `JobFault` fails
it, `JOB_STATE_CANCELLING` -> `JOB_STATE_CANCELLED` after cancel.

Example:
    >>> with VertexBatchEmulator() as emu:  # doctest: +SKIP
    ...     emu.add_model("123", model_dir)
    ...     jobs, storage = emu.job_client(), emu.storage_client()
"""

from __future__ import annotations

import base64
import json
import os
import re
import threading
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from derm_cloud.testing.emulators.base import EmulatorServer, Response
from derm_cloud.testing.emulators.batch_runner import BatchJobs, EmulatedJob, JobFault
from derm_cloud.testing.emulators.embedding_host import ObjectStore
from derm_cloud.testing.emulators.gcs import GcsStore, split_gs_uri

if TYPE_CHECKING:
    from derm_cloud.testing.emulators.vertex_embeddings import ServingApi

__all__ = ["VertexBatchEmulator"]

_JOBS = re.compile(
    r"^/v1/projects/(?P<p>[^/]+)/locations/(?P<l>[^/]+)/batchPredictionJobs(?:/(?P<id>[^/:]+))?(?P<verb>:cancel)?$"
)
_STATES = {
    "queued": "JOB_STATE_PENDING",
    "running": "JOB_STATE_RUNNING",
    "succeeded": "JOB_STATE_SUCCEEDED",
    "failed": "JOB_STATE_FAILED",
    "stopped": "JOB_STATE_CANCELLED",
}
_STATUS_NAMES = {400: "INVALID_ARGUMENT", 404: "NOT_FOUND", 409: "ALREADY_EXISTS"}


class _GoogleError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code

    def response(self) -> Response:
        status = _STATUS_NAMES.get(self.code, "INTERNAL")
        return Response.json({"error": {"code": self.code, "message": str(self), "status": status}}, self.code)


def _rfc3339(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class VertexBatchEmulator(EmulatorServer):
    """Vertex AI batch prediction jobs and the Cloud Storage they read and write, on one port.

    Args:
        project, location: the resource path answered; others get 404.
        shard_size: instances per output file pair.
    """

    name = "vertex-batch"

    def __init__(
        self,
        *,
        project: str = "derm-cloud-test",
        location: str = "us-central1",
        shard_size: int = 10,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        super().__init__(host=host, port=port)
        self.project, self.location, self.shard_size = project, location, shard_size
        self.gcs = GcsStore()
        self.batch = BatchJobs()
        self.models: dict[str, Any] = {}  # model id -> ModelServer
        self.embedding_models: dict[str, Any] = {}  # model id -> VertexEmbeddingEmulator (never started: its logic)
        self._jobs: dict[str, dict[str, Any]] = {}
        self._ids = 0
        self._id_lock = threading.Lock()

    def add_model(self, model_id: str, model_dir: str | os.PathLike[str], display_name: str = "") -> str:
        """Upload a model (hosted in-process); returns its resource name for `BatchPredictionJob.model`."""
        from derm_cloud.serving import ModelServer

        server = ModelServer(Path(model_dir).expanduser(), max_body_bytes=64 * 1024 * 1024)
        server.display_name = display_name or server.model_id  # type: ignore[attr-defined]
        self.models[model_id] = server
        return self.model_name(model_id)

    def add_embedding_model(
        self, model_id: str, model: str | os.PathLike[str] | Any, *, serving_api: ServingApi = "medsiglip"
    ) -> str:
        """Upload a HAI-DEF embedding model (`medsiglip` or `derm-foundation` serving container) hosting `model`
        (an embedder folder or an `Embedder`) as its stand-in encoder; returns its resource name."""
        from derm_cloud.testing.emulators.vertex_embeddings import VertexEmbeddingEmulator

        if serving_api not in ("medsiglip", "derm-foundation"):
            raise ValueError(f"serving_api must be 'medsiglip' or 'derm-foundation', got {serving_api!r}")
        container = VertexEmbeddingEmulator(
            model,
            serving_api=serving_api,
            endpoint_id=model_id,
            project=self.project,
            location=self.location,
        )
        container.storage = _JobStorage(self.gcs, serving_api)
        self.embedding_models[model_id] = container
        return self.model_name(model_id)

    def model_name(self, model_id: str) -> str:
        return f"projects/{self.project}/locations/{self.location}/models/{model_id}"

    def inject_job_fault(self, fault: JobFault) -> None:
        """Delay or fail the next job(s) created (see `JobFault`)."""
        self.batch.inject(fault)

    def job_client(self) -> Any:
        """An `aiplatform_v1.JobServiceClient` on REST, pointed here with anonymous credentials."""
        from google.api_core.client_options import ClientOptions
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import aiplatform_v1

        return aiplatform_v1.JobServiceClient(
            client_options=ClientOptions(api_endpoint=self.url),
            credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
            transport="rest",
        )

    def storage_client(self) -> Any:
        """A `google.cloud.storage.Client` pointed here with anonymous credentials."""
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        return storage.Client(
            project=self.project,
            credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
            client_options={"api_endpoint": self.url},
        )

    # --- routes ----------------------------------------------------------------------------------------------

    def handle(self, method: str, path: str, headers: Mapping[str, str], body: bytes) -> Response:
        if GcsStore.owns(path):
            return self.gcs.handle(method, path, headers, body, self.url)
        try:
            match = _JOBS.match(urlsplit(path).path)
            if match is None or (match["p"], match["l"]) != (self.project, self.location):
                raise _GoogleError(404, f"The requested URL {urlsplit(path).path} was not found on this server.")
            if method == "POST" and not match["id"]:
                return Response.json(self._create(json.loads(body or b"{}")))
            job_id = str(match["id"] or "")
            if method == "GET" and not match["verb"]:
                return Response.json(self._resource(job_id))
            if method == "POST" and match["verb"]:
                self._resource(job_id)
                self.batch.stop(job_id)
                return Response.json({})
            raise _GoogleError(404, f"{method} {path} is not supported by this emulator.")
        except _GoogleError as exc:
            return exc.response()

    def _create(self, request: dict[str, Any]) -> dict[str, Any]:
        model_id = str(request.get("model") or "").rpartition("/")[2]
        known = model_id in self.models or model_id in self.embedding_models
        if str(request.get("model") or "") != self.model_name(model_id) or not known:
            raise _GoogleError(404, f"The Model does not exist: {request.get('model')!r}")
        in_cfg, out_cfg = request.get("inputConfig") or {}, request.get("outputConfig") or {}
        if in_cfg.get("instancesFormat") != "jsonl" or out_cfg.get("predictionsFormat") != "jsonl":
            raise _GoogleError(400, "instancesFormat and predictionsFormat must be 'jsonl' for image models")
        uris = (in_cfg.get("gcsSource") or {}).get("uris") or []
        prefix = str((out_cfg.get("gcsDestination") or {}).get("outputUriPrefix") or "")
        try:
            instances = [line for uri in uris for line in self._lines(uri)]
            out_bucket, out_path = split_gs_uri(prefix)
        except ValueError as exc:
            raise _GoogleError(400, str(exc)) from None
        if not instances:
            raise _GoogleError(400, f"no instances found in {uris}")
        with self._id_lock:
            self._ids += 1
            job_id = str(8_000_000_000 + self._ids)
        server = self.models.get(model_id)
        container = self.embedding_models.get(model_id)
        display = server.display_name if server is not None else f"{model_id}-embeddings"
        stamp = datetime.now(UTC).strftime("%Y_%m_%dT%H_%M_%S_%fZ")
        folder = f"{out_path.rstrip('/')}/prediction-{display}-{stamp}".lstrip("/")
        shard: dict[str, list[str]] = {"predictions": [], "errors": []}
        written = [0]
        shards = -(-len(instances) // self.shard_size)  # a custom container's files say how many there are

        def flush() -> None:
            written[0] += 1
            for kind, lines in shard.items():
                if lines:
                    leaf = f"{kind}_{written[0]:05d}.jsonl"
                    if container is not None:
                        name = "prediction.results" if kind == "predictions" else "prediction.errors_stats"
                        leaf = f"{name}-{written[0] - 1:05d}-of-{shards:05d}"
                    self.gcs.put(out_bucket, f"{folder}/{leaf}", "".join(lines).encode())
                lines.clear()

        def work(job: EmulatedJob, line: str) -> str | None:
            instance = json.loads(line)
            cause = None
            try:
                if container is not None:
                    prediction = self._embed(container, model_id, instance)
                else:
                    prediction = self._predict(server, instance)
                shard["predictions"].append(json.dumps({"instance": instance, "prediction": prediction}) + "\n")
            except _GoogleError as exc:
                cause = str(exc)
                failed: dict[str, Any] = {"instance": instance, "status": cause}
                if container is not None:  # the documented error field: a google.rpc.Status
                    failed = {"instance": instance, "error": {"code": 3, "message": cause}}
                shard["errors"].append(json.dumps(failed) + "\n")
            if (job.done + 1) % self.shard_size == 0:
                flush()
            return cause

        job = self.batch.create(job_id, instances, work, lambda job: flush())
        self._jobs[job_id] = {
            **request,
            "name": f"projects/{self.project}/locations/{self.location}/batchPredictionJobs/{job_id}",
            "outputInfo": {"gcsOutputDirectory": f"gs://{out_bucket}/{folder}"},
            "createTime": _rfc3339(job.created),
        }
        return self._resource(job_id)

    def _lines(self, uri: str) -> list[str]:
        bucket, name = split_gs_uri(uri)
        data = self.gcs.get(bucket, name)
        if data is None:
            raise ValueError(f"input file {uri} does not exist")
        return [line for line in data.decode().splitlines() if line.strip()]

    def _predict(self, server: Any, instance: Any) -> dict[str, Any]:
        from derm_cloud.serving import ServingError

        content = instance.get("content") if isinstance(instance, dict) else None
        if not isinstance(content, str) or not content.startswith("gs://"):
            raise _GoogleError(400, "INVALID_ARGUMENT: instance.content must be a gs:// URI of an image")
        data = self.gcs.get(*split_gs_uri(content))
        if data is None:
            raise _GoogleError(404, f"NOT_FOUND: {content} does not exist")
        body = {
            "instances": [{"content": base64.b64encode(data).decode()}],
            "parameters": {"confidenceThreshold": 0.0, "maxPredictions": len(server.labels)},
        }
        try:
            served = server.vertex_automl_predict(json.dumps(body))
        except ServingError as exc:
            raise _GoogleError(400, f"INVALID_ARGUMENT: {exc}") from None
        return dict(json.loads(served.body)["predictions"][0])

    @staticmethod
    def _embed(container: Any, model_id: str, instance: Any) -> dict[str, Any]:
        try:
            return dict(container.container_answers(model_id, [instance])[0])
        except ValueError as exc:  # the container refused the request whole
            raise _GoogleError(400, f"INVALID_ARGUMENT: the model container refused the instance: {exc}") from None

    def _resource(self, job_id: str) -> dict[str, Any]:
        job, spec = self.batch.get(job_id), self._jobs.get(job_id)
        if job is None or spec is None:
            raise _GoogleError(404, f"BatchPredictionJob {job_id} not found.")
        state = _STATES[job.state]
        if job.stop_requested and job.state in ("queued", "running"):
            state = "JOB_STATE_CANCELLING"
        out = {**spec, "state": state, "updateTime": _rfc3339(time.time())}
        if job.started is not None:
            out["startTime"] = _rfc3339(job.started)
        if job.ended is not None:
            out["endTime"] = _rfc3339(job.ended)
        out["completionStats"] = {
            "successfulCount": str(job.done - len(job.failed)),
            "failedCount": str(len(job.failed)),
            "incompleteCount": str(len(job.inputs) - job.done),
        }
        if job.state == "failed":
            out["error"] = {"code": 13, "message": job.message}
        return out


class _JobStorage(ObjectStore):
    """This emulator's Cloud Storage as a batch job's container reads it: with the job's service account."""

    def __init__(self, gcs: GcsStore, serving_api: str) -> None:
        super().__init__()
        self.gcs, self.serving_api = gcs, serving_api

    def read(self, uri: Any, token: Any) -> bytes:
        # Derm Foundation reads with the container's default credentials when no bearer_token is given; MedSigLIP
        # without an access_credential reads anonymously, which a private bucket refuses.
        if token is None and self.serving_api == "medsiglip":
            raise PermissionError(
                f"anonymous read of {uri} refused: the bucket is private; set access_credential to "
                "'application_default' so the job's service account reads it"
            )
        try:
            bucket, name = split_gs_uri(str(uri))
        except ValueError as exc:
            raise FileNotFoundError(str(exc)) from None
        data = self.gcs.get(bucket, name)
        if data is None:
            raise FileNotFoundError(f"no object {uri}")
        return data
