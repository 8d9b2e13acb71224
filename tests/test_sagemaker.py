"""The ``sagemaker`` backend through real boto3 against the SageMaker runtime emulator (and moto), plus the
deployment helpers against moto's control plane.

Images: HAM10000 dev images (Tschandl et al. 2018, CC BY-NC 4.0), read in place, plus synthetic ones.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from derm_cloud.backends.aws_sagemaker import (
    REALTIME_MAX_BODY_BYTES,
    SERVERLESS_MAX_BODY_BYTES,
    AwsSagemakerClassifier,
)
from derm_cloud.backends.local_onnx import LocalOnnxClassifier
from derm_cloud.errors import (
    AuthenticationError,
    ConfigError,
    DeadlineExceededError,
    InvalidResponseError,
    ModelNotReadyError,
    NotFoundError,
    ServiceError,
    ThrottledError,
)
from derm_cloud.images import metadata_markers
from derm_cloud.retry import RetryPolicy
from derm_cloud.testing.emulators.base import Fault
from derm_cloud.testing.emulators.sagemaker import SageMakerRuntimeEmulator, sagemaker_backend_for
from derm_cloud.testing.emulators.sagemaker_endpoints import ContainerResponse

ADAPTERS = Path(__file__).resolve().parents[1] / "adapters"
META = {"age": 62, "sex": "female", "site": "lower extremity"}
FORMATS = ("adapter", "jumpstart", "hf", "builtin")


class Sleeps:
    """Records the backoff the retry policy chose instead of sleeping."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


def fast_retry(attempts: int = 3) -> tuple[RetryPolicy, Sleeps]:
    sleeps = Sleeps()
    return RetryPolicy(max_attempts=attempts, base_delay=0.01, deadline=30, sleep=sleeps), sleeps


@pytest.fixture(scope="module")
def emulator(tiny_model_dir: Path, tiny_meta_model_dir: Path) -> Iterator[SageMakerRuntimeEmulator]:
    with SageMakerRuntimeEmulator() as emu:
        assert isinstance(emu, SageMakerRuntimeEmulator)
        for fmt in FORMATS:
            emu.add_endpoint(f"tiny-{fmt}", tiny_model_dir, response_format=fmt)  # type: ignore[arg-type]
        emu.add_endpoint("tiny-meta", tiny_meta_model_dir, variants=("blue", "green"))
        emu.add_endpoint("tiny-serverless", tiny_model_dir, serverless=True)
        yield emu


@pytest.fixture(autouse=True)
def _clean(request: pytest.FixtureRequest) -> None:
    if "emulator" in request.fixturenames:
        request.getfixturevalue("emulator").reset()


@pytest.fixture(scope="module")
def local(tiny_model_dir: Path) -> Iterator[LocalOnnxClassifier]:
    with LocalOnnxClassifier(tiny_model_dir) as clf:
        yield clf


@pytest.fixture(scope="module")
def jpeg(dev_images: list[Path]) -> bytes:
    return dev_images[0].read_bytes()


# --- each response format through real boto3 ----------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["adapter", "jumpstart", "builtin"])
def test_formats_agree_with_local(
    emulator: SageMakerRuntimeEmulator, local: LocalOnnxClassifier, dev_images: list[Path], fmt: str
) -> None:
    clf = sagemaker_backend_for(emulator, f"tiny-{fmt}")
    for path in dev_images[:3]:
        remote, expected = clf.predict(path), local.predict(path)
        np.testing.assert_allclose(remote.vector(), expected.vector(), atol=1e-6)
        assert remote.backend == "sagemaker" and remote.model_id == f"tiny-{fmt}"
        assert remote.extra["response_format"] == fmt
        assert remote.extra["invoked_variant"] == "AllTraffic"
        assert remote.request_id  # from x-amzn-RequestId
    sent = emulator.requests_to(f"/endpoints/tiny-{fmt}/invocations")[-1]
    expected_headers = {
        "adapter": ("application/x-image", "application/json"),
        "jumpstart": ("application/x-image", "application/json;verbose"),
        "builtin": ("image/jpeg", "application/json"),
    }[fmt]
    assert (sent.header("Content-Type"), sent.header("Accept")) == expected_headers
    assert str(sent.header("Authorization")).startswith("<redacted")  # SigV4-signed, recorded without the value


