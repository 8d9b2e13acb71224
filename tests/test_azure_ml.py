"""The ``azure-ml`` backend against the Azure ML emulator: plain ``requests`` scoring, plus the real ``azure-ai-ml``
``MLClient`` driving the emulator's management routes; AutoML ONNX parity across local, Azure ML and Custom Vision.

Images: HAM10000 (Tschandl et al. 2018, CC BY-NC 4.0), read from shared/data.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tests_helpers import dev_rows

import derm_cloud
from derm_cloud.backends.azure_ml import AzureMlClassifier, _row_json
from derm_cloud.errors import (
    AuthenticationError,
    ConfigError,
    DeadlineExceededError,
    InvalidResponseError,
    NotFoundError,
    PayloadTooLargeError,
    ServiceError,
    ThrottledError,
)
from derm_cloud.images import metadata_markers
from derm_cloud.retry import RetryPolicy, retry_after_seconds
from derm_cloud.testing.emulators.azure_custom_vision import CustomVisionEmulator, custom_vision_backend_for
from derm_cloud.testing.emulators.azure_ml import (
    DEFAULT_ENDPOINT_KEY,
    AzureMLEmulator,
    azure_ml_backend_for,
    ml_client_for,
)
from derm_cloud.testing.emulators.base import Fault, Response
from derm_cloud.testing.tiny_models import build_tiny_automl_export
from derm_cloud.types import PatientMetadata

# azure-ai-ml's import emits hundreds of marshmallow 4 deprecation warnings from its schema modules (harmless).
pytestmark = pytest.mark.filterwarnings("ignore::marshmallow.warnings.Marshmallow4Warning")

AUTOML_NAMES = [
    "actinic_keratoses",
    "basal_cell_carcinoma",
    "benign_keratosis-like_lesions",
    "dermatofibroma",
    "melanoma",
    "melanocytic_Nevi",
    "vascular_lesions",
]


@pytest.fixture(scope="module")
def automl_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_automl_export(tmp_path_factory.mktemp("automl") / "export", labels=AUTOML_NAMES)


@pytest.fixture(scope="module")
def green_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_automl_export(tmp_path_factory.mktemp("green") / "export", seed=7)


@pytest.fixture(scope="module")
def emu(automl_dir: Path, green_dir: Path) -> Iterator[AzureMLEmulator]:
    with AzureMLEmulator(automl_dir) as emulator:
        emulator.add_deployment("green", green_dir)
        yield emulator


@pytest.fixture(autouse=True)
def _clean(emu: AzureMLEmulator) -> None:
    emu.reset()
    emu.set_traffic({"blue": 100})


def local(model_dir: Path, **options: Any) -> derm_cloud.Classifier:
    return derm_cloud.create("local-onnx", model_dir=model_dir, **options)


def no_retry() -> RetryPolicy:
    return RetryPolicy(max_attempts=1)


def with_gps(path: Path) -> bytes:
    """The JPEG re-saved with an EXIF block holding GPS coordinates (what a phone photo carries)."""
    import io

    from PIL import Image

    exif = Image.Exif()
    exif[0x8825] = {1: "N", 2: (48.0, 12.0, 30.0), 3: "E", 4: (11.0, 34.0, 0.0)}
    buf = io.BytesIO()
    Image.open(path).save(buf, "JPEG", exif=exif.tobytes(), quality=92)
    return buf.getvalue()


# --- scoring and parity -----------------------------------------------------------------------------------------------


def test_automl_export_gives_identical_probabilities_locally_on_azure_ml_and_on_custom_vision(
    emu: AzureMLEmulator, automl_dir: Path, dev_images: list[Path]
) -> None:
    with local(automl_dir) as on_machine, azure_ml_backend_for(emu) as on_aml:
        expected = on_machine.predict_batch(dev_images)
        hosted = on_aml.predict_batch(dev_images)
    with CustomVisionEmulator(automl_dir) as cv, custom_vision_backend_for(cv) as on_cv:
        tagged = on_cv.predict_batch(dev_images)
    for a, b, c in zip(expected, hosted, tagged, strict=True):
        assert np.allclose(a.vector(), b.vector(), atol=1e-6)
        assert np.allclose(a.vector(), c.vector(), atol=1e-6)
        assert a.label == b.label == c.label
    assert {s.label for s in hosted[0].provider_scores} == set(AUTOML_NAMES)
    # The images give different outputs, so agreement to 1e-6 is not agreement on a constant.
    assert np.ptp([p.vector() for p in expected], axis=0).max() > 1e-3


def test_request_is_the_automl_contract_with_bearer_key(emu: AzureMLEmulator, dev_images: list[Path]) -> None:
    with azure_ml_backend_for(emu) as clf:
        pred = clf.predict(dev_images[0], {"age": 50, "sex": "male", "site": "back"})
    (request,) = emu.requests
    assert request.method == "POST" and request.path == "/score"
    assert request.header("Authorization") == f"<redacted:{len('Bearer ' + DEFAULT_ENDPOINT_KEY)} chars>"
    assert request.header("azureml-model-deployment") is None  # the traffic split chose
    body = request.json()
    assert body["input_data"]["columns"] == ["image"]  # metadata is not sent unless asked for
    assert isinstance(body["input_data"]["data"][0], str)
    assert pred.extra["deployment"] == "blue" and pred.request_id


def test_metadata_columns_reach_a_model_that_uses_them(tiny_meta_model_dir: Path, dev_images: list[Path]) -> None:
    meta = {"age": 70, "sex": "male", "site": "back"}
    with AzureMLEmulator(tiny_meta_model_dir) as emulator, azure_ml_backend_for(emulator, send_metadata=True) as clf:
        hosted = clf.predict(dev_images[0], meta)
        assert emulator.requests[0].json()["input_data"]["columns"] == ["image", "age", "sex", "site"]
    with local(tiny_meta_model_dir) as on_machine:
        assert np.allclose(hosted.vector(), on_machine.predict(dev_images[0], meta).vector(), atol=1e-6)
        assert not np.allclose(hosted.vector(), on_machine.predict(dev_images[0]).vector(), atol=1e-3)


@pytest.mark.parametrize("send_metadata", [False, True])
def test_request_body_is_byte_for_byte_what_json_dumps_writes(
    emu: AzureMLEmulator, dev_images: list[Path], send_metadata: bool
) -> None:
    # The body is spliced together for speed (json.dumps would rescan every base64 character): it must stay the
    # exact JSON json.dumps writes, whatever the metadata holds (missing age, non-ASCII site).
    payloads = [derm_cloud.prepare_payload(path) for path in dev_images[:2]]
    metadata = [PatientMetadata(age=None, sex="female", site="t\u00eate"), PatientMetadata(age=45, sex="male")]
    with azure_ml_backend_for(emu, send_metadata=send_metadata) as clf:
        rows = clf._encode(payloads, metadata)
        expected_rows: list[Any] = [
            [base64.b64encode(p.data).decode(), m.age, m.sex, m.site]
            if send_metadata
            else base64.b64encode(p.data).decode()
            for p, m in zip(payloads, metadata, strict=True)
        ]
        columns = ["image", "age", "sex", "site"] if send_metadata else ["image"]
        assert clf._body(rows) == json.dumps({"input_data": {"columns": columns, "data": expected_rows}}).encode()
        assert [len(json.dumps(row)) for row in expected_rows] == [len(r) for r in map(_row_json, rows)]


def test_images_per_request_batches_and_respects_the_payload_limit(
    emu: AzureMLEmulator, dev_images: list[Path]
) -> None:
    images = dev_images[:7]
    with azure_ml_backend_for(emu, images_per_request=3) as clf:
        batch = clf.predict_batch(images)
        singles = [clf.predict(p) for p in images]
    assert [len(c.images()) for c in emu.calls[:3]] == [3, 3, 1]
    for a, b in zip(batch, singles, strict=True):
        assert np.allclose(a.vector(), b.vector(), atol=1e-9)
    assert batch[0].extra["batch_size"] == 3 and "batch_size" not in singles[0].extra

    emu.reset()
    same = [dev_images[0]] * 7  # equal sizes make the expected packing exact
    b64_size = len(dev_images[0].read_bytes()) * 4 / 3
    limit = int(b64_size * 2.5)  # room for two base64 images per request, not three
    with azure_ml_backend_for(emu, images_per_request=8, max_request_bytes=limit) as clf:
        clf.predict_batch(same)
    assert all(len(r.body) <= limit for r in emu.requests)
    assert [len(c.images()) for c in emu.calls] == [2, 2, 2, 1]


def test_exif_and_gps_are_stripped_from_what_the_endpoint_receives(
    emu: AzureMLEmulator, dev_images: list[Path]
) -> None:
    photo = with_gps(dev_images[1])
    assert "gps" in metadata_markers(photo)
    with azure_ml_backend_for(emu) as clf:
        clf.predict(photo)
    (received,) = emu.calls[0].images()
    assert metadata_markers(received) == frozenset()


def test_deployment_header_and_traffic_split(emu: AzureMLEmulator, green_dir: Path, dev_images: list[Path]) -> None:
    with azure_ml_backend_for(emu, deployment="green") as clf:
        pred = clf.predict(dev_images[0])
    assert emu.requests[0].header("azureml-model-deployment") == "green"
    assert pred.extra["deployment"] == "green" and emu.calls[0].routed_by_header
    with local(green_dir) as on_machine:
        assert np.allclose(pred.vector(), on_machine.predict(dev_images[0]).vector(), atol=1e-6)

    emu.set_traffic({"blue": 75, "green": 25})
    with azure_ml_backend_for(emu) as clf:
        served = [clf.predict(dev_images[0]).extra["deployment"] for _ in range(8)]
    assert served.count("blue") == 6 and served.count("green") == 2

    with azure_ml_backend_for(emu, deployment="red") as clf, pytest.raises(NotFoundError, match="'red'"):
        clf.predict(dev_images[0])


def test_emulator_router_answers(emu: AzureMLEmulator) -> None:
    import requests

    auth = {"Authorization": f"Bearer {DEFAULT_ENDPOINT_KEY}"}
    not_an_image = {"input_data": {"columns": ["image"], "data": ["bm90IGFuIGltYWdl"]}}
    assert requests.post(emu.scoring_uri, json=not_an_image, timeout=5).text == "key_auth_access_denied"
    answer = requests.post(emu.scoring_uri, json=not_an_image, headers=auth, timeout=5)
    assert answer.status_code == 424 and "instances[0]" in answer.json()["error"]["message"]
    assert answer.headers["azureml-model-deployment"] == "blue" and answer.headers["x-request-id"]
    assert requests.get(emu.scoring_uri, headers=auth, timeout=5).status_code == 405
    assert emu.last_image_bytes == b"not an image"  # recorded as received, even when not an image


def test_online_and_batch_emulators_answer_the_workspace_routes_alike(emu: AzureMLEmulator, automl_dir: Path) -> None:
    # Both emulators serve ARM routes under one workspace path: no bearer token is ARM's 401, another
    # subscription's workspace is a 404, each with ARM's {"error": {"code", "message"}} body.
    import requests

    from derm_cloud.testing.emulators.azure_ml_batch import AzureMLBatchEmulator

    ws = "/resourceGroups/DERM-RG/providers/Microsoft.MachineLearningServices/workspaces/Derm-WS"
    bearer = {"Authorization": "Bearer t"}
    with AzureMLBatchEmulator(automl_dir) as batch:
        for url in (
            f"{emu.url}/subscriptions/{emu.subscription_id}{ws}/onlineEndpoints/{emu.endpoint_name}",
            f"{batch.url}/subscriptions/{batch.subscription_id}{ws}/batchEndpoints/{batch.endpoint_name}",
        ):
            assert requests.get(url, headers=bearer, timeout=5).status_code == 200  # names ignore case
            refused = requests.get(url, timeout=5)
            assert refused.status_code == 401 and refused.json()["error"]["code"] == "AuthenticationFailed"
            elsewhere = requests.get(url.replace("/subscriptions/0", "/subscriptions/1"), headers=bearer, timeout=5)
            assert elsewhere.status_code == 404 and elsewhere.json()["error"]["code"] == "ResourceNotFound"


# --- errors and retries -----------------------------------------------------------------------------------------------


def test_429_is_retried_honouring_retry_after(emu: AzureMLEmulator, dev_images: list[Path]) -> None:
    slept: list[float] = []
    emu.inject(Fault("throttle", times=2, retry_after=0.5))
    with azure_ml_backend_for(emu, retry=RetryPolicy(max_attempts=4, sleep=slept.append)) as clf:
        pred = clf.predict(dev_images[0])
    assert slept == [0.5, 0.5] and pred.attempts == 3 and len(emu.requests) == 3
    emu.inject(Fault("throttle", retry_after=3))
    with azure_ml_backend_for(emu, retry=no_retry()) as clf, pytest.raises(ThrottledError) as info:
        clf.predict(dev_images[0])
    assert info.value.retry_after == 3 and info.value.status == 429


def test_batch_chunks_are_retried_as_a_whole(emu: AzureMLEmulator, dev_images: list[Path]) -> None:
    slept: list[float] = []
    emu.inject(Fault("not_ready", retry_after=0.1))
    with azure_ml_backend_for(emu, images_per_request=4, retry=RetryPolicy(sleep=slept.append)) as clf:
        batch = clf.predict_batch(dev_images[:4])
    assert slept == [0.1] and [p.attempts for p in batch] == [2, 2, 2, 2]


def test_wrong_key_is_not_retried_and_names_the_setting(emu: AzureMLEmulator, dev_images: list[Path]) -> None:
    with azure_ml_backend_for(emu, key="wrong-key-5678") as clf, pytest.raises(AuthenticationError) as info:
        clf.predict(dev_images[0])
    message = str(info.value)
    assert "key=" in message and "AZUREML_ENDPOINT_KEY" in message and "get-credentials" in message
    assert "wrong-key-5678" not in message and not info.value.retryable and info.value.status == 401
    assert len(emu.requests) == 1


@pytest.mark.parametrize(
    ("fault", "error", "requests_made"),
    [
        (Fault("malformed"), InvalidResponseError, 1),
        (Fault("truncated", times=2), ServiceError, 2),  # cut off in transit: retried, like every backend
        (Fault("error", status=504, times=2), DeadlineExceededError, 2),
        (Fault("error", status=500, times=2), ServiceError, 2),
        (Fault("timeout", delay=1.0, times=2), DeadlineExceededError, 2),
    ],
)
def test_failures_map_to_the_error_tree(
    emu: AzureMLEmulator, dev_images: list[Path], fault: Fault, error: type[Exception], requests_made: int
) -> None:
    emu.inject(fault)
    retry = RetryPolicy(max_attempts=2, sleep=lambda s: None)
    timeout = 0.3 if fault.kind == "timeout" else 10.0
    with azure_ml_backend_for(emu, retry=retry, timeout=timeout) as clf, pytest.raises(error):
        clf.predict(dev_images[0])
    assert len(emu.requests) == requests_made


def test_deadline_message_states_the_deadline_that_fired(emu: AzureMLEmulator, dev_images: list[Path]) -> None:
    # timeout= stays at its 60 s default; the 2 s retry deadline cuts the call, so "within 60 s" would be false.
    emu.inject(Fault("slow", delay=4.0))
    with azure_ml_backend_for(emu, retry=RetryPolicy(max_attempts=1, deadline=2.0)) as clf:
        start = time.monotonic()
        with pytest.raises(DeadlineExceededError) as info:
            clf.predict(dev_images[0])
    assert time.monotonic() - start < 3.0
    assert "60 s" not in str(info.value)
    assert "within 2 s" in str(info.value) or "within the 2 s deadline" in str(info.value), str(info.value)


def test_scoring_script_answers(emu: AzureMLEmulator, automl_dir: Path, dev_images: list[Path]) -> None:
    answers = iter(
        [
            Response(424, b'{"message": "An unexpected error occurred in scoring script"}'),
            Response(413, b"Request Entity Too Large"),
            # A score.py returning json.dumps(result) is JSON-encoded twice by the inference server.
            Response.json(json.dumps([{"probs": [0.1, 0.2, 0.1, 0.1, 0.2, 0.2, 0.1], "labels": AUTOML_NAMES}])),
            Response.json([{"probs": [0.5], "labels": ["melanoma", "extra"]}]),
        ]
    )
    emu.add_deployment("scripted", respond=lambda body: next(answers))
    with azure_ml_backend_for(emu, deployment="scripted", retry=RetryPolicy(sleep=lambda s: None)) as clf:
        with pytest.raises(ServiceError, match="scoring script failed") as info:
            clf.predict(dev_images[0])
        assert not info.value.retryable and info.value.status == 424
        with pytest.raises(PayloadTooLargeError, match="images_per_request"):
            clf.predict(dev_images[0])
        assert clf.predict(dev_images[0]).probabilities["mel"] == pytest.approx(0.2)
        with pytest.raises(InvalidResponseError, match="same length"):
            clf.predict(dev_images[0])
    assert len(emu.requests) == 4


def test_retry_after_parsing() -> None:
    assert retry_after_seconds("2.5") == 2.5
    assert retry_after_seconds(None) is None and retry_after_seconds("soon") is None
    future = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 30))
    assert 25 <= (retry_after_seconds(future) or 0) <= 31


# --- auth modes -----------------------------------------------------------------------------------------------------


class CountingCredential:
    """An azure-identity style credential that counts token requests."""

    def __init__(self, token: str, lifetime: float) -> None:
        self.token, self.lifetime, self.calls, self.scopes = token, lifetime, 0, []

    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        from azure.core.credentials import AccessToken

        self.calls += 1
        self.scopes.extend(scopes)
        return AccessToken(self.token, int(time.time() + self.lifetime))


def test_entra_tokens_are_cached_until_near_expiry(automl_dir: Path, dev_images: list[Path]) -> None:
    with AzureMLEmulator(automl_dir, auth_mode="aad_token") as emulator:
        long_lived = CountingCredential("emulator-aad-token", 3600)
        with azure_ml_backend_for(emulator, credential=long_lived) as clf:
            for _ in range(3):
                clf.predict(dev_images[0])
        assert long_lived.calls == 1 and long_lived.scopes == ["https://ml.azure.com/.default"]
        short_lived = CountingCredential("emulator-aad-token", 60)  # inside the 5-minute renewal margin
        with azure_ml_backend_for(emulator, credential=short_lived) as clf:
            for _ in range(3):
                clf.predict(dev_images[0])
        assert short_lived.calls == 3
        clf = azure_ml_backend_for(emulator, token_provider=lambda: "not-issued")
        with clf, pytest.raises(AuthenticationError):
            clf.predict(dev_images[0])


def test_failing_credential_is_an_authentication_error(emu: AzureMLEmulator, dev_images: list[Path]) -> None:
    def broken() -> str:
        raise RuntimeError("no az login session")

    with azure_ml_backend_for(emu, token_provider=broken) as clf, pytest.raises(AuthenticationError, match="az login"):
        clf.predict(dev_images[0])
    assert emu.requests == []


def test_configuration_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AZUREML_ENDPOINT_KEY", raising=False)
    monkeypatch.delenv("AZUREML_SCORING_URI", raising=False)
    with pytest.raises(ConfigError, match="AZUREML_SCORING_URI"):
        AzureMlClassifier(key="k")
    with pytest.raises(ConfigError, match="exactly one of key="):
        AzureMlClassifier("https://derm.westeurope.inference.ml.azure.com/score")
    with pytest.raises(ConfigError, match="got key, token_provider"):
        AzureMlClassifier("https://x/score", key="k", token_provider=lambda: "t")
    with pytest.raises(ConfigError, match="images_per_request"):
        AzureMlClassifier("https://x/score", key="k", images_per_request=0)
    monkeypatch.setenv("AZUREML_ENDPOINT_KEY", "env-secret-key")
    clf = derm_cloud.create(
        "azure-ml", scoring_uri="https://derm.westeurope.inference.ml.azure.com/score", instance_type="Standard_F4s_v2"
    )
    info = clf.describe()
    assert (info.region, clf.endpoint_name, info.emulated) == ("westeurope", "derm", False)
    assert info.billing == {
        "sku": "azure.ml.online.Standard_F4s_v2",
        "instance_type": "Standard_F4s_v2",
        "instances": 1,
        "unit": "instance-hour",
    }
    assert "env-secret-key" not in repr(clf) + str(info)
    clf.close()


def test_key_is_never_logged(emu: AzureMLEmulator, dev_images: list[Path], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with azure_ml_backend_for(emu) as clf:
        clf.predict(dev_images[0])
        shown = repr(clf) + str(clf.describe())
    assert DEFAULT_ENDPOINT_KEY not in caplog.text + shown and "<redacted>" in shown


# --- the real azure-ai-ml SDK against the management routes ------------------------------------------------------


def test_sdk_invoke_answers_like_the_backend(emu: AzureMLEmulator, dev_images: list[Path], tmp_path: Path) -> None:
    import base64

    ml = ml_client_for(emu)
    request_file = tmp_path / "request.json"
    b64 = base64.b64encode(dev_images[0].read_bytes()).decode()
    request_file.write_text(json.dumps({"input_data": {"columns": ["image"], "data": [b64]}}))
    answer = json.loads(
        ml.online_endpoints.invoke(
            endpoint_name=emu.endpoint_name, request_file=str(request_file), deployment_name="green"
        )
    )
    assert [r.method for r in emu.requests] == ["GET", "GET", "POST", "POST"]  # deployments, endpoint, keys, score
    assert emu.calls[-1].deployment == "green"
    with azure_ml_backend_for(emu, deployment="green") as clf:
        pred = clf.predict(dev_images[0])
    assert np.allclose(answer[0]["probs"], [s.score for s in pred.provider_scores], atol=1e-9)


def test_from_workspace_resolves_uri_key_and_sku(emu: AzureMLEmulator, dev_images: list[Path]) -> None:
    ml = ml_client_for(emu)
    with AzureMlClassifier.from_workspace(emu.endpoint_name, ml_client=ml, images_per_request=2) as clf:
        assert clf.scoring_uri == emu.scoring_uri
        info = clf.describe()
        assert info.billing["sku"] == "azure.ml.online.Standard_DS3_v2" and info.region == "westeurope"
        emu.reset()
        clf.predict_batch(dev_images[:2])
    assert [r.path for r in emu.requests] == ["/score"]  # the SDK is not on the hot path
    with pytest.raises(NotFoundError, match="no-such-endpoint"):
        AzureMlClassifier.from_workspace("no-such-endpoint", ml_client=ml)


def test_from_workspace_with_aml_tokens(automl_dir: Path, dev_images: list[Path]) -> None:
    with AzureMLEmulator(automl_dir, auth_mode="aml_token") as emulator:
        with AzureMlClassifier.from_workspace(emulator.endpoint_name, ml_client=ml_client_for(emulator)) as clf:
            for _ in range(3):
                clf.predict(dev_images[0])
        assert len(emulator.requests_to("/token")) == 1  # refreshed only after refreshAfterTimeUtc
        assert len(emulator.requests_to("/score")) == 3


@pytest.mark.slow
def test_sklesion_behind_both_azure_emulators_matches_local(sklesion_model_dir: Path, dev_images: list[Path]) -> None:
    images = dev_images[:4]
    metas = [{"age": r["age"] or None, "sex": r["sex"], "site": r["localization"]} for r in dev_rows(4)]
    with local(sklesion_model_dir) as on_machine, AzureMLEmulator(sklesion_model_dir) as aml:
        expected = on_machine.predict_batch(images, metas)
        without_meta = on_machine.predict_batch(images)
        with azure_ml_backend_for(aml, send_metadata=True, images_per_request=4) as clf:
            hosted = clf.predict_batch(images, metas)
        with CustomVisionEmulator(sklesion_model_dir) as cv, custom_vision_backend_for(cv) as on_cv:
            tagged = on_cv.predict_batch(images, metas)  # Custom Vision takes pixels only
    for a, b in zip(expected, hosted, strict=True):
        assert np.allclose(a.vector(), b.vector(), atol=1e-6)
    for a, c in zip(without_meta, tagged, strict=True):
        assert np.allclose(a.vector(), c.vector(), atol=1e-6)
