"""The SageMaker Runtime and Rekognition emulators against the botocore service model of the installed botocore.

Every answer the emulators give while real boto3 (and our backends) drive them, successes, modelled errors and
injected faults, goes through :mod:`spec_aws`, a validator over botocore's shape model. ``malformed`` faults are
left out on purpose: they stand for a proxy answering HTML, which no service model describes.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from spec_aws import Violation, check_answer, error_code
from spec_capture import Exchange, capturing, sample_jpeg
from spec_mutations import drop, rename, retype

from derm_cloud.errors import DermCloudError
from derm_cloud.retry import RetryPolicy
from derm_cloud.testing.emulators.base import Fault
from derm_cloud.testing.emulators.rekognition import RekognitionEmulator, rekognition_backend_for
from derm_cloud.testing.emulators.sagemaker import SageMakerRuntimeEmulator, sagemaker_backend_for
from derm_cloud.testing.emulators.sagemaker_endpoints import ContainerResponse


def one_try() -> RetryPolicy:
    """One attempt, and a circuit breaker of its own (a policy's breaker is shared by every backend using it)."""
    return RetryPolicy(max_attempts=1)


FAULTS = [
    Fault("throttle", retry_after=0.1),
    Fault("not_ready"),
    Fault("truncated"),
    *(Fault("error", status=s) for s in (400, 401, 403, 404, 424, 429, 500, 503, 530)),
]


def _report(bad: list[tuple[Exchange, list[Violation]]]) -> str:
    return "\n".join(f"{x.method} {x.path} fault={x.fault} -> {x.response.status}: {v}" for x, vs in bad for v in vs)


def _call(fn: Callable[[], Any]) -> None:
    """Run one SDK call whose answer is checked afterwards; error answers are expected here."""
    try:
        fn()
    except Exception as exc:  # botocore ClientError, our typed errors: the answer is what is under test
        if not isinstance(exc, DermCloudError) and type(exc).__module__.split(".")[0] != "botocore":
            raise


# --- SageMaker Runtime --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sagemaker(derm_model_dir: Path) -> Iterator[SageMakerRuntimeEmulator]:
    with SageMakerRuntimeEmulator() as emu:
        for fmt in ("adapter", "jumpstart", "hf", "builtin"):
            emu.add_endpoint(f"derm-{fmt}", derm_model_dir, response_format=fmt, variants=("primary", "canary"))
        emu.add_endpoint("derm-cold", derm_model_dir, serverless=True, cold_start_calls=1)
        yield emu


@pytest.fixture(scope="module")
def sagemaker_exchanges(sagemaker: SageMakerRuntimeEmulator) -> list[Exchange]:
    """Every kind of answer the SageMaker emulator gives, driven through boto3 and the backend."""
    image = sample_jpeg()
    client = sagemaker.runtime_client()
    invoke = lambda name, **kw: client.invoke_endpoint(  # noqa: E731
        EndpointName=name, Body=image, ContentType="application/x-image", **kw
    )
    with capturing(sagemaker) as seen:
        for fmt in ("adapter", "jumpstart", "hf", "builtin"):
            with sagemaker_backend_for(sagemaker, f"derm-{fmt}", retry=one_try()) as clf:
                clf.predict(image)
        _call(lambda: invoke("derm-adapter", TargetVariant="canary", CustomAttributes="trace=1"))
        _call(lambda: invoke("derm-adapter", TargetVariant="no-such-variant"))
        _call(lambda: invoke("no-such-endpoint"))
        _call(lambda: invoke("derm-cold"))  # cold start: ModelNotReadyException
        sagemaker.script("derm-adapter", ContainerResponse({"error": "model crashed"}, status=500))
        _call(lambda: invoke("derm-adapter"))  # the container's 500 becomes ModelError 424
        sagemaker.script("derm-adapter", ContainerResponse("bad input", status=400, content_type="text/plain"))
        _call(lambda: invoke("derm-adapter"))
        for fault in FAULTS:
            sagemaker.inject(fault)
            _call(lambda: invoke("derm-adapter"))
    return seen


def test_every_sagemaker_answer_matches_the_botocore_model(sagemaker_exchanges: list[Exchange]) -> None:
    checked = [
        (x, check_answer("sagemaker-runtime", "InvokeEndpoint", x.response.status, x.response.headers, x.response.body))
        for x in sagemaker_exchanges
    ]
    assert len(checked) >= 4 + 6 + len(FAULTS)
    bad = [(x, vs) for x, vs in checked if vs]
    assert not bad, _report(bad)
    codes = {error_code("sagemaker-runtime", x.response.headers, x.response.body) for x in sagemaker_exchanges}
    # Every modelled error of InvokeEndpoint the emulator claims to produce is exercised above.
    assert {
        "ValidationError",
        "ModelError",
        "ModelNotReadyException",
        "InternalFailure",
        "ServiceUnavailable",
        "InternalDependencyException",
        "ThrottlingException",
    } <= codes


def test_sagemaker_success_carries_the_models_headers(sagemaker_exchanges: list[Exchange]) -> None:
    ok = [x for x in sagemaker_exchanges if x.response.status == 200 and x.fault is None]
    assert ok
    for x in ok:
        assert x.header("x-Amzn-Invoked-Production-Variant") in ("primary", "canary", "AllTraffic")
        assert x.header("Content-Type")


def test_sagemaker_throttling_is_400_as_aws_documents(sagemaker_exchanges: list[Exchange]) -> None:
    # AWS's Common Errors page and real SageMaker answers (opensearch-project/ml-commons#2429): ThrottlingException
    # comes with HTTP 400, not 429. The emulator sent 429 before this check existed.
    throttled = [x for x in sagemaker_exchanges if x.fault == "throttle"]
    assert throttled and all(x.response.status == 400 for x in throttled)


def _model_error(sagemaker_exchanges: list[Exchange]) -> Exchange:
    return next(
        x
        for x in sagemaker_exchanges
        if error_code("sagemaker-runtime", x.response.headers, x.response.body) == "ModelError"
    )


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda d: rename(d, ["OriginalStatusCode"], "OriginalStatus"), "OriginalStatus"),
        (lambda d: retype(d, ["OriginalStatusCode"], "500"), "OriginalStatusCode"),
        (lambda d: retype(d, ["LogStreamArn"], 7), "LogStreamArn"),
    ],
)
def test_a_changed_sagemaker_error_field_is_rejected(
    sagemaker_exchanges: list[Exchange], mutate: Callable[[Any], Any], field: str
) -> None:
    x = _model_error(sagemaker_exchanges)
    body = json.dumps(mutate(x.json())).encode()
    found = check_answer("sagemaker-runtime", "InvokeEndpoint", x.response.status, x.response.headers, body)
    assert any(field in v.where for v in found), found


