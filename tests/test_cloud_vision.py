"""The ``google-vision`` baseline against the Cloud Vision emulator, through the real google-cloud-vision SDK (REST).

Images: HAM10000 (Tschandl et al. 2018, CC BY-NC 4.0), read from shared/data.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import derm_cloud
from derm_cloud.backends.gcp_vision import GcpVisionClassifier, _image_error
from derm_cloud.errors import (
    AuthenticationError,
    ConfigError,
    InvalidResponseError,
    ServiceError,
    ThrottledError,
)
from derm_cloud.images import metadata_markers
from derm_cloud.retry import RetryPolicy
from derm_cloud.testing.emulators.base import Fault
from derm_cloud.testing.emulators.cloud_vision import CloudVisionEmulator, cloud_vision_backend_for, label_scores

KNOWN = {"Skin", "Mole", "Brown", "Pink", "Close-up", "Pattern"}


@pytest.fixture(scope="module")
def emu() -> Iterator[CloudVisionEmulator]:
    with CloudVisionEmulator() as emulator:
        yield emulator


@pytest.fixture(autouse=True)
def _clean(emu: CloudVisionEmulator) -> None:
    emu.reset()


def no_retry() -> RetryPolicy:
    return RetryPolicy(max_attempts=1)


def test_predictions_are_unmapped_generic_labels(emu: CloudVisionEmulator, dev_images: list[Path]) -> None:
    with cloud_vision_backend_for(emu) as clf:
        first = clf.predict(dev_images[0])
        again = clf.predict(dev_images[0])
        other = clf.predict(dev_images[3])
    assert first.mapped is False and first.probabilities == {} and first.label is None
    labels = [s.label for s in first.provider_scores]
    assert labels and set(labels) <= KNOWN
    scores = [s.score for s in first.provider_scores]
    assert scores == sorted(scores, reverse=True) and all(0.5 <= s <= 1.0 for s in scores)
    assert first.provider_scores == again.provider_scores  # deterministic
    assert first.provider_scores != other.provider_scores  # but computed from the image
    assert first.extra["baseline_only"] is True


def test_request_shape_and_max_results(emu: CloudVisionEmulator, dev_images: list[Path]) -> None:
    with cloud_vision_backend_for(emu, max_results=2) as clf:
        pred = clf.predict(dev_images[0])
    assert len(pred.provider_scores) == 2
    (req,) = emu.requests
    assert req.method == "POST" and req.path.startswith("/v1/images:annotate")
    body = req.json()
    (request,) = body["requests"]
    # The REST transport sends enums as numbers (enum-encoding=int): 4 is LABEL_DETECTION.
    assert request["features"] == [{"type": 4, "maxResults": 2}]
    assert base64.b64decode(request["image"]["content"])[:2] == b"\xff\xd8"


def test_no_exif_or_gps_reaches_cloud_vision(emu: CloudVisionEmulator, dev_images: list[Path]) -> None:
    exif = Image.Exif()
    exif[0x8825] = {1: "N", 2: (48.0, 12.0, 30.0)}
    buf = io.BytesIO()
    Image.open(dev_images[0]).save(buf, "JPEG", exif=exif.tobytes())
    assert {"exif", "gps"} <= metadata_markers(buf.getvalue())
    with cloud_vision_backend_for(emu) as clf:
        clf.predict(buf.getvalue())
    sent = base64.b64decode(emu.requests[-1].json()["requests"][0]["image"]["content"])
    assert metadata_markers(sent) == frozenset()
    assert emu.last_image_bytes == sent


def test_describe_reports_a_baseline(emu: CloudVisionEmulator) -> None:
    with cloud_vision_backend_for(emu) as clf:
        info = clf.describe()
    assert info.labels_mapped is False and info.provider == "gcp"
    assert info.billing["sku"] == "gcp.vision.label_detection"
    assert info.model_facts["baseline_only"] is True
    assert info.emulated and info.data_leaves_machine


def test_api_key_is_sent_checked_and_redacted(dev_images: list[Path]) -> None:
    with CloudVisionEmulator(api_key="vision-key-123") as emu:
        with cloud_vision_backend_for(emu) as clf:
            assert clf.predict(dev_images[0]).provider_scores
        assert emu.requests[-1].header("x-goog-api-key") == "<redacted:14 chars>"
        wrong = cloud_vision_backend_for(emu, api_key="wrong", retry=no_retry())
        with wrong, pytest.raises(AuthenticationError, match="API key"):
            wrong.predict(dev_images[0])
        anonymous = GcpVisionClassifier(api_endpoint=emu.url, credentials=_anonymous(), retry=no_retry())
        with anonymous, pytest.raises(AuthenticationError) as info:
            anonymous.predict(dev_images[0])
        assert info.value.status == 403


def test_throttling_is_retried(emu: CloudVisionEmulator, dev_images: list[Path]) -> None:
    sleeps: list[float] = []
    emu.inject(Fault("throttle", retry_after=0.5))
    with cloud_vision_backend_for(emu, retry=RetryPolicy(max_attempts=3, sleep=sleeps.append)) as clf:
        assert clf.predict(dev_images[0]).attempts == 2
    assert sleeps == [0.5]


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        (Fault("error", status=503), ServiceError),
        (Fault("throttle"), ThrottledError),
        (Fault("malformed"), InvalidResponseError),
        (Fault("truncated"), ServiceError),  # cut off in transit: retryable, like every backend
    ],
)
def test_faults_are_translated(
    emu: CloudVisionEmulator, dev_images: list[Path], fault: Fault, error: type[Exception]
) -> None:
    emu.inject(fault)
    with cloud_vision_backend_for(emu, retry=no_retry()) as clf, pytest.raises(error):
        clf.predict(dev_images[0])


def test_emulator_reports_bad_image_data_per_image(emu: CloudVisionEmulator) -> None:
    from google.cloud import vision

    client = vision.ImageAnnotatorClient(
        transport="rest", credentials=_anonymous(), client_options={"api_endpoint": emu.url}
    )
    response = client.label_detection(image=vision.Image(content=b"not an image"), retry=None, timeout=5)
    assert response.error.code == 3 and response.error.message == "Bad image data."
    client.transport.close()


def test_per_image_errors_map_to_typed_errors() -> None:
    bad = _image_error(3, "Bad image data.")
    assert isinstance(bad, ServiceError) and not bad.retryable and "JPEG or PNG" in str(bad)
    assert _image_error(14, "try later").retryable
    assert isinstance(_image_error(8, "quota"), ThrottledError)


def test_label_scores_follow_the_image() -> None:
    skin = np.full((64, 64, 3), (224, 172, 140), np.uint8)
    mole = skin.copy()
    mole[20:44, 20:44] = (70, 45, 30)
    plain, spotted = label_scores(skin), label_scores(mole)
    assert plain["Skin"] > 0.95
    assert spotted["Mole"] > plain["Mole"] + 0.3
    assert all(0.0 <= v <= 1.0 for v in spotted.values())


def test_configuration_errors() -> None:
    with pytest.raises(ConfigError, match="either"):
        GcpVisionClassifier(api_key="k", credentials=_anonymous())
    with pytest.raises(ConfigError, match="max_results"):
        GcpVisionClassifier(max_results=0, credentials=_anonymous())


def test_created_by_registry_name(emu: CloudVisionEmulator, dev_images: list[Path]) -> None:
    with derm_cloud.create("google-vision", api_endpoint=emu.url, credentials=_anonymous()) as clf:
        assert clf.predict(dev_images[0]).mapped is False


def _anonymous() -> object:
    from google.auth.credentials import AnonymousCredentials

    return AnonymousCredentials()


def test_injected_client_stays_open_after_close(
    emu: CloudVisionEmulator, dev_images: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from google.cloud import vision

    client = vision.ImageAnnotatorClient(
        transport="rest", credentials=_anonymous(), client_options={"api_endpoint": emu.url}
    )
    closes: list[str] = []
    real_close = client.transport.close
    # A closed requests session still reconnects, so count close() calls instead of relying on a failure.
    monkeypatch.setattr(client.transport, "close", lambda: closes.append("closed"))
    try:
        with GcpVisionClassifier(client=client, api_endpoint=emu.url) as clf:
            first = clf.predict(dev_images[0])
        assert closes == []
        with GcpVisionClassifier(client=client, api_endpoint=emu.url) as again:
            assert again.predict(dev_images[0]).provider_scores == first.provider_scores
        assert closes == []
    finally:
        real_close()
    owned = cloud_vision_backend_for(emu)
    owned_closes: list[str] = []
    real_owned_close = owned._client.transport.close
    monkeypatch.setattr(owned._client.transport, "close", lambda: (owned_closes.append("closed"), real_owned_close()))
    owned.close()
    assert owned_closes == ["closed"]  # a client the classifier built is closed with it


def test_programming_errors_are_not_disguised_as_service_errors(
    emu: CloudVisionEmulator, dev_images: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    with cloud_vision_backend_for(emu, retry=no_retry()) as clf:

        def broken(**_: object) -> None:
            raise KeyError("a bug in our own code")

        monkeypatch.setattr(clf._client, "label_detection", broken)
        with pytest.raises(KeyError, match="a bug in our own code"):
            clf.predict(dev_images[0])
