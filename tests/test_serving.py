"""derm_cloud.serving: every cloud's request/response shape, metadata pass-through, errors and the HTTP helper.

Images: HAM10000 dev images (Tschandl et al. 2018, CC BY-NC 4.0), read in place, plus synthetic ones.
"""

from __future__ import annotations

import base64
import http.client
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from derm_cloud.backends.local_onnx import LocalOnnxClassifier
from derm_cloud.errors import ModelSpecError
from derm_cloud.serving import (
    BadRequestError,
    ModelServer,
    NotAcceptableError,
    RequestTooLargeError,
    UnsupportedMediaTypeError,
    custom_attributes_for,
    error_response,
    metadata_from_custom_attributes,
)
from derm_cloud.serving_http import find_model_dir, make_http_server, sagemaker_routes
from derm_cloud.serving_limits import ServerLimits
from derm_cloud.types import PatientMetadata

META = {"age": 62, "sex": "female", "site": "lower extremity"}
# onnxruntime sums a batch in another order than a single image: float32 rounding differs by ~1e-6.
BATCH_ATOL = 1e-5


@pytest.fixture(scope="module")
def server(tiny_model_dir: Path) -> ModelServer:
    return ModelServer(tiny_model_dir)


@pytest.fixture(scope="module")
def meta_server(tiny_meta_model_dir: Path) -> ModelServer:
    return ModelServer(tiny_meta_model_dir)


@pytest.fixture(scope="module")
def jpeg(dev_images: list[Path]) -> bytes:
    return dev_images[0].read_bytes()


def local_probs(model_dir: Path, image: bytes, meta: dict[str, Any] | None = None) -> list[float]:
    with LocalOnnxClassifier(model_dir) as clf:
        pred = clf.predict(image, meta)
        return [s.score for s in pred.provider_scores]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# --- SageMaker shapes ---------------------------------------------------------------------------------------------


def test_adapter_format_matches_local_backend(server: ModelServer, tiny_model_dir: Path, jpeg: bytes) -> None:
    body, ctype = server.sagemaker_invocations(jpeg, "application/x-image", "application/json")
    payload = json.loads(body)
    assert ctype == "application/json"
    assert payload["labels"] == list(server.labels)
    assert payload["model_id"] == "tiny-onnx"
    np.testing.assert_allclose(payload["probabilities"], local_probs(tiny_model_dir, jpeg), atol=1e-6)
    assert payload["predicted_label"] == payload["labels"][int(np.argmax(payload["probabilities"]))]


def test_verbose_accept_gives_jumpstart_shape(server: ModelServer, jpeg: bytes) -> None:
    for fmt in ("adapter", "jumpstart"):
        body, ctype = server.sagemaker_invocations(
            jpeg, "application/x-image", "application/json;verbose", response_format=fmt
        )
        assert ctype == "application/json;verbose"
        assert set(json.loads(body)) == {"labels", "probabilities", "predicted_label"}
    plain = json.loads(server.sagemaker_invocations(jpeg, "application/x-image", None, response_format="jumpstart")[0])
    assert set(plain) == {"probabilities"}


def test_hf_format_top5_sorted_and_top_k_from_json(server: ModelServer, jpeg: bytes) -> None:
    body, _ = server.sagemaker_invocations(jpeg, "image/jpeg", "application/json", response_format="hf")
    items = json.loads(body)
    assert len(items) == 5  # the transformers pipeline default
    scores = [i["score"] for i in items]
    assert scores == sorted(scores, reverse=True)
    request = json.dumps({"inputs": b64(jpeg), "parameters": {"top_k": 50}})
    full = json.loads(server.sagemaker_invocations(request.encode(), "application/json", response_format="hf")[0])
    assert sorted(i["label"] for i in full) == sorted(server.labels)  # top_k is capped at the label count
    assert pytest.approx(sum(i["score"] for i in full)) == 1.0


def test_builtin_format_has_no_labels(server: ModelServer, jpeg: bytes) -> None:
    body, _ = server.sagemaker_invocations(jpeg, "image/jpeg", "application/json", response_format="builtin")
    payload = json.loads(body)
    assert set(payload) == {"prediction"}
    assert len(payload["prediction"]) == len(server.labels)


