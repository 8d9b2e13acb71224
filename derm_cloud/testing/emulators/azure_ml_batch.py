"""An Azure Machine Learning batch endpoint on 127.0.0.1: invoke, job status, outputs, and the blob store.

Just what the real `azure-ai-ml` `MLClient` (pointed here with `AZUREML_DEV_URL_MFE`, see
`derm_cloud.testing.emulators.azure_ml.ml_client_for`) and `azure-storage-blob` send:

* `GET .../workspaces/{ws}/batchEndpoints/{ep}` (the endpoint, whose `scoringUri` `batch_endpoints.invoke` then
  POSTs to), `POST <scoringUri>` with `{"properties": {"inputData": {"UriFolder": {"uri": ...}}}}` (a new job;
  a Bearer token is required, as the service requires an Entra token) and `GET .../workspaces/{ws}/jobs/{name}`
  (`jobs.get`: a pipeline job tagged `azureml.batchrun`, as batch invocations appear;
  https://learn.microsoft.com/azure/machine-learning/how-to-use-batch-model-deployments);
* the workspace's default blob store (`workspaceblobstore`), path-style (`derm_cloud.testing.emulators.azure_blob`),
  where inputs are uploaded and outputs land. An input folder is given as that store's URL or as
  `azureml://datastores/workspaceblobstore/paths/<folder>`.

The job runs the hosted model (`derm_cloud.serving.ModelServer`, the AutoML-for-Images scoring core our
`adapters/azureml/score.py` wraps) over every file of the input folder, one file per mini-batch, and, as a
batch deployment with `output_action: append_row` does, writes one row per scored file to
`azureml/<job>/score/predictions.csv` when the job completes: the file name, then the `labels` / `probs` JSON
the scoring script returns (a CSV row). Files the script fails on do not fail the job (the default
`error_threshold: -1`); the service logs them under the job's `logs/user/error/`; this emulator writes them to
`azureml/<job>/logs/user/error/errors.jsonl` (`{"file", "error"}` per line), a layout of its own that the
client reads when present. Status: `Preparing` -> `Running` -> `Completed`, or `Failed` when a `JobFault` fails
it (then no `predictions.csv`: append_row writes the file at the end).

Example:
    >>> with AzureMLBatchEmulator(model_dir) as emu:  # doctest: +SKIP
    ...     ml_client = emu.ml_client()
"""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import re
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from derm_cloud.testing.emulators.azure_blob import BlobStore
from derm_cloud.testing.emulators.azure_ml_arm import WORKSPACE_ROUTE, arm_error, arm_unauthorized, in_workspace
from derm_cloud.testing.emulators.base import EmulatorServer, Response, header_value
from derm_cloud.testing.emulators.batch_runner import BatchJobs, EmulatedJob, JobFault

__all__ = ["DATASTORE_CONTAINER", "AzureMLBatchEmulator"]

#: the container behind `workspaceblobstore`.
DATASTORE_CONTAINER = "azureml-blobstore"
_ENDPOINT = re.compile(WORKSPACE_ROUTE + r"/batchEndpoints/(?P<ep>[^/]+)$", re.IGNORECASE)
_JOB = re.compile(WORKSPACE_ROUTE + r"/jobs/(?P<job>[^/]+)$", re.IGNORECASE)
_SCORE = re.compile(r"^/batch/(?P<ep>[^/]+)/jobs$")
_STATUS = {
    "queued": "Preparing",
    "running": "Running",
    "succeeded": "Completed",
    "failed": "Failed",
    "stopped": "Canceled",
}
_DATASTORE_URI = "azureml://datastores/workspaceblobstore/paths/"


