"""The ``azure-custom-vision`` backend against the Custom Vision emulator, through the real msrest-based SDK.

Images: HAM10000 (Tschandl et al. 2018, CC BY-NC 4.0), read from shared/data.
"""

from __future__ import annotations

import functools
import http.server
import io
import logging
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image

import derm_cloud
from derm_cloud.backends import azure_custom_vision as cv_module
from derm_cloud.backends.azure_custom_vision import AzureCustomVisionClassifier
from derm_cloud.errors import (
    AuthenticationError,
    ConfigError,
    DeadlineExceededError,
    DermCloudDeprecationWarning,
    InvalidResponseError,
    ModelNotReadyError,
    NotFoundError,
    PayloadTooLargeError,
    ServiceError,
    ThrottledError,
    UnmappableLabelsError,
)
from derm_cloud.images import metadata_markers
from derm_cloud.retry import RetryPolicy
from derm_cloud.testing.emulators.azure_custom_vision import (
    DEFAULT_PREDICTION_KEY,
    CustomVisionEmulator,
    custom_vision_backend_for,
    parse_multipart,
)
from derm_cloud.testing.emulators.base import Fault

# Tag names a team might have typed when training, for the label_overrides tests.
TEAM_TAGS = {"akiec": "AK", "bcc": "BCC", "bkl": "Keratosis", "df": "DF", "mel": "MM", "nv": "Mole", "vasc": "Vascular"}


@pytest.fixture(scope="module")
def emu(tiny_model_dir: Path) -> Iterator[CustomVisionEmulator]:
    with CustomVisionEmulator(tiny_model_dir) as emulator:
        emulator.publish(tiny_model_dir, project_id="team-project", published_name="prod", tags=TEAM_TAGS)
        yield emulator


@pytest.fixture(autouse=True)
def _clean(emu: CustomVisionEmulator) -> None:
    emu.reset()


@pytest.fixture(scope="module")
def local(tiny_model_dir: Path) -> Iterator[derm_cloud.Classifier]:
    with derm_cloud.create("local-onnx", model_dir=tiny_model_dir) as clf:
        yield clf


def no_retry() -> RetryPolicy:
    return RetryPolicy(max_attempts=1)


def with_gps(path: Path) -> bytes:
    """The JPEG re-saved with an EXIF block holding GPS coordinates (what a phone photo carries)."""
    exif = Image.Exif()
    exif[0x010F] = "PhoneMaker"
    exif[0x8825] = {1: "N", 2: (48.0, 12.0, 30.0), 3: "E", 4: (11.0, 34.0, 0.0)}
    buf = io.BytesIO()
    Image.open(path).save(buf, "JPEG", exif=exif.tobytes(), quality=92)
    return buf.getvalue()


