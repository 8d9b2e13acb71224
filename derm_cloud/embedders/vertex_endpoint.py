"""`vertex-derm-foundation`, `vertex-medsiglip`: Google's HAI-DEF embedding models deployed to Vertex AI endpoints.

Model Garden deploys Derm Foundation (legacy) and MedSigLIP as Vertex AI endpoints whose containers publish a
serving API on top of Vertex `predict` (request and response shapes below, from the serving code and its
PredictSchemata). Calls go through the GAPIC `google.cloud.aiplatform_v1.PredictionServiceClient.predict` (REST
or gRPC), as the `vertex` classifier does, with `retry=None` so only derm-cloud's `RetryPolicy` retries.

```text
Derm Foundation  instance   {"input_bytes": b64} | {"gcs_uri": "gs://...", "bearer_token": "..."}
                 prediction {"embedding": [...]} | {"error": {"description": "..."}}
MedSigLIP        instance   {"image": {"input_bytes": b64}} | {"image": {"gcs_uri", "access_credential"}}
                            | {"text": "..."}
                 prediction {"embedding", "input_type", "model_temperature", "model_bias"}
                            | {"error": {"code", "description"}}
```

Sources: https://developers.google.com/health-ai-developer-foundations/derm-foundation/serving-api,
https://developers.google.com/health-ai-developer-foundations/medsiglip/serving-api, the containers at
https://github.com/Google-Health/derm-foundation and https://github.com/Google-Health/medsiglip
(`python/serving/vertex_schemata`), and Vertex's payload limits, 1.5 MB on a shared public endpoint and 10 MB on
a dedicated one (https://cloud.google.com/vertex-ai/docs/predictions/choose-endpoint-type).

Micro-batching: one `predict` carries up to `images_per_request` instances and never more than
`max_request_bytes` (images are re-encoded smaller to fit, as the `vertex` classifier does). A failed instance
comes back inside a 200 as an `error` prediction: it becomes `InvalidImageError` (the model could not read the
image) or `AuthenticationError` (a Cloud Storage token was refused), never a silent zero vector. Transient
failures (429 `RESOURCE_EXHAUSTED`, 503 `UNAVAILABLE`, 500, 504) are retryable `RemoteError`s.

Model Garden deploys to a dedicated endpoint by default: pass its DNS name (`https://<id>.<region>-<project
number>.prediction.vertexai.goog`) as `api_endpoint`, and `max_request_bytes=10_000_000`.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from derm_cloud.backends._google import prediction_service_client, talks_grpc, translate_google_error
from derm_cloud.backends._http import is_loopback
from derm_cloud.base import BackendInfo
from derm_cloud.embedders.base import Embedder, Embedding, RawEmbedding
from derm_cloud.embedders.vertex_answers import parse_predictions
from derm_cloud.errors import ConfigError
from derm_cloud.images import DEFAULT_LIMITS, ImageLimits, PreparedImage
from derm_cloud.retry import RetryPolicy, call_timeout

if TYPE_CHECKING:
    import grpc

__all__ = ["VertexDermFoundationEmbedder", "VertexEndpointEmbedder", "VertexMedSiglipEmbedder"]

Transport = Literal["rest", "grpc"]
#: Payload limit of a shared public endpoint; a dedicated endpoint takes 10 MB (choose-endpoint-type page).
SHARED_ENDPOINT_MAX_BYTES = 1_500_000
_INSTANCE_OVERHEAD = 256  # JSON framing of one instance: keys, quotes, commas, pretty-printing by the REST client
_REQUEST_OVERHEAD = 1024  # the request envelope


class VertexEndpointEmbedder(Embedder):
    """Embeddings from a Vertex AI endpoint serving one of Google's HAI-DEF models (base of the two below).

    Args:
        endpoint_id: the endpoint id (digits; an int is taken too), or its full resource name
            `projects/P/locations/L/endpoints/E`.
        project: Google Cloud project id (or number).
        location: region of the endpoint.
        transport: `rest` or `grpc`.
        api_endpoint: the service host: for REST with the scheme (`https://...`, `http://127.0.0.1:PORT` for an
            emulator); a dedicated endpoint's DNS name for Model Garden deployments.
        credentials: google-auth credentials (default: Application Default Credentials; anonymous for an
            emulator on this machine).
        channel: an already built gRPC channel (emulators: `grpc.insecure_channel`); handed over, closed by `close`.
        client: a `PredictionServiceClient` built elsewhere (the caller keeps ownership).
        images_per_request: instances per `predict` call (micro-batch).
        max_request_bytes: largest request sent (1.5 MB shared endpoint, 10 MB dedicated).
        dimension: the vector length every answer must have; `None`: learnt from the first answer.
        timeout: seconds per call; retry: the shared retry policy.
        machine_type, accelerator, nodes: the deployment, for cost reports (Vertex bills node-hours, always on).

    Example:
        >>> emb = VertexMedSiglipEmbedder("1234567890", project="my-project", location="us-central1")  # doctest: +SKIP
        >>> emb.embed("lesion.jpg").dimension  # doctest: +SKIP
    """

    #: `derm-foundation` or `medsiglip`: which container's serving API the endpoint speaks.
    serving_api: ClassVar[str] = ""
    service_name: ClassVar[str] = ""
    default_concurrency = 4
    default_max_batch = 8

    def __init__(
        self,
        endpoint_id: str | int,
        *,
        project: str | None = None,
        location: str = "us-central1",
        transport: Transport = "rest",
        api_endpoint: str | None = None,
        credentials: Any = None,
        channel: grpc.Channel | None = None,
        client: Any = None,
        images_per_request: int | None = None,
        max_request_bytes: int = SHARED_ENDPOINT_MAX_BYTES,
        dimension: int | None = None,
        timeout: float = 60.0,
        retry: RetryPolicy | None = None,
        machine_type: str | None = None,
        accelerator: str | None = None,
        nodes: int = 1,
        image_limits: ImageLimits = DEFAULT_LIMITS,
        concurrency: int | None = None,
    ) -> None:
        if transport not in ("rest", "grpc"):
            raise ConfigError(f"transport must be 'rest' or 'grpc', got {transport!r}")
        if channel is not None and transport != "grpc":
            raise ConfigError("channel= is a gRPC channel; pass transport='grpc' with it")
        if max_request_bytes < 64 * 1024:
            raise ConfigError(f"max_request_bytes must be at least 64 KiB, got {max_request_bytes}")
        from derm_cloud.backends.gcp_vertex import _parse_endpoint

        # Vertex endpoint ids are digits: a command line's KEY=VALUE parses them as numbers.
        self.project, self.location, self.endpoint_id = _parse_endpoint(str(endpoint_id), project, location)
        self.endpoint = f"projects/{self.project}/locations/{self.location}/endpoints/{self.endpoint_id}"
        super().__init__(
            model_id=self.endpoint,
            dimension=dimension,
            retry=retry if retry is not None else RetryPolicy.for_timeout(timeout),
            image_limits=image_limits,
            concurrency=concurrency,
            max_batch=images_per_request,
        )
        self.transport: Transport = transport
        self.timeout = timeout
        self.max_request_bytes = max_request_bytes
        self.machine_type = machine_type
        self.accelerator = accelerator
        self.nodes = nodes
        default_host = f"{self.location}-aiplatform.googleapis.com"
        self.api_endpoint = api_endpoint or (f"https://{default_host}" if transport == "rest" else default_host)
        self._injected_channel = channel is not None
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

    # --- requests ------------------------------------------------------------------------------------------

    def image_instance(self, image: PreparedImage) -> dict[str, Any]:
        """The JSON instance for one image (EXIF-free JPEG or PNG, re-encoded to fit `max_request_bytes`)."""
        budget = max(1024, (self.max_request_bytes - _REQUEST_OVERHEAD - _INSTANCE_OVERHEAD) * 3 // 4)
        encoded, _mime = image.upload_base64(max_bytes=budget, formats=("JPEG", "PNG"))
        return self._wrap_image({"input_bytes": encoded})

    @abstractmethod
    def uri_instance(self, uri: str, bearer_token: str | None) -> dict[str, Any]:
        """The JSON instance for an image in Cloud Storage (`gs://bucket/path.png`), read by the endpoint."""

    @abstractmethod
    def _wrap_image(self, image: dict[str, Any]) -> dict[str, Any]:
        """An image source (`{"input_bytes": ...}`) as this serving API's instance."""

    def _embed_many(self, images: Sequence[PreparedImage], timeout: float | None) -> list[RawEmbedding]:
        return self._send([self.image_instance(image) for image in images], "image", timeout)

    def embed_uris(self, uris: Sequence[str], *, bearer_token: str | None = None) -> list[Embedding]:
        """Embed images the endpoint reads from Cloud Storage itself (nothing is uploaded from this machine).

        Args:
            uris: `gs://bucket/path/file.ext` links.
            bearer_token: an OAuth 2.0 access token that may read the objects (`gcloud auth print-access-token`);
                sent in each instance, never logged. `None`: public objects.
        """
        self._check_open()
        for uri in uris:
            if not isinstance(uri, str) or not uri.startswith("gs://") or "/" not in uri[5:]:
                raise ConfigError(f"not a Cloud Storage object link: {uri!r}; expected gs://bucket/path/file.ext")
        instances = [self.uri_instance(uri, bearer_token) for uri in uris]
        return self._run_requests(instances, lambda chunk, timeout: self._send(list(chunk), "image", timeout))

    def _send(self, instances: list[dict[str, Any]], kind: str, timeout: float | None) -> list[RawEmbedding]:
        """One `predict` per group of instances that fits `max_request_bytes`, in order."""
        import json

        groups: list[list[dict[str, Any]]] = []
        size = _REQUEST_OVERHEAD
        for instance in instances:
            cost = len(json.dumps(instance)) + _INSTANCE_OVERHEAD
            if groups and size + cost <= self.max_request_bytes:
                groups[-1].append(instance)
                size += cost
            else:
                groups.append([instance])
                size = _REQUEST_OVERHEAD + cost
        return [raw for group in groups for raw in self._predict(group, kind, timeout)]

    def _predict(self, instances: list[dict[str, Any]], kind: str, timeout: float | None) -> list[RawEmbedding]:
        seconds = call_timeout(self.timeout, timeout)
        try:
            from google.protobuf import json_format

            response = self._client.predict(endpoint=self.endpoint, instances=instances, retry=None, timeout=seconds)
            payload = json_format.MessageToDict(type(response).pb(response))
        except Exception as exc:
            translated = translate_google_error(
                exc,
                backend=self.backend_name,
                service=f"Vertex AI ({self.service_name})",
                transport=self.transport,
                what=self.endpoint,
            )
            if translated is None:
                raise  # not an SDK, transport or protobuf error: a bug, shown as itself
            raise translated from exc
        raws = parse_predictions(
            payload, expected=len(instances), kind=kind, serving_api=self.serving_api, backend=self.backend_name
        )
        if self.dimension is None and raws:
            self.dimension = len(raws[0].vector)  # learnt once; every later answer must match it
        return raws

    # --- facts and lifecycle -------------------------------------------------------------------------------

    @property
    def emulated(self) -> bool:
        """Whether this talks to an emulator on this machine (a stand-in model, not Google's)."""
        return self._injected_channel or is_loopback(self.api_endpoint)

    def describe(self) -> BackendInfo:
        facts: dict[str, Any] = {
            "serving_api": self.serving_api,
            "transport": self.transport,
            "dimension": self.dimension,
            "embeds_text": self.embeds_text,
            "images_per_request": self.max_batch,
            "max_request_bytes": self.max_request_bytes,
            "always_on": True,
        }
        if self.emulated:
            from derm_cloud.embedders.vertex_answers import STAND_IN_NOTE, TEXT_NOTE

            facts["stand_in"] = STAND_IN_NOTE.format(model=self.service_name)
            if self.embeds_text:
                facts["text_embeddings"] = TEXT_NOTE
        machine = self.machine_type or "unspecified"
        return BackendInfo(
            backend=self.backend_name,
            provider="gcp",
            service=f"Vertex AI endpoint serving {self.service_name} ({self.transport})",
            model_id=self.endpoint,
            region=self.location,
            endpoint="grpc channel (injected)" if self._injected_channel else self.api_endpoint,
            data_leaves_machine=True,
            stores_images=False,
            emulated=self.emulated,
            labels_mapped=False,
            billing={
                # One price entry per machine and accelerator: gcp.vertex.custom.n1-standard-8+NVIDIA_TESLA_T4.
                "sku": f"vertex.custom.{self.machine_type}" + (f"+{self.accelerator}" if self.accelerator else "")
                if self.machine_type
                else None,
                "unit": "node-hour",
                "machine_type": machine,
                "accelerator": self.accelerator,
                "nodes": self.nodes,
            },
            model_facts=facts,
        )

    def _close(self) -> None:
        transport = getattr(self._client, "transport", None)
        if self._owns_client and transport is not None:
            transport.close()


