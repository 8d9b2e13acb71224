"""Vertex AI endpoints serving Google's Health AI Developer Foundations embedding models: Derm Foundation, MedSigLIP.

A stand-in for a Model Garden deployment: the `predict` wire of Vertex AI (REST and gRPC, errors in Google's
envelope, the endpoint resource the high-level SDK reads first: all inherited from `VertexEmulator`) in front
of the serving API each model's container publishes, hosting a real image encoder (`HostedEncoder`), not
Google's model.

Serving APIs, as published (request and response shapes from the serving code and its Vertex PredictSchemata):

* `derm-foundation` (legacy; https://developers.google.com/health-ai-developer-foundations/derm-foundation/serving-api,
  https://github.com/Google-Health/derm-foundation/tree/master/python/serving): instance `{"input_bytes": b64}`
  or `{"gcs_uri": "gs://...", "bearer_token": "..."}`; each prediction `{"embedding": [...]}` or, for an instance
  that failed, `{"error": {"description": "Failed to get prediction for instance. Reason: ..."}}` inside a 200.
* `medsiglip` (https://developers.google.com/health-ai-developer-foundations/medsiglip/serving-api,
  https://github.com/Google-Health/medsiglip/tree/main/python/serving): instance `{"image": {"input_bytes": b64}}`,
  `{"image": {"gcs_uri": ..., "access_credential": ...}}` or `{"text": "..."}`; each prediction `{"embedding",
  "input_type", "model_temperature", "model_bias"}` or `{"error": {"code", "description"}}`; a request the
  container cannot parse at all (an instance that is not an object, neither image nor text) fails whole. How
  Vertex surfaces that whole-request failure is not published: the emulator answers 400 `INVALID_ARGUMENT`
  carrying the container's error code (our reading).

Limits: the payload limit of a shared public endpoint is 1.5 MB, of a dedicated one 10 MB
(https://cloud.google.com/vertex-ai/docs/predictions/choose-endpoint-type); above it, 400 `INVALID_ARGUMENT`.
No per-request instance cap is published (MedSigLIP's container has one, off by default: `max_instances`).
`gs://` links read objects registered in `storage` (no network); `image_url` and `dicomweb_uri` are refused per
instance because the emulator fetches nothing. Text embeddings: see `embedding_host.TEXT_EMBEDDING_NOTE`.

Example:
    >>> with VertexEmbeddingEmulator(embed_model_dir, serving_api="medsiglip") as emu:  # doctest: +SKIP
    ...     emb = vertex_embedder_for(emu)
    ...     emb.embed("lesion.jpg").dimension
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from derm_cloud.errors import InvalidImageError
from derm_cloud.testing.emulators.base import Response
from derm_cloud.testing.emulators.embedding_host import HostedEncoder, ObjectStore
from derm_cloud.testing.emulators.vertex import _RESOURCE, VertexEmulator
from derm_cloud.testing.emulators.vertex_errors import _GoogleError

if TYPE_CHECKING:
    from derm_cloud.embedders.base import Embedder
    from derm_cloud.embedders.vertex_endpoint import VertexEndpointEmbedder

__all__ = [
    "SIGLIP_INIT_BIAS",
    "SIGLIP_INIT_TEMPERATURE",
    "HostedEmbeddingEndpoint",
    "ServingApi",
    "VertexEmbeddingEmulator",
    "vertex_embedder_for",
]

ServingApi = Literal["derm-foundation", "medsiglip"]
#: What the emulated MedSigLIP returns as `model_temperature` / `model_bias`: SigLIP's initial values (scale 10,
#: bias -10; https://arxiv.org/abs/2303.15343), not MedSigLIP's learnt ones, which the emulator does not have.
SIGLIP_INIT_TEMPERATURE = 10.0
SIGLIP_INIT_BIAS = -10.0
_DF_PREFIX = "Failed to get prediction for instance. Reason: "


class _RequestError(ValueError):
    """The whole request failed inside the container (MedSigLIP's request-level `{"error": CODE}`)."""

    def __init__(self, code: str, description: str) -> None:
        super().__init__(f"{code}: {description}")


@dataclass
class HostedEmbeddingEndpoint:
    """One Vertex endpoint with one deployed embedding model."""

    endpoint_id: str
    encoder: HostedEncoder
    serving_api: ServingApi
    deployed_model_id: str
    display_name: str


class VertexEmbeddingEmulator(VertexEmulator):
    """A Vertex AI project whose endpoints serve Derm Foundation's or MedSigLIP's published embedding API.

    Args:
        model: embedding model directory (or `Embedder`) hosted on the first endpoint; `None`: add endpoints
            with `add_embedding_endpoint`.
        serving_api: `medsiglip` or `derm-foundation` for that endpoint.
        max_request_bytes: payload limit (1.5 MB: shared public endpoint; pass 10_000_000 for a dedicated one).
        max_instances: MedSigLIP's optional cap on embeddings per request (`None`: off, its default).
        Other arguments: as `VertexEmulator`.
    """

    name = "vertex-embeddings"

    def __init__(
        self,
        model: str | os.PathLike[str] | Embedder | None = None,
        *,
        serving_api: ServingApi = "medsiglip",
        project: str = "derm-cloud-test",
        location: str = "us-central1",
        endpoint_id: str = "2345678901",
        max_request_bytes: int | None = 1_500_000,
        max_instances: int | None = None,
        access_token: str | None = None,
        grpc: bool = False,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        super().__init__(
            None,
            project=project,
            location=location,
            max_request_bytes=max_request_bytes,
            access_token=access_token,
            grpc=grpc,
            host=host,
            port=port,
        )
        self.max_instances = max_instances
        self.storage = ObjectStore()
        #: a test hook: called on each successful PredictResponse (a dict) before it is sent, to change one field
        #: and check that the client notices.
        self.mutate_response: Callable[[dict[str, Any]], None] | None = None
        self.embedding_endpoints: dict[str, HostedEmbeddingEndpoint] = {}
        if model is not None:
            self.add_embedding_endpoint(endpoint_id, model, serving_api=serving_api)

    def add_embedding_endpoint(
        self, endpoint_id: str, model: str | os.PathLike[str] | Embedder, *, serving_api: ServingApi = "medsiglip"
    ) -> HostedEmbeddingEndpoint:
        """Deploy an embedding model to a (new) endpoint, speaking `serving_api`; loaded now."""
        if serving_api not in ("derm-foundation", "medsiglip"):
            raise ValueError(f"serving_api must be 'derm-foundation' or 'medsiglip', got {serving_api!r}")
        encoder = HostedEncoder(model)
        hosted = HostedEmbeddingEndpoint(
            endpoint_id=endpoint_id,
            encoder=encoder,
            serving_api=serving_api,
            deployed_model_id=str(6_000_000_000 + len(self.embedding_endpoints)),
            display_name=f"{serving_api} (emulated; hosts {encoder.model_id})",
        )
        self.embedding_endpoints[endpoint_id] = hosted
        return hosted

    @property
    def endpoint_id(self) -> str:
        """Id of the first embedding endpoint (else of the first classifier endpoint)."""
        if self.embedding_endpoints:
            return next(iter(self.embedding_endpoints))
        return super().endpoint_id

    # --- routing: embedding endpoints first, classifier endpoints as in VertexEmulator ---------------------

    def handle(self, method: str, path: str, headers: Mapping[str, str], body: bytes) -> Response:
        match = _RESOURCE.match(urlsplit(path).path)
        is_get = method == "GET" and match is not None and not match.group("verb")
        if is_get and match is not None and match.group("e") in self.embedding_endpoints:
            try:
                self._check_auth({k.lower(): v for k, v in headers.items()}.get("authorization"))
                hosted = self._embedding_endpoint(match.group("p"), match.group("l"), match.group("e"))
            except _GoogleError as exc:
                return exc.response()
            return Response.json(self._embedding_resource(hosted))
        return super().handle(method, path, headers, body)

    def _predict(self, project: str, location: str, endpoint_id: str, body: dict[str, Any], size: int) -> bytes:
        if endpoint_id not in self.embedding_endpoints:
            return super()._predict(project, location, endpoint_id, body, size)
        hosted = self._embedding_endpoint(project, location, endpoint_id)
        if self.max_request_bytes is not None and size > self.max_request_bytes:
            raise _GoogleError(400, f"Request payload size exceeds the limit: {self.max_request_bytes} bytes.")
        instances = body.get("instances")
        if not isinstance(instances, list) or not instances:
            raise _GoogleError(400, "Invalid JSON payload received. 'instances' must be a non-empty list.")
        try:
            predictions = self.container_answers(endpoint_id, instances)
        except _RequestError as exc:
            raise _GoogleError(400, f"The model container refused the request: {exc}") from None
        response = {
            "predictions": predictions,
            "deployedModelId": hosted.deployed_model_id,
            "model": f"projects/{self.project}/locations/{self.location}/models/{hosted.deployed_model_id}",
            "modelDisplayName": hosted.display_name,
            "modelVersionId": "1",
        }
        if self.mutate_response is not None:
            self.mutate_response(response)
        return json.dumps(response).encode()

    # --- the two serving APIs ------------------------------------------------------------------------------

    def container_answers(self, endpoint_id: str, instances: list[Any]) -> list[dict[str, Any]]:
        """The model container's predictions for `instances`: its `/predict` answer without Vertex's envelope.

        Vertex batch prediction sends a custom container the same `{"instances": [...]}` body, so the batch
        emulator hosts HAI-DEF models through this (the same stand-in encoder, the same refusals).

        Raises:
            ValueError: the container refuses the request as a whole (MedSigLIP's request-level error code).
        """
        hosted = self.embedding_endpoints[endpoint_id]
        if hosted.serving_api == "derm-foundation":
            return [self._derm_foundation(hosted, instance) for instance in instances]
        return self._medsiglip(hosted, instances)

    def _derm_foundation(self, hosted: HostedEmbeddingEndpoint, instance: Any) -> dict[str, Any]:
        """One instance as Derm Foundation's predictor.py answers it (its messages, word for word)."""
        if not isinstance(instance, dict):
            return _df_error("Missing required `input_bytes` or `gcs_uri` key in request instance.")
        if "input_bytes" in instance and "gcs_uri" in instance:
            return _df_error("Request has more than one image input. Must specify either `input_bytes` or `gcs_uri`.")
        if "input_bytes" not in instance and "gcs_uri" not in instance:
            return _df_error("Missing required `input_bytes` or `gcs_uri` key in request instance.")
        try:
            if "input_bytes" in instance:
                data = _b64(instance["input_bytes"])
            else:
                data = self.storage.read(instance["gcs_uri"], instance.get("bearer_token"))
        except (ValueError, TypeError, PermissionError, FileNotFoundError):
            return _df_error("Failed to retrieve data from request instance.")
        try:
            embedding = hosted.encoder.embed_image(data)
        except InvalidImageError:  # the model's image decoder fails: predictor.py's catch-all answer
            return {"error": {"description": "Internal error getting prediction for instance."}}
        self.last_image_bytes = data
        return {"embedding": embedding}

    def _medsiglip(self, hosted: HostedEmbeddingEndpoint, instances: list[Any]) -> list[dict[str, Any]]:
        """A request as MedSigLIP's predictor.py answers it: parse everything first, then embed each instance."""
        parsed: list[tuple[str, Any]] = []
        for instance in instances:
            if not isinstance(instance, dict):
                raise _RequestError("INVALID_REQUEST_FIELD_ERROR", "Request instance is not a dict.")
            image = instance.get("image")
            if image is not None:
                if not isinstance(image, dict):
                    raise _RequestError("INVALID_REQUEST_FIELD_ERROR", "Request image instance is not a dict.")
                if not {"input_bytes", "gcs_uri", "image_url", "dicomweb_uri"} & set(image):
                    raise _RequestError("INVALID_REQUEST_FIELD_ERROR", "Unidentified image instance.")
                parsed.append(("image", image))
            elif "text" in instance:
                if not isinstance(instance["text"], str):
                    raise _RequestError("INVALID_REQUEST_FIELD_ERROR", "text must be a string.")
                parsed.append(("text", instance["text"]))
            else:
                raise _RequestError("INVALID_REQUEST_FIELD_ERROR", "Unidentified instance.")
        if self.max_instances is not None and len(parsed) > self.max_instances:
            raise _RequestError(
                "TOO_MANY_PATCHES_ERROR", f"Request exceeds maximum number of images per request: {self.max_instances}"
            )
        return [self._medsiglip_one(hosted, kind, value) for kind, value in parsed]

    def _medsiglip_one(self, hosted: HostedEmbeddingEndpoint, kind: str, value: Any) -> dict[str, Any]:
        if kind == "text":
            embedding = hosted.encoder.embed_text(value)
        else:
            try:
                data = self._medsiglip_image_bytes(value)
            except _InstanceError as exc:
                return {"error": {"code": exc.code, "description": str(exc)}}
            try:
                embedding = hosted.encoder.embed_image(data)
            except InvalidImageError:
                return {"error": {"code": "UNHANDLED_GENERIC_BYTES_ERROR", "description": "Unable to decode image."}}
            self.last_image_bytes = data
        return {
            "embedding": embedding,
            "input_type": kind,
            "model_temperature": SIGLIP_INIT_TEMPERATURE,
            "model_bias": SIGLIP_INIT_BIAS,
        }

    def _medsiglip_image_bytes(self, image: dict[str, Any]) -> bytes:
        if "input_bytes" in image:
            try:
                return _b64(image["input_bytes"])
            except (ValueError, TypeError):
                raise _InstanceError("INVALID_REQUEST_FIELD_ERROR", "input_bytes is not base64.") from None
        if "gcs_uri" in image:
            try:
                return self.storage.read(image["gcs_uri"], image.get("access_credential"))
            except PermissionError as exc:
                raise _InstanceError("INVALID_CREDENTIALS_ERROR", str(exc)) from None
            except FileNotFoundError as exc:
                raise _InstanceError("UNHANDLED_GCS_FILE_ERROR", str(exc)) from None
        raise _InstanceError(
            "HTTP_ERROR", "the emulator fetches nothing from the network: send input_bytes or a registered gs:// object"
        )

    # --- endpoint resources --------------------------------------------------------------------------------

    def _embedding_endpoint(self, project: str, location: str, endpoint_id: str) -> HostedEmbeddingEndpoint:
        hosted = self.embedding_endpoints.get(endpoint_id)
        if project != self.project or location != self.location or hosted is None:
            raise _GoogleError(
                404, f"Endpoint `projects/{project}/locations/{location}/endpoints/{endpoint_id}` not found."
            )
        return hosted

    def _embedding_resource(self, hosted: HostedEmbeddingEndpoint) -> dict[str, Any]:
        model = f"projects/{self.project}/locations/{self.location}/models/{hosted.deployed_model_id}"
        return {
            "name": self.resource_name(hosted.endpoint_id),
            "displayName": hosted.endpoint_id,
            "deployedModels": [{"id": hosted.deployed_model_id, "model": model, "displayName": hosted.display_name}],
            "trafficSplit": {hosted.deployed_model_id: 100},
            "createTime": "2026-01-01T00:00:00Z",
        }


class _InstanceError(Exception):
    def __init__(self, code: str, description: str) -> None:
        super().__init__(description)
        self.code = code


def _df_error(reason: str) -> dict[str, Any]:
    return {"error": {"description": _DF_PREFIX + reason}}


def _b64(value: Any) -> bytes:
    if not isinstance(value, str):
        raise TypeError("input_bytes must be a base64 string")
    try:
        # Python's decoder, like the services', skips the newlines base64.encodebytes puts in.
        return base64.b64decode("".join(value.split()), validate=True)
    except binascii.Error as exc:
        raise ValueError(str(exc)) from None


def vertex_embedder_for(
    emulator: VertexEmbeddingEmulator, transport: Literal["rest", "grpc"] = "rest", **options: Any
) -> VertexEndpointEmbedder:
    """A `VertexEndpointEmbedder` wired to a running emulator through the real `google-cloud-aiplatform` client.

    REST: `api_endpoint="http://127.0.0.1:PORT"` and anonymous credentials; gRPC: an injected insecure channel
    (start the emulator with `grpc=True`). `serving_api` defaults to the endpoint's; other options pass through.
    """
    from derm_cloud.embedders.vertex_endpoint import VertexDermFoundationEmbedder, VertexMedSiglipEmbedder

    endpoint_id = options.pop("endpoint_id", emulator.endpoint_id)
    api = options.pop("serving_api", emulator.embedding_endpoints[endpoint_id].serving_api)
    cls: type[VertexEndpointEmbedder] = VertexMedSiglipEmbedder if api == "medsiglip" else VertexDermFoundationEmbedder
    if transport == "grpc":
        import grpc

        options.setdefault("channel", grpc.insecure_channel(emulator.grpc_target))
    else:
        options.setdefault("api_endpoint", emulator.url)
        if "credentials" not in options:
            from google.auth.credentials import AnonymousCredentials

            options["credentials"] = AnonymousCredentials()  # type: ignore[no-untyped-call]
    return cls(endpoint_id, project=emulator.project, location=emulator.location, transport=transport, **options)
