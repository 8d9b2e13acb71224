"""SageMaker Batch Transform through boto3: images to S3, `create_transform_job`, `.out` objects back.

The job runs the same container contract as a real-time endpoint (`/ping`, `/invocations`; our adapter
`adapters/sagemaker/serve.py`): one request per S3 object (`SplitType=None`, `BatchStrategy=SingleRecord`:
an image cannot be split into records), `ContentType` of the images, `Accept: application/json`, and each
answer lands in `S3OutputPath/<object key>.out`
(https://docs.aws.amazon.com/sagemaker/latest/dg/batch-transform.html). A Batch Transform job whose
container fails on any object ends `Failed`; the outputs already written stay, and are collected.

Example:
    >>> provider = SageMakerBatchTransform(boto3.client("sagemaker"), boto3.client("s3"),  # doctest: +SKIP
    ...     model_name="derm-sklesion", bucket="my-bucket", labels=labels)
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

from derm_cloud.batch.jobs import BatchImage, JobRecord, JobStatus, OutputBatch
from derm_cloud.errors import ConfigError, InvalidResponseError, NotFoundError, RemoteError

__all__ = ["SageMakerBatchTransform"]

_STATES = {"InProgress": "running", "Stopping": "running", "Completed": "succeeded", "Failed": "failed"}


class SageMakerBatchTransform:
    """Batch Transform jobs for one SageMaker model.

    Args:
        sagemaker_client: a boto3 `sagemaker` client.
        s3_client: a boto3 `s3` client.
        model_name: the SageMaker model (created from the adapter image and the model archive).
        bucket: where inputs go (`<prefix>/<job>/input/`) and outputs come back (`<prefix>/<job>/output/`).
        labels: the model's label order (the adapter's answers name their labels too; these are checked).
        instance_type, instance_count: `TransformResources`.
        prefix: key prefix inside the bucket.
    """

    name = "sagemaker"

    def __init__(
        self,
        sagemaker_client: Any,
        s3_client: Any,
        *,
        model_name: str,
        bucket: str,
        labels: Sequence[str],
        instance_type: str = "ml.m5.large",
        instance_count: int = 1,
        prefix: str = "derm-cloud-batch",
    ) -> None:
        if not model_name or not bucket:
            raise ConfigError("SageMaker Batch Transform needs model_name and bucket")
        self.sm, self.s3 = sagemaker_client, s3_client
        self.model_name, self.bucket, self.prefix = model_name, bucket, prefix.strip("/")
        self.labels = tuple(labels)
        self.instance_type, self.instance_count = instance_type, instance_count

    def submit(self, images: Sequence[BatchImage], job_name: str) -> JobRecord:
        uploading = time.time()  # turnaround counts the upload, as a real-time path counts sending
        base = f"{self.prefix}/{job_name}"
        objects = {}
        for image in images:
            key = f"{base}/input/{image.image_id}"
            self._call(self.s3.put_object, Bucket=self.bucket, Key=key, Body=image.data, ContentType=image.mime)
            objects[key] = image.image_id
        self._call(
            self.sm.create_transform_job,
            TransformJobName=job_name,
            ModelName=self.model_name,
            BatchStrategy="SingleRecord",
            MaxConcurrentTransforms=1,
            TransformInput={
                "DataSource": {
                    "S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": f"s3://{self.bucket}/{base}/input/"}
                },
                "ContentType": images[0].mime,
                "SplitType": "None",
                "CompressionType": "None",
            },
            TransformOutput={"S3OutputPath": f"s3://{self.bucket}/{base}/output/", "Accept": "application/json"},
            TransformResources={"InstanceType": self.instance_type, "InstanceCount": self.instance_count},
        )
        return JobRecord(
            provider=self.name,
            job_id=job_name,
            input_uri=f"s3://{self.bucket}/{base}/input/",
            output_uri=f"s3://{self.bucket}/{base}/output/",
            objects=objects,
            submitted=uploading,
            extra={"instance_type": self.instance_type, "instance_count": self.instance_count},
        )

    def status(self, record: JobRecord) -> JobStatus:
        job = self._call(self.sm.describe_transform_job, TransformJobName=record.job_id)
        state = str(job.get("TransformJobStatus", ""))
        if state == "Stopped":
            return JobStatus("stopped", state, "stopped by request")
        if state not in _STATES:
            raise InvalidResponseError(
                f"TransformJobStatus {state!r} is not one SageMaker documents", backend=self.name
            )
        start, end = job.get("TransformStartTime"), job.get("TransformEndTime")
        if start is not None and end is not None:
            record.extra["instance_seconds"] = (end - start).total_seconds() * self.instance_count
        return JobStatus(_STATES[state], state, str(job.get("FailureReason") or ""))  # type: ignore[arg-type]

    def read_outputs(self, record: JobRecord) -> OutputBatch:
        found = OutputBatch()
        bucket, _, out_prefix = record.output_uri[len("s3://") :].partition("/")
        in_prefix = record.input_uri[len("s3://") :].partition("/")[2]
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=out_prefix)
        done = set(record.collected)
        for page in self._call(list, pages):
            for obj in page.get("Contents", []):
                key = obj["Key"]
                if key in done or not key.endswith(".out"):
                    continue
                image_id = record.objects.get(in_prefix + key[len(out_prefix) : -len(".out")])
                if image_id is None:
                    continue
                body = self._call(self.s3.get_object, Bucket=bucket, Key=key)["Body"].read()
                found.predictions[image_id] = self._probabilities(body, key)
                found.objects.append(key)
        status = self.status(record)
        if status.state == "failed":
            found.failures.update(_per_object_causes(status.message, record))
        return found

    def _probabilities(self, body: bytes, key: str) -> list[float]:
        try:
            answer = json.loads(body)
            labels, probs = answer["labels"], answer["probabilities"]
        except (ValueError, KeyError, TypeError):
            raise InvalidResponseError(
                f"s3://{self.bucket}/{key} is not the adapter's answer (labels, probabilities)", backend=self.name
            ) from None
        if tuple(labels) != self.labels:
            raise ConfigError(f"the job's model answers labels {labels}, not {list(self.labels)}: wrong model_name?")
        return [float(p) for p in probs]

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn(*args, **kwargs)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code, message = str(error.get("Code", "")), str(error.get("Message", ""))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if "Could not find" in message or code in ("NoSuchKey", "NoSuchBucket", "ResourceNotFound"):
                raise NotFoundError(f"{code}: {message}", backend=self.name, status=status) from exc
            raise RemoteError(f"{code}: {message}", backend=self.name, status=status) from exc
        except BotoCoreError as exc:
            raise RemoteError(f"{type(exc).__name__}: {exc}", backend=self.name, retryable=True) from exc


def _per_object_causes(reason: str, record: JobRecord) -> dict[str, str]:
    """Failed objects named in `FailureReason` (one `s3://...: cause` line each), by image id."""
    bucket = record.input_uri[len("s3://") :].partition("/")[0]
    causes = {}
    for line in reason.splitlines():
        uri, sep, cause = line.partition(": ")
        key = uri[len(f"s3://{bucket}/") :] if uri.startswith(f"s3://{bucket}/") else ""
        if sep and key in record.objects:
            causes[record.objects[key]] = cause.strip()
    return causes