def test_hf_format_top5_and_full_with_hf_top_k(
    emulator: SageMakerRuntimeEmulator, local: LocalOnnxClassifier, jpeg: bytes
) -> None:
    expected = local.predict(jpeg)
    top5 = sagemaker_backend_for(emulator, "tiny-hf").predict(jpeg)
    assert top5.extra["partial_scores"] is True
    assert len(top5.provider_scores) == 5
    for code, p in top5.probabilities.items():
        assert p == pytest.approx(expected.probabilities[code], abs=1e-6) or p == 0.0
    assert sum(p == 0.0 for p in top5.probabilities.values()) == 2
    full = sagemaker_backend_for(emulator, "tiny-hf", hf_top_k=7).predict(jpeg)
    np.testing.assert_allclose(full.vector(), expected.vector(), atol=1e-6)
    assert emulator.requests[-1].header("Content-Type") == "application/json"


@pytest.mark.parametrize("fmt", FORMATS)
def test_auto_format_recognises_every_shape(
    emulator: SageMakerRuntimeEmulator, local: LocalOnnxClassifier, jpeg: bytes, fmt: str
) -> None:
    clf = sagemaker_backend_for(emulator, f"tiny-{fmt}", response_format="auto", class_names=None)
    pred = clf.predict(jpeg)
    # JumpStart answers plain application/json without labels; class_names (default: the HAM10000 codes) apply.
    assert pred.extra["response_format"] == fmt
    assert pred.label == local.predict(jpeg).label


def test_wrong_format_is_invalid_response(emulator: SageMakerRuntimeEmulator, jpeg: bytes) -> None:
    clf = sagemaker_backend_for(emulator, "tiny-hf", response_format="builtin", retry=fast_retry()[0])
    with pytest.raises(InvalidResponseError, match="hf shape"):
        clf.predict(jpeg)
    assert len(emulator.requests) == 1  # not retried


def test_metadata_passes_through_custom_attributes(
    emulator: SageMakerRuntimeEmulator, tiny_meta_model_dir: Path, jpeg: bytes
) -> None:
    clf = sagemaker_backend_for(emulator, "tiny-meta", response_format="adapter", custom_attributes="trace=t-1")
    with LocalOnnxClassifier(tiny_meta_model_dir) as local_meta:
        expected = local_meta.predict(jpeg, META)
    remote = clf.predict(jpeg, META)
    np.testing.assert_allclose(remote.vector(), expected.vector(), atol=1e-6)
    sent = emulator.requests[-1].header("X-Amzn-SageMaker-Custom-Attributes")
    assert sent == "trace=t-1;derm.age=62;derm.sex=female;derm.site=lower%20extremity"
    clf.predict(jpeg)  # no metadata -> only the user's attributes
    assert emulator.requests[-1].header("X-Amzn-SageMaker-Custom-Attributes") == "trace=t-1"


def test_metadata_never_sent_to_containers_that_ignore_it(emulator: SageMakerRuntimeEmulator, jpeg: bytes) -> None:
    with pytest.raises(ConfigError, match="leak"):
        sagemaker_backend_for(emulator, "tiny-jumpstart", send_metadata=True)
    sagemaker_backend_for(emulator, "tiny-jumpstart").predict(jpeg, META)
    assert emulator.requests[-1].header("X-Amzn-SageMaker-Custom-Attributes") is None


