"""Embeddings from Google's HAI-DEF models (MedSigLIP, Derm Foundation) through Vertex AI batch prediction jobs.

The same `VertexBatchPrediction` as for classifiers (upload, submit, follow, read the JSON Lines, re-attach), with
the embedding models' instance and prediction format (`HaiDefInstances`). What Google publishes for these models
(the "Get batch predictions" part of each Model Garden notebook:
https://github.com/Google-Health/medsiglip/blob/main/notebooks/quick_start_with_model_garden.ipynb,
https://github.com/Google-Health/derm-foundation/blob/master/notebooks/quick_start_with_model_garden.ipynb):

- the model is uploaded to the Vertex AI Model Registry (`aiplatform.Model.upload` with the HAI-DEF serving
  container) and the job runs against that model, not against an endpoint: nothing is deployed, nothing is
  always on; the job's machines run only while it runs;
- each input line is one online-predict instance naming an image in Cloud Storage: MedSigLIP
  `{"image": {"gcs_uri": "gs://...", "access_credential": "application_default"}}` (`application_default`: the
  job's service account reads the object), Derm Foundation `{"gcs_uri": "gs://..."}` (read with the job's
  service account). No token is ever written into the instances file;
- results are the container's own predictions, in `prediction.results-*` files under the job's output
  directory, one `{"instance", "prediction"}` per line, the prediction shaped as online (`embedding`; MedSigLIP
  also `input_type`, `model_temperature`, `model_bias`; or the container's per-instance `error`).

A prediction is checked by the online path's reader (`derm_cloud.embedders.vertex_answers.parse_predictions`):
the container's refusal of one image is that image's failure, with the container's words; a prediction that
breaks the published schema is reported as malformed, naming the image.

Example:
    >>> provider = vertex_embedding_batch(embedder, model_id="456", bucket="my-bucket")  # doctest: +SKIP
    >>> result = run_batch(provider, images, record_path="jobs/embed.json", job_name="embed-dev")  # doctest: +SKIP
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from derm_cloud.batch.vertex import VertexBatchPrediction
from derm_cloud.embedders.vertex_answers import parse_predictions
from derm_cloud.errors import AuthenticationError, ConfigError

if TYPE_CHECKING:
    from derm_cloud.embedders.base import Embedder
    from derm_cloud.embedders.vertex_endpoint import VertexEndpointEmbedder

__all__ = ["APPLICATION_DEFAULT", "HaiDefInstances", "start_emulated_embeddings", "vertex_embedding_batch"]

#: MedSigLIP's `access_credential` value meaning "the serving container's own credentials" (the job's account).
APPLICATION_DEFAULT = "application_default"
ServingApi = Literal["medsiglip", "derm-foundation"]


@dataclass(frozen=True)
class HaiDefInstances:
    """The batch instance and prediction format of a HAI-DEF embedding model (see the module docstring).

    Attributes:
        serving_api: `medsiglip` or `derm-foundation`.
        backend: the embedder's registry name, for errors.
        access_credential: MedSigLIP only: what the container reads the objects with (`application_default`: the
            job's service account; `None`: anonymously, for public objects).
    """

    serving_api: ServingApi
    backend: str = "vertex-batch"
    access_credential: str | None = APPLICATION_DEFAULT

    def __post_init__(self) -> None:
        if self.serving_api not in ("medsiglip", "derm-foundation"):
            raise ConfigError(f"serving_api must be 'medsiglip' or 'derm-foundation', got {self.serving_api!r}")

    def instance(self, uri: str, mime: str) -> dict[str, Any]:
        if self.serving_api == "derm-foundation":
            return {"gcs_uri": uri}
        image = {"gcs_uri": uri}
        if self.access_credential:
            image["access_credential"] = self.access_credential
        return {"image": image}

    def source_uri(self, instance: Any) -> str:
        if not isinstance(instance, dict):
            return ""
        source = instance.get("image") if self.serving_api == "medsiglip" else instance
        uri = source.get("gcs_uri") if isinstance(source, dict) else None
        return uri if isinstance(uri, str) else ""

    def read(self, prediction: Any) -> list[float]:
        raws = parse_predictions(
            {"predictions": [prediction]}, expected=1, kind="image", serving_api=self.serving_api, backend=self.backend
        )
        return [float(x) for x in raws[0].vector]


def vertex_embedding_batch(
    embedder: VertexEndpointEmbedder,
    *,
    model_id: str,
    bucket: str,
    job_client: Any = None,
    storage_client: Any = None,
    machine_type: str | None = None,
    accelerator_type: str | None = None,
    accelerator_count: int = 0,
    replica_count: int = 1,
    service_account: str | None = None,
    access_credential: str | None = APPLICATION_DEFAULT,
    prefix: str = "derm-cloud-embed",
) -> VertexBatchPrediction:
    """Batch prediction jobs for the Model Registry copy of the model `embedder`'s endpoint serves.

    Args:
        embedder: a `vertex-medsiglip` or `vertex-derm-foundation` embedder: its serving API, project and region
            are the job's (the embeddings fill this embedder's cache).
        model_id: the uploaded model's id in the Model Registry (the notebooks' `Model.upload`), in the same region.
        bucket: a bucket in that region, for inputs and outputs.
        job_client, storage_client: `aiplatform_v1.JobServiceClient` and `google.cloud.storage.Client` (default:
            built for the embedder's project and region with Application Default Credentials).
        machine_type, accelerator_type, accelerator_count: the job's machines (default: the notebooks' choice,
            `n1-standard-8` with one `NVIDIA_TESLA_T4` for MedSigLIP, `n1-standard-8` for Derm Foundation).
        replica_count, service_account, prefix: as `VertexBatchPrediction`.
        access_credential: MedSigLIP's `access_credential` in each instance (see `HaiDefInstances`).

    Raises:
        ConfigError: the embedder is not a Vertex HAI-DEF embedder.
        AuthenticationError: no clients were given and no Application Default Credentials are set.
    """
    api = _serving_api(embedder)
    if machine_type is None:
        machine_type = "n1-standard-8"
        if api == "medsiglip" and accelerator_type is None:
            accelerator_type, accelerator_count = "NVIDIA_TESLA_T4", 1
    if job_client is None or storage_client is None:
        from google.auth import exceptions as auth_exceptions
        from google.cloud import aiplatform_v1, storage

        try:
            job_client = job_client or aiplatform_v1.JobServiceClient(
                client_options={"api_endpoint": f"{embedder.location}-aiplatform.googleapis.com"}
            )
            storage_client = storage_client or storage.Client(project=embedder.project)
        except auth_exceptions.DefaultCredentialsError as exc:
            raise AuthenticationError(
                "a Vertex AI batch job needs Google Cloud credentials and none were found: run `gcloud auth "
                "application-default login` (or set GOOGLE_APPLICATION_CREDENTIALS to a service account key file)",
                backend=embedder.backend_name,
            ) from exc
    return VertexBatchPrediction(
        job_client,
        storage_client,
        project=embedder.project,
        location=embedder.location,
        model_id=model_id,
        bucket=bucket,
        instances=HaiDefInstances(api, backend=embedder.backend_name, access_credential=access_credential),
        machine_type=machine_type,
        replica_count=replica_count,
        accelerator_type=accelerator_type,
        accelerator_count=accelerator_count,
        service_account=service_account,
        prefix=prefix,
    )


def start_emulated_embeddings(
    embedder: VertexEndpointEmbedder, model: str | os.PathLike[str] | Embedder, *, shard_size: int = 10
) -> tuple[Any, VertexBatchPrediction]:
    """Start the Vertex batch emulator hosting `model` as the embedder's HAI-DEF model; return `(emulator, provider)`.

    The emulated model is the stand-in the emulated online endpoint hosts (`embedding_host.HostedEncoder` behind
    the same container logic), so batch and online embeddings of an image agree. Stop the emulator when done.
    """
    from derm_cloud.testing.emulators.vertex_batch import VertexBatchEmulator

    api = _serving_api(embedder)
    emulator = VertexBatchEmulator(project=embedder.project, location=embedder.location, shard_size=shard_size)
    emulator.start()
    try:
        emulator.add_embedding_model("7100000001", model, serving_api=api)
        provider = vertex_embedding_batch(
            embedder,
            model_id="7100000001",
            bucket="derm-cloud-embed",
            job_client=emulator.job_client(),
            storage_client=emulator.storage_client(),
        )
    except BaseException:
        emulator.stop()
        raise
    return emulator, provider


def _serving_api(embedder: Any) -> ServingApi:
    api = getattr(embedder, "serving_api", None)
    if api == "medsiglip":
        return "medsiglip"
    if api == "derm-foundation":
        return "derm-foundation"
    raise ConfigError(
        f"embedder {getattr(embedder, 'backend_name', embedder)!r} has no Vertex batch prediction path; use "
        "vertex-medsiglip or vertex-derm-foundation"
    )
