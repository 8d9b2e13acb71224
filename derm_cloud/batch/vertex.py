"""Vertex AI batch prediction through google-cloud-aiplatform and google-cloud-storage: JSONL in, JSONL out.

Images are uploaded to Cloud Storage, listed in one JSON Lines file, one instance per line naming its image's
`gs://` link, and a `BatchPredictionJob` is created from the model resource with
`JobServiceClient.create_batch_prediction_job`; `get_batch_prediction_job` follows it. What an instance looks
like and how a prediction reads is the model's (`VertexInstances`): `AutoMLImageInstances` for an AutoML image
classifier (`{"content": "gs://...", "mimeType": ...}`, the default), `derm_cloud.batch.vertex_embeddings` for
Google's HAI-DEF embedding models. Outputs in the job's `outputInfo.gcsOutputDirectory` are `predictions_*` and
`errors_*` (the names `BatchPredictionJob.OutputConfig` documents, and AutoML's) or `prediction.results-*` and
`prediction.errors_stats-*` (a custom-container model's, the names the HAI-DEF notebooks read), one
`{"instance", "prediction"}` or `{"instance", "error"}` object per line
(https://cloud.google.com/vertex-ai/docs/predictions/get-batch-predictions). Each output file is read once
(the job record lists those read), so a re-attached client reads only what is new. A prediction the model's
schema does not allow is reported in `OutputBatch.malformed`, naming the image, and the rest of the file is
still read: one bad line never blocks the others.

Example:
    >>> provider = VertexBatchPrediction(  # doctest: +SKIP
    ...     job_client, storage_client, project="p", location="us-central1", model_id="123", bucket="b", labels=labels
    ... )
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from derm_cloud.batch.jobs import BatchImage, JobRecord, JobStatus, OutputBatch
from derm_cloud.errors import (
    AuthenticationError,
    ConfigError,
    InvalidImageError,
    InvalidResponseError,
    NotFoundError,
    RemoteError,
)

__all__ = ["AutoMLImageInstances", "VertexBatchPrediction", "VertexInstances"]

# Output files: the documented `predictions_N` / `errors_N`, and a custom container's `prediction.results-*` /
# `prediction.errors_stats-*`.
_RESULTS = ("predictions_", "prediction.results")
_ERRORS = ("errors_", "prediction.errors_stats")

_STATES = {
    "JOB_STATE_QUEUED": "running",
    "JOB_STATE_PENDING": "running",
    "JOB_STATE_RUNNING": "running",
    "JOB_STATE_CANCELLING": "running",
    "JOB_STATE_UPDATING": "running",
    "JOB_STATE_PAUSED": "running",
    "JOB_STATE_SUCCEEDED": "succeeded",
    "JOB_STATE_PARTIALLY_SUCCEEDED": "succeeded",
    "JOB_STATE_FAILED": "failed",
    "JOB_STATE_EXPIRED": "failed",
    "JOB_STATE_CANCELLED": "stopped",
}


class VertexInstances(Protocol):
    """One model's batch instances: the JSON line for an uploaded image, and how its prediction reads."""

    def instance(self, uri: str, mime: str) -> dict[str, Any]:
        """The instance line for the image at `uri` (a `gs://` link)."""
        ...

    def source_uri(self, instance: Any) -> str:
        """The `gs://` link an output line's instance names (`""` when it names none)."""
        ...

    def read(self, prediction: Any) -> list[float]:
        """The numbers of one prediction (probabilities in label order, or an embedding).

        Raises:
            InvalidResponseError: the prediction breaks the model's schema.
            InvalidImageError: the model refused this input (a per-image failure, with its words).
            AuthenticationError: the model could not read the image with the credential it was given.
        """
        ...


