"""Custom Vision prediction (v3.0, v3.1) and training exports against Microsoft's published OpenAPI documents.

Two directions, both through the real ``azure-cognitiveservices-vision-customvision`` SDK:

* every answer the emulators give (successes, errors, injected faults) validates against the vendored spec of the
  route's API version (``tests/specs/azure``), strictly: no field the spec does not list;
* every published example response (``x-ms-examples``), served by a replaying server on 127.0.0.1, is parsed by
  our backend as a real answer: the Prediction keeps the example's tags and probabilities in full.

Answers of the API gateway in front of the service (a wrong key, an unknown route, rate limiting) are not in the
spec; they are checked against the gateway's own shape instead (``{"error": {"code": "<status>", "message"}}``).
"""

from __future__ import annotations

import re
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from spec_capture import Exchange, Replay, capturing, sample_jpeg
from spec_mutations import drop, rename, retype
from spec_openapi import ApiSpec, Problem, example_response
from tests_helpers import DATA_DIR

from derm_cloud.backends.azure_custom_vision import AzureCustomVisionClassifier
from derm_cloud.retry import RetryPolicy
from derm_cloud.testing.emulators.azure_custom_vision import CustomVisionEmulator, custom_vision_backend_for
from derm_cloud.testing.emulators.base import Fault, Response

pytestmark = pytest.mark.filterwarnings("ignore::derm_cloud.errors.DermCloudDeprecationWarning")

SPECS = DATA_DIR / "specs" / "azure"  # not vendored: content read through the search tool stays out of commits
PREDICTION = {v: ApiSpec(SPECS / f"custom-vision-prediction-v{v}.json") for v in ("3.0", "3.1")}
_ROUTE = re.compile(r"^/customvision/v(?P<v>3\.[01])/prediction/[^/]+/classify/iterations/[^/]+(?P<op>/.*)$")


def one_try() -> RetryPolicy:
    """One attempt, and a circuit breaker of its own (a policy's breaker is shared by every backend using it)."""
    return RetryPolicy(max_attempts=1)


def prediction_client(url: str, key: str, version: str = "3.1") -> Any:
    """The SDK's prediction client; for ``3.0`` its base URL is pointed at the v3.0 routes (the SDK speaks 3.1)."""
    from azure.cognitiveservices.vision.customvision.prediction import CustomVisionPredictionClient
    from msrest.authentication import ApiKeyCredentials

    client = CustomVisionPredictionClient(url, ApiKeyCredentials(in_headers={"Prediction-key": key}))
    client.config.retry_policy.retries = 0
    if version == "3.0":
        client.config.base_url = "{Endpoint}/customvision/v3.0/prediction"
    return client


def check_exchange(x: Exchange) -> list[Problem]:
    """Where one emulator answer departs from the published contract of its route."""
    body = x.json()
    if isinstance(body, dict) and set(body) == {"error"}:  # the API gateway's own answer, outside the spec
        error = body["error"]
        ok = set(error) == {"code", "message"} and error["code"] == str(x.response.status)
        return [] if ok else [Problem("error", f"not the gateway's error shape: {error}")]
    route = _ROUTE.match(urlsplit(x.path).path)
    assert route is not None, x.path
    spec = PREDICTION[route["v"]]
    path = "/{projectId}/classify/iterations/{publishedName}" + route["op"].rstrip("/")
    return spec.check_response(body, path, "post", x.response.status)


def _call(fn: Any) -> None:
    """Run one call whose answer is checked afterwards: the SDK's and HTTP's own errors are expected here."""
    try:
        fn()
    except Exception as exc:
        if type(exc).__module__.split(".")[0] not in ("azure", "msrest", "urllib", "derm_cloud"):
            raise


@pytest.fixture(scope="module")
def emulator(derm_model_dir: Path) -> Iterator[CustomVisionEmulator]:
    with CustomVisionEmulator(derm_model_dir, tags={"mel": "Melanoma"}, max_image_bytes=30_000) as emu:
        yield emu


