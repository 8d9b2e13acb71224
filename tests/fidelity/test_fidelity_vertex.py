"""Vertex AI PredictionService (REST and gRPC) and ModelService emulators against the SDK's own proto types.

REST bodies round-trip through ``google.cloud.aiplatform_v1`` messages parsed strictly (no unknown field, every
value surviving its proto type), AutoML predictions through the published prediction schema
(``ClassificationPredictionResult``), errors through Google's JSON error envelope and ``google.rpc.Status``; gRPC
answers arrive as the real message types and carry no field the client's descriptors do not know. The Cloud
Storage routes of the ModelService emulator follow the JSON API, which has no proto in the SDK: not checked here.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from spec_capture import Exchange, capturing, sample_jpeg
from spec_google import Problem, check_error_envelope, check_json, unknown_fields
from spec_mutations import drop, rename, retype

from derm_cloud.retry import RetryPolicy
from derm_cloud.testing.emulators.base import Fault
from derm_cloud.testing.emulators.vertex import VertexEmulator, vertex_backend_for
from derm_cloud.testing.emulators.vertex_model_service import VertexModelServiceEmulator


def one_try() -> RetryPolicy:
    """One attempt, and a circuit breaker of its own (a policy's breaker is shared by every backend using it)."""
    return RetryPolicy(max_attempts=1)


def _types() -> dict[str, Any]:
    from google.cloud import aiplatform_v1
    from google.cloud.aiplatform.v1.schema.predict.prediction_v1.types import ClassificationPredictionResult
    from google.longrunning import operations_pb2

    return {
        "predict": aiplatform_v1.PredictResponse,
        "endpoint": aiplatform_v1.Endpoint,
        "model": aiplatform_v1.Model,
        "operation": operations_pb2.Operation,
        "automl": ClassificationPredictionResult,
    }


def check_vertex(x: Exchange, automl: bool = True) -> list[Problem]:
    """Where one Vertex REST answer departs from the SDK's types for its route."""
    body, path, types = x.json(), urlsplit(x.path).path, _types()
    if x.response.status >= 400:
        return check_error_envelope(x.response.status, body)
    if path.endswith(":predict"):
        found = check_json(types["predict"], body)
        if automl:
            found += [p for prediction in body["predictions"] for p in check_json(types["automl"], prediction)]
        return found
    if "/operations/" in path or path.endswith(":export"):
        return check_json(types["operation"], body)
    if "/models/" in path:
        return check_json(types["model"], body)
    return check_json(types["endpoint"], body)


def _call(fn: Any) -> None:
    try:
        fn()
    except Exception as exc:
        if type(exc).__module__.split(".")[0] not in ("google", "derm_cloud", "grpc", "requests", "urllib3"):
            raise


# --- PredictionService over REST ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def vertex(derm_model_dir: Path) -> Iterator[VertexEmulator]:
    with VertexEmulator(derm_model_dir, max_request_bytes=200_000) as emu:
        emu.add_endpoint("777", derm_model_dir, schema="custom")
        yield emu


@pytest.fixture(scope="module")
def rest_exchanges(vertex: VertexEmulator, derm_model_dir: Path) -> list[tuple[Exchange, bool]]:
    """Every kind of REST answer, each with whether its predictions follow the AutoML schema."""
    from google.api_core.client_options import ClientOptions
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import aiplatform_v1

    options = ClientOptions(api_endpoint=vertex.url)
    anonymous = AnonymousCredentials()  # type: ignore[no-untyped-call]
    predictions = aiplatform_v1.PredictionServiceClient(transport="rest", client_options=options, credentials=anonymous)
    endpoints = aiplatform_v1.EndpointServiceClient(transport="rest", client_options=options, credentials=anonymous)
    name = vertex.resource_name()
    with capturing(vertex) as seen:
        with vertex_backend_for(vertex, retry=one_try()) as clf:
            clf.predict(sample_jpeg())
        with vertex_backend_for(vertex, endpoint_id="777", retry=one_try()) as clf:
            clf.predict(sample_jpeg())
        endpoints.get_endpoint(name=name)
        _call(lambda: endpoints.get_endpoint(name=vertex.resource_name("404404")))
        _call(lambda: predictions.predict(endpoint=vertex.resource_name("404404"), instances=[{"content": "x"}]))
        _call(lambda: predictions.predict(endpoint=name, instances=[{"content": "not base64!"}]))
        _call(lambda: predictions.predict(endpoint=name, instances=[{"content": "A" * 300_000}]))  # over the limit
        for fault in (Fault("throttle", retry_after=0.5), Fault("not_ready"), Fault("truncated"),
                      Fault("error", status=500), Fault("error", status=503)):  # fmt: skip
            vertex.inject(fault)
            _call(lambda: predictions.predict(endpoint=name, instances=[{"content": "x"}]))
    with VertexEmulator(derm_model_dir, access_token="right-token", grpc=False) as locked, capturing(locked) as denied:
        from google.oauth2.credentials import Credentials

        for credentials in (anonymous, Credentials(token="wrong-token")):  # type: ignore[no-untyped-call]
            client = aiplatform_v1.PredictionServiceClient(
                transport="rest", client_options=ClientOptions(api_endpoint=locked.url), credentials=credentials
            )
            _call(lambda c=client: c.predict(endpoint=locked.resource_name(), instances=[{"content": "x"}]))
    return [(x, "/777" not in x.path) for x in [*seen, *denied]]


def test_every_rest_answer_round_trips_through_the_sdk_types(rest_exchanges: list[tuple[Exchange, bool]]) -> None:
    problems = [(x, p) for x, automl in rest_exchanges for p in check_vertex(x, automl)]
    assert not problems, "\n".join(f"{x.method} {x.path} fault={x.fault} {x.response.status}: {p}" for x, p in problems)
    statuses = {x.response.status for x, _ in rest_exchanges}
    assert {200, 400, 401, 403, 404, 429, 500, 503} <= statuses
    throttled = next(x for x, _ in rest_exchanges if x.fault == "throttle").json()["error"]
    assert throttled["details"][0]["@type"].endswith("google.rpc.RetryInfo")


def _predict_body(rest_exchanges: list[tuple[Exchange, bool]]) -> dict[str, Any]:
    ok = (
        x
        for x, automl in rest_exchanges
        if automl and x.response.status == 200 and urlsplit(x.path).path.endswith(":predict")
    )
    return next(x for x in ok if x.fault is None).json()


@pytest.mark.parametrize(
    ("kind", "mutate", "field"),
    [
        ("predict", lambda d: rename(d, ["deployedModelId"], "deployedModelID"), "deployedModelID"),
        ("predict", lambda d: retype(d, ["modelVersionId"], 1), "modelVersionId"),
        ("automl", lambda d: rename(d["predictions"][0], ["displayNames"], "labels"), "labels"),
        ("automl", lambda d: retype(d["predictions"][0], ["confidences"], ["high"]), "confidences"),
        ("automl", lambda d: retype(d["predictions"][0], ["ids"], [1.5]), "ids"),
    ],
)
def test_a_changed_prediction_field_is_rejected(
    rest_exchanges: list[tuple[Exchange, bool]], kind: str, mutate: Any, field: str
) -> None:
    body = _predict_body(rest_exchanges)
    found = check_json(_types()[kind], mutate(body))
    assert any(field in str(p) for p in found), found


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda e: retype(e, ["error", "code"], 400), "error.code"),
        (lambda e: rename(e, ["error", "message"], "msg"), "error.msg"),
        (lambda e: drop(e, ["error", "status"]), "error.status"),
        (lambda e: retype(e, ["error", "status"], "NOT_FOUND_ERROR"), "error.status"),
    ],
)
def test_a_changed_error_field_is_rejected(
    rest_exchanges: list[tuple[Exchange, bool]], mutate: Any, field: str
) -> None:
    error = next(x for x, _ in rest_exchanges if x.response.status == 404)
    assert check_error_envelope(404, error.json()) == []
    found = check_error_envelope(404, mutate(error.json()))
    assert any(p.where == field for p in found), found