class AzureMLBatchEmulator(EmulatorServer):
    """One workspace with one batch endpoint (one deployment) hosting a model, and its blob store.

    Args:
        model_dir: the deployment's model directory.
        endpoint_name, deployment: names the routes answer to.
        subscription_id, resource_group, workspace: the workspace the management routes answer to.
        instance_type, instance_count: the deployment's compute cluster (reported in job properties).
    """

    name = "azure-ml-batch"

    def __init__(
        self,
        model_dir: str | os.PathLike[str],
        *,
        endpoint_name: str = "derm-batch",
        deployment: str = "blue",
        subscription_id: str = "00000000-0000-0000-0000-000000000000",
        resource_group: str = "derm-rg",
        workspace: str = "derm-ws",
        instance_type: str = "Standard_DS3_v2",
        instance_count: int = 1,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        from derm_cloud.serving import ModelServer

        super().__init__(host=host, port=port)
        self.server = ModelServer(Path(model_dir).expanduser())
        self.endpoint_name, self.deployment = endpoint_name, deployment
        self.subscription_id, self.resource_group, self.workspace = subscription_id, resource_group, workspace
        self.instance_type, self.instance_count = instance_type, instance_count
        self.blobs = BlobStore()
        self.batch = BatchJobs()
        self._jobs: dict[str, dict[str, Any]] = {}
        self._count = 0
        self._count_lock = threading.Lock()

    @property
    def blob_account_url(self) -> str:
        """The storage account URL (`http://127.0.0.1:PORT/devstoreaccount1`) for `azure-storage-blob`."""
        return f"{self.url}/{self.blobs.account}"

    def inject_job_fault(self, fault: JobFault) -> None:
        """Delay or fail the next job(s) created (see `JobFault`)."""
        self.batch.inject(fault)

    def ml_client(self) -> Any:
        """A real `azure.ai.ml.MLClient` pointed at this emulator (static test token)."""
        from derm_cloud.testing.emulators.azure_ml import ml_client_for

        return ml_client_for(self)  # type: ignore[arg-type]

    def container_client(self) -> Any:
        """An `azure.storage.blob.ContainerClient` for the workspace blob store (anonymous over http)."""
        from azure.storage.blob import ContainerClient

        return ContainerClient(self.blob_account_url, DATASTORE_CONTAINER)

    # --- routes ----------------------------------------------------------------------------------------------

    def handle(self, method: str, path: str, headers: Mapping[str, str], body: bytes) -> Response:
        if self.blobs.owns(path):
            return self.blobs.handle(method, path, headers, body)
        route = urlsplit(path).path
        if (refused := arm_unauthorized(headers)) is not None:
            return refused
        score = _SCORE.match(route)
        if method == "POST" and score is not None and score["ep"] == self.endpoint_name:
            return self._invoke(json.loads(body or b"{}"), header_value(headers, "azureml-model-deployment"))
        endpoint, job = _ENDPOINT.match(route), _JOB.match(route)
        if method == "GET" and endpoint is not None and self._ours(endpoint) and endpoint["ep"] == self.endpoint_name:
            return Response.json(self._endpoint_json(route))
        if method == "GET" and job is not None and self._ours(job):
            if job["job"] not in self._jobs:
                return arm_error(404, "UserError", f"Job {job['job']} not found")
            return Response.json(self._job_json(route, job["job"]))
        return arm_error(404, "ResourceNotFound", f"{method} {route} is not served by this emulator")

    def _ours(self, match: re.Match[str]) -> bool:
        return in_workspace(match, self.subscription_id, self.resource_group, self.workspace)

    def _invoke(self, request: dict[str, Any], deployment: str | None) -> Response:
        if deployment and deployment != self.deployment:
            return arm_error(
                400, "UserError", f"Deployment {deployment!r} does not exist on endpoint {self.endpoint_name}"
            )
        inputs = (request.get("properties") or {}).get("inputData") or {}
        folder = next((v.get("uri") for v in inputs.values() if isinstance(v, dict) and v.get("uri")), None)
        prefix = self._folder(str(folder or ""))
        if prefix is None:
            return arm_error(400, "UserError", f"input {folder!r} is not a folder of the workspace blob store")
        files = [n for n in self.blobs.names(DATASTORE_CONTAINER, prefix) if n != prefix]
        if not files:
            return arm_error(400, "UserError", f"the input folder {folder} holds no files")
        with self._count_lock:
            self._count += 1
            name = f"batchjob-{self._count:04d}-{int(time.time())}"
        rows: list[list[str]] = []
        errors: list[str] = []

        def work(job: EmulatedJob, blob: str) -> str | None:
            leaf = blob.rpartition("/")[2]
            data = self.blobs.get(DATASTORE_CONTAINER, blob) or b""
            payload = {"input_data": {"columns": ["image"], "data": [base64.b64encode(data).decode()]}}
            try:
                answer = self.server.azureml_predictions(payload)[0]
            except Exception as exc:  # the scoring script's failure on one file, logged like the service does
                cause = f"{type(exc).__name__}: {exc}"
                errors.append(json.dumps({"file": leaf, "error": cause}) + "\n")
                return cause
            rows.append([leaf, json.dumps({"labels": answer["labels"], "probs": answer["probs"]})])
            return None

        def finish(job: EmulatedJob) -> None:
            out = io.StringIO()
            csv.writer(out).writerows(rows)
            self.blobs.put(DATASTORE_CONTAINER, f"azureml/{name}/score/predictions.csv", out.getvalue().encode())
            if errors:
                log = f"azureml/{name}/logs/user/error/errors.jsonl"
                self.blobs.put(DATASTORE_CONTAINER, log, "".join(errors).encode())

        self.batch.create(name, files, work, finish)
        self._jobs[name] = {"input": folder}
        base = f"/subscriptions/{self.subscription_id}/resourceGroups/{self.resource_group}/providers/"
        job_id = f"{base}Microsoft.MachineLearningServices/workspaces/{self.workspace}/jobs/{name}"
        return Response.json(
            {
                "id": job_id,
                "name": name,
                "type": "Microsoft.MachineLearningServices/workspaces/jobs",
                "properties": {"status": "NotStarted"},
            }
        )

    def _folder(self, uri: str) -> str | None:
        """The blob prefix an input URI names, or `None` when it is not in the workspace blob store."""
        store = f"{self.blob_account_url}/{DATASTORE_CONTAINER}/"
        if uri.startswith(store):
            return uri[len(store) :]
        if uri.startswith(_DATASTORE_URI):
            return uri[len(_DATASTORE_URI) :]
        return None

    def _endpoint_json(self, resource_id: str) -> dict[str, Any]:
        return {
            "id": resource_id,
            "name": self.endpoint_name,
            "type": "Microsoft.MachineLearningServices/workspaces/batchEndpoints",
            "location": "westeurope",
            "properties": {
                "authMode": "AADToken",
                "scoringUri": f"{self.url}/batch/{self.endpoint_name}/jobs",
                "provisioningState": "Succeeded",
                "defaults": {"deploymentName": self.deployment},
            },
        }

    def _job_json(self, resource_id: str, name: str) -> dict[str, Any]:
        job = self.batch.get(name)
        assert job is not None
        status = "Canceling" if job.stop_requested and job.state in ("queued", "running") else _STATUS[job.state]
        props: dict[str, Any] = {
            "azureml.batchrun": "true",
            "instanceType": self.instance_type,
            "instanceCount": str(self.instance_count),
        }
        if job.started is not None:
            props["startTimeUtc"] = str(job.started)
        if job.ended is not None:
            props["endTimeUtc"] = str(job.ended)
        if job.state == "failed":
            props["error"] = job.message
        return {
            "id": resource_id,
            "name": name,
            "type": "Microsoft.MachineLearningServices/workspaces/jobs",
            "properties": {
                "jobType": "Pipeline",
                "status": status,
                "displayName": name,
                "tags": {"azureml.batchrun": "true", "azureml.deploymentname": self.deployment},
                "properties": props,
                "jobs": {},
                "inputs": {},
                "outputs": {"score": {"jobOutputType": "uri_folder", "uri": f"{_DATASTORE_URI}azureml/{name}/score/"}},
            },
        }