def test_variants_rotate_and_target_variant(emulator: SageMakerRuntimeEmulator, jpeg: bytes) -> None:
    clf = sagemaker_backend_for(emulator, "tiny-meta", response_format="adapter")
    assert {clf.predict(jpeg).extra["invoked_variant"] for _ in range(2)} == {"blue", "green"}
    pinned = sagemaker_backend_for(emulator, "tiny-meta", response_format="adapter", target_variant="green")
    assert {pinned.predict(jpeg).extra["invoked_variant"] for _ in range(3)} == {"green"}
    assert emulator.requests[-1].header("X-Amzn-SageMaker-Target-Variant") == "green"
    with pytest.raises(ConfigError, match="variant"):
        sagemaker_backend_for(emulator, "tiny-meta", target_variant="red").predict(jpeg)


# --- faults ------------------------------------------------------------------------------------------------------


def test_throttle_retried_honouring_retry_after(emulator: SageMakerRuntimeEmulator, jpeg: bytes) -> None:
    policy, sleeps = fast_retry()
    emulator.inject(Fault("throttle", retry_after=0.25))
    pred = sagemaker_backend_for(emulator, "tiny-adapter", retry=policy).predict(jpeg)
    assert pred.attempts == 2
    assert sleeps.calls == [0.25]
    emulator.inject(Fault("throttle", times=5, retry_after=0.01))
    with pytest.raises(ThrottledError) as info:
        sagemaker_backend_for(emulator, "tiny-adapter", retry=fast_retry(2)[0]).predict(jpeg)
    # ThrottlingException comes with HTTP 400 (AWS Common Errors; tests/fidelity/test_fidelity_aws.py).
    assert info.value.status == 400 and info.value.retryable


def test_cold_start_then_success(tiny_model_dir: Path, jpeg: bytes) -> None:
    with SageMakerRuntimeEmulator() as emu:
        assert isinstance(emu, SageMakerRuntimeEmulator)
        emu.add_endpoint("cold", tiny_model_dir, serverless=True, cold_start_calls=2)
        with pytest.raises(ModelNotReadyError) as info:
            sagemaker_backend_for(emu, "cold", retry=fast_retry(1)[0]).predict(jpeg)
        assert info.value.status == 429 and info.value.retryable
        pred = sagemaker_backend_for(emu, "cold", retry=fast_retry(3)[0]).predict(jpeg)
        assert pred.attempts == 2  # the second cold call, then the warm one
        assert len(emu.requests) == 3


def test_model_error_4xx_not_retried(emulator: SageMakerRuntimeEmulator, jpeg: bytes) -> None:
    emulator.script("tiny-adapter", ContainerResponse({"error": "bad input"}, status=400))
    with pytest.raises(ServiceError) as info:
        sagemaker_backend_for(emulator, "tiny-adapter", retry=fast_retry()[0]).predict(jpeg)
    assert info.value.status == 400 and not info.value.retryable
    assert "bad input" in str(info.value) and "log-group" in str(info.value)
    assert len(emulator.requests) == 1


def test_model_error_503_is_retried(emulator: SageMakerRuntimeEmulator, jpeg: bytes) -> None:
    emulator.script("tiny-adapter", ContainerResponse("overloaded", status=503, content_type="text/plain"))
    pred = sagemaker_backend_for(emulator, "tiny-adapter", retry=fast_retry()[0]).predict(jpeg)
    assert pred.attempts == 2


def test_malformed_body_is_invalid_response(emulator: SageMakerRuntimeEmulator, jpeg: bytes) -> None:
    emulator.inject(Fault("malformed"))
    with pytest.raises(InvalidResponseError, match="not JSON"):
        sagemaker_backend_for(emulator, "tiny-adapter", retry=fast_retry()[0]).predict(jpeg)
    assert len(emulator.requests) == 1


def test_timeout_is_deadline_exceeded(emulator: SageMakerRuntimeEmulator, jpeg: bytes) -> None:
    emulator.inject(Fault("timeout", delay=1.0))
    clf = sagemaker_backend_for(emulator, "tiny-adapter", read_timeout=0.3, retry=fast_retry(1)[0])
    with pytest.raises(DeadlineExceededError) as info:
        clf.predict(jpeg)
    assert info.value.retryable


