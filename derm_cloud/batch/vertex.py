"""Vertex AI batch prediction through google-cloud-aiplatform and google-cloud-storage: JSONL in, JSONL out.

Images are uploaded to Cloud Storage, listed in one JSON Lines file (`{"content": "gs://...", "mimeType": ...}`
per line, the AutoML image instance), and a `BatchPredictionJob` is created from the model resource with
`JobServiceClient.create_batch_prediction_job`; `get_batch_prediction_job` follows it. Outputs are
`predictions_*.jsonl` and `errors_*.jsonl` in the job's `outputInfo.gcsOutputDirectory`
(https://cloud.google.com/vertex-ai/docs/predictions/get-batch-predictions). Each output file is read once
(the job record lists those read), so a re-attached client reads only what is new.

Example:
    >>> provider = VertexBatchPrediction(  # doctest: +SKIP
    ...     job_client, storage_client, project="p", location="us-central1", model_id="123", bucket="b", labels=labels
    ... )
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

from derm_cloud.batch.jobs import BatchImage, JobRecord, JobStatus, OutputBatch
from derm_cloud.errors import ConfigError, InvalidResponseError, NotFoundError, RemoteError

__all__ = ["VertexBatchPrediction"]

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


class VertexBatchPrediction:
    """Batch prediction jobs for one Vertex AI model.

    Args:
        job_client: an `aiplatform_v1.JobServiceClient`.
        storage_client: a `google.cloud.storage.Client`.
        project, location, model_id: the model resource `projects/{p}/locations/{l}/models/{id}`.
        bucket: where inputs (`<prefix>/<job>/input/`) and outputs (`<prefix>/<job>/output/`) live.
        labels: the model's label order; AutoML answers are mapped onto it by display name.
        machine_type, replica_count: `dedicatedResources` of the job (what it is billed for).
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
        labels: Sequence[str],
        machine_type: str = "n1-standard-2",
        replica_count: int = 1,
        prefix: str = "derm-cloud-batch",
    ) -> None:
        if not (project and location and model_id and bucket):
            raise ConfigError("Vertex batch prediction needs project, location, model_id and bucket")
        self.jobs, self.storage = job_client, storage_client
        self.project, self.location, self.model_id, self.bucket = project, location, model_id, bucket
        self.labels = tuple(labels)
        self.machine_type, self.replica_count = machine_type, replica_count
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
            lines.append(json.dumps({"content": f"gs://{self.bucket}/{name}", "mimeType": image.mime}))
        manifest = f"{base}/instances.jsonl"
        self._call(bucket.blob(manifest).upload_from_string, "\n".join(lines) + "\n", content_type="application/jsonl")
        job = aiplatform_v1.BatchPredictionJob(
            display_name=job_name,
            model=f"projects/{self.project}/locations/{self.location}/models/{self.model_id}",
            input_config={"instances_format": "jsonl", "gcs_source": {"uris": [f"gs://{self.bucket}/{manifest}"]}},
            output_config={
                "predictions_format": "jsonl",
                "gcs_destination": {"output_uri_prefix": f"gs://{self.bucket}/{base}/output"},
            },
            dedicated_resources={
                "machine_spec": {"machine_type": self.machine_type},
                "starting_replica_count": self.replica_count,
                "max_replica_count": self.replica_count,
            },
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
            extra={"machine_type": self.machine_type, "replica_count": self.replica_count},
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
            if blob.name in done or not leaf.endswith(".jsonl") or not leaf.startswith(("predictions_", "errors_")):
                continue
            text = self._call(blob.download_as_bytes).decode()
            for line in text.splitlines():
                if line.strip():
                    self._read_line(json.loads(line), record, found, errors=leaf.startswith("errors_"))
            found.objects.append(blob.name)
        return found

    def _read_line(self, item: dict[str, Any], record: JobRecord, found: OutputBatch, *, errors: bool) -> None:
        uri = str((item.get("instance") or {}).get("content") or "")
        image_id = record.objects.get(uri)
        if image_id is None:
            return  # not one of ours (a shared output folder)
        if errors:
            status = item.get("status")
            found.failures[image_id] = status.get("message", str(status)) if isinstance(status, dict) else str(status)
            return
        prediction = item.get("prediction") or {}
        try:
            by_name = dict(zip(prediction["displayNames"], prediction["confidences"], strict=True))
            found.predictions[image_id] = [float(by_name[label]) for label in self.labels]
        except (KeyError, TypeError, ValueError):
            raise InvalidResponseError(
                f"the prediction for {uri} does not give a confidence for every label {list(self.labels)}",
                backend=self.name,
            ) from None

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        from google.api_core import exceptions as gexc

        try:
            return fn(*args, **kwargs)
        except gexc.NotFound as exc:
            raise NotFoundError(str(exc.message), backend=self.name, status=404) from exc
        except gexc.GoogleAPIError as exc:
            status = getattr(exc, "code", None)
            raise RemoteError(f"{type(exc).__name__}: {exc}", backend=self.name, status=status) from exc
