"""Cloud batch jobs beside real-time endpoints: submit, wait, re-attach, collect.

Teams scoring thousands of archived images run a provider's batch job rather than calling a real-time
endpoint per image: SageMaker Batch Transform (`SageMakerBatchTransform`), Vertex AI batch prediction
(`VertexBatchPrediction`) and Azure ML batch endpoints (`AzureMLBatchEndpoint`), each through its real SDK.
`run_batch` submits a job, keeps a local `JobRecord` (no image bytes, no secrets), waits and collects the
outputs; a client that dies re-attaches to the running job by id from that record, reads only outputs it has not
read, and reports every image the job failed on with its cause. `start_emulated` wires each provider to its
emulator on 127.0.0.1. Batch results support triage and research, like every derm-cloud output: a clinician
reviews every result.

Example:
    >>> emulator, provider = start_emulated("sagemaker", model_dir)  # doctest: +SKIP
    >>> with emulator:
    ...     result = run_batch(provider, images, record_path="jobs/sm.json", job_name="audit-2026-12")
    >>> len(result.predictions), result.failures  # doctest: +SKIP
"""

from __future__ import annotations

from derm_cloud.batch.azure_ml import AzureMLBatchEndpoint
from derm_cloud.batch.emulated import BATCH_KINDS, start_emulated
from derm_cloud.batch.jobs import (
    BatchImage,
    BatchProvider,
    BatchResult,
    JobRecord,
    JobStatus,
    OutputBatch,
    check_images,
    run_batch,
)
from derm_cloud.batch.sagemaker import SageMakerBatchTransform
from derm_cloud.batch.vertex import VertexBatchPrediction

__all__ = [
    "BATCH_KINDS",
    "AzureMLBatchEndpoint",
    "BatchImage",
    "BatchProvider",
    "BatchResult",
    "JobRecord",
    "JobStatus",
    "OutputBatch",
    "SageMakerBatchTransform",
    "VertexBatchPrediction",
    "check_images",
    "run_batch",
    "start_emulated",
]