# --- PredictionService over gRPC ---------------------------------------------------------------------------------


def test_grpc_answers_are_the_real_messages_with_no_unknown_field(vertex: VertexEmulator) -> None:
    import base64

    import grpc
    from google.api_core import exceptions as gexc
    from google.cloud import aiplatform_v1
    from google.cloud.aiplatform_v1.services.prediction_service.transports import PredictionServiceGrpcTransport
    from google.protobuf import json_format

    transport = PredictionServiceGrpcTransport(channel=grpc.insecure_channel(vertex.grpc_target))
    client = aiplatform_v1.PredictionServiceClient(transport=transport)
    content = base64.b64encode(sample_jpeg()).decode()
    response = client.predict(endpoint=vertex.resource_name(), instances=[{"content": content}])
    assert isinstance(response, aiplatform_v1.PredictResponse)
    assert unknown_fields(aiplatform_v1.PredictResponse.pb(response)) == []
    assert response.deployed_model_id and response.model and len(response.predictions) == 1
    prediction = json_format.MessageToDict(aiplatform_v1.PredictResponse.pb(response).predictions[0])
    assert check_json(_types()["automl"], prediction) == []
    vertex.inject(Fault("throttle", retry_after=0.5))
    with pytest.raises(gexc.GoogleAPICallError) as info:
        client.predict(endpoint=vertex.resource_name(), instances=[{"content": content}])
    assert info.value.grpc_status_code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert any(type(d).__name__ == "RetryInfo" for d in info.value.details)
    with contextlib.suppress(Exception):
        transport.close()