def test_metadata_through_custom_attributes_and_json(
    meta_server: ModelServer, tiny_meta_model_dir: Path, jpeg: bytes
) -> None:
    attributes = "trace=abc;" + custom_attributes_for(PatientMetadata(**META))
    with_meta = json.loads(meta_server.sagemaker_invocations(jpeg, "image/jpeg", custom_attributes=attributes)[0])
    without = json.loads(meta_server.sagemaker_invocations(jpeg, "image/jpeg")[0])
    expected = local_probs(tiny_meta_model_dir, jpeg, META)
    np.testing.assert_allclose(with_meta["probabilities"], expected, atol=1e-6)
    assert not np.allclose(with_meta["probabilities"], without["probabilities"])
    request = json.dumps({"b64": b64(jpeg), "metadata": META}).encode()
    via_json = json.loads(meta_server.sagemaker_invocations(request, "application/json")[0])
    np.testing.assert_allclose(via_json["probabilities"], expected, atol=1e-6)


def test_json_instances_batch(server: ModelServer, dev_images: list[Path]) -> None:
    images = [p.read_bytes() for p in dev_images[:3]]
    request = json.dumps({"instances": [{"b64": b64(i)} for i in images]}).encode()
    predictions = json.loads(server.sagemaker_invocations(request, "application/json")[0])["predictions"]
    singles = [json.loads(server.sagemaker_invocations(i, "image/jpeg")[0]) for i in images]
    assert len(predictions) == 3
    for batch, single in zip(predictions, singles, strict=True):
        np.testing.assert_allclose(batch["probabilities"], single["probabilities"], atol=BATCH_ATOL)


def test_custom_attributes_round_trip() -> None:
    meta = PatientMetadata(age=45.5, sex="male", site="lower extremity")
    encoded = custom_attributes_for(meta)
    assert encoded.isascii() and " " not in encoded
    assert metadata_from_custom_attributes("x=1;" + encoded + ";y") == meta
    assert metadata_from_custom_attributes(None).is_empty
    with pytest.raises(BadRequestError, match="age"):
        metadata_from_custom_attributes("derm.age=old")


# --- errors --------------------------------------------------------------------------------------------------


def test_not_an_image_is_400_with_the_image_message(server: ModelServer) -> None:
    with pytest.raises(BadRequestError, match="not a readable image") as info:
        server.sagemaker_invocations(b"%PDF-1.4 not an image", "application/x-image")
    assert info.value.status == 400
    body = json.loads(info.value.response().body)
    assert body["error"]["code"] == "BadRequest"
    assert "PDF" in body["error"]["message"]


@pytest.mark.parametrize(
    ("body", "ctype", "accept", "fmt", "error", "status"),
    [
        (b"x" * 2048, "image/jpeg", None, "adapter", RequestTooLargeError, 413),
        (b"\xff\xd8", "image/jpeg", None, "jumpstart", UnsupportedMediaTypeError, 415),
        (b"{}", "application/json", None, "builtin", UnsupportedMediaTypeError, 415),
        (b"\xff\xd8", "text/csv", None, "adapter", UnsupportedMediaTypeError, 415),
        (b"{not json", "application/json", None, "adapter", BadRequestError, 400),
        (b'{"b64": "***"}', "application/json", None, "adapter", BadRequestError, 400),
        (b'{"instances": []}', "application/json", None, "adapter", BadRequestError, 400),
        (b'{"inputs": 3}', "application/json", None, "hf", BadRequestError, 400),
    ],
)
def test_request_errors_have_statuses(
    tiny_model_dir: Path, body: bytes, ctype: str, accept: str | None, fmt: Any, error: type, status: int
) -> None:
    small = ModelServer(tiny_model_dir, max_body_bytes=1024)
    with pytest.raises(error) as info:
        small.sagemaker_invocations(body, ctype, accept, response_format=fmt)
    assert info.value.status == status


DEEP = "[" * 200_000  # 200 KB of nested arrays: deeper than Python's JSON parser can go


@pytest.mark.parametrize(
    "call",
    [
        lambda s, body: s.sagemaker_invocations(body, "application/json"),
        lambda s, body: s.sagemaker_invocations(body, "application/json", response_format="hf"),
        lambda s, body: s.vertex_custom_predict(body),
        lambda s, body: s.vertex_automl_predict(body),
        lambda s, body: s.azureml_score(body),
        # Azure ML's explainability form: a JSON string inside the request's JSON
        lambda s, body: s.azureml_score(
            json.dumps({"input_data": {"columns": ["image"], "data": ['{"image_base64": ' + body]}})
        ),
    ],
    ids=["sagemaker", "sagemaker-hf", "vertex-custom", "vertex-automl", "azureml", "azureml-item"],
)
def test_deeply_nested_json_is_400_on_every_json_path(server: ModelServer, call: Any) -> None:
    with pytest.raises(BadRequestError, match="nested deeper than") as info:
        call(server, DEEP)
    assert info.value.status == 400