class VertexDermFoundationEmbedder(VertexEndpointEmbedder):
    """Derm Foundation (legacy; Google recommends MedSigLIP for new work) on a Vertex AI endpoint: images only.

    Its model card gives 6144-dimensional embeddings (https://huggingface.co/google/derm-foundation); pass
    `dimension=6144` to insist on it.
    """

    backend_name = "vertex-derm-foundation"
    serving_api = "derm-foundation"
    service_name = "Derm Foundation"

    def _wrap_image(self, image: dict[str, Any]) -> dict[str, Any]:
        return image

    def uri_instance(self, uri: str, bearer_token: str | None) -> dict[str, Any]:
        instance = {"gcs_uri": uri}
        if bearer_token:
            instance["bearer_token"] = bearer_token
        return instance


class VertexMedSiglipEmbedder(VertexEndpointEmbedder):
    """MedSigLIP on a Vertex AI endpoint: images and text in one space (zero-shot from text prompts)."""

    backend_name = "vertex-medsiglip"
    serving_api = "medsiglip"
    service_name = "MedSigLIP"
    embeds_text = True

    def _wrap_image(self, image: dict[str, Any]) -> dict[str, Any]:
        return {"image": image}

    def uri_instance(self, uri: str, bearer_token: str | None) -> dict[str, Any]:
        image = {"gcs_uri": uri}
        if bearer_token:
            image["access_credential"] = bearer_token
        return {"image": image}

    def _embed_text_many(self, texts: Sequence[str], timeout: float | None) -> list[RawEmbedding]:
        return self._send([{"text": text} for text in texts], "text", timeout)
