"""Deploy SageMaker endpoints: JumpStart models with SDK v3 `ModelBuilder`, or any image with boto3.

Two paths, both returning the endpoint name that `derm_cloud.create("sagemaker", endpoint_name=...)` takes:

* `deploy_jumpstart` builds a JumpStart image classifier (e.g. `pytorch-ic-mobilenet-v2`) with the
  SageMaker Python SDK v3 (`pip install 'derm-cloud[sagemaker-deploy]'`). `ModelBuilder` reads the JumpStart
  model metadata from the public `jumpstart-cache-prod-<region>` S3 bucket, so it needs network access to S3.
* `create_endpoint` is the low-level path with only boto3: `CreateModel` -> `CreateEndpointConfig`
  (instances or `ServerlessConfig`) -> `CreateEndpoint` -> wait for `InService`. Use it for the
  derm-cloud adapter image (`adapters/sagemaker`) or any other container; `delete_endpoint` undoes it.

Deployed endpoints bill while they exist (real-time per instance-hour; serverless per use): delete them when done.

Example:
    >>> name = create_endpoint(  # doctest: +SKIP
    ...     endpoint_name="derm-adapter",
    ...     image_uri="123456789012.dkr.ecr.eu-west-1.amazonaws.com/derm-cloud-sagemaker:0.1.0",
    ...     model_data_url="s3://my-bucket/sklesion/model.tar.gz",
    ...     role_arn="arn:aws:iam::123456789012:role/SageMakerExecution",
    ...     serverless=ServerlessSettings(memory_mb=3072),
    ...     region="eu-west-1",
    ... )
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from derm_cloud.errors import (
    AuthenticationError,
    ConfigError,
    DermCloudError,
    MissingDependencyError,
    ServiceError,
    ThrottledError,
)

__all__ = [
    "ServerlessSettings",
    "create_endpoint",
    "delete_endpoint",
    "deploy_jumpstart",
    "jumpstart_model_builder",
]

_MEMORY_SIZES = (1024, 2048, 3072, 4096, 5120, 6144)


@dataclass(frozen=True)
class ServerlessSettings:
    """A serverless endpoint's capacity (docs/reference/cloud-apis.md 2.5); defaults are the SDK's.

    Attributes:
        memory_mb: 1024-6144 in 1024 steps; also sets the vCPUs and the price per second.
        max_concurrency: 1-200 concurrent invocations.
        provisioned_concurrency: warm capacity (billed while it exists) to avoid cold starts; at most
            `max_concurrency`.

    Example:
        >>> ServerlessSettings(memory_mb=3072).to_request()
        {'MemorySizeInMB': 3072, 'MaxConcurrency': 5}
    """

    memory_mb: int = 2048
    max_concurrency: int = 5
    provisioned_concurrency: int | None = None

    def __post_init__(self) -> None:
        if self.memory_mb not in _MEMORY_SIZES:
            raise ConfigError(f"serverless memory_mb must be one of {_MEMORY_SIZES}, got {self.memory_mb}")
        if not 1 <= self.max_concurrency <= 200:
            raise ConfigError(f"serverless max_concurrency must be 1-200, got {self.max_concurrency}")
        pc = self.provisioned_concurrency
        if pc is not None and not 1 <= pc <= self.max_concurrency:
            raise ConfigError(f"provisioned_concurrency must be 1-{self.max_concurrency} (max_concurrency), got {pc}")

    def to_request(self) -> dict[str, int]:
        """The `ServerlessConfig` of a production variant."""
        out = {"MemorySizeInMB": self.memory_mb, "MaxConcurrency": self.max_concurrency}
        if self.provisioned_concurrency is not None:
            out["ProvisionedConcurrency"] = self.provisioned_concurrency
        return out


# --- JumpStart through the SageMaker SDK v3 ------------------------------------------------------------------------


def jumpstart_model_builder(
    model_id: str,
    *,
    role_arn: str,
    region: str,
    instance_type: str | None = None,
    instance_count: int = 1,
    model_version: str = "*",
    accept_eula: bool = False,
    env_vars: Mapping[str, str] | None = None,
    sagemaker_session: Any = None,
) -> Any:
    """A v3 `ModelBuilder` for a JumpStart model, not yet built (no resources are created).

    Sets `AWS_DEFAULT_REGION` to `region` when it is unset, because importing `sagemaker.serve` raises
    `NoRegionError` without one (a class body builds a boto3 client at import time).

    Raises:
        MissingDependencyError: the SageMaker SDK v3 is not installed.
    """
    os.environ.setdefault("AWS_DEFAULT_REGION", region)
    try:
        from sagemaker.core.jumpstart.configs import JumpStartConfig
        from sagemaker.core.training.configs import Compute
        from sagemaker.serve.model_builder import ModelBuilder
    except ImportError as exc:
        raise MissingDependencyError(
            "deploying JumpStart models needs the SageMaker SDK v3; run: pip install 'derm-cloud[sagemaker-deploy]'"
        ) from exc
    if sagemaker_session is None:
        import boto3
        from sagemaker.core.helper.session_helper import Session

        sagemaker_session = Session(boto_session=boto3.Session(region_name=region))
    compute = Compute(instance_type=instance_type, instance_count=instance_count) if instance_type else None
    return ModelBuilder.from_jumpstart_config(
        JumpStartConfig(model_id=model_id, model_version=model_version, accept_eula=accept_eula),
        role_arn=role_arn,
        compute=compute,
        env_vars=dict(env_vars or {}),
        sagemaker_session=sagemaker_session,
    )


def deploy_jumpstart(
    model_id: str,
    *,
    endpoint_name: str,
    role_arn: str,
    region: str,
    instance_type: str | None = "ml.m5.xlarge",
    instance_count: int = 1,
    serverless: ServerlessSettings | None = None,
    model_version: str = "*",
    accept_eula: bool = False,
    wait: bool = True,
    sagemaker_session: Any = None,
) -> str:
    """Deploy a JumpStart image classifier and return its endpoint name.

    Call the endpoint with `response_format="jumpstart"` (`Accept: application/json;verbose`).

    Raises:
        MissingDependencyError: the SageMaker SDK v3 is not installed.
        ServiceError: JumpStart metadata could not be read (no network access to S3 in `region`) or the
            deployment failed; AuthenticationError, ThrottledError, ConfigError as for `create_endpoint`.
    """
    builder = jumpstart_model_builder(
        model_id,
        role_arn=role_arn,
        region=region,
        instance_type=None if serverless else instance_type,
        instance_count=instance_count,
        model_version=model_version,
        accept_eula=accept_eula,
        sagemaker_session=sagemaker_session,
    )
    deploy_kwargs: dict[str, Any] = {"endpoint_name": endpoint_name, "wait": wait}
    if serverless is not None:
        from sagemaker.core.inference_config import ServerlessInferenceConfig

        deploy_kwargs["inference_config"] = ServerlessInferenceConfig(
            memory_size_in_mb=serverless.memory_mb,
            max_concurrency=serverless.max_concurrency,
            provisioned_concurrency=serverless.provisioned_concurrency,
        )
    else:
        deploy_kwargs.update(instance_type=instance_type, initial_instance_count=instance_count)
    try:
        builder.build()
        endpoint = builder.deploy(**deploy_kwargs)
    except Exception as exc:
        raise _control_error(exc, f"deploying JumpStart model {model_id!r} in {region}", jumpstart=True) from exc
    return str(getattr(endpoint, "endpoint_name", endpoint_name))


# --- any container through boto3 ----------------------------------------------------------------------------------


def create_endpoint(
    *,
    endpoint_name: str,
    image_uri: str,
    role_arn: str,
    model_data_url: str | None = None,
    environment: Mapping[str, str] | None = None,
    instance_type: str = "ml.m5.large",
    instance_count: int = 1,
    serverless: ServerlessSettings | None = None,
    variant_name: str = "AllTraffic",
    data_capture_s3_uri: str | None = None,
    region: str | None = None,
    client: Any = None,
    wait: bool = True,
    poll_seconds: float = 15.0,
    max_wait_seconds: float = 1800.0,
) -> str:
    """Create model, endpoint config and endpoint with boto3; optionally wait for `InService`.

    Resources are named `<endpoint_name>-model` and `<endpoint_name>-config`. `data_capture_s3_uri`
    turns on data capture (requests, i.e. images, are then stored in S3: declare `data_capture=True` on the
    backend); serverless endpoints do not support it.

    Raises:
        ConfigError: invalid settings or a rejected request (name in use, missing role, quota).
        AuthenticationError: the caller may not create SageMaker resources or pass the role.
        ServiceError: the endpoint reached `Failed` (with SageMaker's reason) or did not become ready in time.
    """
    if serverless is not None and data_capture_s3_uri:
        raise ConfigError("serverless endpoints do not support data capture; drop data_capture_s3_uri")
    if serverless is None and instance_count < 1:
        raise ConfigError(f"instance_count must be at least 1, got {instance_count}")
    sm = client or _control_client(region)
    model_name, config_name = f"{endpoint_name}-model", f"{endpoint_name}-config"
    container: dict[str, Any] = {"Image": image_uri, "Environment": dict(environment or {})}
    if model_data_url:
        container["ModelDataUrl"] = model_data_url
    variant: dict[str, Any] = {"VariantName": variant_name, "ModelName": model_name}
    if serverless is not None:
        variant["ServerlessConfig"] = serverless.to_request()
    else:
        variant.update(InstanceType=instance_type, InitialInstanceCount=instance_count, InitialVariantWeight=1.0)
    config: dict[str, Any] = {"EndpointConfigName": config_name, "ProductionVariants": [variant]}
    if data_capture_s3_uri:
        config["DataCaptureConfig"] = {
            "EnableCapture": True,
            "InitialSamplingPercentage": 100,
            "DestinationS3Uri": data_capture_s3_uri,
            "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}],
        }
    from botocore.exceptions import BotoCoreError, ClientError

    where = f"creating SageMaker endpoint {endpoint_name!r}"
    try:
        sm.create_model(ModelName=model_name, ExecutionRoleArn=role_arn, PrimaryContainer=container)
        sm.create_endpoint_config(**config)
        sm.create_endpoint(EndpointName=endpoint_name, EndpointConfigName=config_name)
    except (BotoCoreError, ClientError) as exc:
        raise _control_error(exc, where) from exc
    if wait:
        _wait_in_service(sm, endpoint_name, poll_seconds, max_wait_seconds)
    return endpoint_name


def delete_endpoint(endpoint_name: str, *, region: str | None = None, client: Any = None) -> None:
    """Delete an endpoint made by `create_endpoint` plus its config and model (missing parts are skipped)."""
    sm = client or _control_client(region)
    steps = (
        ("delete_endpoint", {"EndpointName": endpoint_name}),
        ("delete_endpoint_config", {"EndpointConfigName": f"{endpoint_name}-config"}),
        ("delete_model", {"ModelName": f"{endpoint_name}-model"}),
    )
    from botocore.exceptions import BotoCoreError, ClientError

    for method, kwargs in steps:
        try:
            getattr(sm, method)(**kwargs)
        except (BotoCoreError, ClientError) as exc:
            if "could not find" in str(exc).lower():
                continue  # already gone: deleting is idempotent
            raise _control_error(exc, f"{method} for {endpoint_name!r}") from exc


def _wait_in_service(sm: Any, endpoint_name: str, poll_seconds: float, max_wait_seconds: float) -> None:
    from botocore.exceptions import WaiterError

    attempts = max(1, int(max_wait_seconds // max(poll_seconds, 1)))
    try:
        sm.get_waiter("endpoint_in_service").wait(
            EndpointName=endpoint_name, WaiterConfig={"Delay": poll_seconds, "MaxAttempts": attempts}
        )
    except WaiterError as exc:
        described = sm.describe_endpoint(EndpointName=endpoint_name)
        status = described.get("EndpointStatus")
        reason = described.get("FailureReason") or "no reason given"
        raise ServiceError(
            f"endpoint {endpoint_name!r} is {status} after waiting up to {max_wait_seconds:.0f} s: {reason}; "
            "see the CloudWatch logs /aws/sagemaker/Endpoints/" + endpoint_name,
            backend="sagemaker",
            retryable=False,
        ) from exc


def _control_client(region: str | None) -> Any:
    try:
        import boto3
    except ImportError as exc:
        raise MissingDependencyError("deploying needs boto3; run: pip install 'derm-cloud[sagemaker]'") from exc
    return boto3.session.Session().client("sagemaker", region_name=region)


def _control_error(exc: Exception, where: str, *, jumpstart: bool = False) -> DermCloudError:
    """Translate control-plane exceptions (boto3 and the SDK) in one place."""
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return ServiceError(f"{where} failed: {type(exc).__name__}: {exc}", backend="sagemaker", retryable=False)
    error = response.get("Error") or {}
    code, message = str(error.get("Code") or ""), str(error.get("Message") or "")
    meta = response.get("ResponseMetadata") or {}
    common: dict[str, Any] = {"backend": "sagemaker", "status": meta.get("HTTPStatusCode")}
    common["request_id"] = meta.get("RequestId")
    if code in ("AccessDenied", "AccessDeniedException", "UnrecognizedClientException", "ExpiredTokenException"):
        return AuthenticationError(f"{where}: AWS refused the call ({code}: {message})", **common)
    if code in ("ThrottlingException", "Throttling"):
        return ThrottledError(f"{where}: throttled ({message})", **common)
    if jumpstart and code in ("NoSuchBucket", "NoSuchKey"):
        return ServiceError(
            f"{where}: the JumpStart model manifest and specs could not be read from "
            f"s3://jumpstart-cache-prod-<region> ({code}: {message}); ModelBuilder needs network access to S3 "
            "in that region",
            retryable=False,
            **common,
        )
    if code in ("ValidationException", "ResourceInUse", "ResourceLimitExceeded"):
        return ConfigError(f"{where}: SageMaker rejected the request ({code}: {message})")
    return ServiceError(f"{where} failed ({code}: {message})", retryable=False, **common)
