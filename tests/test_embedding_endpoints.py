"""Embedding endpoints: MedSigLIP and Derm Foundation on Vertex AI, MedImageInsight on Azure ML, and their emulators.

The emulated endpoints take the request shapes of the providers' published examples (copied below from the pages
cited) and refuse malformed ones the way the docs say the service does; a round trip through the real SDK gives
the vector the hosted ONNX gives when run directly; one changed field in an answer is a typed error.
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from PIL import Image

from derm_cloud.base import BackendInfo
from derm_cloud.embedders.base import Embedder, RawEmbedding
from derm_cloud.errors import (
    AuthenticationError,
    CapabilityError,
    InvalidImageError,
    InvalidResponseError,
    PayloadTooLargeError,
)
from derm_cloud.images import PreparedImage
from derm_cloud.retry import RetryPolicy
from derm_cloud.testing.emulators.base import Fault, Response
from derm_cloud.testing.emulators.medimageinsight import (
    EMULATED_SCALING_FACTOR,
    MedImageInsightEmulator,
    _score,
    medimageinsight_embedder_for,
)
from derm_cloud.testing.emulators.vertex_embeddings import VertexEmbeddingEmulator, vertex_embedder_for

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

DIM = 16
#: The SCIN image the Model Garden notebooks embed (a public object; registered in the emulator's storage).
SCIN_URI = "gs://dx-scin-public-data/dataset/images/-1010754336982699838.png"


def _fast_retry() -> RetryPolicy:
    """A fresh policy per embedder (a policy's circuit breaker is shared by whoever holds it)."""
    return RetryPolicy(max_attempts=3, base_delay=0.01, max_delay=0.05, deadline=10.0)


def _image(seed: int, size: tuple[int, int] = (40, 30), fmt: str = "PNG") -> bytes:
    rng = np.random.default_rng(seed)
    out = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(out, format=fmt)
    return out.getvalue()


def _tiny_embedding_onnx(path: Path) -> Path:
    """A tiny image encoder: global average pool of 32x32 RGB, a seeded linear layer to DIM, tanh."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(3)
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", ["pixels", "axes"], ["pooled"], keepdims=0),
            helper.make_node("Gemm", ["pooled", "W", "B"], ["linear"]),
            helper.make_node("Tanh", ["linear"], ["embedding"]),
        ],
        "tiny_embedding",
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["batch", 3, 32, 32])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", DIM])],
        [
            numpy_helper.from_array(np.asarray([2, 3], np.int64), "axes"),
            numpy_helper.from_array(rng.normal(0, 2.0, (3, DIM)).astype(np.float32), "W"),
            numpy_helper.from_array(rng.normal(0, 0.1, (DIM,)).astype(np.float32), "B"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())
    return path


def _pixels(rgb: np.ndarray) -> np.ndarray:
    small = np.asarray(Image.fromarray(rgb).resize((32, 32), Image.Resampling.BILINEAR), dtype=np.float32) / 255
    return small.transpose(2, 0, 1)


class TinyOnnxEncoder(Embedder):
    """The encoder the emulators host in these tests: an embedding ONNX run by onnxruntime."""

    backend_name = "tiny-onnx-encoder"
    decodes_every_pixel = True
    default_max_batch = 8

    def __init__(self, path: Path) -> None:
        import onnxruntime as ort

        super().__init__(model_id="tiny-embedding-onnx", dimension=DIM)
        self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def _embed_many(self, images: Sequence[PreparedImage], timeout: float | None) -> list[RawEmbedding]:
        batch = np.stack([_pixels(image.array()) for image in images])
        return [RawEmbedding(vector=v) for v in self.session.run(None, {"pixels": batch})[0]]

    def describe(self) -> BackendInfo:
        return BackendInfo(backend=self.backend_name, provider="local", service="onnxruntime", model_id=self.model_id)


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _tiny_embedding_onnx(tmp_path_factory.mktemp("embed") / "embedding.onnx")


def _direct(model_path: Path, data: bytes) -> np.ndarray:
    """The hosted ONNX run directly by onnxruntime on the bytes the endpoint received (no emulator, no SDK)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    rgb = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    out: np.ndarray = session.run(None, {"pixels": _pixels(rgb)[None]})[0][0]
    return out


@pytest.fixture(scope="module")
def medsiglip(model_path: Path) -> Iterator[VertexEmbeddingEmulator]:
    emu = VertexEmbeddingEmulator(TinyOnnxEncoder(model_path), serving_api="medsiglip", grpc=True)
    emu.add_embedding_endpoint("3456789012", TinyOnnxEncoder(model_path), serving_api="derm-foundation")
    emu.storage.objects[SCIN_URI] = _image(7)
    with emu:
        yield emu


@pytest.fixture(autouse=True)
def _clean(medsiglip: VertexEmbeddingEmulator) -> Iterator[None]:
    yield
    medsiglip.reset()
    medsiglip.storage.bearer_token = None
    medsiglip.mutate_response = None


def _gapic(emu: VertexEmbeddingEmulator) -> Any:
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import aiplatform_v1

    return aiplatform_v1.PredictionServiceClient(
        transport="rest", credentials=AnonymousCredentials(), client_options={"api_endpoint": emu.url}
    )


def _plain(response: Any) -> dict[str, Any]:
    from google.protobuf import json_format

    return dict(json_format.MessageToDict(type(response).pb(response)))


# --- the published examples are accepted -----------------------------------------------------------------------


def test_medsiglip_accepts_the_model_garden_notebook_instances(medsiglip: VertexEmbeddingEmulator) -> None:
    # Instances of https://github.com/Google-Health/medsiglip/blob/main/notebooks/quick_start_with_model_garden.ipynb
    # (Cloud Storage image, raw bytes, text query), sent with the real GAPIC client.
    b64 = base64.b64encode(_image(1)).decode()
    instances = [
        {"image": {"gcs_uri": SCIN_URI}},
        {"image": {"input_bytes": b64}},
        {"text": "A chest X-ray with pneumonia."},
    ]
    answer = _plain(_gapic(medsiglip).predict(endpoint=medsiglip.resource_name(), instances=instances))
    kinds = [p["input_type"] for p in answer["predictions"]]
    assert kinds == ["image", "image", "text"]
    for p in answer["predictions"]:
        assert len(p["embedding"]) == DIM and {"model_temperature", "model_bias"} <= set(p)


def test_derm_foundation_accepts_the_model_garden_notebook_instances(medsiglip: VertexEmbeddingEmulator) -> None:
    # Instances of https://github.com/Google-Health/derm-foundation/blob/master/notebooks/quick_start_with_model_garden.ipynb:
    # a Cloud Storage link with the caller's bearer token, and base64 image bytes.
    medsiglip.storage.bearer_token = "ya29.test-token"
    instances = [
        {"gcs_uri": SCIN_URI, "bearer_token": "ya29.test-token"},
        {"input_bytes": base64.b64encode(_image(2)).decode()},
    ]
    answer = _plain(_gapic(medsiglip).predict(endpoint=medsiglip.resource_name("3456789012"), instances=instances))
    assert [len(p["embedding"]) for p in answer["predictions"]] == [DIM, DIM]


def test_derm_foundation_notebook_call_with_the_high_level_sdk(
    medsiglip: VertexEmbeddingEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The notebook's own call: aiplatform.Endpoint(...).predict(instances=[{"input_bytes": ...}]); it reads the
    # endpoint resource first (GET), then predicts, and its vector is the embedder's.
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import aiplatform
    from google.cloud.aiplatform import initializer

    config = initializer._Config()  # a private config: the SDK's process-wide settings are restored afterwards
    monkeypatch.setattr(initializer, "global_config", config)
    config.init(
        project=medsiglip.project,
        location=medsiglip.location,
        credentials=AnonymousCredentials(),
        api_transport="rest",
        api_endpoint=medsiglip.url,
    )
    data = _image(16)
    response = aiplatform.Endpoint(medsiglip.resource_name("3456789012")).predict(
        instances=[{"input_bytes": base64.b64encode(data).decode()}]
    )
    assert [r.method for r in medsiglip.requests] == ["GET", "POST"]
    embedding_vector = np.array(response.predictions[0]["embedding"]).flatten()
    with vertex_embedder_for(medsiglip, endpoint_id="3456789012") as emb:
        assert np.array_equal(emb.embed(data).vector, embedding_vector.astype(np.float32))


# --- malformed requests are refused as the services refuse them ------------------------------------------------


def test_derm_foundation_refuses_instances_in_its_own_words(medsiglip: VertexEmbeddingEmulator) -> None:
    medsiglip.storage.bearer_token = "right"
    b64 = base64.b64encode(_image(3)).decode()
    instances = [
        {"input_bytes": b64, "gcs_uri": SCIN_URI},  # two image inputs
        {"gcs_uri": SCIN_URI, "bearer_token": "wrong"},
        {"input_bytes": base64.b64encode(b"not an image").decode()},
        {"something": "else"},
    ]
    answer = _plain(_gapic(medsiglip).predict(endpoint=medsiglip.resource_name("3456789012"), instances=instances))
    errors = [p["error"]["description"] for p in answer["predictions"]]
    assert errors == [
        "Failed to get prediction for instance. Reason: Request has more than one image input. Must specify either "
        "`input_bytes` or `gcs_uri`.",
        "Failed to get prediction for instance. Reason: Failed to retrieve data from request instance.",
        "Internal error getting prediction for instance.",
        "Failed to get prediction for instance. Reason: Missing required `input_bytes` or `gcs_uri` key in request "
        "instance.",
    ]


def test_vertex_refusals_are_google_errors(medsiglip: VertexEmbeddingEmulator) -> None:
    from google.api_core import exceptions as gexc

    client = _gapic(medsiglip)
    with pytest.raises(gexc.BadRequest, match="INVALID_REQUEST_FIELD_ERROR"):
        client.predict(endpoint=medsiglip.resource_name(), instances=["just a string"])
    big = base64.b64encode(np.random.default_rng(0).bytes(1_200_000)).decode()
    with pytest.raises(gexc.BadRequest, match="payload size exceeds the limit"):
        client.predict(endpoint=medsiglip.resource_name(), instances=[{"image": {"input_bytes": big}}])
    with pytest.raises(gexc.NotFound):
        client.predict(endpoint=medsiglip.resource_name("999"), instances=[{"text": "x"}])
    # A per-instance failure is an `error` prediction inside a 200, as the published prediction schema allows.
    answer = _plain(client.predict(endpoint=medsiglip.resource_name(), instances=[{"image": {"input_bytes": "%%%"}}]))
    assert answer["predictions"][0]["error"]["code"] == "INVALID_REQUEST_FIELD_ERROR"


# --- round trips through the real SDK give the hosted ONNX's vectors -------------------------------------------


@pytest.mark.parametrize(("transport", "endpoint"), [("rest", None), ("grpc", None), ("rest", "3456789012")])
def test_vertex_round_trip_equals_the_hosted_onnx(
    medsiglip: VertexEmbeddingEmulator, model_path: Path, transport: str, endpoint: str | None
) -> None:
    options: dict[str, Any] = {"endpoint_id": endpoint} if endpoint else {}
    data = _image(4, (60, 45), "JPEG")
    with vertex_embedder_for(medsiglip, transport=transport, **options) as emb:  # type: ignore[arg-type]
        got = emb.embed(data)
    sent = medsiglip.last_image_bytes
    assert sent is not None
    # max |d| = 0.0 measured: float32 -> JSON/protobuf double -> float32 is exact.
    assert float(np.max(np.abs(got.vector - _direct(model_path, sent)))) <= 1e-6
    assert got.dimension == DIM and got.backend.startswith("vertex-")


def test_vertex_micro_batches_to_images_per_request(medsiglip: VertexEmbeddingEmulator) -> None:
    images = [_image(10 + i) for i in range(5)]
    with vertex_embedder_for(medsiglip, images_per_request=2) as emb:
        out = emb.embed_batch(images)
    sizes = [len(r.json()["instances"]) for r in medsiglip.requests_to(":predict")]
    assert sorted(sizes) == [1, 2, 2]  # sent concurrently (default_concurrency 4): arrival order varies
    assert [e.batch_size for e in out] == [2, 2, 2, 2, 1]


def test_vertex_splits_a_micro_batch_that_would_pass_the_payload_limit(medsiglip: VertexEmbeddingEmulator) -> None:
    images = [_image(20 + i, (300, 300)) for i in range(3)]  # ~270 kB of PNG each
    with vertex_embedder_for(medsiglip, images_per_request=3, max_request_bytes=600_000) as emb:
        emb.embed_batch(images)
    bodies = [r.body for r in medsiglip.requests_to(":predict")]
    assert len(bodies) >= 2 and all(len(b) <= 600_000 for b in bodies)


def test_vertex_retries_throttling_and_refuses_wrong_credentials(medsiglip: VertexEmbeddingEmulator) -> None:
    medsiglip.inject(Fault("throttle", times=1, retry_after=0.01))
    with vertex_embedder_for(medsiglip, retry=_fast_retry()) as emb:
        assert emb.embed(_image(5)).attempts == 2
    from google.oauth2.credentials import Credentials

    medsiglip.access_token = "the-right-token"
    try:
        emb = vertex_embedder_for(medsiglip, credentials=Credentials(token="a-wrong-token"))
        with emb, pytest.raises(AuthenticationError):
            emb.embed(_image(5))
    finally:
        medsiglip.access_token = None


def test_vertex_request_over_the_endpoint_limit_is_payload_too_large(medsiglip: VertexEmbeddingEmulator) -> None:
    medsiglip.max_request_bytes = 100_000
    try:
        emb = vertex_embedder_for(medsiglip, max_request_bytes=1_500_000)
        with emb, pytest.raises(PayloadTooLargeError):
            emb.embed(_image(6, (400, 400)))
    finally:
        medsiglip.max_request_bytes = 1_500_000


def test_vertex_gcs_links_and_text(medsiglip: VertexEmbeddingEmulator) -> None:
    medsiglip.storage.bearer_token = "ya29.token"
    with vertex_embedder_for(medsiglip) as emb:
        by_link = emb.embed_uris([SCIN_URI], bearer_token="ya29.token")[0]
        texts = emb.embed_texts(["dermoscopy melanoma", "dermoscopy naevus"])
        with pytest.raises(AuthenticationError):
            emb.embed_uris([SCIN_URI], bearer_token="expired")
        facts = emb.describe().model_facts
    assert by_link.dimension == DIM and [t.dimension for t in texts] == [DIM, DIM]
    assert texts[0].extra["model_temperature"] == 10.0
    assert "stand-in for MedSigLIP" in facts["stand_in"] and "no medical meaning" in facts["text_embeddings"]
    sent = medsiglip.requests_to(":predict")[0].json()["instances"][0]
    assert sent == {"image": {"gcs_uri": SCIN_URI, "access_credential": "ya29.token"}}
    with vertex_embedder_for(medsiglip, endpoint_id="3456789012") as derm, pytest.raises(CapabilityError):
        derm.embed_texts(["melanoma"])


def test_vertex_refused_image_is_a_typed_error(medsiglip: VertexEmbeddingEmulator) -> None:
    def refuse(response: dict[str, Any]) -> None:
        response["predictions"][0] = {"error": {"code": "UNHANDLED_GENERIC_BYTES_ERROR", "description": "no"}}

    medsiglip.mutate_response = refuse
    with vertex_embedder_for(medsiglip, retry=_fast_retry()) as emb, pytest.raises(InvalidImageError, match="refused"):
        emb.embed(_image(8))
    assert len(medsiglip.requests_to(":predict")) == 1  # a refusal is not retried


def _set(path: tuple[Any, ...], value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(response: dict[str, Any]) -> None:
        target: Any = response
        for key in path[:-1]:
            target = target[key]
        if value is _DELETE:
            del target[path[-1]]
        else:
            target[path[-1]] = value

    return mutate


_DELETE = object()


def _rename_embedding(response: dict[str, Any]) -> None:
    response["predictions"][0]["embeddings"] = response["predictions"][0].pop("embedding")


@pytest.mark.parametrize(
    ("endpoint", "mutation"),
    [
        (None, _set(("predictions", 0, "input_type"), "text")),
        (None, _set(("predictions", 0, "model_bias"), _DELETE)),
        (None, _set(("predictions", 0, "embedding"), "0.1, 0.2")),
        (None, _set(("predictions",), [])),
        ("3456789012", _rename_embedding),
        ("3456789012", _set(("predictions", 0, "embedding"), [0.0] * (DIM + 1))),
    ],
    ids=["input_type", "no-model_bias", "embedding-a-string", "no-predictions", "renamed-key", "longer-vector"],
)
def test_one_changed_field_in_a_vertex_answer_is_a_typed_error(
    medsiglip: VertexEmbeddingEmulator, endpoint: str | None, mutation: Callable[[dict[str, Any]], None]
) -> None:
    options: dict[str, Any] = {"endpoint_id": endpoint} if endpoint else {}
    with vertex_embedder_for(medsiglip, dimension=DIM, **options) as emb:
        emb.embed(_image(9))  # the unchanged answer passes
        medsiglip.mutate_response = mutation
        with pytest.raises(InvalidResponseError):
            emb.embed(_image(9))


# --- MedImageInsight on an Azure ML managed online endpoint -----------------------------------------------------

#: The page's second request example, verbatim: a 2x2 PNG (base64.encodebytes, newlines kept) and a text, with
#: the scaling factor asked for as the string "true".
#: https://learn.microsoft.com/azure/ai-foundry/how-to/healthcare-ai/deploy-medimageinsight#request-example
PUBLISHED_IMAGE_AND_TEXT = {
    "input_data": {
        "columns": ["image", "text"],
        "index": [0],
        "data": [
            [
                "iVBORw0KGgoAAAANSUhEUgAAAAIAAAACCAYAAABytg0kAAAAAXNSR0IArs4c6QAAAARnQU1BAACx\njwv8YQUAAAAJcEhZcwAAFiUAABYl"
                "AUlSJPAAAAAbSURBVBhXY/gUoPS/fhfDfwaGJe///9/J8B8A\nVGwJ5VDvPeYAAAAASUVORK5CYII=\n",
                "x-ray chest anteroposterior Pleural Effusion",
            ]
        ],
    },
    "params": {"get_scaling_factor": "true"},
}
#: ... and its first: a single string with an empty image.
PUBLISHED_TEXT_ONLY = {
    "input_data": {
        "columns": ["image", "text"],
        "index": [0],
        "data": [["", "a quick brown fox jumps over the lazy dog"]],
    },
    "params": {},
}


@pytest.fixture(scope="module")
def mii(model_path: Path) -> Iterator[MedImageInsightEmulator]:
    with MedImageInsightEmulator(TinyOnnxEncoder(model_path)) as emu:
        yield emu


def _post(emu: MedImageInsightEmulator, body: Any, key: str | None = None) -> requests.Response:
    headers = {"Authorization": f"Bearer {key or emu.key}"}
    return requests.post(emu.scoring_uri, json=body, headers=headers, timeout=30)


def test_medimageinsight_accepts_the_published_request_examples(mii: MedImageInsightEmulator) -> None:
    both = _post(mii, PUBLISHED_IMAGE_AND_TEXT)
    assert both.status_code == 200, both.text
    answer = both.json()
    assert [len(v) for v in answer["image_features"]] == [DIM]
    assert [len(v) for v in answer["text_features"]] == [DIM]
    assert isinstance(answer["scaling_factor"], float)
    text = _post(mii, PUBLISHED_TEXT_ONLY).json()
    assert text["image_features"] == [] and len(text["text_features"]) == 1


@pytest.mark.parametrize(
    "body",
    [
        {"input_data": {"columns": ["image", "text"], "index": [0], "data": [["<jpeg>", ""]]}},
        {"inputs": {"columns": ["image"], "data": [["x"]]}},
        {"input_data": {"columns": ["image", "text"], "index": [0], "data": [["only one cell"]]}},
        {"input_data": {"columns": ["picture"], "index": [0], "data": [["x"]]}},
        {"input_data": {"columns": ["image", "text"], "index": [0, 1], "data": [["", "a"]]}},
    ],
    ids=["jpeg-not-png", "no-input_data", "short-row", "unknown-column", "index-mismatch"],
)
def test_medimageinsight_refuses_malformed_requests_as_a_model_error(mii: MedImageInsightEmulator, body: Any) -> None:
    if body.get("input_data", {}).get("data", [[""]])[0][0] == "<jpeg>":
        body["input_data"]["data"][0][0] = base64.b64encode(_image(11, fmt="JPEG")).decode()
    refused = _post(mii, body)
    # Azure ML's documented answer when the model container rejects a request: 424 plus the container's status.
    assert refused.status_code == 424
    assert refused.headers["ms-azureml-model-error-statuscode"] == "400"


def test_medimageinsight_wrong_key_is_refused(mii: MedImageInsightEmulator) -> None:
    assert _post(mii, PUBLISHED_TEXT_ONLY, key="not-the-key").status_code == 401
    with medimageinsight_embedder_for(mii, key="not-the-key") as emb, pytest.raises(AuthenticationError):
        emb.embed(_image(12))


def test_medimageinsight_failing_credential_says_what_to_check(mii: MedImageInsightEmulator) -> None:
    # The same header set-up as the azure-ml classifier: the token failure is named, with the fix, and nothing is sent.
    def broken() -> str:
        raise RuntimeError("no az login session")

    before = len(mii.requests)
    emb = medimageinsight_embedder_for(mii, token_provider=broken)
    with emb, pytest.raises(AuthenticationError, match=r"RuntimeError: no az login session.*az login"):
        emb.embed_texts(["melanoma"])
    assert len(mii.requests) == before


def test_medimageinsight_round_trip_equals_the_hosted_onnx(mii: MedImageInsightEmulator, model_path: Path) -> None:
    with medimageinsight_embedder_for(mii) as emb:
        got = emb.embed(_image(13, (60, 45), "JPEG"))  # sent as PNG: the endpoint takes PNG only
        sent = mii.last_image_bytes
        texts = emb.embed_texts(["dermoscopy melanoma"])
        facts = emb.describe().model_facts
    assert sent is not None and sent.startswith(b"\x89PNG")
    assert float(np.max(np.abs(got.vector - _direct(model_path, sent)))) <= 1e-6  # measured 0.0
    assert got.extra["scaling_factor"] == EMULATED_SCALING_FACTOR == 4.516357 and texts[0].dimension == DIM
    assert "stand-in for Microsoft's MedImageInsight" in facts["stand_in"]


def test_medimageinsight_micro_batches_and_retries(mii: MedImageInsightEmulator) -> None:
    mii.reset()
    mii.inject(Fault("throttle", times=1, retry_after=0.01))
    with medimageinsight_embedder_for(mii, images_per_request=2, retry=_fast_retry()) as emb:
        out = emb.embed_batch([_image(30 + i) for i in range(3)])
    rows = [len(json.loads(c.body)["input_data"]["data"]) for c in mii.calls]
    assert rows == [2, 1] and out[0].attempts == 2


def _mutant(mii: MedImageInsightEmulator, name: str, change: Callable[[dict[str, Any]], None]) -> None:
    encoder = next(iter(mii.encoders.values()))

    def respond(body: bytes) -> Response:
        answer = json.loads(_score(encoder, body).body)
        change(answer)
        return Response.json(answer)

    mii.add_deployment(name, respond=respond)


@pytest.mark.parametrize(
    "change",
    [
        lambda a: a.update(image_features=a["image_features"][:-1]),
        lambda a: a.update(scaling_factor="4.5"),
        lambda a: a["image_features"][0].__setitem__(0, "NaN"),
        lambda a: a.update(image_features=a.pop("text_features")),
    ],
    ids=["one-vector-short", "scaling_factor-a-string", "a-string-in-a-vector", "features-swapped"],
)
def test_one_changed_field_in_a_medimageinsight_answer_is_a_typed_error(
    mii: MedImageInsightEmulator, change: Callable[[dict[str, Any]], None]
) -> None:
    name = f"mutant-{len(mii.encoders)}-{id(change)}"
    _mutant(mii, name, change)
    with medimageinsight_embedder_for(mii, deployment=name) as emb, pytest.raises(InvalidResponseError):
        emb.embed(_image(14))


def test_medimageinsight_model_refusal_is_invalid_image(mii: MedImageInsightEmulator) -> None:
    refusal = {"ms-azureml-model-error-statuscode": "400", "ms-azureml-model-error-reason": "model_error"}
    mii.add_deployment("refuses", respond=lambda body: Response.json({"message": "bad image"}, 424, refusal))
    emb = medimageinsight_embedder_for(mii, deployment="refuses", retry=_fast_retry())
    with emb, pytest.raises(InvalidImageError, match="PNG"):
        emb.embed(_image(15))


# --- `derm-cloud emulate`'s connection details run as printed --------------------------------------------------


@pytest.mark.parametrize("kind", ["vertex-medsiglip", "azure-medimageinsight"])
def test_connection_snippets_run_against_the_emulators(
    kind: str,
    medsiglip: VertexEmbeddingEmulator,
    mii: MedImageInsightEmulator,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import contextlib

    from derm_cloud.testing.connect import connection

    info = connection(kind, medsiglip if kind.startswith("vertex-") else mii)
    assert any("stand-in" in note for note in info["notes"])
    assert any("no medical meaning" in note for note in info["notes"])
    (tmp_path / "lesion.jpg").write_bytes(_image(40, (64, 48), "JPEG"))
    monkeypatch.chdir(tmp_path)
    for snippet in ("python_sdk", "python_derm_cloud"):
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            exec(compile(info[snippet], f"<{kind} {snippet}>", "exec"), {})
        assert printed.getvalue().strip() == str(DIM), info[snippet]


def test_vertex_container_refusing_the_request_is_a_final_service_error(medsiglip: VertexEmbeddingEmulator) -> None:
    from derm_cloud.errors import ServiceError

    medsiglip.max_instances = 1  # MedSigLIP's MAX_EMBEDDINGS_PER_REQUEST, off by default
    try:
        emb = vertex_embedder_for(medsiglip, images_per_request=2, retry=_fast_retry())
        with emb, pytest.raises(ServiceError, match="TOO_MANY_PATCHES_ERROR") as caught:
            emb.embed_batch([_image(50), _image(51)])
    finally:
        medsiglip.max_instances = None
    assert not caught.value.retryable and "schema=" not in str(caught.value)
    assert len(medsiglip.requests_to(":predict")) == 1


# --- an embedding model folder hosted by the emulators, as `derm-cloud emulate` does ------------------------


def test_emulate_hosts_an_embedder_folder_and_prints_working_details(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from derm_cloud.cli import main
    from derm_cloud.embedders.local_onnx import LocalOnnxEmbedder
    from derm_cloud.testing.launch import build_local_embedder, start
    from derm_cloud.testing.tiny_embedders import build_tiny_embedder

    folder = build_tiny_embedder(tmp_path / "tiny-embedder")
    assert (
        main(
            [
                "emulate",
                "vertex-medsiglip",
                "azure-medimageinsight",
                "--embed-model-dir",
                str(folder),
                "--once",
                "--json",
            ]
        )
        == 0
    )
    out = capsys.readouterr()
    printed = [json.loads(line) for line in out.out.splitlines() if line.startswith("{")]
    assert [p["backend"]["type"] for p in printed] == ["vertex-medsiglip", "azure-medimageinsight"]
    assert all("tiny-embedder" in p["notes"][0] and "stand-in" in p["notes"][0] for p in printed)
    assert "NOTE" not in out.err  # the folder keeps its cut head: the text tower has meaning
    (folder / "dropped_head.npz").rename(tmp_path / "head.npz")  # a folder exported before the head was kept
    assert main(["emulate", "azure-medimageinsight", "--embed-model-dir", str(folder), "--once", "--json"]) == 0
    note = capsys.readouterr().err
    assert "no dropped_head.npz: azure-medimageinsight will embed text" in note and "--overwrite" in note
    (tmp_path / "head.npz").rename(folder / "dropped_head.npz")
    data = _image(60, (64, 48), "JPEG")
    with LocalOnnxEmbedder(folder) as local:
        for kind in ("vertex-derm-foundation", "azure-medimageinsight"):
            emu = start(kind, folder, options={}, transport="rest")
            try:
                with build_local_embedder(kind, emu, {}) as emb:
                    got = emb.embed(data).vector
                direct = local.embed(emu.last_image_bytes).vector
            finally:
                emu.stop()
            assert float(np.max(np.abs(got - direct))) <= 1e-6, kind  # measured 0.0


def test_an_emulator_needs_no_credentials_object(medsiglip: VertexEmbeddingEmulator) -> None:
    # What a command line can pass: strings only (`derm-cloud probe fit --embedder-option api_endpoint=...`).
    import derm_cloud

    # The endpoint id as `--embedder-option endpoint_id=2345678901` parses it: a number.
    options = {"endpoint_id": int(medsiglip.endpoint_id), "project": medsiglip.project, "api_endpoint": medsiglip.url}
    with derm_cloud.create_embedder("vertex-medsiglip", **options) as emb:
        assert emb.embed(_image(70)).dimension == DIM