def test_error_messages_quote_request_values_briefly(server: ModelServer, jpeg: bytes) -> None:
    columns = ["x" * 50] * 100_000  # 5 MB echoed into an error body and the log otherwise
    with pytest.raises(BadRequestError) as info:
        server.azureml_score(json.dumps({"input_data": {"columns": columns, "data": []}}))
    assert "input_data.columns must include 'image'" in str(info.value) and len(str(info.value)) < 500
    with pytest.raises(BadRequestError, match="top_k") as info:
        server.sagemaker_invocations(
            json.dumps({"inputs": "aGk=", "parameters": {"top_k": list(range(100_000))}}),
            "application/json",
            response_format="hf",
        )
    assert len(str(info.value)) < 500
    with pytest.raises(BadRequestError, match=r"instances\[0\]\.metadata") as info:
        server.vertex_custom_predict(
            json.dumps({"instances": [{"b64": b64(jpeg), "metadata": {"sex": "x" * 100_000}}]})
        )
    assert len(str(info.value)) < 500


@pytest.mark.parametrize("columns", [5, ["image", []], {"image": 1}])
def test_azureml_columns_of_the_wrong_type_are_400(server: ModelServer, columns: Any) -> None:
    with pytest.raises(BadRequestError, match="input_data.columns must be a list of column names"):
        server.azureml_score(json.dumps({"input_data": {"columns": columns, "data": []}}))


def test_unsupported_accept_is_406(server: ModelServer, jpeg: bytes) -> None:
    with pytest.raises(NotAcceptableError):
        server.sagemaker_invocations(jpeg, "image/jpeg", "text/csv")


def test_too_many_instances(tiny_model_dir: Path, jpeg: bytes) -> None:
    small = ModelServer(tiny_model_dir, max_instances=2)
    request = json.dumps({"instances": [{"b64": b64(jpeg)}] * 3})
    with pytest.raises(BadRequestError, match="limit is 2"):
        small.vertex_custom_predict(request)


def test_unexpected_errors_become_generic_500() -> None:
    status, served = error_response(RuntimeError("secret internal detail"))
    assert status == 500
    assert b"secret internal detail" not in served.body
    assert b"RuntimeError" in served.body


def test_no_image_bytes_in_logs(server: ModelServer, jpeg: bytes, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="derm_cloud")
    server.sagemaker_invocations(jpeg, "image/jpeg")
    with pytest.raises(BadRequestError):
        server.vertex_custom_predict(json.dumps({"instances": [{"b64": b64(jpeg[:200])}]}))
    error_response(ValueError("boom"))
    text = caplog.text
    assert "classified 1 image" in text  # logging is on, so the absence below means something
    assert b64(jpeg)[:40] not in text
    assert b64(jpeg[:200])[:40] not in text
    assert repr(jpeg[:40])[2:-1] not in text


# --- Azure ML and Vertex -------------------------------------------------------------------------------------


def test_azureml_automl_shape_and_metadata_columns(
    meta_server: ModelServer, tiny_meta_model_dir: Path, dev_images: list[Path]
) -> None:
    images = [p.read_bytes() for p in dev_images[:2]]
    plain = {"input_data": {"columns": ["image"], "data": [b64(i) for i in images]}}
    out = json.loads(meta_server.azureml_score(json.dumps(plain))[0])
    assert len(out) == 2
    assert out[0]["labels"] == list(meta_server.labels)
    np.testing.assert_allclose(out[1]["probs"], local_probs(tiny_meta_model_dir, images[1]), atol=BATCH_ATOL)
    rows = {
        "input_data": {
            "columns": ["image", "age", "sex", "site"],
            "data": [[b64(images[0]), 62, "female", "lower extremity"]],
        }
    }
    with_meta = json.loads(meta_server.azureml_score(json.dumps(rows))[0])
    np.testing.assert_allclose(with_meta[0]["probs"], local_probs(tiny_meta_model_dir, images[0], META), atol=1e-6)


def test_azureml_rejects_explainability_and_unknown_columns(server: ModelServer, jpeg: bytes) -> None:
    item = json.dumps({"image_base64": b64(jpeg), "model_explainability": True})
    with pytest.raises(BadRequestError, match="explainability"):
        server.azureml_predictions({"input_data": {"columns": ["image"], "data": [item]}})
    with pytest.raises(BadRequestError, match="unknown input_data column"):
        server.azureml_predictions({"input_data": {"columns": ["image", "ssn"], "data": [[b64(jpeg), "1"]]}})