def test_a_changed_sagemaker_status_or_header_is_rejected(sagemaker_exchanges: list[Exchange]) -> None:
    x = _model_error(sagemaker_exchanges)
    wrong_status = check_answer("sagemaker-runtime", "InvokeEndpoint", 500, x.response.headers, x.response.body)
    assert any("ModelError" in v.where and "424" in v.problem for v in wrong_status), wrong_status
    ok = next(x for x in sagemaker_exchanges if x.response.status == 200 and x.fault is None)
    no_id = {k: v for k, v in ok.response.headers.items() if k.lower() != "x-amzn-requestid"}
    assert [v.where for v in check_answer("sagemaker-runtime", "InvokeEndpoint", 200, no_id, ok.response.body)] == [
        "header x-amzn-RequestId"
    ]
    empty = check_answer("sagemaker-runtime", "InvokeEndpoint", 200, ok.response.headers, b"")
    assert any("Body" in v.where for v in empty), empty


# --- Rekognition Custom Labels ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rekognition(derm_model_dir: Path) -> Iterator[RekognitionEmulator]:
    with RekognitionEmulator(derm_model_dir, label_names={"mel": "Melanoma"}, start_seconds=0.05) as emu:
        yield emu


def _rekognition_operation(x: Exchange) -> str:
    target = next((v for k, v in x.request_headers.items() if k.lower() == "x-amz-target"), "")
    return target.partition(".")[2]


