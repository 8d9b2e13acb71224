"""Amazon Rekognition Custom Labels emulator on 127.0.0.1, driven through real boto3.

moto covers too little of this API to test a client (docs/reference/cloud-apis.md, section 2.8): its
`detect_custom_labels` returns one hard-coded label for any input, and the project-version lifecycle
(`start_project_version` / `stop_project_version`) is not implemented. This emulator speaks the AWS JSON 1.1
protocol (`POST /` with `X-Amz-Target: RekognitionService.<Operation>`) for the four operations a
classification client uses, hosting a real model:

* `DetectCustomLabels`: `Image.Bytes` (base64 in JSON, as botocore sends it) must be a JPEG or PNG under
  4.0 MB (decimal) or the answer is `ImageTooLargeException` / `InvalidImageFormatException`; the model's
  probabilities come back as `Confidence` 0-100 (float32 precision, as the service's JSON shows), sorted,
  filtered by `MinConfidence` (omitted: each label's assumed threshold, `assumed_threshold`) and
  `MaxResults`. A version that is not RUNNING answers `ResourceNotReadyException`.
* `DescribeProjectVersions`, `StartProjectVersion` (STARTING, then RUNNING after `start_seconds`),
  `StopProjectVersion` (STOPPING, then STOPPED).

Injected faults answer in Rekognition's shapes: `throttle` -> `ProvisionedThroughputExceededException`,
`error` -> `InternalServerError` (500, a server fault in botocore's model), or AWS's common
`ServiceUnavailable` for status 503, `not_ready` -> `ResourceNotReadyException`.

Example:
    >>> with RekognitionEmulator(model_dir) as emu:  # doctest: +SKIP
    ...     clf = rekognition_backend_for(emu)
    ...     clf.predict("lesion.jpg").top(3)
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from derm_cloud.testing.emulators.base import Fault, OneModelEmulator, Response, header_value, retry_after_header

if TYPE_CHECKING:
    from derm_cloud.backends.aws_rekognition import AwsRekognitionClassifier

__all__ = ["ProjectVersion", "RekognitionEmulator", "rekognition_backend_for"]

_ACCOUNT = "123456789012"
_CREATED = "1767225600000"  # 2026-01-01T00:00:00Z in ms: fixed, so ARNs are stable across runs
_IMAGE_BYTES_LIMIT = 4_000_000  # "must be smaller than 4.0 MB"


@dataclass
class ProjectVersion:
    """One emulated model version and its lifecycle state."""

    arn: str
    project_arn: str
    version_name: str
    status: str = "RUNNING"
    min_inference_units: int = 1
    max_inference_units: int | None = None
    ready_at: float = 0.0
    next_status: str | None = None

    def current(self) -> str:
        """The status now: a STARTING/STOPPING version settles once its transition time has passed."""
        if self.next_status is not None and time.monotonic() >= self.ready_at:
            self.status, self.next_status = self.next_status, None
        return self.status


class RekognitionEmulator(OneModelEmulator):
    """A Rekognition Custom Labels project with one image-classification model version.

    Args:
        model_dir: the derm-cloud model directory the version serves.
        project: project name (part of the ARNs).
        version: version name.
        region: the region in the ARNs.
        running: whether the version starts RUNNING (`False`: TRAINING_COMPLETED, must be started).
        label_names: `{model_label: tag_name}` renames, as tags chosen at training (`{"mel": "Melanoma"}`).
        assumed_threshold: the per-label threshold used when a request omits `MinConfidence`.
        start_seconds: how long STARTING and STOPPING last.
    """

    name = "rekognition-custom-labels"

    def __init__(
        self,
        model_dir: str | os.PathLike[str],
        *,
        project: str = "derm-cloud",
        version: str = "derm-cloud.2026-01-01T00.00.00",
        region: str = "us-east-1",
        running: bool = True,
        label_names: Mapping[str, str] | None = None,
        assumed_threshold: float = 50.0,
        start_seconds: float = 0.2,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        super().__init__(model_dir, host=host, port=port)
        self.region = region
        self.label_names = dict(label_names or {})
        self.assumed_threshold = assumed_threshold
        self.start_seconds = start_seconds
        project_arn = f"arn:aws:rekognition:{region}:{_ACCOUNT}:project/{project}/{_CREATED}"
        arn = f"arn:aws:rekognition:{region}:{_ACCOUNT}:project/{project}/version/{version}/{_CREATED}"
        self.version = ProjectVersion(arn, project_arn, version, "RUNNING" if running else "TRAINING_COMPLETED")
        #: the image bytes of the last DetectCustomLabels call (to assert no EXIF arrived).
        self.last_image_bytes: bytes | None = None

    @property
    def project_version_arn(self) -> str:
        return self.version.arn

    # --- the wire contract -------------------------------------------------------------------------------------

    def handle(self, method: str, path: str, headers: Mapping[str, str], body: bytes) -> Response:
        target = header_value(headers, "X-Amz-Target") or ""
        service, _, operation = target.partition(".")
        if method != "POST" or service != "RekognitionService":
            return _error(400, "UnknownOperationException", f"unknown operation {target!r}")
        try:
            request = json.loads(body or b"{}")
        except ValueError:
            return _error(400, "SerializationException", "the request body is not JSON")
        if not isinstance(request, dict):
            return _error(400, "SerializationException", "the request body must be a JSON object")
        routes = {
            "DetectCustomLabels": self._detect,
            "DescribeProjectVersions": self._describe,
            "StartProjectVersion": self._start_version,
            "StopProjectVersion": self._stop_version,
        }
        route = routes.get(operation)
        if route is None:
            return _error(400, "UnknownOperationException", f"this emulator does not implement {operation!r}")
        return route(request)

    def _detect(self, request: dict[str, Any]) -> Response:
        if request.get("ProjectVersionArn") != self.version.arn:
            return _error(400, "ResourceNotFoundException", "The requested resource not found")
        status = self.version.current()
        if status != "RUNNING":
            return _error(400, "ResourceNotReadyException", f"ProjectVersion is in {status} state")
        image = request.get("Image") or {}
        if "S3Object" in image:
            return _error(400, "InvalidS3ObjectException", "this emulator takes Image.Bytes only")
        try:
            raw = base64.b64decode(str(image.get("Bytes") or ""), validate=True)
        except binascii.Error:
            return _error(400, "InvalidParameterException", "Image.Bytes is not base64")
        if len(raw) >= _IMAGE_BYTES_LIMIT:
            return _error(400, "ImageTooLargeException", "Image size is too large.")
        if not (raw.startswith(b"\xff\xd8") or raw.startswith(b"\x89PNG\r\n\x1a\n")):
            return _error(400, "InvalidImageFormatException", "Request has unsupported image format")
        from derm_cloud.errors import InvalidImageError
        from derm_cloud.images import prepare_for_model
        from derm_cloud.types import PatientMetadata

        self.last_image_bytes = raw
        try:
            prepared = prepare_for_model(raw)
        except InvalidImageError:
            return _error(400, "InvalidImageFormatException", "Request has invalid image format")
        server = self._hosted()
        probs = server.predict([prepared], [PatientMetadata()])[0]
        # The service's JSON carries float32 confidences (e.g. 91.12300109863281).
        confidences = [float(np.float32(p * 100.0)) for p in probs]
        min_conf = request.get("MinConfidence")
        threshold = self.assumed_threshold if min_conf is None else float(min_conf)
        ranked = sorted(
            (
                (self.label_names.get(label, label), conf)
                for label, conf in zip(server.labels, confidences, strict=True)
            ),
            key=lambda pair: -pair[1],
        )
        labels = [{"Name": name, "Confidence": conf} for name, conf in ranked if conf >= threshold]
        max_results = request.get("MaxResults")
        if isinstance(max_results, int) and max_results > 0:
            labels = labels[:max_results]
        return _ok({"CustomLabels": labels})

    def _describe(self, request: dict[str, Any]) -> Response:
        if request.get("ProjectArn") != self.version.project_arn:
            return _error(400, "ResourceNotFoundException", "The requested resource not found")
        names = request.get("VersionNames")
        versions = [self.version] if not names or self.version.version_name in names else []
        return _ok({"ProjectVersionDescriptions": [_description(v) for v in versions]})

    def _start_version(self, request: dict[str, Any]) -> Response:
        if request.get("ProjectVersionArn") != self.version.arn:
            return _error(400, "ResourceNotFoundException", "The requested resource not found")
        units = request.get("MinInferenceUnits")
        if not isinstance(units, int) or units < 1:
            return _error(400, "InvalidParameterException", "MinInferenceUnits must be at least 1")
        if self.version.current() not in ("TRAINING_COMPLETED", "STOPPED"):
            return _error(400, "ResourceInUseException", f"ProjectVersion is in {self.version.status} state")
        self.version.min_inference_units = units
        self.version.max_inference_units = request.get("MaxInferenceUnits")
        self.version.status, self.version.next_status = "STARTING", "RUNNING"
        self.version.ready_at = time.monotonic() + self.start_seconds
        return _ok({"Status": "STARTING"})

    def _stop_version(self, request: dict[str, Any]) -> Response:
        if request.get("ProjectVersionArn") != self.version.arn:
            return _error(400, "ResourceNotFoundException", "The requested resource not found")
        if self.version.current() != "RUNNING":
            return _error(400, "ResourceInUseException", f"ProjectVersion is in {self.version.status} state")
        self.version.status, self.version.next_status = "STOPPING", "STOPPED"
        self.version.ready_at = time.monotonic() + self.start_seconds
        return _ok({"Status": "STOPPING"})

    # --- faults ----------------------------------------------------------------------------------------------

    def fault_response(self, fault: Fault) -> Response:
        if fault.kind == "throttle":
            # Whether the service sends Retry-After here is not documented; the fault's value tests clients that
            # honour it when present.
            return _error(
                400,
                "ProvisionedThroughputExceededException",
                "The number of requests exceeded your throughput limit.",
                retry_after_header(fault.retry_after),
            )
        if fault.kind == "error" and fault.status == 503:
            return _error(503, "ServiceUnavailable", "The request has failed due to a temporary failure of the server.")
        if fault.kind == "error":
            # A fault without a modelled status: 500, Smithy's default for server errors (botocore's "fault": true).
            return _error(500, "InternalServerError", "Amazon Rekognition experienced a service issue.")
        if fault.kind == "not_ready":
            return _error(400, "ResourceNotReadyException", "ProjectVersion is in STARTING state")
        if fault.kind == "truncated":  # the base server cuts this answer half-way under its full Content-Length
            return _ok({"CustomLabels": [{"Name": "mel", "Confidence": 50.0}, {"Name": "nv", "Confidence": 50.0}]})
        return super().fault_response(fault)

    def runtime_client(self, *, connect_timeout: float = 2.0, read_timeout: float = 10.0) -> Any:
        """A real boto3 `rekognition` client pointed at this emulator (dummy keys; one attempt per call)."""
        import boto3
        from botocore.config import Config

        return boto3.session.Session().client(
            "rekognition",
            region_name=self.region,
            endpoint_url=self.url,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            config=Config(
                retries={"total_max_attempts": 1}, connect_timeout=connect_timeout, read_timeout=read_timeout
            ),
        )


_CONTENT_TYPE = "application/x-amz-json-1.1"


def _description(v: ProjectVersion) -> dict[str, Any]:
    out: dict[str, Any] = {
        "ProjectVersionArn": v.arn,
        "CreationTimestamp": int(_CREATED) / 1000,
        "Status": v.current(),
        "StatusMessage": f"The model is {v.status.lower().replace('_', ' ')}.",
        "MinInferenceUnits": v.min_inference_units,
    }
    if v.max_inference_units is not None:
        out["MaxInferenceUnits"] = v.max_inference_units
    return out


def _ok(payload: dict[str, Any]) -> Response:
    return Response(
        200, json.dumps(payload).encode(), {"Content-Type": _CONTENT_TYPE, "x-amzn-RequestId": str(uuid.uuid4())}
    )


def _error(status: int, code: str, message: str, headers: Mapping[str, str] | None = None) -> Response:
    body = json.dumps({"__type": code, "Message": message}).encode()
    return Response(
        status, body, {"Content-Type": _CONTENT_TYPE, "x-amzn-RequestId": str(uuid.uuid4()), **(headers or {})}
    )


def rekognition_backend_for(emulator: RekognitionEmulator, **options: Any) -> AwsRekognitionClassifier:
    """An `AwsRekognitionClassifier` wired to a running emulator."""
    from derm_cloud.backends.aws_rekognition import AwsRekognitionClassifier

    options.setdefault("client", emulator.runtime_client())
    return AwsRekognitionClassifier(emulator.project_version_arn, region=emulator.region, **options)
