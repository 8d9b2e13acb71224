"""The ``rekognition-custom-labels`` backend against its emulator, through real boto3.

The emulator hosts a tiny real model with tags named as a person names them at training, so label mapping, the
0-100 confidence scale, the model lifecycle and the 4.0 MB image limit are exercised end to end.
Images: HAM10000 (Tschandl et al. 2018, CC BY-NC 4.0), read from shared/data, never copied.
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

import derm_cloud
from derm_cloud.backends.aws_rekognition import MAX_IMAGE_BYTES, AwsRekognitionClassifier, project_version_status
from derm_cloud.compare.run.prices import PriceCatalogue
from derm_cloud.errors import ConfigError, DeadlineExceededError, ModelNotReadyError, NotFoundError, ThrottledError
from derm_cloud.images import metadata_markers
from derm_cloud.retry import RetryPolicy
from derm_cloud.testing.emulators.base import Fault
from derm_cloud.testing.emulators.rekognition import RekognitionEmulator, rekognition_backend_for

TAGS = {"mel": "Melanoma", "nv": "Melanocytic nevus", "bcc": "Basal cell carcinoma", "vasc": "Vascular lesion"}


@pytest.fixture(scope="module")
def emu(tiny_model_dir: Path) -> Iterator[RekognitionEmulator]:
    with RekognitionEmulator(tiny_model_dir, label_names=TAGS, start_seconds=0.2) as emulator:
        yield emulator


@pytest.fixture(autouse=True)
def _clean(emu: RekognitionEmulator) -> Iterator[None]:
    emu.reset()
    yield
    emu.version.status, emu.version.next_status = "RUNNING", None


def test_matches_local_onnx_on_real_images(
    emu: RekognitionEmulator, tiny_model_dir: Path, dev_images: list[Path]
) -> None:
    with rekognition_backend_for(emu) as clf, derm_cloud.create("local-onnx", model_dir=tiny_model_dir) as local:
        for path in dev_images[:4]:
            cloud, home = clf.predict(path), local.predict(path)
            gap = max(abs(cloud.probabilities[c] - home.probabilities[c]) for c in home.probabilities)
            # Confidences travel as float32 percentages: 1e-6 absolute is their resolution.
            assert gap < 1e-5, (path.name, gap)
            assert {s.label for s in cloud.provider_scores} >= set(TAGS.values())
        body = emu.requests_to("/")[-1].json()
        assert body["MinConfidence"] == 0.0  # every label comes back, so the distribution is complete
        assert not metadata_markers(emu.last_image_bytes or b"") & {"exif", "gps"}


def test_a_stopped_model_is_a_clear_final_error_and_starting_it_works(
    emu: RekognitionEmulator, dev_images: list[Path]
) -> None:
    client = emu.runtime_client()
    client.stop_project_version(ProjectVersionArn=emu.project_version_arn)
    with rekognition_backend_for(emu, retry=RetryPolicy(max_attempts=3, base_delay=0.01)) as clf:
        with pytest.raises(ModelNotReadyError, match="start_project_version") as info:
            clf.predict(dev_images[0])
        assert info.value.retryable is False
        assert len(emu.requests_to("/")) == 2  # the stop, then one DetectCustomLabels: no retry of a stopped model
    time.sleep(0.25)
    assert project_version_status(client, emu.project_version_arn) == "STOPPED"
    with pytest.raises(ModelNotReadyError, match="STOPPED"):
        rekognition_backend_for(emu, check_running=True)
    client.start_project_version(ProjectVersionArn=emu.project_version_arn, MinInferenceUnits=2)
    assert project_version_status(client, emu.project_version_arn) == "STARTING"
    time.sleep(0.25)
    with rekognition_backend_for(emu, check_running=True, inference_units=2) as clf:
        assert clf.predict(dev_images[0]).top(1)
        assert clf.describe().billing == {"sku": "aws.rekognition.custom_labels.inference", "instances": 2}


def test_throughput_exceeded_is_retried(emu: RekognitionEmulator, dev_images: list[Path]) -> None:
    emu.inject(Fault("throttle"))
    with rekognition_backend_for(emu, retry=RetryPolicy(max_attempts=3, base_delay=0.01)) as clf:
        assert clf.predict(dev_images[0]).attempts == 2
    emu.inject(Fault("throttle", times=5))
    with rekognition_backend_for(emu, retry=RetryPolicy(max_attempts=1)) as clf, pytest.raises(ThrottledError):
        clf.predict(dev_images[0])


@pytest.mark.parametrize("client", ["injected", "built"])
@pytest.mark.parametrize("kind", ["slow", "drip"])
def test_read_timeout_bounds_every_attempt(
    emu: RekognitionEmulator, dev_images: list[Path], monkeypatch: pytest.MonkeyPatch, kind: str, client: str
) -> None:
    # An injected client keeps its own read timeout (10 s here), and an answer that drips in a byte at a time
    # never lets a socket read time out: read_timeout=1 must still end each attempt after about 1 s.
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "testing")
    where: dict[str, Any] = (
        {"client": emu.runtime_client(read_timeout=10.0)}
        if client == "injected"
        else {"client": None, "endpoint_url": emu.url}
    )
    retry = RetryPolicy(max_attempts=2, base_delay=0.0, deadline=30.0)
    with rekognition_backend_for(emu, read_timeout=1.0, retry=retry, **where) as clf:
        clf.predict(dev_images[0])  # warm: the first call's set-up is not what the timeout bounds
        emu.inject(Fault(kind, delay=4.0, times=2))
        start = time.monotonic()
        with pytest.raises(DeadlineExceededError, match=r"\b1 s\b") as info:
            clf.predict(dev_images[0])
        elapsed = time.monotonic() - start
    assert elapsed < 2 * 1.0 + 0.8, elapsed  # two attempts of ~1 s, not two of 4 s
    assert len(emu.requests_to("/")) == 3 and info.value.retryable


def test_large_photos_are_reencoded_under_the_decimal_4_mb_limit(emu: RekognitionEmulator) -> None:
    rng = np.random.default_rng(0)
    noisy = Image.fromarray(rng.integers(0, 255, (1500, 2000, 3), dtype=np.uint8))
    buf = io.BytesIO()
    noisy.save(buf, "PNG")
    assert len(buf.getvalue()) > 4_000_000
    with rekognition_backend_for(emu) as clf:
        clf.predict(buf.getvalue())
    sent = emu.last_image_bytes or b""
    assert 0 < len(sent) <= MAX_IMAGE_BYTES < 4_000_000


def test_configuration_mistakes_name_the_fix(emu: RekognitionEmulator) -> None:
    with pytest.raises(ConfigError, match="project version ARN"):
        AwsRekognitionClassifier("arn:aws:sagemaker:us-east-1:1:endpoint/x", client=emu.runtime_client())
    with pytest.raises(ConfigError, match="tags="):
        rekognition_backend_for(emu, min_confidence=40)
    with pytest.raises(ConfigError, match="between 0 and 100"):
        rekognition_backend_for(emu, min_confidence=0.5 * 300)
    wrong = emu.project_version_arn.replace("derm-cloud/version", "other/version")
    with AwsRekognitionClassifier(wrong, client=emu.runtime_client()) as clf, pytest.raises(NotFoundError):
        clf.predict(np.zeros((32, 32, 3), dtype=np.uint8))


def test_min_confidence_with_known_tags_counts_missing_labels_as_zero(
    emu: RekognitionEmulator, tiny_model_dir: Path, dev_images: list[Path]
) -> None:
    from derm_cloud.serving import ModelServer

    tags = [TAGS.get(label, label) for label in ModelServer(tiny_model_dir).labels]
    with rekognition_backend_for(emu, min_confidence=20, tags=tags) as clf:
        prediction = clf.predict(dev_images[0])
    assert all(p == 0.0 or p >= 0.2 - 1e-6 for p in prediction.probabilities.values())
    assert emu.requests_to("/")[-1].json()["MinConfidence"] == 20


def test_the_price_catalogue_knows_inference_units() -> None:
    entry = PriceCatalogue.load().lookup("aws.rekognition.custom_labels.inference", provider="aws")
    assert entry is not None and entry.basis == "instance_hour" and entry.always_on
    assert entry.price is not None and entry.price > 0 and "unverified" in entry.status
