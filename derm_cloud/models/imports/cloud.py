"""Fetch a trained model out of its managed service through the service's own API, ready for `import_model`.

* Custom Vision: `CustomVisionTrainingClient.export_iteration` then `get_exports` until the export is
  `Done`; its `download_uri` (a signed, expiring link) is what `import_model`
  downloads. An export already done for the same platform and flavor is reused instead of requested again.
* SageMaker: `describe_training_job` gives `ModelArtifacts.S3ModelArtifacts` (`s3://.../output/model.tar.gz`),
  downloaded with the S3 client.

* Vertex AI: `ModelService.ExportModel` (the API behind `aiplatform.Model.export_model`), a long-running
  operation that writes the AutoML Edge export (`tflite`: `model.tflite` + `dict.txt`) to Cloud Storage; the
  folder is then downloaded with `google-cloud-storage`. See `export_vertex_model` (in
  `derm_cloud.models.imports.vertex_export`).

Keys are handed to the SDK only; they are not logged or stored, and the signed download link's query (its SAS
credential) is dropped from the provenance that lands in `spec.json`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from derm_cloud.errors import AuthenticationError, ConfigError, MissingDependencyError, NotFoundError, ServiceError
from derm_cloud.models.imports.vertex_export import export_vertex_model

__all__ = ["export_custom_vision", "export_vertex_model", "sagemaker_model_artifacts"]


def export_custom_vision(
    endpoint: str,
    training_key: str,
    project_id: str,
    iteration_id: str,
    *,
    platform: str = "ONNX",
    flavor: str | None = None,
    poll_seconds: float = 5.0,
    timeout: float = 900.0,
    client: Any = None,
) -> str:
    """Request (or reuse) an export of a trained Custom Vision iteration and return its download URL.

    Args:
        endpoint: the *training* resource endpoint (`https://<resource>.cognitiveservices.azure.com`).
        training_key: the training resource's key (not the prediction key).
        project_id, iteration_id: what to export (Custom Vision portal > Performance).
        platform: `ONNX` (flavors `None` for float32, `OnnxFloat16`) or `TensorFlow` with flavor
            `TensorFlowLite` (runs under `local-tflite`).
        flavor: the export flavor.
        poll_seconds: wait between status checks.
        timeout: give up after this many seconds.
        client: a `CustomVisionTrainingClient` built elsewhere.

    Raises:
        AuthenticationError, NotFoundError, ConfigError: the key, ids or platform are wrong.
        ServiceError: the export failed or did not finish in time.
    """
    if client is None:
        client = _training_client(endpoint, training_key)
    from azure.cognitiveservices.vision.customvision.training.models import CustomVisionErrorException

    def matching(exports: Any) -> Any:
        return [e for e in exports if e.platform == platform and (e.flavor or None) == flavor]

    try:
        done = [e for e in matching(client.get_exports(project_id, iteration_id)) if e.status == "Done"]
        if not done:
            try:
                client.export_iteration(project_id, iteration_id, platform, flavor=flavor)
            except CustomVisionErrorException as exc:
                if "AlreadyInProgress" not in _code(exc):
                    raise
        deadline = time.monotonic() + timeout
        while not done:
            current = matching(client.get_exports(project_id, iteration_id))
            failed = [e for e in current if e.status == "Failed"]
            if failed:
                raise ServiceError(f"Custom Vision could not export iteration {iteration_id} as {platform}/{flavor}")
            done = [e for e in current if e.status == "Done"]
            if not done:
                if time.monotonic() > deadline:
                    raise ServiceError(f"the Custom Vision export did not finish within {timeout:g} s; try again later")
                time.sleep(poll_seconds)
    except CustomVisionErrorException as exc:
        raise _translate(exc, project_id, iteration_id) from None
    url = done[0].download_uri
    if not url:
        raise ServiceError("Custom Vision reported the export done without a download link")
    return str(url)


def _training_client(endpoint: str, training_key: str) -> Any:
    try:
        from azure.cognitiveservices.vision.customvision.training import CustomVisionTrainingClient
        from msrest.authentication import ApiKeyCredentials
    except ImportError as exc:
        raise MissingDependencyError(
            "fetching a Custom Vision export needs azure-cognitiveservices-vision-customvision; run: "
            "pip install 'derm-cloud[azure]'"
        ) from exc
    if not endpoint or not training_key:
        raise ConfigError("the Custom Vision training endpoint and training key are both required")
    client = CustomVisionTrainingClient(  # type: ignore[no-untyped-call]
        endpoint, ApiKeyCredentials(in_headers={"Training-key": training_key})
    )
    client.config.enable_http_logger = False  # its logger prints request headers, i.e. the key
    return client


# CustomVisionErrorCodes (the published Training spec) that mean "this iteration cannot be exported like that".
_UNSUPPORTED_EXPORT = frozenset(
    {
        "BadRequestProjectUnsupportedExportPlatform",
        "BadRequestExportPlatformNotSupportedForAdvancedTraining",
        "ErrorExporterInvalidPlatform",
    }
)


def _code(exc: Any) -> str:
    error = getattr(exc, "error", None)
    return str(getattr(error, "code", "") or "")


def _translate(exc: Any, project_id: str, iteration_id: str) -> Exception:
    status = getattr(getattr(exc, "response", None), "status_code", None)
    code = _code(exc)
    message = str(getattr(getattr(exc, "error", None), "message", "") or exc)
    if status == 401:
        return AuthenticationError(
            "Custom Vision refused the training key; use the *training* resource's key (Azure portal > the "
            "training resource > Keys and Endpoint), not the prediction key",
            backend="azure-custom-vision",
            status=401,
        )
    if status == 404:
        return NotFoundError(
            f"Custom Vision has no project {project_id} / iteration {iteration_id} at this endpoint ({code})",
            backend="azure-custom-vision",
            status=404,
        )
    if code in _UNSUPPORTED_EXPORT or "PlatformNotSupported" in code:
        return ConfigError(f"this iteration cannot be exported that way: {message}")
    return ServiceError(f"Custom Vision export failed ({code or status}): {message}", retryable=False)


def sagemaker_model_artifacts(
    training_job_name: str,
    out_dir: str | Path,
    *,
    region: str | None = None,
    sagemaker_client: Any = None,
    s3_client: Any = None,
) -> tuple[Path, str]:
    """Download a training job's `model.tar.gz`; returns the local file and its `s3://` URI.

    Raises:
        NotFoundError: no such training job, or it has no model artefact yet (not Completed).
    """
    if sagemaker_client is None or s3_client is None:
        try:
            import boto3
        except ImportError as exc:
            raise MissingDependencyError(
                "fetching SageMaker artefacts needs boto3; pip install 'derm-cloud[sagemaker]'"
            ) from exc
        session = boto3.session.Session(region_name=region)
        sagemaker_client = sagemaker_client or session.client("sagemaker")
        s3_client = s3_client or session.client("s3")
    from botocore.exceptions import ClientError

    try:
        job = sagemaker_client.describe_training_job(TrainingJobName=training_job_name)
    except ClientError as exc:
        raise NotFoundError(
            f"SageMaker has no training job {training_job_name!r} in this account/region "
            f"({exc.response.get('Error', {}).get('Code')})",
            backend="sagemaker",
        ) from None
    uri = (job.get("ModelArtifacts") or {}).get("S3ModelArtifacts")
    if not uri:
        raise NotFoundError(
            f"training job {training_job_name!r} has no model artefact (status {job.get('TrainingJobStatus')}); "
            "wait until it is Completed",
            backend="sagemaker",
        )
    if not str(uri).startswith("s3://"):
        raise ConfigError(f"unexpected model artefact location {uri!r}")
    bucket, _, key = str(uri)[len("s3://") :].partition("/")
    target = Path(out_dir) / Path(key).name
    target.parent.mkdir(parents=True, exist_ok=True)
    s3_client.download_file(bucket, key, str(target))
    return target, str(uri)
