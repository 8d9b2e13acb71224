"""`vertex`: a Google Vertex AI endpoint (AutoML image classification or a custom container), REST or gRPC.

Calls go through the GAPIC `google.cloud.aiplatform_v1.PredictionServiceClient` (1 HTTP call per prediction;
the high-level `aiplatform.Endpoint` adds a GET of the endpoint first and ignores custom endpoints for
`raw_predict`). Two request shapes:

* `schema="automl"`: instance `{"content": b64}`, parameters `confidenceThreshold=0.0` and
  `maxPredictions=<number of classes>` so every class score comes back; the answer's `displayNames` are
  mapped onto the seven classes (pass `labels`/`label_overrides` if the model was trained with other names).
* `schema="custom"`: the derm-cloud custom container (`adapters/vertex`): instance `{"b64", "metadata"}`
  -> `{"labels", "probabilities", ...}`.

`predict` has no SDK retry by default; we pass `retry=None` and a per-call `timeout` from the shared
`RetryPolicy` deadline anyway, so nothing retries behind our back. google.api_core,
google.auth, requests and protobuf parsing errors are translated in one place,
`translate_google_error` (shared with the Cloud Vision backend).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

from derm_cloud.backends._google import prediction_service_client, talks_grpc, translate_google_error
from derm_cloud.backends._http import is_loopback
from derm_cloud.base import BackendInfo, Classifier, RawResult
from derm_cloud.errors import (
    ConfigError,
    InvalidResponseError,
)
from derm_cloud.images import DEFAULT_LIMITS, ImageLimits, PreparedImage
from derm_cloud.retry import RetryPolicy, call_timeout
from derm_cloud.taxonomy import CLASS_CODES, LabelMap
from derm_cloud.types import PatientMetadata

if TYPE_CHECKING:
    import grpc

__all__ = ["GcpVertexClassifier"]

Transport = Literal["rest", "grpc"]
Schema = Literal["automl", "custom"]
#: Request limit assumed for online prediction; 1.5 MB is unverified (docs/reference/cloud-apis.md §5.1), hence an
#: option.
DEFAULT_MAX_REQUEST_BYTES = 1_500_000
_JSON_OVERHEAD = 2048  # pretty-printed JSON framing, parameters and metadata around the base64 image


class GcpVertexClassifier(Classifier):
    """Classify with a model deployed to a Vertex AI endpoint.

    Args:
        endpoint_id: the endpoint id, or its full resource name `projects/P/locations/L/endpoints/E`.
        project: Google Cloud project id (or number).
        location: region of the endpoint (`us-central1` ...).
        schema: `automl` (AutoML image classification) or `custom` (the derm-cloud container).
        transport: `rest` or `grpc`.
        labels: the model's labels (AutoML display names), mapped onto the seven classes.
        label_overrides: `{display_name: code}` for tag names that do not map by themselves.
        api_endpoint: override the service host. REST needs the scheme for plain http
            (`http://127.0.0.1:PORT`); the default is `https://{location}-aiplatform.googleapis.com`.
        credentials: google-auth credentials (default: Application Default Credentials);
            `AnonymousCredentials()` for emulators.
        channel: an already built gRPC channel (tests: `grpc.insecure_channel`); only with `transport="grpc"`.
            It is handed over: `close` closes it (as the SDK's gRPC transport does).
        client: a `PredictionServiceClient` built elsewhere; the caller keeps ownership: `close` leaves it
            open.
        use_metadata: send age/sex/site to a `custom` endpoint (AutoML models take none).
        timeout: seconds per call (the retry deadline may shorten it).
        retry: the shared retry policy.
        max_request_bytes: request size limit; images are re-encoded/downscaled to fit (`None`: no limit).
        machine_type, nodes: deployment facts for the cost report (custom containers; AutoML bills node-hours).

    Example:
        >>> clf = GcpVertexClassifier("1234567890", project="my-project", location="europe-west4")  # doctest: +SKIP
        >>> clf.predict("lesion.jpg").top(3)  # doctest: +SKIP
    """

    backend_name = "vertex"
    default_concurrency = 4

    def __init__(
        self,
        endpoint_id: str,
        *,
        project: str | None = None,
        location: str = "us-central1",
        schema: Schema = "automl",
        transport: Transport = "rest",
        labels: Sequence[str] = CLASS_CODES,
        label_overrides: Mapping[str, str] | None = None,
        api_endpoint: str | None = None,
        credentials: Any = None,
        channel: grpc.Channel | None = None,
        client: Any = None,
        use_metadata: bool = True,
        timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        max_request_bytes: int | None = DEFAULT_MAX_REQUEST_BYTES,
        machine_type: str | None = None,
        nodes: int = 1,
        image_limits: ImageLimits = DEFAULT_LIMITS,
        concurrency: int | None = None,
    ) -> None:
        if schema not in ("automl", "custom"):
            raise ConfigError(f"schema must be 'automl' or 'custom', got {schema!r}")
        if transport not in ("rest", "grpc"):
            raise ConfigError(f"transport must be 'rest' or 'grpc', got {transport!r}")
        if channel is not None and transport != "grpc":
            raise ConfigError("channel= is a gRPC channel; pass transport='grpc' with it")
        self.project, self.location, self.endpoint_id = _parse_endpoint(endpoint_id, project, location)
        self.endpoint = f"projects/{self.project}/locations/{self.location}/endpoints/{self.endpoint_id}"
        label_map = LabelMap.for_labels(labels, overrides=label_overrides)
        super().__init__(
            label_map=label_map,
            model_id=self.endpoint,
            retry=retry if retry is not None else RetryPolicy.for_timeout(timeout),
            image_limits=image_limits,
            concurrency=concurrency,
        )
        self.schema: Schema = schema
        self.transport: Transport = transport
        self.use_metadata = use_metadata
        self.timeout = timeout
        self.max_request_bytes = max_request_bytes
        self.machine_type = machine_type
        self.nodes = nodes
        self.api_endpoint = api_endpoint or (
            f"https://{self.location}-aiplatform.googleapis.com"
            if transport == "rest"
            else f"{self.location}-aiplatform.googleapis.com"
        )
        self._injected_channel = channel is not None
        # Close only a client we built. An injected channel goes into a transport we build, and like the Google
        # SDK's own transports, closing it closes the channel: the channel is handed over, a client is not.
        self._owns_client = client is None
        self._client = client if client is not None else self._build_client(credentials, channel)
        self.sdk_deadline = talks_grpc(self._client)

    def _build_client(self, credentials: Any, channel: grpc.Channel | None) -> Any:
        return prediction_service_client(
            backend=self.backend_name,
            transport=self.transport,
            api_endpoint=self.api_endpoint,
            credentials=credentials,
            channel=channel,
        )

    # --- the call -------------------------------------------------------------------------------------------------

    def instance(self, image: PreparedImage, metadata: PatientMetadata) -> dict[str, Any]:
        """The JSON instance for one image (EXIF-free bytes, sized to fit `max_request_bytes`)."""
        max_bytes = None
        if self.max_request_bytes is not None:
            # base64 grows bytes by 4/3; keep room for the JSON around it.
            max_bytes = max(1024, (self.max_request_bytes - _JSON_OVERHEAD) * 3 // 4)
        encoded, _mime = image.upload_base64(max_bytes=max_bytes, formats=("JPEG", "PNG"))
        if self.schema == "automl":
            return {"content": encoded}
        instance: dict[str, Any] = {"b64": encoded}
        if self.use_metadata and not metadata.is_empty:
            meta: dict[str, Any] = {"sex": metadata.sex}
            if metadata.age is not None:
                meta["age"] = metadata.age
            if metadata.site:
                meta["site"] = metadata.site
            instance["metadata"] = meta
        return instance

    def parameters(self) -> dict[str, Any] | None:
        """AutoML parameters asking for every class: threshold 0 and as many predictions as labels."""
        if self.schema != "automl":
            return None
        return {"confidenceThreshold": 0.0, "maxPredictions": len(self.label_map.provider_labels)}

    def _predict_one(self, image: PreparedImage, metadata: PatientMetadata, timeout: float | None) -> RawResult:
        instance = self.instance(image, metadata)
        seconds = call_timeout(self.timeout, timeout)
        kwargs: dict[str, Any] = {"endpoint": self.endpoint, "instances": [instance], "retry": None}
        params = self.parameters()
        if params is not None:
            kwargs["parameters"] = params
        try:
            from google.protobuf import json_format

            response = self._client.predict(timeout=seconds, **kwargs)
            payload = json_format.MessageToDict(type(response).pb(response))
        except Exception as exc:
            translated = translate_google_error(
                exc, backend=self.backend_name, service="Vertex AI", transport=self.transport, what=self.endpoint
            )
            if translated is None:
                raise  # not an SDK, transport or protobuf error: a bug, shown as itself
            raise translated from exc
        return self._parse(payload)

    def _parse(self, payload: dict[str, Any]) -> RawResult:
        predictions = payload.get("predictions")
        if not isinstance(predictions, list) or len(predictions) != 1 or not isinstance(predictions[0], dict):
            raise InvalidResponseError(
                f"Vertex answered {len(predictions) if isinstance(predictions, list) else 'no'} prediction(s) "
                "for one instance, or not an object; check schema= matches the deployed model"
            )
        pred = predictions[0]
        if self.schema == "automl":
            names, scores = pred.get("displayNames"), pred.get("confidences")
        else:
            names, scores = pred.get("labels"), pred.get("probabilities")
        expected = "displayNames/confidences" if self.schema == "automl" else "labels/probabilities"
        if not (isinstance(names, list) and isinstance(scores, list) and len(names) == len(scores)):
            raise InvalidResponseError(
                f"Vertex prediction lacks matching {expected} (keys: {sorted(pred)}); check schema={self.schema!r} "
                "matches the deployed model"
            )
        known = set(self.label_map.provider_labels)
        unknown = [n for n in names if n not in known]
        if unknown:
            raise InvalidResponseError(
                f"the endpoint returned label(s) {unknown} that are not among labels={list(known)}; pass the "
                "model's labels (AutoML display names) as labels= and, if needed, label_overrides="
            )
        try:
            pairs = [(str(n), float(s)) for n, s in zip(names, scores, strict=True)]
        except (TypeError, ValueError):
            raise InvalidResponseError(f"Vertex scores are not numbers: {scores[:3]!r}") from None
        extra = {
            k: payload[v]
            for k, v in (
                ("deployed_model_id", "deployedModelId"),
                ("model", "model"),
                ("model_version_id", "modelVersionId"),
                ("model_display_name", "modelDisplayName"),
            )
            if payload.get(v)
        }
        extra["transport"] = self.transport
        return RawResult(scores=pairs, extra=extra)

    @property
    def uses_metadata(self) -> bool:
        """Whether age, sex and site go to the endpoint (`use_metadata` with the `custom` schema)."""
        return bool(self.use_metadata) and self.schema == "custom"

    def describe(self) -> BackendInfo:
        if self.schema == "automl":
            billing: dict[str, Any] = {
                "sku": "vertex.automl.image_classification.online",
                "unit": "node-hour",
                "nodes": self.nodes,
            }
        else:
            billing = {
                "sku": f"vertex.custom.{self.machine_type or 'n1-standard-2'}",
                "unit": "node-hour",
                "machine_type": self.machine_type or "n1-standard-2",
                "nodes": self.nodes,
            }
        kind = "AutoML image classification" if self.schema == "automl" else "custom container"
        return BackendInfo(
            backend=self.backend_name,
            provider="gcp",
            service=f"Vertex AI online prediction ({kind}, {self.transport})",
            model_id=self.endpoint,
            region=self.location,
            endpoint="grpc channel (injected)" if self._injected_channel else self.api_endpoint,
            data_leaves_machine=True,
            stores_images=False,
            emulated=self._injected_channel or is_loopback(self.api_endpoint),
            labels_mapped=self.label_map.mapped,
            billing=billing,
            model_facts={"schema": self.schema, "transport": self.transport, "always_on": True},
        )

    def _close(self) -> None:
        transport = getattr(self._client, "transport", None)
        if self._owns_client and transport is not None:
            transport.close()


def _parse_endpoint(endpoint_id: str, project: str | None, location: str) -> tuple[str, str, str]:
    parts = endpoint_id.strip("/").split("/")
    if len(parts) == 6 and parts[0] == "projects" and parts[2] == "locations" and parts[4] == "endpoints":
        return parts[1], parts[3], parts[5]
    if len(parts) != 1 or not endpoint_id:
        raise ConfigError(f"endpoint_id {endpoint_id!r} is neither an id nor 'projects/P/locations/L/endpoints/E'")
    if not project:
        raise ConfigError("project= is required with a bare endpoint id (or pass the full resource name)")
    return project, location, endpoint_id