@pytest.fixture(scope="module")
def rekognition_exchanges(rekognition: RekognitionEmulator) -> list[Exchange]:
    """Every kind of answer the Rekognition emulator gives, driven through boto3 and the backend."""
    import time

    image = sample_jpeg()
    client = rekognition.runtime_client()
    arn = rekognition.project_version_arn
    detect = lambda **kw: client.detect_custom_labels(**{"ProjectVersionArn": arn, **kw})  # noqa: E731
    with capturing(rekognition) as seen:
        with rekognition_backend_for(rekognition, retry=one_try()) as clf:
            clf.predict(image)
        _call(lambda: detect(Image={"Bytes": image}, MinConfidence=10.0, MaxResults=3))
        _call(lambda: client.describe_project_versions(ProjectArn=rekognition.version.project_arn))
        _call(lambda: client.describe_project_versions(ProjectArn=rekognition.version.project_arn + "x"))
        _call(lambda: detect(ProjectVersionArn=arn + "x", Image={"Bytes": image}))
        _call(lambda: detect(Image={"S3Object": {"Bucket": "derm-images", "Name": "n.jpg"}}))
        _call(lambda: detect(Image={"Bytes": b"GIF89a not a jpeg"}))
        _call(lambda: detect(Image={"Bytes": b"\xff\xd8" + bytes(4_000_000)}))
        _call(lambda: client.start_project_version(ProjectVersionArn=arn, MinInferenceUnits=1))  # in use
        _call(lambda: client.stop_project_version(ProjectVersionArn=arn))
        _call(lambda: detect(Image={"Bytes": image}))  # STOPPING: not ready
        time.sleep(0.1)
        _call(lambda: client.start_project_version(ProjectVersionArn=arn, MinInferenceUnits=1))
        time.sleep(0.1)
        for fault in (
            Fault("throttle", retry_after=0.1),
            Fault("not_ready"),
            Fault("truncated"),
            Fault("error", status=500),
            Fault("error", status=503),
        ):
            rekognition.inject(fault)
            _call(lambda: detect(Image={"Bytes": image}))
    return seen


def test_every_rekognition_answer_matches_the_botocore_model(rekognition_exchanges: list[Exchange]) -> None:
    checked = [
        (
            x,
            check_answer(
                "rekognition", _rekognition_operation(x), x.response.status, x.response.headers, x.response.body
            ),
        )
        for x in rekognition_exchanges
    ]
    assert {_rekognition_operation(x) for x in rekognition_exchanges} == {
        "DetectCustomLabels",
        "DescribeProjectVersions",
        "StartProjectVersion",
        "StopProjectVersion",
    }
    bad = [(x, vs) for x, vs in checked if vs]
    assert not bad, _report(bad)
    codes = {error_code("rekognition", x.response.headers, x.response.body) for x in rekognition_exchanges}
    assert {
        "ResourceNotFoundException",
        "ResourceNotReadyException",
        "InvalidS3ObjectException",
        "InvalidImageFormatException",
        "ImageTooLargeException",
        "ResourceInUseException",
        "ProvisionedThroughputExceededException",
        "InternalServerError",
    } <= codes


def _detect_answer(rekognition_exchanges: list[Exchange]) -> Exchange:
    return next(
        x
        for x in rekognition_exchanges
        if _rekognition_operation(x) == "DetectCustomLabels" and x.response.status == 200 and x.json()["CustomLabels"]
    )


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda d: rename(d, ["CustomLabels", 0, "Confidence"], "Score"), "Score"),
        (lambda d: rename(d, ["CustomLabels"], "Labels"), "Labels"),
        (lambda d: retype(d, ["CustomLabels", 0, "Confidence"], "91.2"), "Confidence"),
        (lambda d: retype(d, ["CustomLabels", 0, "Confidence"], 130.0), "Confidence"),  # Percent is 0-100
        (lambda d: {**d, "Extra": 1}, "Extra"),
    ],
)
def test_a_changed_rekognition_field_is_rejected(
    rekognition_exchanges: list[Exchange], mutate: Callable[[Any], Any], field: str
) -> None:
    x = _detect_answer(rekognition_exchanges)
    body = json.dumps(mutate(x.json())).encode()
    found = check_answer("rekognition", "DetectCustomLabels", 200, x.response.headers, body)
    assert any(field in v.where for v in found), found


