"""`rekognition-custom-labels`: an Amazon Rekognition Custom Labels classification model, called with boto3.

Rekognition Custom Labels hosts a model trained inside the service ("project version"). It answers
`detect_custom_labels` only while the version is RUNNING, and bills per inference-unit hour for as long as it
runs, traffic or not (docs/reference/cloud-apis.md, section 8). What matters for a comparison:

* **Confidence is 0-100**, not 0-1; scores are divided by 100. `MinConfidence=0` (our default) makes the
  service return every label, so the seven probabilities are complete; with a higher `min_confidence` labels
  below it are missing and count as 0, which the report must know: pass `tags=` then, since the label set can
  no longer be learned from the answers.
* **Image bytes must be under 4.0 MB** (decimal): larger payloads are re-encoded before sending, never refused
  by the service after a billed round trip.
* **A stopped model is a configuration state, not a transient fault**: `ResourceNotReadyException` becomes
  `ModelNotReadyError` that names `start_project_version` and is not retried.
* Labels are the names chosen at training (`label_overrides` maps unusual ones).

botocore's own retries are off; the shared `RetryPolicy` decides.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from derm_cloud.backends._boto import build_boto_client, client_error_class, client_error_facts, translate_botocore
from derm_cloud.backends._http import is_cut_off, is_loopback
from derm_cloud.base import BackendInfo, Classifier, RawResult
from derm_cloud.errors import (
    AuthenticationError,
    ConfigError,
    DermCloudError,
    InvalidImageError,
    InvalidResponseError,
    ModelNotReadyError,
    NotFoundError,
    PayloadTooLargeError,
    ServiceError,
    ThrottledError,
)
from derm_cloud.images import DEFAULT_LIMITS, ImageLimits, PreparedImage
from derm_cloud.retry import RetryPolicy
from derm_cloud.taxonomy import LabelMap
from derm_cloud.types import PatientMetadata

__all__ = ["MAX_IMAGE_BYTES", "AwsRekognitionClassifier", "RekognitionClient", "project_version_status"]

#: "Images passed as image bytes must be smaller than 4.0 MB" (running-model.html): decimal, strictly below.
MAX_IMAGE_BYTES = 4_000_000 - 1

_THROTTLE_CODES = frozenset(
    {"ThrottlingException", "ProvisionedThroughputExceededException", "LimitExceededException", "Throttling"}
)
_AUTH_CODES = frozenset(
    {
        "AccessDeniedException",
        "UnrecognizedClientException",
        "InvalidSignatureException",
        "ExpiredTokenException",
        "InvalidClientTokenId",
        "MissingAuthenticationToken",
    }
)


class RekognitionClient(Protocol):
    """The boto3 `rekognition` methods this backend calls (inject a client built for tests)."""

    def detect_custom_labels(self, **kwargs: Any) -> Mapping[str, Any]: ...

    def describe_project_versions(self, **kwargs: Any) -> Mapping[str, Any]: ...


class AwsRekognitionClassifier(Classifier):
    """Lesion scores from an Amazon Rekognition Custom Labels image-classification model.

    Args:
        project_version_arn: the model's ARN (`arn:aws:rekognition:REGION:ACCOUNT:project/NAME/version/...`).
        region: AWS region; taken from the ARN when omitted.
        endpoint_url: override the service URL (an emulator on 127.0.0.1, a VPC endpoint).
        min_confidence: `MinConfidence` 0-100; 0 (default) returns every label so probabilities are complete.
        tags: the model's labels; learned from the first answer when omitted (needs `min_confidence=0`).
        label_overrides: `{tag: canonical_code}` for tag names chosen at training.
        allow_unmapped: measure a model whose tags are not the seven classes as a latency/cost baseline only.
        inference_units: the `MinInferenceUnits` the model runs with (billing: units x hours running).
        check_running: call `describe_project_versions` once at construction and raise
            `ModelNotReadyError` unless the version is RUNNING (costs one control-plane call).
        connect_timeout: seconds to open a connection.
        read_timeout: seconds to wait for an answer per attempt, also with `client=` (whose own read timeout
            may be longer) and when an answer trickles in (no single socket read times out): the retry policy
            abandons the attempt after that long.
        retry: the shared retry policy; botocore's own retries are switched off.
        client: a boto3 `rekognition` client built elsewhere (tests, custom sessions); the caller keeps
            ownership: `close` leaves it open.

    Example:
        >>> clf = AwsRekognitionClassifier(  # doctest: +SKIP
        ...     "arn:aws:rekognition:us-east-1:123456789012:project/derm/version/derm.v1/1700000000000")
        >>> clf.predict("lesion.jpg").top(3)  # doctest: +SKIP
    """

    backend_name = "rekognition-custom-labels"
    #: one inference unit serves a few transactions per second; four in flight keep it busy, not overrun.
    default_concurrency = 4

    def __init__(
        self,
        project_version_arn: str,
        *,
        region: str | None = None,
        endpoint_url: str | None = None,
        min_confidence: float = 0.0,
        tags: Sequence[str] | None = None,
        label_overrides: Mapping[str, str] | None = None,
        allow_unmapped: bool = False,
        inference_units: int = 1,
        check_running: bool = False,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        client: RekognitionClient | None = None,
        image_limits: ImageLimits = DEFAULT_LIMITS,
        concurrency: int | None = None,
    ) -> None:
        arn_parts = _parse_arn(project_version_arn)
        if not 0.0 <= float(min_confidence) <= 100.0:
            raise ConfigError(f"min_confidence is a percentage between 0 and 100, got {min_confidence!r}")
        if min_confidence > 0 and tags is None:
            raise ConfigError(
                "with min_confidence > 0 the service omits labels below it, so the label set cannot be learned "
                "from answers: pass tags=[...] (the model's label names) or keep min_confidence=0"
            )
        if int(inference_units) < 1:
            raise ConfigError(f"inference_units must be at least 1, got {inference_units!r}")
        self.project_version_arn = project_version_arn
        self.min_confidence = float(min_confidence)
        self.inference_units = int(inference_units)
        self._overrides = dict(label_overrides or {})
        self._allow_unmapped = allow_unmapped
        self._learn_tags = tags is None
        self._map_lock = threading.Lock()
        label_map = (
            LabelMap.canonical()
            if tags is None
            else LabelMap.for_labels(list(tags), overrides=self._overrides, allow_unmapped=allow_unmapped)
        )
        self._owns_client = client is None
        self.client: RekognitionClient = client or build_boto_client(
            "rekognition",
            backend=self.backend_name,
            region=region or arn_parts["region"],
            endpoint_url=endpoint_url,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            pool=max(10, concurrency or self.default_concurrency),
        )
        meta = getattr(self.client, "meta", None)
        events = getattr(meta, "events", None)
        if events is not None:
            events.register("before-parse.rekognition.DetectCustomLabels", _refuse_cut_off_body, unique_id=_CHECK_ID)
        self.region = region or arn_parts["region"] or getattr(meta, "region_name", None)
        self.endpoint_url = endpoint_url or getattr(meta, "endpoint_url", None)
        super().__init__(
            label_map=label_map,
            model_id=arn_parts["project"] + "/" + arn_parts["version"],
            retry=retry or RetryPolicy.for_timeout(read_timeout),
            image_limits=image_limits,
            concurrency=concurrency,
        )
        self.attempt_timeout = float(read_timeout)
        if check_running:
            status = project_version_status(self.client, project_version_arn)
            if status != "RUNNING":
                raise ModelNotReadyError(
                    _not_running_message(project_version_arn, status), backend=self.backend_name, retryable=False
                )

    # --- one call ----------------------------------------------------------------------------------------------

    def _predict_one(self, image: PreparedImage, metadata: PatientMetadata, timeout: float | None) -> RawResult:
        # Patient metadata is not sent: a Custom Labels model takes pixels only.
        data, _mime = image.upload_bytes(max_bytes=MAX_IMAGE_BYTES, formats=("JPEG", "PNG"))
        try:
            response = self.client.detect_custom_labels(
                ProjectVersionArn=self.project_version_arn,
                Image={"Bytes": data},
                MinConfidence=self.min_confidence,
            )
        except Exception as exc:
            translated = self._translate(exc)
            if translated is None:
                raise
            raise translated from exc
        request_id = (response.get("ResponseMetadata") or {}).get("RequestId")
        return RawResult(scores=self._parse(response, request_id), request_id=request_id, extra={"bytes": len(data)})

    def _parse(self, response: Mapping[str, Any], request_id: str | None) -> list[tuple[str, float]]:
        labels = response.get("CustomLabels")
        if not isinstance(labels, list):
            raise InvalidResponseError(
                "Rekognition answered without CustomLabels", backend=self.backend_name, request_id=request_id
            )
        scores: list[tuple[str, float]] = []
        for item in labels:
            name = item.get("Name") if isinstance(item, Mapping) else None
            confidence = item.get("Confidence") if isinstance(item, Mapping) else None
            if (
                not isinstance(name, str)
                or isinstance(confidence, bool)
                or not isinstance(confidence, (int, float))
                or not math.isfinite(confidence)
                or not 0.0 <= confidence <= 100.0
            ):
                raise InvalidResponseError(
                    f"Rekognition returned a label without a name and a 0-100 confidence ({name!r}: {confidence!r})",
                    backend=self.backend_name,
                    request_id=request_id,
                )
            if item.get("Geometry"):
                raise ConfigError(
                    f"{self.project_version_arn} is an object-detection model (labels carry bounding boxes); "
                    "derm-cloud compares image-level classifiers: train an image classification project"
                )
            scores.append((name, float(confidence) / 100.0))
        if not scores and self.min_confidence == 0:
            raise InvalidResponseError(
                "Rekognition returned no labels with MinConfidence=0; the model has no trained labels",
                backend=self.backend_name,
                request_id=request_id,
            )
        self._learn_label_map([name for name, _ in scores])
        return scores

    def _learn_label_map(self, tags: list[str]) -> None:
        if not self._learn_tags or set(tags) == set(self.label_map.provider_labels):
            return
        with self._map_lock:
            if set(tags) != set(self.label_map.provider_labels):
                # Sorted, so the map does not depend on this answer's confidence order.
                self.label_map = LabelMap.for_labels(
                    sorted(tags), overrides=self._overrides, allow_unmapped=self._allow_unmapped
                )

    # --- errors: the one place botocore exceptions are translated ---------------------------------------------------

    def _translate(self, exc: Exception) -> DermCloudError | None:
        where = f"Rekognition model {self.model_id!r}"
        client_error = client_error_class()
        # A cut-off body is checked first: botocore may wrap it in a ClientError-shaped parse failure.
        if client_error is not None and isinstance(exc, client_error) and not is_cut_off(exc):
            return self._translate_client_error(getattr(exc, "response", {}), where)
        config = getattr(getattr(self.client, "meta", None), "config", None)
        return translate_botocore(
            exc,
            backend=self.backend_name,
            where=where,
            operation="detect_custom_labels",
            read_timeout=getattr(config, "read_timeout", None),
        )

    def _translate_client_error(self, response: Mapping[str, Any], where: str) -> DermCloudError:
        facts = client_error_facts(response, backend=self.backend_name)
        code, message, status, common = facts.code, facts.message, facts.status, facts.common
        if code == "ResourceNotReadyException":
            # Stopped or still starting: another attempt seconds later will not help, and starting costs money.
            return ModelNotReadyError(
                _not_running_message(self.project_version_arn, None, message), retryable=False, **common
            )
        if code in _THROTTLE_CODES or status == 429:
            return ThrottledError(
                f"{where} is over its provisioned throughput ({code}: {message}); start it with more inference "
                "units or lower the concurrency",
                **common,
            )
        if code in _AUTH_CODES or status in (401, 403):
            return AuthenticationError(
                f"AWS refused the credentials or permissions for {where} ({code}: {message}); the caller needs "
                "rekognition:DetectCustomLabels on the project version",
                **common,
            )
        if code == "ResourceNotFoundException":
            return NotFoundError(
                f"{where} does not exist in region {self.region!r} ({message}); check the project version ARN",
                **common,
            )
        if code == "ImageTooLargeException":
            return PayloadTooLargeError(f"{where} refused the image as too large: {message}")
        if code == "InvalidImageFormatException":
            return InvalidImageError(f"{where} refused the image format (JPEG or PNG only): {message}")
        if code in ("InvalidParameterException", "ValidationException"):
            return ConfigError(f"{where} rejected the request ({code}: {message})")
        if code == "InternalServerError" or (isinstance(status, int) and status >= 500):
            return ServiceError(f"{where} failed on the AWS side ({code}: {message})", **common)
        return ServiceError(f"{where} call failed ({code}: {message})", retryable=False, **common)

    # --- facts ---------------------------------------------------------------------------------------------------

    def describe(self) -> BackendInfo:
        base = (self.endpoint_url or f"https://rekognition.{self.region}.amazonaws.com").rstrip("/")
        return BackendInfo(
            backend=self.backend_name,
            provider="aws",
            service="Amazon Rekognition Custom Labels (DetectCustomLabels)",
            model_id=self.model_id,
            region=self.region,
            endpoint=base,
            data_leaves_machine=True,  # what the real service does; `emulated` says this run stayed local
            # DetectCustomLabels with image bytes keeps nothing; S3 inputs stay where the caller put them.
            stores_images=False,
            emulated=is_loopback(self.endpoint_url),
            labels_mapped=self.label_map.mapped,
            billing={"sku": "aws.rekognition.custom_labels.inference", "instances": self.inference_units},
            model_facts={
                "project_version_arn": self.project_version_arn,
                "min_confidence": self.min_confidence,
                "inference_units": self.inference_units,
                "payload_limit_bytes": MAX_IMAGE_BYTES,
                "billing_note": "billed per inference-unit hour while RUNNING, traffic or not: stop it when idle",
            },
        )

    def _close(self) -> None:
        close = getattr(self.client, "close", None)
        if self._owns_client and callable(close):
            close()


_CHECK_ID = "derm-cloud-cut-off-body"


def _refuse_cut_off_body(response_dict: Mapping[str, Any], **_: Any) -> None:
    """Raise before botocore parses a JSON body shorter than its `Content-Length`.

    botocore reads JSON-protocol answers whole and parses a cut one as an empty answer; the one rule for
    truncated bodies (a retryable "cut off in transit") needs the cut seen as such.
    """
    from botocore.exceptions import IncompleteReadError

    declared = (response_dict.get("headers") or {}).get("content-length")
    body = response_dict.get("body") or b""
    if declared is not None and str(declared).isdigit() and len(body) < int(declared):
        raise IncompleteReadError(actual_bytes=len(body), expected_bytes=int(declared))


def project_version_status(client: RekognitionClient, project_version_arn: str) -> str:
    """The version's status (`RUNNING`, `STOPPED`, `STARTING` ...) from `describe_project_versions`.

    Example:
        >>> project_version_status(client, arn)  # doctest: +SKIP
        'RUNNING'
    """
    parts = _parse_arn(project_version_arn)
    project_arn = project_version_arn.split("/version/")[0] + "/" + parts["created"]
    answer = client.describe_project_versions(ProjectArn=project_arn, VersionNames=[parts["version"]])
    for desc in answer.get("ProjectVersionDescriptions") or []:
        if desc.get("ProjectVersionArn") == project_version_arn:
            return str(desc.get("Status") or "UNKNOWN")
    raise NotFoundError(
        f"no project version {project_version_arn!r} in {project_arn!r}; check the ARN",
        backend=AwsRekognitionClassifier.backend_name,
    )


def _not_running_message(arn: str, status: str | None, detail: str = "") -> str:
    state = f" (status {status})" if status else ""
    extra = f": {detail}" if detail else ""
    return (
        f"Rekognition model {arn} is not RUNNING{state}{extra}. Start it with "
        f"start_project_version(ProjectVersionArn=..., MinInferenceUnits=1) and wait for RUNNING; it is billed "
        "per inference-unit hour from then until stop_project_version"
    )


def _parse_arn(arn: str) -> dict[str, str]:
    """Split `arn:aws:rekognition:REGION:ACCOUNT:project/NAME/version/VERSION/CREATED`."""
    parts = arn.split(":", 5) if isinstance(arn, str) else []
    path = parts[5].split("/") if len(parts) == 6 else []
    if len(parts) != 6 or parts[2] != "rekognition" or len(path) != 5 or path[0] != "project" or path[2] != "version":
        raise ConfigError(
            f"project_version_arn {arn!r} is not a Rekognition project version ARN; expected "
            "arn:aws:rekognition:REGION:ACCOUNT:project/NAME/version/VERSION/TIMESTAMP (Custom Labels console > "
            "project > model > 'Use model')"
        )
    return {"region": parts[3], "account": parts[4], "project": path[1], "version": path[3], "created": path[4]}