@pytest.fixture(scope="module")
def exchanges(emulator: CustomVisionEmulator) -> list[Exchange]:
    """Every kind of answer the prediction emulator gives, through the SDK (and raw HTTP where no SDK call can)."""
    image, big = sample_jpeg(), sample_jpeg((300, 300))
    project, name = emulator.project_id, emulator.published_name
    post = lambda path, data, ctype: urllib.request.urlopen(  # noqa: E731
        urllib.request.Request(
            emulator.url + path,
            data=data,
            method="POST" if data is not None else "GET",
            headers={"Prediction-Key": emulator.prediction_key, "Content-Type": ctype},
        ),
        timeout=10,
    )
    with capturing(emulator) as seen:
        for store in (False, True):
            with custom_vision_backend_for(emulator, store_images=store, retry=one_try()) as clf:
                clf.predict(image)
        for version in ("3.0", "3.1"):
            client = prediction_client(emulator.url, emulator.prediction_key, version)
            client.classify_image_with_no_store(project, name, image)
            client.classify_image(project, name, image)
            _call(lambda c=client: c.classify_image_with_no_store(project, name, big))  # BadRequestImageSizeBytes
            _call(lambda c=client: c.classify_image_with_no_store(project, name, b"not an image"))
            _call(lambda c=client: c.classify_image_url_with_no_store(project, name, url="ftp://example.org/x.jpg"))
            _call(lambda c=client: c.classify_image_with_no_store(project, "NoSuchIteration", image))
            _call(lambda c=client: c.classify_image_with_no_store("9e9e9e9e-0000-4000-8000-000000000000", name, image))
        _call(lambda: prediction_client(emulator.url, "wrong-key").classify_image_with_no_store(project, name, image))
        route = f"/customvision/v3.1/prediction/{project}/classify/iterations/{name}/image/nostore"
        _call(lambda: post(route, None, "application/octet-stream"))  # GET: not supported
        _call(lambda: post(route, b"text", "text/plain"))  # unsupported media type
        _call(lambda: post(route, image, "application/octet-stream"))  # the other body the spec allows
        for fault in (Fault("throttle", retry_after=0.1), Fault("not_ready"), Fault("truncated"),
                      Fault("error", status=500), Fault("error", status=503)):  # fmt: skip
            emulator.inject(fault)
            _call(lambda: prediction_client(emulator.url, emulator.prediction_key).classify_image(project, name, image))
    return seen


def test_every_prediction_answer_matches_the_published_spec(exchanges: list[Exchange]) -> None:
    assert len(exchanges) >= 25
    bad = [(x, check_exchange(x)) for x in exchanges]
    bad = [(x, problems) for x, problems in bad if problems]
    assert not bad, "\n".join(f"{x.path} fault={x.fault} {x.response.status}: {p}" for x, ps in bad for p in ps)
    statuses = {x.response.status for x in exchanges}
    assert {200, 400, 401, 404, 405, 415, 429, 500, 503} <= statuses
    versions = {m["v"] for x in exchanges if (m := _ROUTE.match(urlsplit(x.path).path))}
    assert versions == {"3.0", "3.1"}


def test_v30_answers_carry_no_tag_type(exchanges: list[Exchange]) -> None:
    # Prediction.tagType arrived with v3.1; the v3.0 spec has no such field (the emulator sent it on both before).
    v30 = [x for x in exchanges if "/v3.0/" in x.path and x.response.status == 200]
    assert v30 and all("tagType" not in p for x in v30 for p in x.json()["predictions"])
    v31 = [x for x in exchanges if "/v3.1/" in x.path and x.response.status == 200 and x.fault is None]
    assert v31 and all(p["tagType"] == "Regular" for x in v31 for p in x.json()["predictions"])


def test_error_codes_are_the_specs_and_rate_limits_come_from_the_gateway(exchanges: list[Exchange]) -> None:
    codes = {x.json().get("code") for x in exchanges if x.response.status >= 400}
    enum = set(PREDICTION["3.1"].definitions["CustomVisionError"]["properties"]["code"]["enum"])
    assert codes - {None} <= enum
    throttled = next(x for x in exchanges if x.fault == "throttle")
    assert throttled.json() == {"error": {"code": "429", "message": throttled.json()["error"]["message"]}}
    assert throttled.header("Retry-After") == "0.1"


