"""For CI: test your app against derm-cloud's shipped cloud emulators, including a throttling fault.

Copy this file next to your app's tests. It drives the triage service of ``app_service.py`` (replace it with
your own app) through FastAPI's TestClient, with the primary backend pointed at the SageMaker emulator from
``derm_cloud.testing`` (real boto3 on 127.0.0.1, no credentials, no cloud bill) and a tiny ONNX model built at
test time (swap in your model directory). Faults are injected into the emulator to check what your app does
when the cloud throttles, fails or is slow::

    pytest examples/test_ci_example.py -q

Needs ``pip install 'derm-cloud[sagemaker,onnx,emulators,demo]' pytest``.
"""

from __future__ import annotations

import io
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the app under test sits next to this file

from app_service import Triage, create_app

import derm_cloud
from derm_cloud.testing.emulators.base import Fault
from derm_cloud.testing.emulators.sagemaker import SageMakerRuntimeEmulator, sagemaker_backend_for
from derm_cloud.testing.tiny_models import build_tiny_onnx_model


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Your CI would use its own model directory (model.onnx + spec.json); this one is built in milliseconds.
    return build_tiny_onnx_model(tmp_path_factory.mktemp("model") / "tiny")


@pytest.fixture(scope="module")
def lesion_jpeg() -> bytes:
    """A synthetic 128x128 JPEG (a dark blob on skin tone); use a few real images from your own test set."""
    from PIL import Image

    yy, xx = np.mgrid[0:128, 0:128]
    blob = np.exp(-((yy - 64) ** 2 + (xx - 60) ** 2) / 600.0)[..., None]
    pixels = (np.array([225, 180, 160]) * (1 - 0.7 * blob)).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=92)
    return buf.getvalue()


@pytest.fixture
def emulator(model_dir: Path) -> Iterator[SageMakerRuntimeEmulator]:
    with SageMakerRuntimeEmulator() as emu:
        emu.add_endpoint("derm-triage", model_dir)
        yield emu


@pytest.fixture
def client(emulator: SageMakerRuntimeEmulator, model_dir: Path) -> Iterator[Any]:
    from fastapi.testclient import TestClient

    retry = derm_cloud.RetryPolicy(max_attempts=2, base_delay=0.01, max_delay=0.05, deadline=1.5)
    primary = sagemaker_backend_for(emulator, "derm-triage", retry=retry, read_timeout=2.0)
    fallback = derm_cloud.create("local-onnx", model_dir=str(model_dir))
    with primary, fallback, TestClient(create_app(Triage(primary, fallback, deadline_s=3.0))) as test_client:
        # The app's start-up check has sent its one probe image to each deployment; each test counts from here.
        emulator.reset()
        yield test_client


def _post(client: Any, image: bytes) -> Any:
    return client.post("/v1/classify", files={"image": ("lesion.jpg", image, "image/jpeg")}, data={"age": "52"})


def test_the_primary_answers_with_a_referral_decision(client: Any, emulator: Any, lesion_jpeg: bytes) -> None:
    reply = _post(client, lesion_jpeg)
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["served_by"] == "primary" and body["prediction"]["backend"] == "sagemaker"
    assert abs(sum(body["prediction"]["probabilities"].values()) - 1.0) < 1e-5
    assert isinstance(body["referral"]["refer"], bool) and "clinician reviews every result" in body["note"]
    assert len(emulator.requests_to("/invocations")) == 1


def test_one_throttle_is_retried_by_the_primary(client: Any, emulator: Any, lesion_jpeg: bytes) -> None:
    emulator.inject(Fault("throttle", times=1, retry_after=0.05))
    body = _post(client, lesion_jpeg).json()
    assert body["served_by"] == "primary" and body["prediction"]["attempts"] == 2


def test_persistent_throttling_falls_back_within_the_deadline(client: Any, emulator: Any, lesion_jpeg: bytes) -> None:
    emulator.inject(Fault("throttle", times=10, retry_after=0.05))
    reply = _post(client, lesion_jpeg)
    assert reply.status_code == 200
    body = reply.json()
    assert body["served_by"] == "fallback" and body["prediction"]["backend"] == "local-onnx"
    assert "ThrottledError" in body["fallback_reason"]
    assert body["elapsed_ms"] < body["deadline_ms"]


def test_a_slow_primary_is_cut_off_by_the_deadline(client: Any, emulator: Any, lesion_jpeg: bytes) -> None:
    emulator.inject(Fault("slow", times=2, delay=2.5))
    body = _post(client, lesion_jpeg).json()
    assert body["served_by"] == "fallback"
    assert body["elapsed_ms"] < body["deadline_ms"]


def test_a_bad_upload_never_reaches_the_cloud(client: Any, emulator: Any) -> None:
    reply = _post(client, b"%PDF-1.7 not an image")
    assert reply.status_code == 400 and "not a usable image" in reply.json()["detail"]
    assert emulator.requests_to("/invocations") == []