def test_read_timeout_bounds_every_attempt_with_an_injected_client(
    emulator: SageMakerRuntimeEmulator, jpeg: bytes
) -> None:
    # The injected client reads for up to 10 s and a dripping answer never lets a read time out; read_timeout=1
    # still ends each attempt after about 1 s (issue 18: it was ignored when client= was passed).
    client = emulator.runtime_client(read_timeout=10.0)
    retry = RetryPolicy(max_attempts=2, base_delay=0.0, deadline=30.0)
    with AwsSagemakerClassifier("tiny-adapter", client=client, read_timeout=1.0, retry=retry) as clf:
        clf.predict(jpeg)
        emulator.inject(Fault("drip", delay=4.0, times=2))
        start = time.monotonic()
        with pytest.raises(DeadlineExceededError, match=r"\b1 s\b"):
            clf.predict(jpeg)
        assert time.monotonic() - start < 2 * 1.0 + 0.8


@pytest.mark.parametrize("kind", ["reset", "truncated"])
def test_connection_faults_are_retryable(emulator: SageMakerRuntimeEmulator, jpeg: bytes, kind: Any) -> None:
    emulator.inject(Fault(kind))
    with pytest.raises(ServiceError) as info:
        sagemaker_backend_for(emulator, "tiny-adapter", retry=fast_retry(1)[0]).predict(jpeg)
    assert info.value.retryable
    emulator.inject(Fault(kind))
    assert sagemaker_backend_for(emulator, "tiny-adapter", retry=fast_retry(2)[0]).predict(jpeg).attempts == 2


@pytest.mark.parametrize(
    ("status", "error", "retryable"),
    [(500, ServiceError, True), (503, ServiceError, True), (403, AuthenticationError, False)],
)
def test_service_errors(
    emulator: SageMakerRuntimeEmulator, jpeg: bytes, status: int, error: type, retryable: bool
) -> None:
    emulator.inject(Fault("error", status=status))
    with pytest.raises(error) as info:
        sagemaker_backend_for(emulator, "tiny-adapter", retry=fast_retry(1)[0]).predict(jpeg)
    assert info.value.retryable is retryable
    assert info.value.status == status


def test_unknown_endpoint_is_not_found(emulator: SageMakerRuntimeEmulator, jpeg: bytes) -> None:
    with pytest.raises(NotFoundError, match="check endpoint_name and region") as info:
        sagemaker_backend_for(emulator, "no-such-endpoint").predict(jpeg)
    assert not info.value.retryable


# --- payloads: limits and privacy ----------------------------------------------------------------------------


def noise_png(width: int, height: int) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def big_png() -> bytes:
    data = noise_png(1600, 1400)
    assert len(data) > REALTIME_MAX_BODY_BYTES  # incompressible: only re-encoding can make it fit
    return data


@pytest.mark.parametrize(
    ("endpoint", "limit"), [("tiny-adapter", REALTIME_MAX_BODY_BYTES), ("tiny-serverless", SERVERLESS_MAX_BODY_BYTES)]
)
def test_large_png_is_reencoded_to_fit(
    emulator: SageMakerRuntimeEmulator, big_png: bytes, endpoint: str, limit: int
) -> None:
    pred = sagemaker_backend_for(emulator, endpoint).predict(big_png)
    sent = emulator.requests[-1].body
    assert len(sent) <= limit
    assert sent[:3] == b"\xff\xd8\xff"  # re-encoded as JPEG
    assert pred.extra["request_bytes"] == len(sent)


def test_emulator_enforces_the_service_limit(emulator: SageMakerRuntimeEmulator, big_png: bytes) -> None:
    client = sagemaker_backend_for(emulator, "tiny-adapter").client
    with pytest.raises(Exception) as info:  # botocore's modeled exception classes are per client
        client.invoke_endpoint(EndpointName="tiny-adapter", Body=big_png, ContentType="image/png")
    response: Any = getattr(info.value, "response", {})
    assert response["Error"]["Code"] == "ModelError"
    assert response["OriginalStatusCode"] == 413


