"""Azure ML batch endpoints through azure-ai-ml and azure-storage-blob: invoke, job status, outputs.

Images are uploaded to the workspace's default blob store (`workspaceblobstore`), the endpoint is invoked on
that folder with `MLClient.batch_endpoints.invoke(input=Input(type="uri_folder", path=...))`, and
`MLClient.jobs.get` follows the job. The deployment's scoring script writes one row per scored file to
`predictions.csv` (`output_action: append_row`) in the job's `score` output, read here from the blob store.
`jobs.download` is not used: it refuses a job that has not ended, and collecting what a stopped or failed job
left needs a direct read. Files the script failed on are read from the job's error log
(`logs/user/error/errors.jsonl`, the emulator's layout; the service's own log format is not documented as
machine-readable).

Example:
    >>> provider = AzureMLBatchEndpoint(ml_client, container_client, endpoint_name="derm-batch",  # doctest: +SKIP
    ...     labels=labels)
"""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Sequence
from typing import Any

from derm_cloud.batch.jobs import BatchImage, JobRecord, JobStatus, OutputBatch
from derm_cloud.errors import ConfigError, InvalidResponseError, NotFoundError, RemoteError

__all__ = ["AzureMLBatchEndpoint"]

_STATES = {
    "NotStarted": "running",
    "Queued": "running",
    "Preparing": "running",
    "Provisioning": "running",
    "Starting": "running",
    "Running": "running",
    "Finalizing": "running",
    "CancelRequested": "running",
    "Canceling": "running",
    "Completed": "succeeded",
    "Failed": "failed",
    "Canceled": "stopped",
    "NotResponding": "failed",
}
_DATASTORE = "azureml://datastores/workspaceblobstore/paths/"


