"""`sagemaker`: an Amazon SageMaker real-time or serverless endpoint, called with boto3 `invoke_endpoint`.

Understands the response shapes of the containers people deploy for image classification
(docs/reference/cloud-apis.md 2.2):
JumpStart image classification (`application/json;verbose`), the Hugging Face DLC (`[{"label", "score"}]`),
the built-in Image Classification algorithm (`{"prediction": [...]}`, labels from `class_names`) and the
derm-cloud adapter (`adapters/sagemaker`), which also reads patient metadata from custom attributes.

Only the runtime API is used here (no SageMaker Python SDK: v3 broke v2's `Predictor`); deployment helpers
live in `derm_cloud.deploy.sagemaker_jumpstart`. botocore's own retries are switched off so the shared
`RetryPolicy` decides, and payload limits are enforced before anything is sent.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from derm_cloud.backends._boto import build_boto_client, client_error_class, translate_botocore
from derm_cloud.backends._http import is_loopback
from derm_cloud.backends._sagemaker_errors import translate_client_error
from derm_cloud.backends._sagemaker_formats import (
    RESPONSE_FORMATS,
    ResponseFormat,
    custom_attributes_for,
    parse_response,
)
from derm_cloud.base import BackendInfo, Classifier, RawResult
from derm_cloud.errors import (
    ConfigError,
    DermCloudError,
    PayloadTooLargeError,
    UnmappableLabelsError,
)
from derm_cloud.images import DEFAULT_LIMITS, ImageLimits, PreparedImage
from derm_cloud.retry import RetryPolicy
from derm_cloud.taxonomy import CLASS_CODES, LabelMap
from derm_cloud.types import PatientMetadata

__all__ = [
    "REALTIME_MAX_BODY_BYTES",
    "SERVERLESS_MAX_BODY_BYTES",
    "AwsSagemakerClassifier",
    "ResponseFormat",
    "SageMakerRuntimeClient",
]

#: ``BodyBlob`` max in botocore's sagemaker-runtime model (6 MiB).
REALTIME_MAX_BODY_BYTES = 6 * 1024 * 1024
#: Serverless endpoints take "4 MB"; read as decimal megabytes so we never exceed it whichever AWS means.
SERVERLESS_MAX_BODY_BYTES = 4_000_000
#: SageMaker's limit on ``CustomAttributes`` (visible ASCII).
CUSTOM_ATTRIBUTES_MAX = 1024


class SageMakerRuntimeClient(Protocol):
    """The one boto3 `sagemaker-runtime` method this backend calls (inject a client built for tests)."""

    def invoke_endpoint(self, **kwargs: Any) -> Mapping[str, Any]: ...


class AwsSagemakerClassifier(Classifier):
    """Classify with a SageMaker endpoint.

    Args:
        endpoint_name: the endpoint's name.
        region: AWS region (default: boto3's configuration, e.g. `AWS_DEFAULT_REGION`).
        endpoint_url: override the runtime URL (emulators, VPC endpoints).
        response_format: `jumpstart`, `hf`, `builtin`, `adapter` or `auto` (recognise any of them; sends
            `Accept: application/json`, so JumpStart answers without labels and `class_names` is used).
        class_names: the model's labels in output order, for responses without labels (`builtin`, plain
            JumpStart); default: the HAM10000 codes in alphabetical order, as JumpStart/TF-IC fine-tuning writes.
        target_variant: send every call to this production variant.
        serverless: the endpoint is serverless (4 MB payload limit, cold starts); affects limits and billing.
        custom_attributes: an opaque `CustomAttributes` string to forward (e.g. a trace id).
        send_metadata: send patient age/sex/site in custom attributes; only the derm-cloud adapter reads them, so
            default is `True` for `adapter` and refused for other formats (it would leak data for nothing).
        label_overrides: `{endpoint_label: canonical_code}` for models trained with other tag names.
        allow_unmapped: accept an endpoint whose labels are not lesion classes (latency/cost baseline only).
        hf_top_k: ask a Hugging Face DLC for this many labels: sends JSON `{"inputs": <base64>, "parameters":
            {"top_k": n}}`, which needs a transformers version that reads base64 image strings. The default sends
            raw bytes and gets the pipeline's top 5; the two missing classes then count as 0.
        retry: retry policy (default: 4 attempts within 60 s).
        client: an injected boto3 `sagemaker-runtime` client (tests, custom sessions).
        connect_timeout, read_timeout: socket timeouts in seconds (AWS suggests ~70 s reads: the model has 60 s).
            `read_timeout` bounds each attempt, also with `client=` (whose own read timeout may be longer)
            and when an answer trickles in: the retry policy abandons the attempt after that long (boto3 has no
            per-call timeout).
        instance_type, instance_count, serverless_memory_mb: how the endpoint is provisioned, for cost estimates.
        data_capture: declare that the endpoint has data capture on (it then stores images in S3).

    Example:
        >>> clf = AwsSagemakerClassifier("derm-ic", region="eu-west-1", response_format="jumpstart")  # doctest: +SKIP
        >>> clf.predict("lesion.jpg").top(3)  # doctest: +SKIP
    """

    backend_name = "sagemaker"
    default_concurrency = 4

    def __init__(
        self,
        endpoint_name: str,
        *,
        region: str | None = None,
        endpoint_url: str | None = None,
        response_format: ResponseFormat = "auto",
        class_names: Sequence[str] | None = None,
        target_variant: str | None = None,
        serverless: bool = False,
        custom_attributes: str | None = None,
        send_metadata: bool | None = None,
        label_overrides: Mapping[str, str] | None = None,
        allow_unmapped: bool = False,
        hf_top_k: int | None = None,
        retry: RetryPolicy | None = None,
        client: SageMakerRuntimeClient | None = None,
        connect_timeout: float = 5.0,
        read_timeout: float = 70.0,
        instance_type: str | None = None,
        instance_count: int = 1,
        serverless_memory_mb: int | None = None,
        data_capture: bool = False,
        image_limits: ImageLimits = DEFAULT_LIMITS,
        concurrency: int | None = None,
    ) -> None:
        send_metadata = _checked_options(endpoint_name, response_format, send_metadata, custom_attributes, hf_top_k)
        self.endpoint_name = endpoint_name
        self.response_format: ResponseFormat = response_format
        self.class_names = tuple(class_names or CLASS_CODES)
        self.target_variant = target_variant
        self.serverless = serverless
        self.custom_attributes = custom_attributes
        self.send_metadata = send_metadata
        self.label_overrides = dict(label_overrides or {})
        self.allow_unmapped = allow_unmapped
        self.hf_top_k = hf_top_k
        self.instance_type = instance_type
        self.instance_count = instance_count
        self.serverless_memory_mb = serverless_memory_mb
        self.data_capture = data_capture
        self.max_body_bytes = SERVERLESS_MAX_BODY_BYTES if serverless else REALTIME_MAX_BODY_BYTES
        self._owns_client = client is None
        self.client: SageMakerRuntimeClient = client or build_boto_client(
            "sagemaker-runtime",
            backend=self.backend_name,
            region=region,
            endpoint_url=endpoint_url,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            pool=max(10, concurrency or self.default_concurrency),
        )
        meta = getattr(self.client, "meta", None)
        self.region = region or getattr(meta, "region_name", None)
        self.endpoint_url = endpoint_url or getattr(meta, "endpoint_url", None)
        self._label_lock = threading.Lock()
        label_map = LabelMap.for_labels(self.class_names, overrides=self.label_overrides, allow_unmapped=allow_unmapped)
        super().__init__(
            label_map=label_map,
            model_id=endpoint_name,
            retry=retry or RetryPolicy.for_timeout(read_timeout),
            image_limits=image_limits,
            concurrency=concurrency,
        )
        self.attempt_timeout = float(read_timeout)

    # --- one call ----------------------------------------------------------------------------------------------

    def _predict_one(self, image: PreparedImage, metadata: PatientMetadata, timeout: float | None) -> RawResult:
        kwargs = self._request(image, metadata)
        try:
            response = self.client.invoke_endpoint(**kwargs)
            body = response["Body"].read()
        except Exception as exc:
            translated = self._translate(exc)
            if translated is None:
                raise
            raise translated from exc
        request_id = (response.get("ResponseMetadata") or {}).get("RequestId")
        scores, detected, extra = self._parse(body, str(response.get("ContentType") or ""), request_id)
        extra.update(
            response_format=detected,
            invoked_variant=response.get("InvokedProductionVariant"),
            request_bytes=len(kwargs["Body"]),
        )
        return RawResult(scores=scores, request_id=request_id, extra=extra)

    def _request(self, image: PreparedImage, metadata: PatientMetadata) -> dict[str, Any]:
        fmt = self.response_format
        as_json = fmt == "hf" and self.hf_top_k is not None
        # base64 in JSON costs 4/3 of the image plus framing; the limit applies to the whole body.
        max_image = (self.max_body_bytes - 256) * 3 // 4 if as_json else self.max_body_bytes
        data, mime = image.upload_bytes(max_bytes=max_image, formats=("JPEG", "PNG"))
        kwargs: dict[str, Any] = {"EndpointName": self.endpoint_name, "Body": data, "Accept": "application/json"}
        if as_json:
            import base64

            payload = {"inputs": base64.b64encode(data).decode(), "parameters": {"top_k": self.hf_top_k}}
            kwargs["Body"] = json.dumps(payload).encode()
            kwargs["ContentType"] = "application/json"
        elif fmt in ("hf", "builtin"):
            kwargs["ContentType"] = mime
        else:
            kwargs["ContentType"] = "application/x-image"
        if fmt == "jumpstart":
            kwargs["Accept"] = "application/json;verbose"
        if len(kwargs["Body"]) > self.max_body_bytes:  # only reachable through JSON framing of a huge image
            raise PayloadTooLargeError(f"request of {len(kwargs['Body']):,} bytes exceeds {self.max_body_bytes:,}")
        attributes = [a for a in (self.custom_attributes, self._metadata_attributes(metadata)) if a]
        if attributes:
            kwargs["CustomAttributes"] = ";".join(attributes)
        if self.target_variant:
            kwargs["TargetVariant"] = self.target_variant
        return kwargs

    def _metadata_attributes(self, metadata: PatientMetadata) -> str:
        if not self.send_metadata or metadata.is_empty:
            return ""
        return custom_attributes_for(metadata)

    # --- responses -----------------------------------------------------------------------------------------------

    def _parse(
        self, body: bytes, content_type: str, request_id: str | None
    ) -> tuple[list[tuple[str, float]], str, dict[str, Any]]:
        scores, detected, extra = parse_response(
            body,
            content_type,
            response_format=self.response_format,
            class_names=self.class_names,
            endpoint_name=self.endpoint_name,
            backend=self.backend_name,
            request_id=request_id,
        )
        self._adopt_labels([label for label, _ in scores])
        if len(scores) < len(self.label_map.provider_labels):
            extra["partial_scores"] = True
        return scores, detected, extra

    def _adopt_labels(self, labels: list[str]) -> None:
        """Switch the label map to the endpoint's own labels the first time a full label list comes back."""
        if set(labels) <= set(self.label_map.provider_labels):
            return
        with self._label_lock:
            try:
                self.label_map = LabelMap.for_labels(
                    labels, overrides=self.label_overrides, allow_unmapped=self.allow_unmapped
                )
            except UnmappableLabelsError as exc:
                if len(labels) < len(CLASS_CODES):
                    raise ConfigError(
                        f"endpoint {self.endpoint_name!r} returned only {len(labels)} labels ({', '.join(labels)}), "
                        "not all of them in class_names; Hugging Face containers return the top 5 by default: pass "
                        "class_names=[every label in output order] or hf_top_k=<number of labels>"
                    ) from exc
                raise

    # --- errors: the one place botocore exceptions are translated ---------------------------------------------------

    def _translate(self, exc: Exception) -> DermCloudError | None:
        where = f"SageMaker endpoint {self.endpoint_name!r}"
        client_error = client_error_class()
        if client_error is not None and isinstance(exc, client_error):
            return translate_client_error(exc, where, backend=self.backend_name, region=self.region)
        config = getattr(getattr(self.client, "meta", None), "config", None)
        return translate_botocore(
            exc,
            backend=self.backend_name,
            where=where,
            operation="invoke_endpoint",
            read_timeout=getattr(config, "read_timeout", None),
        )

    # --- facts ---------------------------------------------------------------------------------------------------

    @property
    def emulated(self) -> bool:
        """True when the runtime URL is a loopback address (a derm-cloud emulator or moto)."""
        return is_loopback(self.endpoint_url)

    @property
    def uses_metadata(self) -> bool:
        """Whether age, sex and site go to the endpoint (`send_metadata`, adapter format only)."""
        return bool(self.send_metadata)

    def describe(self) -> BackendInfo:
        base = (self.endpoint_url or f"https://runtime.sagemaker.{self.region}.amazonaws.com").rstrip("/")
        if self.serverless:
            billing: dict[str, Any] = {
                "sku": "sagemaker.serverless",
                "memory_mb": self.serverless_memory_mb or 2048,
                "data_sku": "sagemaker.data_transfer",
            }
        else:
            billing = {
                "sku": f"sagemaker.realtime.{self.instance_type}" if self.instance_type else None,
                "instances": self.instance_count,
                "data_sku": "sagemaker.data_transfer",
            }
        return BackendInfo(
            backend=self.backend_name,
            provider="aws",
            service=f"SageMaker {'serverless' if self.serverless else 'real-time'} endpoint",
            model_id=self.endpoint_name,
            region=self.region,
            endpoint=f"{base}/endpoints/{self.endpoint_name}/invocations",
            data_leaves_machine=True,  # what the real service does; `emulated` says this run stayed local
            # SageMaker keeps nothing unless data capture is on; then requests (images) land in S3.
            stores_images=self.data_capture,
            emulated=self.emulated,
            labels_mapped=self.label_map.mapped,
            billing=billing,
            model_facts={
                "response_format": self.response_format,
                "target_variant": self.target_variant,
                "payload_limit_bytes": self.max_body_bytes,
                "sends_metadata": self.send_metadata,
            },
        )

    def _close(self) -> None:
        close = getattr(self.client, "close", None)
        if self._owns_client and callable(close):
            close()


