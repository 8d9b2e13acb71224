"""SageMaker Batch Transform on 127.0.0.1: `CreateTransformJob`, `DescribeTransformJob`, `StopTransformJob`.

Speaks the SageMaker control plane's JSON protocol (`X-Amz-Target: SageMaker.<Operation>`) that boto3's
`sagemaker` client sends, and reads and writes S3 through moto's S3 server, which it starts beside itself.
The request and response fields are those of the API reference
(https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_CreateTransformJob.html,
API_DescribeTransformJob.html, API_TransformInput.html); what the job does with them follows the Batch
Transform guide (https://docs.aws.amazon.com/sagemaker/latest/dg/batch-transform.html):

* every object under `TransformInput.DataSource.S3DataSource.S3Uri` (`S3DataType=S3Prefix`) is one request to
  the model container's `/invocations` (`SplitType=None`: an image is never split), with the job's
  `ContentType` and the output's `Accept`; the model is hosted in-process by `derm_cloud.serving.ModelServer`,
  the core our SageMaker adapter (`adapters/sagemaker/serve.py`) wraps, or by a running adapter container
  (`container_url`), exactly as the real-time emulator hosts it;
* each answer is written to `S3OutputPath/<key relative to the input prefix>.out`;
* `TransformJobStatus` goes `InProgress` -> `Completed`, or `Failed` when an invocation failed. The service
  then points to the job's CloudWatch logs; this emulator puts the failed objects and their container answers
  in `FailureReason` instead (one `s3://...: <status> <message>` line each, within the field's 1,024
  characters), an emulator convention the client reads when it is there;
* `Stopping` -> `Stopped` after `StopTransformJob`; `JobFault` s delay or fail whole jobs.

Errors use the JSON protocol envelope (`__type`, `message`): `ValidationException` for bad fields or an
unknown job (the service's "Could not find requested job"), `ResourceInUse` for a job name already used.

Example:
    >>> with SageMakerBatchEmulator() as emu:  # doctest: +SKIP
    ...     emu.add_model("derm", model_dir)
    ...     sm, s3 = emu.sagemaker_client(), emu.s3_client()
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from derm_cloud.testing.emulators.base import EmulatorServer, Response
from derm_cloud.testing.emulators.batch_runner import BatchJobs, EmulatedJob, JobFault

__all__ = ["SageMakerBatchEmulator"]

_STATUS = {
    "queued": "InProgress",
    "running": "InProgress",
    "succeeded": "Completed",
    "failed": "Failed",
    "stopped": "Stopped",
}
_FAILURE_REASON_LIMIT = 1024  # DescribeTransformJob FailureReason: at most 1,024 characters


class _AwsError(Exception):
    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code, self.status = code, status


class SageMakerBatchEmulator(EmulatorServer):
    """The Batch Transform part of the SageMaker API, with S3 from moto's server (see the module docstring).

    Args:
        region, account_id: what ARNs and clients use.
    """

    name = "sagemaker-batch"

    def __init__(
        self, *, host: str = "127.0.0.1", port: int = 0, region: str = "us-east-1", account_id: str = "123456789012"
    ) -> None:
        super().__init__(host=host, port=port)
        self.region = region
        self.account_id = account_id
        self.batch = BatchJobs()
        self.models: dict[str, Any] = {}  # model name -> ModelServer or a container URL
        self._specs: dict[str, dict[str, Any]] = {}
        self._moto: Any = None
        self._s3: Any = None
        self._s3_lock = threading.Lock()

    # --- lifecycle and hosting ---------------------------------------------------------------------------------

    def start(self) -> SageMakerBatchEmulator:
        if self._moto is None:
            import logging

            from moto.server import ThreadedMotoServer

            logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one log line per S3 call otherwise
            self._moto = ThreadedMotoServer(ip_address=self._host, port=0, verbose=False)
            self._moto.start()
        super().start()
        return self

    def stop(self) -> None:
        super().stop()
        if self._moto is not None:
            self._moto.stop()
            self._moto = None

    @property
    def s3_url(self) -> str:
        """moto's S3 server, e.g. `http://127.0.0.1:41234`."""
        host, port = self._moto.get_host_and_port()
        return f"http://{host}:{port}"

    def add_model(self, name: str, model_dir: str | os.PathLike[str] | None = None, *, container_url: str = "") -> None:
        """Register a SageMaker model: a model directory served in-process, or a running adapter container."""
        if container_url:
            self.models[name] = container_url.rstrip("/")
            return
        from derm_cloud.serving import ModelServer

        if model_dir is None:
            raise ValueError("pass a model directory or a container_url")
        self.models[name] = ModelServer(Path(model_dir).expanduser())

    def inject_job_fault(self, fault: JobFault) -> None:
        """Delay or fail the next job(s) created (see `JobFault`)."""
        self.batch.inject(fault)

    def _client(self, service: str, url: str) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.session.Session().client(
            service,
            region_name=self.region,
            endpoint_url=url,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            config=Config(retries={"total_max_attempts": 1}),
        )

    def sagemaker_client(self) -> Any:
        """A boto3 `sagemaker` client for this emulator (dummy keys, one attempt)."""
        return self._client("sagemaker", self.url)

    def s3_client(self) -> Any:
        """A boto3 `s3` client for the moto S3 server beside this emulator."""
        return self._client("s3", self.s3_url)

    # --- the wire contract -------------------------------------------------------------------------------------

    def handle(self, method: str, path: str, headers: Mapping[str, str], body: bytes) -> Response:
        target = next((v for k, v in headers.items() if k.lower() == "x-amz-target"), "")
        operation = target.rpartition(".")[2]
        try:
            request = json.loads(body or b"{}")
            if operation == "CreateTransformJob":
                return Response.json(self._create(request))
            if operation == "DescribeTransformJob":
                return Response.json(self._describe(str(request.get("TransformJobName", ""))))
            if operation == "StopTransformJob":
                self._job(str(request.get("TransformJobName", "")))
                self.batch.stop(str(request["TransformJobName"]))
                return Response.json({})
            raise _AwsError("UnknownOperationException", f"{operation or target!r} is not emulated", 400)
        except _AwsError as exc:
            return Response.json({"__type": exc.code, "message": str(exc)}, exc.status)

    def _create(self, request: dict[str, Any]) -> dict[str, Any]:
        name = str(request.get("TransformJobName") or "")
        model = str(request.get("ModelName") or "")
        if not name:
            raise _AwsError("ValidationException", "1 validation error detected: TransformJobName must not be null")
        if self.batch.get(name) is not None:
            raise _AwsError("ResourceInUse", f"Job name must be unique within an AWS account and region: {name}")
        if model not in self.models:
            raise _AwsError(
                "ValidationException",
                f'Could not find model "arn:aws:sagemaker:{self.region}:{self.account_id}:model/{model}".',
            )
        t_in = request.get("TransformInput") or {}
        source = ((t_in.get("DataSource") or {}).get("S3DataSource")) or {}
        split = t_in.get("SplitType", "None")
        if split != "None":
            raise _AwsError(
                "ValidationException", f"SplitType {split!r} would split image files: use SplitType None for images"
            )
        if source.get("S3DataType", "S3Prefix") != "S3Prefix":
            raise _AwsError(
                "ValidationException", "only S3DataType S3Prefix is emulated; list the images under one prefix"
            )
        in_bucket, in_prefix = _split_s3(str(source.get("S3Uri", "")))
        out_bucket, out_prefix = _split_s3(str((request.get("TransformOutput") or {}).get("S3OutputPath", "")))
        with self._s3_lock:
            s3 = self._s3 = self._s3 or self.s3_client()
        keys = [
            o["Key"]
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket=in_bucket, Prefix=in_prefix)
            for o in page.get("Contents", [])
        ]
        if not keys:
            raise _AwsError("ValidationException", f'No S3 objects found under S3 URL "s3://{in_bucket}/{in_prefix}"')
        self._specs[name] = {**request, "CreationTime": 0.0}
        server = self.models[model]
        content_type = str(t_in.get("ContentType") or "application/x-image")
        accept = str((request.get("TransformOutput") or {}).get("Accept") or "application/json")

        def work(job: EmulatedJob, key: str) -> str | None:
            data = s3.get_object(Bucket=in_bucket, Key=key)["Body"].read()
            status, answer = _invoke(server, data, content_type, accept)
            if not 200 <= status < 300:
                return f"s3://{in_bucket}/{key}: {status} {answer.decode('utf-8', 'replace')[:300]}"
            relative = key[len(in_prefix) :].lstrip("/")
            s3.put_object(Bucket=out_bucket, Key=f"{out_prefix.rstrip('/')}/{relative}.out".lstrip("/"), Body=answer)
            return None

        job = self.batch.create(name, keys, work, fail_if_any=True)
        self._specs[name]["CreationTime"] = job.created
        return {"TransformJobArn": self._arn(name)}

    def _job(self, name: str) -> EmulatedJob:
        job = self.batch.get(name)
        if job is None:
            raise _AwsError("ValidationException", f"Could not find requested job with name {name}")
        return job

    def _describe(self, name: str) -> dict[str, Any]:
        job = self._job(name)
        spec = self._specs[name]
        status = _STATUS[job.state]
        if job.stop_requested and job.state in ("queued", "running"):
            status = "Stopping"
        out: dict[str, Any] = {
            "TransformJobName": name,
            "TransformJobArn": self._arn(name),
            "TransformJobStatus": status,
            "ModelName": spec["ModelName"],
            "TransformInput": spec["TransformInput"],
            "TransformOutput": spec["TransformOutput"],
            "TransformResources": spec.get("TransformResources") or {"InstanceType": "ml.m5.large", "InstanceCount": 1},
            "CreationTime": job.created,
        }
        for key in ("BatchStrategy", "MaxConcurrentTransforms", "MaxPayloadInMB", "ModelClientConfig"):
            if key in spec:
                out[key] = spec[key]
        if job.started is not None:
            out["TransformStartTime"] = job.started
        if job.ended is not None:
            out["TransformEndTime"] = job.ended
        if job.state == "failed":
            out["FailureReason"] = _failure_reason(job)
        return out

    def _arn(self, name: str) -> str:
        return f"arn:aws:sagemaker:{self.region}:{self.account_id}:transform-job/{name}"


