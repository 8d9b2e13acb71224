"""Each provider's batch job API wired to its emulator on 127.0.0.1, through the real SDK clients.

`start_emulated("sagemaker" | "vertex" | "azure-ml", model_dir)` starts the emulator of that cloud's job API
(`derm_cloud.testing.emulators.sagemaker_batch`, `vertex_batch`, `azure_ml_batch`) hosting `model_dir` and
returns it with a `BatchProvider` built on boto3, google-cloud-aiplatform + google-cloud-storage, or
azure-ai-ml + azure-storage-blob pointed at it. Stop the emulator when done (it is a context manager).

Example:
    >>> emulator, provider = start_emulated("vertex", model_dir)  # doctest: +SKIP
    >>> with emulator:
    ...     result = run_batch(provider, images, record_path="jobs/vertex.json", job_name="audit-1")
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from derm_cloud.batch.jobs import BatchProvider
from derm_cloud.errors import ConfigError

__all__ = ["BATCH_KINDS", "start_emulated"]

#: the clouds whose batch job API has an emulator.
BATCH_KINDS = ("sagemaker", "vertex", "azure-ml")
_BUCKET = "derm-cloud-batch"


def start_emulated(kind: str, model_dir: str | os.PathLike[str]) -> tuple[Any, BatchProvider]:
    """Start the batch emulator of `kind` hosting `model_dir`; return `(emulator, provider)`.

    Raises:
        ConfigError: `kind` is not one of `BATCH_KINDS`.
    """
    from derm_cloud.models.spec import ModelSpec

    labels = ModelSpec.load(Path(model_dir).expanduser()).labels
    if kind == "sagemaker":
        from derm_cloud.batch.sagemaker import SageMakerBatchTransform
        from derm_cloud.testing.emulators.sagemaker_batch import SageMakerBatchEmulator

        sm_emu = SageMakerBatchEmulator().start()
        sm_emu.add_model("derm-cloud", model_dir)
        s3 = sm_emu.s3_client()
        s3.create_bucket(Bucket=_BUCKET)
        sm = SageMakerBatchTransform(
            sm_emu.sagemaker_client(), s3, model_name="derm-cloud", bucket=_BUCKET, labels=labels
        )
        return sm_emu, sm
    if kind == "vertex":
        from derm_cloud.batch.vertex import VertexBatchPrediction
        from derm_cloud.testing.emulators.vertex_batch import VertexBatchEmulator

        vx_emu = VertexBatchEmulator()
        vx_emu.start()
        vx_emu.add_model("7000000001", model_dir)
        vx = VertexBatchPrediction(
            vx_emu.job_client(),
            vx_emu.storage_client(),
            project=vx_emu.project,
            location=vx_emu.location,
            model_id="7000000001",
            bucket=_BUCKET,
            labels=labels,
        )
        return vx_emu, vx
    if kind == "azure-ml":
        from derm_cloud.batch.azure_ml import AzureMLBatchEndpoint
        from derm_cloud.testing.emulators.azure_ml_batch import AzureMLBatchEmulator

        az_emu = AzureMLBatchEmulator(model_dir)
        az_emu.start()
        az = AzureMLBatchEndpoint(
            az_emu.ml_client(), az_emu.container_client(), endpoint_name=az_emu.endpoint_name, labels=labels
        )
        return az_emu, az
    raise ConfigError(f"no batch emulator for {kind!r}; choose from {', '.join(BATCH_KINDS)}")
