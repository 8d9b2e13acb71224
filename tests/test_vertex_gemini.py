"""The ``vertex-gemini`` zero-shot baseline against its emulator, through the real ``google-genai`` SDK.

The emulator hosts a tiny real model, so the "self-reported" numbers are that model's probabilities rounded the
way an LLM writes them. Images: HAM10000 (Tschandl et al. 2018, CC BY-NC 4.0), read from shared/data.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest

import derm_cloud
from derm_cloud.backends.gcp_gemini import GcpGeminiClassifier
from derm_cloud.compare.run.prices import PriceCatalogue
from derm_cloud.errors import AuthenticationError, InvalidResponseError, NotFoundError, ServiceError, ThrottledError
from derm_cloud.images import metadata_markers
from derm_cloud.retry import RetryPolicy
from derm_cloud.taxonomy import CLASS_CODES
from derm_cloud.testing.emulators.base import Fault
from derm_cloud.testing.emulators.gemini import GeminiEmulator, gemini_backend_for, gemini_image_tokens


@pytest.fixture(scope="module")
def emu(tiny_model_dir: Path) -> Iterator[GeminiEmulator]:
    with GeminiEmulator(tiny_model_dir) as emulator:
        yield emulator


@pytest.fixture(autouse=True)
def _clean(emu: GeminiEmulator) -> None:
    emu.reset()
    emu.finish_reason = None
    emu.scripted_text = None


def test_scores_are_the_hosted_models_rounded_and_renormalised(
    emu: GeminiEmulator, tiny_model_dir: Path, dev_images: list[Path]
) -> None:
    with gemini_backend_for(emu) as clf, derm_cloud.create("local-onnx", model_dir=tiny_model_dir) as local:
        prediction, truth = clf.predict(dev_images[0]), local.predict(dev_images[0])
    reported = prediction.extra["self_reported"]
    assert set(reported) == set(CLASS_CODES)
    assert all(abs(reported[c] - round(truth.probabilities[c], 2)) < 1e-9 for c in CLASS_CODES)
    assert abs(sum(prediction.probabilities.values()) - 1) < 1e-9
    assert prediction.extra["calibrated"] is False
    assert prediction.extra["prompt_tokens"] > gemini_image_tokens(600, 450)
    body = emu.requests[-1].json()
    config = body["generationConfig"]
    assert config["responseMimeType"] == "application/json"
    assert config["responseJsonSchema"]["required"] == list(CLASS_CODES)
    assert config["temperature"] == 0 and list(config["thinkingConfig"].values()) == [0]
    inline = body["contents"][0]["parts"][0]["inlineData"]
    sent = base64.urlsafe_b64decode(inline["data"])
    assert not metadata_markers(sent) & {"exif", "gps"}
    assert "not a diagnosis" in body["contents"][0]["parts"][1]["text"]


def test_patient_metadata_is_sent_only_when_asked(emu: GeminiEmulator, dev_images: list[Path]) -> None:
    meta = {"age": 55, "sex": "female", "site": "back"}
    with gemini_backend_for(emu) as clf:
        clf.predict(dev_images[0], meta)
    assert "age 55" not in emu.requests[-1].json()["contents"][0]["parts"][1]["text"]
    with gemini_backend_for(emu, use_metadata=True) as clf:
        clf.predict(dev_images[0], meta)
    assert "age 55 years, sex female, site back" in emu.requests[-1].json()["contents"][0]["parts"][1]["text"]


def test_withheld_and_malformed_answers_are_typed_and_final(emu: GeminiEmulator, dev_images: list[Path]) -> None:
    with gemini_backend_for(emu, retry=RetryPolicy(max_attempts=3, base_delay=0.01)) as clf:
        emu.finish_reason = "SAFETY"
        with pytest.raises(ServiceError, match="SAFETY") as info:
            clf.predict(dev_images[0])
        assert info.value.retryable is False and len(emu.requests) == 1
        emu.finish_reason = None
        emu.scripted_text = "It looks like a mole."
        with pytest.raises(InvalidResponseError, match="not JSON"):
            clf.predict(dev_images[0])
        emu.scripted_text = '{"mel": 0.5}'
        with pytest.raises(InvalidResponseError, match="exactly the keys"):
            clf.predict(dev_images[0])


def test_quota_exhaustion_is_retried_and_sdk_retries_are_off(emu: GeminiEmulator, dev_images: list[Path]) -> None:
    emu.inject(Fault("throttle", retry_after=0.05))
    with gemini_backend_for(emu, retry=RetryPolicy(max_attempts=3, base_delay=0.01)) as clf:
        assert clf.predict(dev_images[0]).attempts == 2
    assert len(emu.requests) == 2
    emu.reset()
    emu.inject(Fault("throttle", times=3, retry_after=0.05))
    with gemini_backend_for(emu, retry=RetryPolicy(max_attempts=1)) as clf, pytest.raises(ThrottledError) as info:
        clf.predict(dev_images[0])
    assert len(emu.requests) == 1  # one HTTP call: the SDK did not retry behind our policy
    assert info.value.retry_after == pytest.approx(0.05)


def test_wrong_model_and_missing_credentials_name_the_fix(emu: GeminiEmulator, dev_images: list[Path]) -> None:
    clf = gemini_backend_for(emu, model="gemini-0-nope", retry=RetryPolicy(max_attempts=1))
    with clf, pytest.raises(NotFoundError, match="model id and location"):
        clf.predict(dev_images[0])
    # A request without a bearer token (what an SDK without credentials would send) is refused.
    assert (
        emu.handle(
            "POST",
            "/v1beta1/projects/derm-cloud/locations/us-central1/publishers/google/models/"
            "gemini-2.5-flash:generateContent",
            {},
            b"{}",
        ).status
        == 401
    )
    clf = gemini_backend_for(emu, retry=RetryPolicy(max_attempts=1), project="someone-else")
    with clf, pytest.raises(AuthenticationError, match="aiplatform.user"):
        clf.predict(dev_images[0])


def test_describe_and_price(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GOOGLE_CLOUD_PROJECT", raising=False)
    catalogue = PriceCatalogue.load()
    entry = catalogue.lookup("gcp.vertex.gemini-2.5-flash", provider="gcp")
    assert entry is not None and entry.basis == "per_token" and entry.input_per_million is not None
    with pytest.raises(derm_cloud.errors.ConfigError, match="GOOGLE_CLOUD_PROJECT"):
        GcpGeminiClassifier(credentials=object())