class AzureMLBatchEndpoint:
    """Jobs of one Azure ML batch endpoint.

    Args:
        ml_client: an `azure.ai.ml.MLClient` for the workspace.
        container: an `azure.storage.blob.ContainerClient` of the workspace's default blob store.
        endpoint_name: the batch endpoint; `deployment` a deployment of it (`None`: the endpoint's default).
        labels: the model's label order; answers are mapped onto it by label.
        instance_type, instance_count: the deployment's cluster (what the job is billed for).
        prefix: folder in the blob store for inputs.
    """

    name = "azure-ml"

    def __init__(
        self,
        ml_client: Any,
        container: Any,
        *,
        endpoint_name: str,
        labels: Sequence[str],
        deployment: str | None = None,
        instance_type: str = "Standard_DS3_v2",
        instance_count: int = 1,
        prefix: str = "derm-cloud-batch",
    ) -> None:
        if not endpoint_name:
            raise ConfigError("an Azure ML batch job needs endpoint_name")
        self.ml, self.container = ml_client, container
        self.endpoint_name, self.deployment = endpoint_name, deployment
        self.labels = tuple(labels)
        self.instance_type, self.instance_count = instance_type, instance_count
        self.prefix = prefix.strip("/")

    def submit(self, images: Sequence[BatchImage], job_name: str) -> JobRecord:
        from azure.ai.ml import Input

        uploading = time.time()  # turnaround counts the upload, as a real-time path counts sending
        folder = f"{self.prefix}/{job_name}/input/"
        objects = {}
        for image in images:
            self._call(self.container.upload_blob, folder + image.image_id, image.data, overwrite=True)
            objects[image.image_id] = image.image_id  # the scoring script reports the file name
        _forget_stale_deployment_header()
        job = self._call(
            self.ml.batch_endpoints.invoke,
            self.endpoint_name,
            deployment_name=self.deployment,
            input=Input(type="uri_folder", path=_DATASTORE + folder),
        )
        return JobRecord(
            provider=self.name,
            job_id=str(job.name),
            input_uri=_DATASTORE + folder,
            output_uri=f"{_DATASTORE}azureml/{job.name}/score/",
            objects=objects,
            submitted=uploading,
            extra={"instance_type": self.instance_type, "instance_count": self.instance_count},
        )

    def status(self, record: JobRecord) -> JobStatus:
        job = self._call(self.ml.jobs.get, record.job_id)
        state = str(getattr(job.status, "value", job.status))
        if state not in _STATES:
            raise InvalidResponseError(f"job status {state!r} is not one Azure ML documents", backend=self.name)
        props = dict(job.properties or {})
        output = getattr((job.outputs or {}).get("score"), "path", None)
        if isinstance(output, str) and output.startswith(_DATASTORE):
            record.output_uri = output
        if "startTimeUtc" in props and "endTimeUtc" in props:
            seconds = float(props["endTimeUtc"]) - float(props["startTimeUtc"])
            record.extra["instance_seconds"] = seconds * self.instance_count
        return JobStatus(_STATES[state], state, str(props.get("error", "")))  # type: ignore[arg-type]

    def read_outputs(self, record: JobRecord) -> OutputBatch:
        found = OutputBatch()
        folder = record.output_uri[len(_DATASTORE) :]
        job_folder = folder.rstrip("/").rpartition("/")[0]
        wanted = [f"{folder}predictions.csv", f"{job_folder}/logs/user/error/errors.jsonl"]
        present = {b.name for b in self._call(list, self.container.list_blobs(name_starts_with=job_folder + "/"))}
        for blob in wanted:
            if blob not in present or blob in record.collected:
                continue
            text = self._call(self.container.download_blob(blob).readall).decode()
            if blob.endswith(".csv"):
                for row in csv.reader(io.StringIO(text)):
                    if row and row[0] in record.objects:
                        found.predictions[record.objects[row[0]]] = self._probabilities(row)
            else:
                for line in text.splitlines():
                    item = json.loads(line)
                    if item.get("file") in record.objects:
                        found.failures[record.objects[item["file"]]] = str(item.get("error"))
            found.objects.append(blob)
        return found

    def _probabilities(self, row: list[str]) -> list[float]:
        try:
            answer = json.loads(row[1])
            by_label = dict(zip(answer["labels"], answer["probs"], strict=True))
            return [float(by_label[label]) for label in self.labels]
        except (IndexError, ValueError, KeyError, TypeError):
            raise InvalidResponseError(
                f"predictions.csv row for {row[0]!r} is not the scoring script's labels / probs", backend=self.name
            ) from None

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        from azure.core.exceptions import AzureError, HttpResponseError, ResourceNotFoundError

        try:
            return fn(*args, **kwargs)
        except ResourceNotFoundError as exc:
            raise NotFoundError(str(exc.message), backend=self.name, status=404) from exc
        except HttpResponseError as exc:
            raise RemoteError(str(exc.message), backend=self.name, status=exc.status_code) from exc
        except AzureError as exc:
            raise RemoteError(f"{type(exc).__name__}: {exc}", backend=self.name, retryable=True) from exc


def _forget_stale_deployment_header() -> None:
    """Drop a deployment name an earlier `invoke` left in azure-ai-ml's shared default headers.

    azure-ai-ml (1.35) builds each invoke's headers on the class-level dict `EndpointInvokeFields.DEFAULT_HEADER`
    itself, not a copy (`headers = EndpointInvokeFields.DEFAULT_HEADER`; `_batch_endpoint_operations.py` and
    `_online_endpoint_operations.py`), so once any invoke in the process named a deployment, every later invoke
    without one is routed to that deployment ("Deployment 'green' does not exist on endpoint ..."). A job meant
    for the endpoint's default deployment must not inherit it.
    """
    try:
        from azure.ai.ml.constants._endpoint import EndpointInvokeFields
    except ImportError:  # a later SDK without the shared dict: nothing to clean
        return
    shared = getattr(EndpointInvokeFields, "DEFAULT_HEADER", None)
    if isinstance(shared, dict):
        shared.pop(getattr(EndpointInvokeFields, "MODEL_DEPLOYMENT", "azureml-model-deployment"), None)