def _invoke(server: Any, data: bytes, content_type: str, accept: str) -> tuple[int, bytes]:
    """One `/invocations` call: in-process through the model server, or POSTed to a running container."""
    if isinstance(server, str):
        from derm_cloud.testing.emulators.sagemaker_endpoints import forward_to_container

        answer = forward_to_container(server, {"content-type": content_type, "accept": accept}, data)
        return answer.status, answer.encoded()
    from derm_cloud.serving import error_response

    try:
        served = server.sagemaker_invocations(data, content_type, accept)
    except Exception as exc:  # the container answers every failure with a status, as a real one does
        status, err = error_response(exc)
        return status, err.body
    return 200, served.body


def _failure_reason(job: EmulatedJob) -> str:
    if not job.failed:
        return job.message
    lines = [f"ClientError: {len(job.failed)} of {len(job.inputs)} object(s) failed:"]
    lines += [cause for _, cause in sorted(job.failed.items())]
    text = "\n".join(lines)
    return text if len(text) <= _FAILURE_REASON_LIMIT else text[: _FAILURE_REASON_LIMIT - 3] + "..."


def _split_s3(uri: str) -> tuple[str, str]:
    if not uri.startswith("s3://") or len(uri) <= len("s3://"):
        raise _AwsError("ValidationException", f"{uri!r} is not an S3 URI (s3://bucket/prefix)")
    bucket, _, prefix = uri[len("s3://") :].partition("/")
    return bucket, prefix