def test_vertex_automl_sorted_threshold_and_limit(server: ModelServer, jpeg: bytes) -> None:
    request = {"instances": [{"content": b64(jpeg)}], "parameters": {"confidenceThreshold": 0.0, "maxPredictions": 3}}
    prediction = json.loads(server.vertex_automl_predict(json.dumps(request))[0])["predictions"][0]
    assert len(prediction["ids"]) == 3
    assert prediction["confidences"] == sorted(prediction["confidences"], reverse=True)
    assert [server.labels[int(i)] for i in prediction["ids"]] == prediction["displayNames"]
    threshold = prediction["confidences"][1]
    request["parameters"] = {"confidenceThreshold": threshold}
    filtered = json.loads(server.vertex_automl_predict(json.dumps(request))[0])["predictions"][0]
    assert len(filtered["ids"]) == 2
    assert min(filtered["confidences"]) >= threshold


def test_vertex_custom_shape(meta_server: ModelServer, tiny_meta_model_dir: Path, jpeg: bytes) -> None:
    request = {"instances": [{"b64": b64(jpeg), "metadata": META}, {"b64": b64(jpeg)}]}
    predictions = json.loads(meta_server.vertex_custom_predict(json.dumps(request))[0])["predictions"]
    expected = [local_probs(tiny_meta_model_dir, jpeg, META), local_probs(tiny_meta_model_dir, jpeg)]
    np.testing.assert_allclose([p["probabilities"] for p in predictions], expected, atol=BATCH_ATOL)
    with pytest.raises(BadRequestError, match=r"instances\[0\]\.metadata"):
        meta_server.vertex_custom_predict(json.dumps({"instances": [{"b64": b64(jpeg), "metadata": {"ssn": 1}}]}))


# --- model discovery and the HTTP helper ----------------------------------------------------------------------


def test_find_model_dir_nested_and_ambiguous(tmp_path: Path, tiny_model_dir: Path) -> None:
    nested = tmp_path / "azureml-models" / "derm" / "1" / "model"
    nested.mkdir(parents=True)
    for f in tiny_model_dir.iterdir():
        (nested / f.name).write_bytes(f.read_bytes())
    assert find_model_dir(tmp_path / "azureml-models") == nested
    assert find_model_dir(nested) == nested
    (tmp_path / "azureml-models" / "other").mkdir()
    (tmp_path / "azureml-models" / "other" / "x").mkdir()
    (tmp_path / "azureml-models" / "other" / "x" / "labels.json").write_text("[]")
    with pytest.raises(ModelSpecError, match="2 model directories"):
        find_model_dir(tmp_path / "azureml-models")
    with pytest.raises(ModelSpecError, match="no model directories"):
        find_model_dir(tmp_path / "azureml-models" / "derm" / "nothing")


@pytest.fixture
def http_server(server: ModelServer) -> Iterator[int]:
    with make_http_server(sagemaker_routes(server), limits=ServerLimits(max_body_bytes=1_000_000)).start() as httpd:
        yield httpd.port


def _call(port: int, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None) -> Any:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request(method, path, body=body, headers=headers or {})
    reply = conn.getresponse()
    data = reply.read()
    conn.close()
    return reply.status, reply.getheader("Content-Type"), data


def test_http_helper_routes_and_statuses(http_server: int, jpeg: bytes) -> None:
    assert _call(http_server, "GET", "/ping")[0] == 200
    status, ctype, body = _call(http_server, "POST", "/invocations", jpeg, {"Content-Type": "image/jpeg"})
    assert (status, ctype) == (200, "application/json")
    assert json.loads(body)["model_id"] == "tiny-onnx"
    status, _, body = _call(http_server, "POST", "/invocations", b"junk", {"Content-Type": "image/jpeg"})
    assert status == 400 and json.loads(body)["error"]["code"] == "BadRequest"
    assert _call(http_server, "GET", "/nope")[0] == 404
    assert _call(http_server, "GET", "/invocations")[0] == 405
    assert _declare_oversized_body(http_server, "/invocations", 1_000_001) == 413
    # A malformed or negative length is refused outright instead of hanging a worker on read(-1).
    assert _declare_oversized_body(http_server, "/invocations", "abc") == 400
    assert _declare_oversized_body(http_server, "/invocations", "-1") == 400


def _declare_oversized_body(port: int, path: str, length: int | str) -> int:
    """Status for a request that only announces an oversized body.

    The server answers 413 from Content-Length alone and closes without reading the body; a client still
    writing a large body then races that close (EPIPE or ECONNRESET), so the body is not sent at all.
    """
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.putrequest("POST", path)
    conn.putheader("Content-Type", "image/jpeg")
    conn.putheader("Content-Length", str(length))
    conn.endheaders()
    reply = conn.getresponse()
    reply.read()
    conn.close()
    return reply.status