@dataclass(frozen=True)
class AutoMLImageInstances:
    """AutoML image classification: `{"content": "gs://...", "mimeType": ...}` in, `displayNames` + `confidences`
    out (https://cloud.google.com/vertex-ai/docs/image-data/classification/get-predictions), mapped onto `labels`."""

    labels: tuple[str, ...]

    def instance(self, uri: str, mime: str) -> dict[str, Any]:
        return {"content": uri, "mimeType": mime}

    def source_uri(self, instance: Any) -> str:
        return str((instance or {}).get("content") or "") if isinstance(instance, dict) else ""

    def read(self, prediction: Any) -> list[float]:
        try:
            by_name = dict(zip(prediction["displayNames"], prediction["confidences"], strict=True))
            return [float(by_name[label]) for label in self.labels]
        except (KeyError, TypeError, ValueError):
            raise InvalidResponseError(
                f"the prediction does not give a confidence for every label {list(self.labels)}", backend="vertex"
            ) from None


class VertexBatchPrediction:
    """Batch prediction jobs for one Vertex AI model.

    Args:
        job_client: an `aiplatform_v1.JobServiceClient`.
        storage_client: a `google.cloud.storage.Client`.
        project, location, model_id: the model resource `projects/{p}/locations/{l}/models/{id}`.
        bucket: where inputs (`<prefix>/<job>/input/`) and outputs (`<prefix>/<job>/output/`) live.
        labels: the model's label order; AutoML answers are mapped onto it by display name. Empty for a model
            that answers something other than label scores (see `instances`).
        instances: the model's instance and prediction format (default: `AutoMLImageInstances(labels)`).
        machine_type, replica_count: `dedicatedResources` of the job (what it is billed for).
        accelerator_type, accelerator_count: a GPU for the job's machines (`NVIDIA_TESLA_T4`, 1: what the
            MedSigLIP notebook asks for).
        service_account: the account the job runs as (it reads the inputs; `None`: Vertex's default).
        prefix: object name prefix in the bucket.
    """

    name = "vertex"

    def __init__(
        self,
        job_client: Any,
        storage_client: Any,
        *,
        project: str,
        location: str,
        model_id: str,
        bucket: str,
        labels: Sequence[str] = (),
        instances: VertexInstances | None = None,
        machine_type: str = "n1-standard-2",
        replica_count: int = 1,
        accelerator_type: str | None = None,
        accelerator_count: int = 0,
        service_account: str | None = None,
        prefix: str = "derm-cloud-batch",
    ) -> None:
        if not (project and location and model_id and bucket):
            raise ConfigError("Vertex batch prediction needs project, location, model_id and bucket")
        if instances is None and not labels:
            raise ConfigError("an AutoML image classifier's batch job needs its labels (or pass instances=)")
        self.jobs, self.storage = job_client, storage_client
        self.project, self.location, self.model_id, self.bucket = project, location, model_id, bucket
        self.labels = tuple(labels)
        self.instances: VertexInstances = instances or AutoMLImageInstances(self.labels)
        self.machine_type, self.replica_count = machine_type, replica_count
        self.accelerator_type, self.accelerator_count = accelerator_type, accelerator_count
        self.service_account = service_account
        self.prefix = prefix.strip("/")

    def submit(self, images: Sequence[BatchImage], job_name: str) -> JobRecord:
        from google.cloud import aiplatform_v1

        uploading = time.time()  # turnaround counts the upload, as a real-time path counts sending
        bucket = self.storage.bucket(self.bucket)
        base = f"{self.prefix}/{job_name}"
        objects, lines = {}, []
        for image in images:
            name = f"{base}/input/{image.image_id}"
            self._call(bucket.blob(name).upload_from_string, image.data, content_type=image.mime)
            objects[f"gs://{self.bucket}/{name}"] = image.image_id
            lines.append(json.dumps(self.instances.instance(f"gs://{self.bucket}/{name}", image.mime)))
        manifest = f"{base}/instances.jsonl"
        self._call(bucket.blob(manifest).upload_from_string, "\n".join(lines) + "\n", content_type="application/jsonl")
        machine: dict[str, Any] = {"machine_type": self.machine_type}
        if self.accelerator_type:
            machine |= {"accelerator_type": self.accelerator_type, "accelerator_count": self.accelerator_count or 1}
        job = aiplatform_v1.BatchPredictionJob(
            display_name=job_name,
            model=f"projects/{self.project}/locations/{self.location}/models/{self.model_id}",
            input_config={"instances_format": "jsonl", "gcs_source": {"uris": [f"gs://{self.bucket}/{manifest}"]}},
            output_config={
                "predictions_format": "jsonl",
                "gcs_destination": {"output_uri_prefix": f"gs://{self.bucket}/{base}/output"},
            },
            dedicated_resources={
                "machine_spec": machine,
                "starting_replica_count": self.replica_count,
                "max_replica_count": self.replica_count,
            },
            service_account=self.service_account or "",
        )
        created = self._call(
            self.jobs.create_batch_prediction_job,
            parent=f"projects/{self.project}/locations/{self.location}",
            batch_prediction_job=job,
        )
        return JobRecord(
            provider=self.name,
            job_id=created.name,
            input_uri=f"gs://{self.bucket}/{manifest}",
            output_uri=f"gs://{self.bucket}/{base}/output",
            objects=objects,
            submitted=uploading,
            extra={
                "machine_type": self.machine_type,
                "replica_count": self.replica_count,
                "accelerator_type": self.accelerator_type,
            },
        )

    def status(self, record: JobRecord) -> JobStatus:
        job = self._call(self.jobs.get_batch_prediction_job, name=record.job_id)
        state = job.state.name
        if state not in _STATES:
            raise InvalidResponseError(
                f"batch prediction job state {state!r} is not one Vertex documents", backend=self.name
            )
        if job.output_info.gcs_output_directory:
            record.extra["output_directory"] = job.output_info.gcs_output_directory
        if job.start_time and job.end_time:
            seconds = (job.end_time - job.start_time).total_seconds()
            record.extra["node_seconds"] = seconds * self.replica_count
        return JobStatus(_STATES[state], state, job.error.message or "")  # type: ignore[arg-type]

    def read_outputs(self, record: JobRecord) -> OutputBatch:
        found = OutputBatch()
        directory = record.extra.get("output_directory") or ""
        if not directory:
            return found  # the job has written nothing yet
        bucket, _, folder = directory[len("gs://") :].partition("/")
        done = set(record.collected)
        for blob in self._call(list, self.storage.list_blobs(bucket, prefix=folder + "/")):
            leaf = blob.name.rpartition("/")[2]
            if blob.name in done or not leaf.startswith(_RESULTS + _ERRORS):
                continue
            if leaf.startswith(("predictions_", "errors_")) and not leaf.endswith(".jsonl"):
                continue  # another predictions format (BigQuery export, CSV) than the JSON Lines asked for
            text = self._call(blob.download_as_bytes).decode()
            for number, line in enumerate(text.splitlines(), 1):
                if line.strip():
                    self._read_line(line, f"{blob.name}:{number}", record, found, errors=leaf.startswith(_ERRORS))
            found.objects.append(blob.name)
        return found

    def _read_line(self, line: str, where: str, record: JobRecord, found: OutputBatch, *, errors: bool) -> None:
        try:
            item = json.loads(line)
        except ValueError:
            item = None
        if not isinstance(item, dict):
            raise InvalidResponseError(
                f"output line {where} is not a JSON object; the job wrote a file Vertex does not document",
                backend=self.name,
            )
        uri = self.instances.source_uri(item.get("instance"))
        image_id = record.objects.get(uri)
        if image_id is None:
            return  # not one of ours (a shared output folder), or an error line that names no instance
        if errors:
            status = item.get("error", item.get("status"))
            found.failures[image_id] = status.get("message", str(status)) if isinstance(status, dict) else str(status)
            return
        try:
            found.predictions[image_id] = self.instances.read(item.get("prediction"))
        except InvalidResponseError as exc:
            found.malformed[image_id] = f"{exc} ({where})"
        except (InvalidImageError, AuthenticationError) as exc:
            found.failures[image_id] = str(exc)

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        from google.api_core import exceptions as gexc

        try:
            return fn(*args, **kwargs)
        except gexc.NotFound as exc:
            raise NotFoundError(str(exc.message), backend=self.name, status=404) from exc
        except gexc.GoogleAPIError as exc:
            status = getattr(exc, "code", None)
            raise RemoteError(f"{type(exc).__name__}: {exc}", backend=self.name, status=status) from exc