# --- ModelService (export) ---------------------------------------------------------------------------------------


def test_every_model_service_answer_round_trips_through_the_sdk_types(tmp_path: Path) -> None:
    from derm_cloud.models.imports.cloud import export_vertex_model

    def export(emu: VertexModelServiceEmulator, out: str, **options: Any) -> None:
        model = str(options.pop("model", emu.model_id))
        export_vertex_model(model, project=emu.project, location=emu.location, destination="gs://derm-exports/edge",
                            out_dir=tmp_path / out, api_endpoint=emu.url, poll_seconds=0.01,
                            storage_client=emu.storage_client(), **options)  # fmt: skip

    unlisted = {"export_format_id": "onnx", "artifact_destination": {"output_uri_prefix": "gs://derm-exports/x"}}
    model_name = lambda emu: f"projects/{emu.project}/locations/{emu.location}/models/{emu.model_id}"  # noqa: E731
    with VertexModelServiceEmulator(polls_until_done=1) as emu, capturing(emu) as seen:
        export(emu, "ok")
        _call(lambda: export(emu, "unknown", model="404"))
        _call(lambda: export(emu, "format", export_format_id="onnx"))  # refused before any call: not listed
        _call(lambda: _model_client(emu.url).export_model(name=model_name(emu), output_config=unlisted))
        emu.export_error = "Model export failed: the model is not exportable."
        _call(lambda: export(emu, "failed"))
    checked = [x for x in seen if "/storage/" not in x.path and "/download/" not in x.path]
    problems = [(x, p) for x in checked for p in check_vertex(x)]
    assert not problems, "\n".join(f"{x.method} {x.path} {x.response.status}: {p}" for x, p in problems)
    kinds = {(x.method, x.response.status, "operations" in x.path or ":export" in x.path) for x in checked}
    assert {("GET", 200, False), ("POST", 200, True), ("GET", 200, True), ("GET", 404, False)} <= kinds
    assert any(x.response.status == 400 for x in checked)
    finished = [x.json() for x in checked if x.response.status == 200 and x.json().get("done")]
    assert any("response" in op for op in finished) and any("error" in op for op in finished)


def _model_client(url: str) -> Any:
    from google.api_core.client_options import ClientOptions
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import aiplatform_v1

    credentials = AnonymousCredentials()  # type: ignore[no-untyped-call]
    return aiplatform_v1.ModelServiceClient(
        transport="rest", client_options=ClientOptions(api_endpoint=url), credentials=credentials
    )


# --- drift: the vendored .proto text against the installed descriptors ----------------------------------------