def _checked_options(
    endpoint_name: str,
    response_format: ResponseFormat,
    send_metadata: bool | None,
    custom_attributes: str | None,
    hf_top_k: int | None,
) -> bool:
    """Refuse options that cannot work together; returns `send_metadata` with its default resolved.

    Raises:
        ConfigError: naming the option and what it needs.
    """
    if not endpoint_name:
        raise ConfigError("endpoint_name is required: the name given to create_endpoint")
    if response_format not in RESPONSE_FORMATS:
        raise ConfigError(f"response_format must be one of {', '.join(RESPONSE_FORMATS)}, got {response_format!r}")
    if send_metadata is None:
        send_metadata = response_format == "adapter"
    if send_metadata and response_format != "adapter":
        raise ConfigError(
            "send_metadata=True needs response_format='adapter': JumpStart, Hugging Face and built-in "
            "containers ignore patient metadata, so sending it would only leak it"
        )
    if custom_attributes is not None and (len(custom_attributes) > 512 or not custom_attributes.isascii()):
        raise ConfigError("custom_attributes must be visible ASCII of at most 512 characters (room for metadata)")
    if hf_top_k is not None and hf_top_k < 1:
        raise ConfigError(f"hf_top_k must be a positive integer, got {hf_top_k}")
    return send_metadata