@functools.lru_cache(maxsize=1)
def big_png(path: Path, side: int = 1800) -> bytes:
    """A dev image upscaled with sensor-like noise: a PNG over 4 MiB (about 5 MiB)."""
    img = Image.open(path).convert("RGB").resize((side, side * 3 // 4))
    noise = np.random.default_rng(0).integers(-12, 12, size=(img.height, img.width, 3))
    arr = np.clip(np.asarray(img, dtype=np.int16) + noise, 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG", compress_level=1)
    return buf.getvalue()


# --- happy path and data handling ---------------------------------------------------------------------------------


def test_no_store_route_by_default_and_probabilities_equal_the_local_model(
    emu: CustomVisionEmulator, local: derm_cloud.Classifier, dev_images: list[Path]
) -> None:
    with custom_vision_backend_for(emu) as clf:
        pred = clf.predict(dev_images[0])
        assert clf.describe().stores_images is False
    expected = local.predict(dev_images[0])
    assert np.allclose(pred.vector(), expected.vector(), atol=1e-6)
    # Custom Vision sorts by probability; the provider scores are kept as the service returned them.
    scores = [s.score for s in pred.provider_scores]
    assert scores == sorted(scores, reverse=True)
    (request,) = emu.requests
    assert request.path.endswith("/classify/iterations/Iteration1/image/nostore")
    assert request.path.startswith("/customvision/v3.1/prediction/")
    assert request.header("Prediction-Key") == f"<redacted:{len(DEFAULT_PREDICTION_KEY)} chars>"
    assert emu.calls[0].via == "multipart" and emu.calls[0].stored is False
    assert emu.stored_images == 0
    assert pred.extra["stored"] is False and pred.extra["prediction_id"] == emu.calls[0].prediction_id
    assert pred.request_id and pred.attempts == 1


def test_stored_route_only_on_opt_in(emu: CustomVisionEmulator, dev_images: list[Path]) -> None:
    with custom_vision_backend_for(emu, store_images=True) as clf:
        clf.predict(dev_images[0])
        assert clf.describe().stores_images is True
        assert clf.describe().model_facts["route"] == "image"
    assert emu.requests[0].path.endswith("/image")
    assert emu.stored_images == 1


def test_gps_and_exif_never_reach_the_service(emu: CustomVisionEmulator, dev_images: list[Path]) -> None:
    photo = with_gps(dev_images[1])
    assert {"exif", "gps"} <= metadata_markers(photo)
    with custom_vision_backend_for(emu) as clf:
        clf.predict(photo)
    received = emu.calls[0].image
    assert metadata_markers(received) == frozenset()
    assert received.startswith(b"\xff\xd8")  # forwarded as the same JPEG, segments dropped


def test_oversized_image_is_reencoded_under_4_mb(emu: CustomVisionEmulator, dev_images: list[Path]) -> None:
    data = big_png(dev_images[2])
    assert len(data) > 4 * 1024 * 1024
    with custom_vision_backend_for(emu) as clf:
        pred = clf.predict(data)
    received = emu.calls[0].image
    assert len(received) <= 4_000_000 and received.startswith(b"\xff\xd8")
    assert pred.mapped and sum(pred.vector()) == pytest.approx(1.0, abs=1e-5)


def test_4_mb_is_decimal_on_both_sides(emu: CustomVisionEmulator, dev_images: list[Path]) -> None:
    # "4 MB" in the docs: 4,000,000 bytes. An image of 4.0-4.19 MB (under 4 MiB) must not slip through CI.
    # A PNG (sent as is: it is already metadata-free) between 4 MB and 4 MiB, less room for multipart framing.
    data = next(
        d for d in (big_png(dev_images[2], side=s) for s in range(1560, 1680, 4)) if 4_050_000 < len(d) < 4_150_000
    )
    assert cv_module.MAX_IMAGE_BYTES == emu.max_image_bytes == 4_000_000
    with custom_vision_backend_for(emu, max_image_bytes=4 * 1024 * 1024) as clf, pytest.raises(PayloadTooLargeError):
        clf.predict(data)  # a backend reading MB as MiB sends it; the emulator refuses it like the service may
    assert 4_000_000 < len(emu.requests[-1].body) - 1000 < 4 * 1024 * 1024  # (multipart framing < 1 kB)
    with custom_vision_backend_for(emu) as clf:
        assert clf.predict(data).mapped
    assert len(emu.calls[-1].image) <= 4_000_000


def test_service_size_refusal_becomes_payload_too_large(tiny_model_dir: Path, dev_images: list[Path]) -> None:
    buf = io.BytesIO()
    Image.open(dev_images[2]).save(buf, "PNG")
    png = buf.getvalue()
    assert len(png) > 100_000
    with CustomVisionEmulator(tiny_model_dir, max_image_bytes=100_000) as small:
        # A client limit above the service's sends the PNG as is; the service's 400 names the option to lower.
        clf = custom_vision_backend_for(small, retry=no_retry())
        with clf, pytest.raises(PayloadTooLargeError, match="lower max_image_bytes="):
            clf.predict(png)
        assert len(small.requests) == 1
        with custom_vision_backend_for(small, max_image_bytes=100_000) as fitted:
            fitted.predict(png)
        assert len(small.calls[-1].image) <= 100_000


def test_team_tag_names_map_through_label_overrides(
    emu: CustomVisionEmulator, local: derm_cloud.Classifier, dev_images: list[Path]
) -> None:
    overrides = {tag: code for code, tag in TEAM_TAGS.items()}
    with custom_vision_backend_for(
        emu, project_id="team-project", published_name="prod", label_overrides=overrides
    ) as clf:
        pred = clf.predict(dev_images[3])
    assert {s.label for s in pred.provider_scores} == set(TEAM_TAGS.values())
    assert np.allclose(pred.vector(), local.predict(dev_images[3]).vector(), atol=1e-6)
    assert pred.probabilities["nv"] == pytest.approx(dict((s.label, s.score) for s in pred.provider_scores)["Mole"])


def test_unmapped_tags_fail_with_the_fix(emu: CustomVisionEmulator, dev_images: list[Path]) -> None:
    clf = custom_vision_backend_for(emu, project_id="team-project", published_name="prod")
    with clf, pytest.raises(UnmappableLabelsError, match="label_overrides"):
        clf.predict(dev_images[0])
    with pytest.raises(UnmappableLabelsError):  # known tags: fails at construction, before any call
        custom_vision_backend_for(emu, tags=["Mole", "MM"])


def test_batch_keeps_order_with_concurrent_calls(emu: CustomVisionEmulator, dev_images: list[Path]) -> None:
    with custom_vision_backend_for(emu, concurrency=4) as clf:
        batch = clf.predict_batch(dev_images[:6])
        singles = [clf.predict(p) for p in dev_images[:6]]
    for a, b in zip(batch, singles, strict=True):
        assert np.allclose(a.vector(), b.vector(), atol=1e-9)
    assert len(emu.calls) == 12


def test_emulator_accepts_octet_stream_v30_and_url_routes(
    emu: CustomVisionEmulator, dev_images: list[Path], local: derm_cloud.Classifier
) -> None:
    base = f"{emu.url}/customvision/v3.0/prediction/{emu.project_id}/classify/iterations/Iteration1"
    headers = {"Prediction-Key": DEFAULT_PREDICTION_KEY, "Content-Type": "application/octet-stream"}
    answer = requests.post(f"{base}/image/nostore", data=dev_images[0].read_bytes(), headers=headers, timeout=10)
    assert answer.status_code == 200 and emu.calls[-1].via == "octet-stream"
    top = max(answer.json()["predictions"], key=lambda p: p["probability"])
    assert top["tagName"] == local.predict(dev_images[0]).label

    # The URL route through the real SDK, with the image served from a local folder.
    from azure.cognitiveservices.vision.customvision.prediction import CustomVisionPredictionClient
    from msrest.authentication import ApiKeyCredentials

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(dev_images[0].parent))
    handler.log_message = lambda *a: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        client = CustomVisionPredictionClient(
            emu.url, ApiKeyCredentials(in_headers={"Prediction-key": DEFAULT_PREDICTION_KEY})
        )
        url = f"http://127.0.0.1:{server.server_address[1]}/{dev_images[0].name}"
        result = client.classify_image_url_with_no_store(emu.project_id, "Iteration1", url)
    finally:
        server.shutdown()
        server.server_close()
    assert emu.calls[-1].via == "url" and emu.calls[-1].stored is False
    assert max(result.predictions, key=lambda p: p.probability).tag_name == top["tagName"]


def test_multipart_parser_is_byte_exact() -> None:
    payload = b"\x00\xff--xyz\r\n--xy\r\n\r\nbinary"  # looks like delimiters but is not one
    body = (
        b'--xyz\r\nContent-Disposition: form-data; name="imageData"\r\n\r\n' + payload + b"\r\n"
        b'--xyz\r\nContent-Disposition: form-data; name="other"\r\n\r\nv\r\n--xyz--\r\n'
    )
    assert parse_multipart(body, 'multipart/form-data; boundary="xyz"') == {"imageData": payload, "other": b"v"}
    with pytest.raises(ValueError, match="boundary"):
        parse_multipart(body, "multipart/form-data")


# --- errors and retries --------------------------------------------------------------------------------------------


def test_429_is_retried_honouring_retry_after(emu: CustomVisionEmulator, dev_images: list[Path]) -> None:
    slept: list[float] = []
    emu.inject(Fault("throttle", times=2, retry_after=0.25))
    with custom_vision_backend_for(emu, retry=RetryPolicy(max_attempts=4, sleep=slept.append)) as clf:
        pred = clf.predict(dev_images[0])
    assert slept == [0.25, 0.25]
    assert pred.attempts == 3 and len(emu.requests) == 3


def test_throttle_error_carries_retry_after(emu: CustomVisionEmulator, dev_images: list[Path]) -> None:
    emu.inject(Fault("throttle", retry_after=7))
    with custom_vision_backend_for(emu, retry=no_retry()) as clf, pytest.raises(ThrottledError) as info:
        clf.predict(dev_images[0])
    assert info.value.retry_after == 7 and info.value.status == 429 and info.value.retryable


def test_5xx_and_cold_model_are_retried(emu: CustomVisionEmulator, dev_images: list[Path]) -> None:
    slept: list[float] = []
    emu.inject(Fault("error", status=503))
    emu.inject(Fault("not_ready"))
    with custom_vision_backend_for(emu, retry=RetryPolicy(max_attempts=3, sleep=slept.append, seed=1)) as clf:
        assert clf.predict(dev_images[0]).attempts == 3
    emu.inject(Fault("not_ready"))
    with custom_vision_backend_for(emu, retry=no_retry()) as clf, pytest.raises(ModelNotReadyError):
        clf.predict(dev_images[0])
    assert len(slept) == 2


def test_wrong_key_is_not_retried_and_names_the_setting(emu: CustomVisionEmulator, dev_images: list[Path]) -> None:
    secret = "not-the-right-key-1234"
    with custom_vision_backend_for(emu, prediction_key=secret) as clf, pytest.raises(AuthenticationError) as info:
        clf.predict(dev_images[0])
    assert "prediction_key=" in str(info.value) and "Access denied" in str(info.value)
    assert info.value.status == 401 and not info.value.retryable
    assert secret not in str(info.value)
    assert len(emu.requests) == 1


def test_unknown_project_and_iteration_are_not_found(emu: CustomVisionEmulator, dev_images: list[Path]) -> None:
    for options in ({"project_id": "no-such-project"}, {"published_name": "Iteration9"}):
        with custom_vision_backend_for(emu, **options) as clf, pytest.raises(NotFoundError, match="published_name="):
            clf.predict(dev_images[0])
    assert len(emu.requests) == 2


def test_bad_bodies_are_invalid_responses(emu: CustomVisionEmulator, dev_images: list[Path]) -> None:
    # A cut-off body is a retryable ServiceError like in every backend (tests/conformance/test_remote_faults.py).
    emu.inject(Fault("malformed"))
    with custom_vision_backend_for(emu) as clf, pytest.raises(InvalidResponseError):
        clf.predict(dev_images[0])
    assert len(emu.requests) == 1  # not retried: the same call would parse the same way


def test_timeout_and_unreachable_endpoint(emu: CustomVisionEmulator, dev_images: list[Path]) -> None:
    emu.inject(Fault("timeout", delay=1.0))
    with custom_vision_backend_for(emu, timeout=0.2, retry=no_retry()) as clf, pytest.raises(DeadlineExceededError):
        clf.predict(dev_images[0])
    with socket_closed_port() as port:
        clf = AzureCustomVisionClassifier(
            "p", "i", endpoint=f"http://127.0.0.1:{port}", prediction_key="k", retry=no_retry()
        )
        with clf, pytest.raises(ServiceError, match="cannot reach") as info:
            clf.predict(dev_images[0])
    assert info.value.retryable


class socket_closed_port:  # noqa: N801 - used as a context manager like a function
    """A loopback port with nothing listening (bound, then closed)."""

    def __enter__(self) -> int:
        import socket

        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        self.port = int(s.getsockname()[1])
        s.close()
        return self.port

    def __exit__(self, *exc: object) -> None:
        return None


# --- configuration, secrets, deprecation ------------------------------------------------------------------------------


def test_key_is_never_logged_nor_shown(
    emu: CustomVisionEmulator, dev_images: list[Path], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with custom_vision_backend_for(emu) as clf:
        clf.predict(dev_images[0])
        text = repr(clf) + str(clf.describe())
    assert DEFAULT_PREDICTION_KEY not in caplog.text
    assert DEFAULT_PREDICTION_KEY not in text and "<redacted>" in text
    assert not hasattr(clf, "prediction_key")


def test_missing_settings_name_the_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VISION_PREDICTION_KEY", raising=False)
    monkeypatch.delenv("VISION_PREDICTION_ENDPOINT", raising=False)
    with pytest.raises(ConfigError, match="VISION_PREDICTION_ENDPOINT"):
        AzureCustomVisionClassifier("p", "i", prediction_key="k")
    with pytest.raises(ConfigError, match="VISION_PREDICTION_KEY"):
        AzureCustomVisionClassifier("p", "i", endpoint="https://westeurope.api.cognitive.microsoft.com")
    monkeypatch.setenv("VISION_PREDICTION_KEY", "from-env")
    clf = derm_cloud.create(
        "azure-custom-vision",
        project_id="p",
        published_name="i",
        endpoint="https://westeurope.api.cognitive.microsoft.com/",
    )
    info = clf.describe()
    assert info.region == "westeurope" and info.emulated is False and info.provider == "azure"
    assert info.billing["sku"] == "azure.custom_vision.s0.prediction"
    clf.close()


def test_retirement_warning_is_emitted_once_per_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cv_module, "_warned", False)
    real = {"endpoint": "https://westeurope.api.cognitive.microsoft.com", "prediction_key": "k"}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        AzureCustomVisionClassifier("p", "i", **real).close()  # builds the SDK client; calls nothing
        AzureCustomVisionClassifier("p", "i", **real).close()
    ours = [w for w in caught if issubclass(w.category, DermCloudDeprecationWarning)]
    assert len(ours) == 1
    message = str(ours[0].message)
    assert "2028-09-25" in message and "azure-ml" in message and "local-onnx" in message
    assert issubclass(DermCloudDeprecationWarning, FutureWarning)
    assert ours[0].filename == __file__  # points at the caller's line, not at derm-cloud internals


def test_a_backend_on_an_emulator_does_not_warn_about_the_retirement(
    emu: CustomVisionEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The warning is for code that calls the real service; a test double on 127.0.0.1 (the pytest fixture, an
    # emulated comparison row) must stay quiet, or `pytest -W error` fails on derm-cloud's own fixture.
    monkeypatch.setattr(cv_module, "_warned", False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        custom_vision_backend_for(emu).close()
    assert cv_module._warned is False  # still armed for the first real endpoint