def _success(exchanges: list[Exchange], version: str) -> Exchange:
    return next(x for x in exchanges if f"/v{version}/" in x.path and x.response.status == 200 and x.fault is None)


@pytest.mark.parametrize(
    ("version", "mutate", "field"),
    [
        ("3.1", lambda d: rename(d, ["predictions", 0, "tagName"], "tag"), "tag"),
        ("3.1", lambda d: retype(d, ["predictions", 0, "probability"], "0.93"), "probability"),
        ("3.1", lambda d: retype(d, ["predictions", 0, "tagId"], "Melanoma"), "tagId"),
        ("3.1", lambda d: retype(d, ["predictions", 0, "tagType"], "Lesion"), "tagType"),
        ("3.1", lambda d: retype(d, ["created"], "2026-01-01 10:00"), "created"),
        ("3.1", lambda d: rename(d, ["predictions"], "results"), "results"),
        ("3.0", lambda d: retype(d, ["predictions", 0, "tagType"], "Regular"), "tagType"),
        ("3.0", lambda d: retype(d, ["predictions", 0, "boundingBox"], {"left": 0.1}), "top"),
    ],
)
def test_a_changed_prediction_field_is_rejected(
    exchanges: list[Exchange], version: str, mutate: Any, field: str
) -> None:
    x = _success(exchanges, version)
    spec = PREDICTION[version]
    assert spec.check_definition(x.json(), "ImagePrediction") == []
    found = spec.check_definition(mutate(x.json()), "ImagePrediction")
    assert any(field in str(p) for p in found), found


def test_a_changed_error_field_is_rejected(exchanges: list[Exchange]) -> None:
    x = next(x for x in exchanges if x.response.status == 404 and "code" in x.json())
    spec = PREDICTION["3.1"]
    assert spec.check_definition(x.json(), "CustomVisionError") == []
    for changed, field in [
        (drop(x.json(), ["code"]), "code"),
        (retype(x.json(), ["code"], "ProjectNotFound"), "code"),
        (rename(x.json(), ["message"], "detail"), "detail"),
    ]:
        found = spec.check_definition(changed, "CustomVisionError")
        assert any(field in str(p) for p in found), (changed, found)


# --- the published examples, parsed by our backend --------------------------------------------------------------

EXAMPLES = sorted((SPECS / "examples").glob("custom-vision-prediction-v3.*/*.json"))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_published_example_is_valid_and_parsed_as_a_real_answer(path: Path) -> None:
    version = path.parent.name.rsplit("-v", 1)[1]
    body = example_response(path)
    operation = (
        "/{projectId}/classify/iterations/{publishedName}/"
        + ("url" if "Url" in path.name else "image")
        + ("/nostore" if "NoStore" in path.name else "")
    )
    assert PREDICTION[version].check_response(body, operation, "post", 200) == []
    answer = Response.json(body, headers={"apim-request-id": "example-request"})
    with Replay(answer) as server:
        client = prediction_client(server.url, "example-key", version)
        clf = AzureCustomVisionClassifier(
            body["project"], "MyModel1", endpoint=server.url, allow_unmapped=True, client=client, retry=one_try()
        )
        with clf:
            prediction = clf.predict(sample_jpeg())
        sent = server.requests[-1].path
    assert sent.startswith(f"/customvision/v{version}/prediction/{body['project']}/classify/iterations/MyModel1/")
    expected = {p["tagName"]: p["probability"] for p in body["predictions"]}
    assert {s.label: s.score for s in prediction.provider_scores} == pytest.approx(expected)
    assert not prediction.mapped and prediction.probabilities == {}  # trees are not lesion classes
    assert prediction.request_id == "example-request"
    assert prediction.extra["prediction_id"] == body["id"] and prediction.extra["iteration_id"] == body["iteration"]