def test_a_dropped_rekognition_status_field_is_rejected(rekognition_exchanges: list[Exchange]) -> None:
    x = next(
        x
        for x in rekognition_exchanges
        if _rekognition_operation(x) == "DescribeProjectVersions"
        and x.response.status == 200
        and x.json()["ProjectVersionDescriptions"]
    )
    doc = x.json()
    wrong_enum = retype(doc, ["ProjectVersionDescriptions", 0, "Status"], "Running")
    found = check_answer(
        "rekognition", "DescribeProjectVersions", 200, x.response.headers, json.dumps(wrong_enum).encode()
    )
    assert any("Status" in v.where and "ProjectVersionStatus" in v.problem for v in found), found
    stamp = retype(doc, ["ProjectVersionDescriptions", 0, "CreationTimestamp"], "2026-01-01T00:00:00Z")
    found = check_answer("rekognition", "DescribeProjectVersions", 200, x.response.headers, json.dumps(stamp).encode())
    assert any("CreationTimestamp" in v.where for v in found), found
    error = next(x for x in rekognition_exchanges if x.response.status >= 400)
    untyped = drop(error.json(), ["__type"])
    found = check_answer(
        "rekognition", "DetectCustomLabels", error.response.status, error.response.headers, json.dumps(untyped).encode()
    )
    assert [v.where for v in found] == ["error code"], found


def test_blob_members_are_checked_as_base64() -> None:
    # No Rekognition or SageMaker output carries a JSON blob; the check is exercised on a made-up payload so that
    # a future emulator answer with one is covered.
    from spec_aws import _check_value, service_model

    blob = service_model("rekognition").shape_for("ImageBlob")
    assert _check_value(blob, base64.b64encode(b"x").decode(), "b", "rekognition") == []
    assert _check_value(blob, "***", "b", "rekognition")


# --- drift: the vendored model extract against the installed botocore -------------------------------------------

SPECS = Path(__file__).resolve().parents[1] / "specs" / "aws"
USED = {
    "sagemaker-runtime-2017-05-13.json": ("sagemaker-runtime", ("InvokeEndpoint",)),
    "rekognition-2016-06-27.json": (
        "rekognition",
        ("DetectCustomLabels", "DescribeProjectVersions", "StartProjectVersion", "StopProjectVersion"),
    ),
}


@pytest.mark.parametrize("name", sorted(USED))
def test_vendored_botocore_shapes_match_the_installed_botocore(name: str) -> None:
    from spec_aws import model_extract

    service, operations = USED[name]
    vendored = json.loads((SPECS / name).read_text())
    installed = model_extract(service, operations)
    changed = sorted(
        shape
        for shape in set(vendored["shapes"]) | set(installed["shapes"])
        if vendored["shapes"].get(shape) != installed["shapes"].get(shape)
    )
    assert not changed, (
        f"botocore's {service} model changed these shapes the emulator speaks: {changed}; re-check the emulator, "
        f"then re-vendor {name} (tests/specs/README.md says how)"
    )
    assert vendored["operations"] == installed["operations"]
    assert vendored["metadata"] == installed["metadata"]


# --- botocore's own parsers read every answer as the validator does ---------------------------------------------


def _botocore_parse(service: str, operation: str, x: Exchange) -> dict[str, Any]:
    from botocore.awsrequest import HeadersDict
    from botocore.parsers import create_parser
    from spec_aws import service_model

    model = service_model(service)
    answer = {"status_code": x.response.status, "headers": HeadersDict(x.response.headers), "body": x.response.body}
    op = model.operation_model(operation)
    parsed: dict[str, Any] = create_parser(model.metadata["protocol"]).parse(answer, op.output_shape)
    return parsed


@pytest.mark.parametrize("service", ["sagemaker-runtime", "rekognition"])
def test_botocores_parser_reads_every_answer_as_the_validator_does(
    service: str, request: pytest.FixtureRequest
) -> None:
    exchanges = request.getfixturevalue(
        "sagemaker_exchanges" if service == "sagemaker-runtime" else "rekognition_exchanges"
    )
    for x in exchanges:
        operation = "InvokeEndpoint" if service == "sagemaker-runtime" else _rekognition_operation(x)
        parsed = _botocore_parse(service, operation, x)
        assert parsed["ResponseMetadata"]["RequestId"] == x.header("x-amzn-RequestId")
        if x.response.status >= 300:
            assert parsed["Error"]["Code"] == error_code(service, x.response.headers, x.response.body), x.path
            assert parsed["Error"]["Message"], x.path  # every error says what happened
        else:
            assert "Error" not in parsed