def jpeg_with_gps(source: bytes) -> bytes:
    from PIL import Image

    image = Image.open(io.BytesIO(source))
    exif = Image.Exif()
    exif[0x010F] = "CameraMaker"
    exif[0x8825] = {1: "N", 2: (51.0, 30.0, 0.0), 3: "W", 4: (0.0, 7.0, 0.0)}
    buf = io.BytesIO()
    image.save(buf, format="JPEG", exif=exif.tobytes(), quality=92)
    return buf.getvalue()


def test_no_exif_or_gps_reaches_the_endpoint(emulator: SageMakerRuntimeEmulator, jpeg: bytes) -> None:
    tagged = jpeg_with_gps(jpeg)
    assert {"exif", "gps"} <= metadata_markers(tagged)
    sagemaker_backend_for(emulator, "tiny-adapter").predict(tagged)
    sent = emulator.requests[-1].body
    assert metadata_markers(sent) == frozenset()
    assert b"CameraMaker" not in sent


# --- end to end: boto3 -> emulator -> the adapter container -> the model -----------------------------------------


@pytest.fixture(scope="module")
def adapter_container(tiny_meta_model_dir: Path) -> Iterator[str]:
    proc = subprocess.Popen(
        [sys.executable, str(ADAPTERS / "sagemaker" / "serve.py"), "--host", "127.0.0.1", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "SM_MODEL_DIR": str(tiny_meta_model_dir)},
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert "listening on" in line, line
    yield f"http://127.0.0.1:{line.rsplit(':', 1)[1].strip()}"
    proc.terminate()
    proc.wait(timeout=10)


def test_end_to_end_through_the_adapter_agrees_with_local(
    adapter_container: str, tiny_meta_model_dir: Path, dev_images: list[Path]
) -> None:
    with SageMakerRuntimeEmulator() as emu, LocalOnnxClassifier(tiny_meta_model_dir) as local_meta:
        assert isinstance(emu, SageMakerRuntimeEmulator)
        emu.add_endpoint("derm-adapter", container_url=adapter_container)
        clf = sagemaker_backend_for(emu, "derm-adapter", response_format="adapter")
        for path in dev_images[:3]:
            for meta in (None, META):
                remote, expected = clf.predict(path, meta), local_meta.predict(path, meta)
                np.testing.assert_allclose(remote.vector(), expected.vector(), atol=1e-6)
                assert remote.extra["endpoint_model_id"] == "tiny-meta"
        # The container's own 400 comes back through the service as a ModelError carrying it.
        with pytest.raises(Exception) as info:  # botocore's modeled exception classes are per client
            clf.client.invoke_endpoint(EndpointName="derm-adapter", Body=b"junk", ContentType="image/jpeg")
        response: Any = getattr(info.value, "response", {})
        assert (response["Error"]["Code"], response["OriginalStatusCode"]) == ("ModelError", 400)
        assert "not a readable image" in response["OriginalMessage"]


@pytest.mark.slow
def test_sklesion_through_emulator_agrees_with_local(sklesion_model_dir: Path, dev_images: list[Path]) -> None:
    import csv

    rows = list(csv.DictReader((dev_images[0].parents[1] / "dev.csv").open()))[:4]
    with SageMakerRuntimeEmulator() as emu, LocalOnnxClassifier(sklesion_model_dir) as local_sk:
        assert isinstance(emu, SageMakerRuntimeEmulator)
        emu.add_endpoint("sklesion", sklesion_model_dir)
        clf = sagemaker_backend_for(emu, "sklesion", response_format="adapter")
        for row in rows:
            path = dev_images[0].parents[1] / row["file"]
            meta = {"age": float(row["age"]) if row["age"] else None, "sex": row["sex"], "site": row["localization"]}
            remote, expected = clf.predict(path, meta), local_sk.predict(path, meta)
            np.testing.assert_allclose(remote.vector(), expected.vector(), atol=1e-6)


# --- construction, describe() and the default boto3 client -------------------------------------------------------


def test_describe_reports_billing_and_data_handling(emulator: SageMakerRuntimeEmulator) -> None:
    realtime = sagemaker_backend_for(emulator, "tiny-adapter", instance_type="ml.m5.large", instance_count=2)
    info = realtime.describe()
    assert (info.provider, info.region, info.emulated) == ("aws", "us-east-1", True)
    assert info.endpoint == f"{emulator.url}/endpoints/tiny-adapter/invocations"
    assert info.billing["sku"] == "sagemaker.realtime.ml.m5.large" and info.billing["instances"] == 2
    assert info.stores_images is False and info.data_leaves_machine is True
    serverless = sagemaker_backend_for(emulator, "tiny-serverless", serverless_memory_mb=3072, data_capture=True)
    facts = serverless.describe()
    assert facts.billing == {"sku": "sagemaker.serverless", "memory_mb": 3072, "data_sku": "sagemaker.data_transfer"}
    assert facts.stores_images is True
    assert facts.model_facts["payload_limit_bytes"] == SERVERLESS_MAX_BODY_BYTES


def test_real_endpoint_is_not_emulated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    clf = AwsSagemakerClassifier("derm", region="eu-west-1")  # builds a client, makes no call
    info = clf.describe()
    assert info.endpoint == "https://runtime.sagemaker.eu-west-1.amazonaws.com/endpoints/derm/invocations"
    assert (info.emulated, info.data_leaves_machine) == (False, True)
    clf.close()


def test_default_client_sends_one_attempt(
    emulator: SageMakerRuntimeEmulator, jpeg: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    clf = AwsSagemakerClassifier(
        "tiny-adapter", region="us-east-1", endpoint_url=emulator.url, response_format="adapter", retry=fast_retry(1)[0]
    )
    assert clf.predict(jpeg).extra["response_format"] == "adapter"
    emulator.reset()
    emulator.inject(Fault("throttle", times=3, retry_after=0))
    with pytest.raises(ThrottledError):
        clf.predict(jpeg)
    assert len(emulator.requests) == 1  # botocore's own retries are off: the policy alone decides
    clf.close()


def test_missing_region_is_a_config_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for var in ("AWS_DEFAULT_REGION", "AWS_REGION", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance-metadata region lookup either
    with pytest.raises(ConfigError, match="region"):
        AwsSagemakerClassifier("derm")


def test_option_validation() -> None:
    with pytest.raises(ConfigError, match="response_format"):
        AwsSagemakerClassifier("derm", response_format="xml", client=object())  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="endpoint_name"):
        AwsSagemakerClassifier("", client=object())  # type: ignore[arg-type]


def test_registry_creates_the_backend(emulator: SageMakerRuntimeEmulator, jpeg: bytes) -> None:
    import derm_cloud

    client = sagemaker_backend_for(emulator, "tiny-builtin").client
    with derm_cloud.create("sagemaker", endpoint_name="tiny-builtin", client=client, response_format="builtin") as clf:
        assert isinstance(clf, AwsSagemakerClassifier)
        assert clf.predict(jpeg).extra["response_format"] == "builtin"


# --- moto's scripted sagemaker-runtime results ------------------------------------------------------------------


def test_moto_scripted_result_through_the_backend(jpeg: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    import json
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    try:
        host, port = server.get_host_and_port()
        url = f"http://{host}:{port}"
        # moto cannot take binary bodies (its server decodes every body as UTF-8), so use the backend's JSON
        # request: the Hugging Face DLC shape with an explicit top_k.
        labels = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
        scores = [0.05, 0.05, 0.1, 0.05, 0.6, 0.1, 0.05]
        body = [{"label": lab, "score": sc} for lab, sc in sorted(zip(labels, scores), key=lambda x: -x[1])]
        result = {"Body": json.dumps(body), "ContentType": "application/json", "InvokedProductionVariant": "AllTraffic"}
        scripted = {"results": [{**result, "CustomAttributes": ""}]}
        request = urllib.request.Request(
            f"{url}/moto-api/static/sagemaker/endpoint-results",
            data=json.dumps(scripted).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as reply:
            assert reply.status == 201
        clf = AwsSagemakerClassifier(
            "any-endpoint", region="us-east-1", endpoint_url=url, response_format="hf", hf_top_k=7
        )
        pred = clf.predict(jpeg)
        assert pred.label == "mel"
        assert pred.probabilities["mel"] == pytest.approx(0.6)
        assert pred.extra["invoked_variant"] == "AllTraffic"
        assert "partial_scores" not in pred.extra
        assert clf.describe().emulated is True
        clf.close()
    finally:
        server.stop()


# --- deployment helpers against moto's control plane ----------------------------------------------------------

ROLE = "arn:aws:iam::123456789012:role/SageMakerExecution"
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/derm-cloud-sagemaker:0.1.0"


@pytest.fixture
def moto_sagemaker(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    from moto import mock_aws

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with mock_aws():
        import boto3

        yield boto3.client("sagemaker", region_name="us-east-1")


def test_create_realtime_endpoint_and_delete(moto_sagemaker: Any) -> None:
    from derm_cloud.deploy.sagemaker_jumpstart import create_endpoint, delete_endpoint

    name = create_endpoint(
        endpoint_name="derm-rt",
        image_uri=IMAGE,
        role_arn=ROLE,
        model_data_url="s3://bucket/sklesion/model.tar.gz",
        environment={"DERM_CLOUD_SAGEMAKER_FORMAT": "adapter"},
        instance_type="ml.c5.xlarge",
        instance_count=2,
        data_capture_s3_uri="s3://bucket/capture",
        client=moto_sagemaker,
        poll_seconds=1,
    )
    assert name == "derm-rt"
    assert moto_sagemaker.describe_endpoint(EndpointName=name)["EndpointStatus"] == "InService"
    config = moto_sagemaker.describe_endpoint_config(EndpointConfigName="derm-rt-config")
    variant = config["ProductionVariants"][0]
    assert (variant["InstanceType"], variant["InitialInstanceCount"], variant["ModelName"]) == (
        "ml.c5.xlarge",
        2,
        "derm-rt-model",
    )
    assert config["DataCaptureConfig"]["DestinationS3Uri"] == "s3://bucket/capture"
    model = moto_sagemaker.describe_model(ModelName="derm-rt-model")
    assert model["PrimaryContainer"]["ModelDataUrl"] == "s3://bucket/sklesion/model.tar.gz"
    delete_endpoint(name, client=moto_sagemaker)
    assert moto_sagemaker.list_endpoints()["Endpoints"] == []
    assert moto_sagemaker.list_models()["Models"] == []
    delete_endpoint(name, client=moto_sagemaker)  # idempotent


def test_create_serverless_endpoint(moto_sagemaker: Any) -> None:
    from derm_cloud.deploy.sagemaker_jumpstart import ServerlessSettings, create_endpoint

    settings = ServerlessSettings(memory_mb=3072, max_concurrency=10, provisioned_concurrency=2)
    create_endpoint(endpoint_name="derm-sl", image_uri=IMAGE, role_arn=ROLE, serverless=settings, client=moto_sagemaker)
    variant = moto_sagemaker.describe_endpoint_config(EndpointConfigName="derm-sl-config")["ProductionVariants"][0]
    assert variant["ServerlessConfig"] == {"MemorySizeInMB": 3072, "MaxConcurrency": 10, "ProvisionedConcurrency": 2}
    assert "InstanceType" not in variant
    with pytest.raises(ConfigError, match="data capture"):
        create_endpoint(
            endpoint_name="x", image_uri=IMAGE, role_arn=ROLE, serverless=settings, data_capture_s3_uri="s3://b/c"
        )


@pytest.mark.parametrize(
    "kwargs", [{"memory_mb": 1000}, {"max_concurrency": 0}, {"max_concurrency": 2, "provisioned_concurrency": 3}]
)
def test_serverless_settings_validation(kwargs: dict[str, int]) -> None:
    from derm_cloud.deploy.sagemaker_jumpstart import ServerlessSettings

    with pytest.raises(ConfigError):
        ServerlessSettings(**kwargs)


def test_control_plane_errors_are_translated() -> None:
    import boto3
    from botocore.stub import Stubber

    from derm_cloud.deploy.sagemaker_jumpstart import create_endpoint

    # moto accepts duplicate names, so SageMaker's refusal is played by botocore's own Stubber on a real client.
    client = boto3.session.Session().client(
        "sagemaker", region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing"
    )
    with Stubber(client) as stub:
        stub.add_client_error("create_model", "ValidationException", "Cannot create already existing model", 400)
        with pytest.raises(ConfigError, match="already existing model"):
            create_endpoint(endpoint_name="taken", image_uri=IMAGE, role_arn=ROLE, client=client)
        stub.add_client_error("create_model", "AccessDeniedException", "not authorized to perform iam:PassRole", 400)
        with pytest.raises(AuthenticationError, match="PassRole"):
            create_endpoint(endpoint_name="taken", image_uri=IMAGE, role_arn=ROLE, client=client)


def test_failed_endpoint_reports_the_reason() -> None:
    import boto3
    from botocore.stub import Stubber

    from derm_cloud.deploy.sagemaker_jumpstart import create_endpoint

    client = boto3.session.Session().client(
        "sagemaker", region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing"
    )
    failed = {
        "EndpointName": "derm",
        "EndpointArn": "arn:aws:sagemaker:us-east-1:123456789012:endpoint/derm",
        "EndpointStatus": "Failed",
        "FailureReason": "The primary container did not pass the ping health check.",
        "CreationTime": "2026-01-01T00:00:00Z",
        "LastModifiedTime": "2026-01-01T00:00:00Z",
    }
    with Stubber(client) as stub:
        stub.add_response("create_model", {"ModelArn": "arn:aws:sagemaker:us-east-1:123456789012:model/m"})
        config_arn = {"EndpointConfigArn": "arn:aws:sagemaker:us-east-1:123456789012:endpoint-config/c"}
        stub.add_response("create_endpoint_config", config_arn)
        stub.add_response(
            "create_endpoint",
            {"EndpointArn": failed["EndpointArn"]},
            {"EndpointName": "derm", "EndpointConfigName": "derm-config"},
        )
        stub.add_response("describe_endpoint", failed, {"EndpointName": "derm"})  # the waiter's poll
        stub.add_response("describe_endpoint", failed, {"EndpointName": "derm"})  # our read of the reason
        with pytest.raises(ServiceError, match="did not pass the ping health check"):
            create_endpoint(endpoint_name="derm", image_uri=IMAGE, role_arn=ROLE, client=client, poll_seconds=1)


@pytest.mark.slow  # importing sagemaker.serve takes 4-10 s
def test_jumpstart_model_builder_offline(moto_sagemaker: Any) -> None:
    from derm_cloud.deploy.sagemaker_jumpstart import jumpstart_model_builder

    builder = jumpstart_model_builder(
        "pytorch-ic-mobilenet-v2",
        role_arn=ROLE,
        region="us-east-1",
        instance_type="ml.m5.xlarge",
        instance_count=2,
        accept_eula=False,
    )
    assert type(builder).__name__ == "ModelBuilder"
    assert (builder.model, builder.model_version, builder.role_arn) == ("pytorch-ic-mobilenet-v2", "*", ROLE)
    assert (builder.instance_type, builder.instance_count) == ("ml.m5.xlarge", 2)
    assert builder.region == "us-east-1"


@pytest.mark.slow  # importing sagemaker.serve takes 4-10 s
def test_deploy_jumpstart_without_metadata_access_fails_clearly(moto_sagemaker: Any) -> None:
    from derm_cloud.deploy.sagemaker_jumpstart import deploy_jumpstart

    # moto has no jumpstart-cache-prod-us-east-1 bucket: exactly what a machine without S3 access sees.
    with pytest.raises(ServiceError, match="jumpstart-cache-prod"):
        deploy_jumpstart("pytorch-ic-mobilenet-v2", endpoint_name="js", role_arn=ROLE, region="us-east-1")
    assert moto_sagemaker.list_endpoints()["Endpoints"] == []
