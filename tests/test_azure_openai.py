"""The ``azure-openai`` backend against the Azure OpenAI emulator, through the real ``openai`` SDK.

The emulator hosts a tiny real model, so the "self-reported" numbers are that model's probabilities rounded the
way an LLM writes them. Images: HAM10000 (Tschandl et al. 2018, CC BY-NC 4.0), read from shared/data.
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
from derm_cloud.backends.azure_openai import AzureOpenaiClassifier, response_format
from derm_cloud.errors import (
    AuthenticationError,
    ConfigError,
    DeadlineExceededError,
    InvalidResponseError,
    NotFoundError,
    ServiceError,
)
from derm_cloud.images import metadata_markers
from derm_cloud.retry import RetryPolicy
from derm_cloud.taxonomy import CLASS_CODES
from derm_cloud.testing.emulators.azure_openai import AzureOpenAIEmulator, azure_openai_backend_for, image_tokens
from derm_cloud.testing.emulators.base import Fault


@pytest.fixture(scope="module")
def emu(tiny_model_dir: Path) -> Iterator[AzureOpenAIEmulator]:
    with AzureOpenAIEmulator(tiny_model_dir, deployments=("gpt-4o-derm",), api_key="sekret-key") as emulator:
        yield emulator


@pytest.fixture(autouse=True)
def _clean(emu: AzureOpenAIEmulator) -> None:
    emu.reset()
    emu.scripted_content = None


def no_retry() -> RetryPolicy:
    return RetryPolicy(max_attempts=1)


def sent_image(emu: AzureOpenAIEmulator) -> tuple[bytes, str]:
    part = emu.requests[-1].json()["messages"][0]["content"][1]["image_url"]
    head, _, data = part["url"].partition(",")
    return base64.b64decode(data), head


def test_scores_are_the_hosted_models_rounded_and_renormalised(
    emu: AzureOpenAIEmulator, tiny_model_dir: Path, dev_images: list[Path]
) -> None:
    with derm_cloud.create("local-onnx", model_dir=tiny_model_dir) as local:
        truth = local.predict(dev_images[0]).vector()
    with azure_openai_backend_for(emu) as clf:
        pred = clf.predict(dev_images[0])
    reported = np.round(truth, 2)  # what the emulator "writes", like an LLM
    assert [s.label for s in pred.provider_scores] == list(CLASS_CODES)
    assert np.allclose([s.score for s in pred.provider_scores], reported, atol=1e-12)
    assert np.allclose(pred.vector(), reported / reported.sum(), atol=1e-12)
    assert sum(pred.vector()) == pytest.approx(1.0)
    assert pred.extra["self_reported"] == dict(zip(CLASS_CODES, reported.tolist(), strict=True))
    assert pred.extra["calibrated"] is False
    assert pred.request_id  # x-request-id, for support tickets


def test_request_shape(emu: AzureOpenAIEmulator, dev_images: list[Path]) -> None:
    with azure_openai_backend_for(emu) as clf:
        clf.predict(dev_images[0])
    (req,) = emu.requests
    assert req.path == "/openai/deployments/gpt-4o-derm/chat/completions?api-version=2024-10-21"
    assert req.header("api-key") == "<redacted:10 chars>"  # recorded without the secret
    body = req.json()
    assert body["model"] == "gpt-4o-derm" and body["temperature"] == 0
    fmt = body["response_format"]
    assert fmt["type"] == "json_schema"
    assert fmt["json_schema"]["name"] == "lesion_triage" and fmt["json_schema"]["strict"] is True
    schema = fmt["json_schema"]["schema"]
    assert schema["type"] == "object" and schema["additionalProperties"] is False
    assert schema["required"] == list(CLASS_CODES) == list(schema["properties"])
    assert all(p["type"] == "number" and "between 0 and 1" in p["description"] for p in schema["properties"].values())
    assert fmt == response_format()
    text, image = body["messages"][0]["content"]
    assert text["type"] == "text" and "not a diagnosis" in text["text"] and "clinician" in text["text"]
    assert "Patient context" not in text["text"]  # metadata is not sent unless asked for
    assert image["type"] == "image_url" and image["image_url"]["detail"] == "low"
    assert image["image_url"]["url"].startswith("data:image/jpeg;base64,")


def test_no_exif_or_gps_and_the_shared_payload(emu: AzureOpenAIEmulator, dev_images: list[Path]) -> None:
    exif = Image.Exif()
    exif[0x8825] = {1: "N", 2: (48.0, 12.0, 30.0)}
    buf = io.BytesIO()
    Image.open(dev_images[0]).save(buf, "PNG", exif=exif.tobytes())
    assert "exif" in metadata_markers(buf.getvalue())
    with azure_openai_backend_for(emu) as clf:
        clf.predict(buf.getvalue())
    data, head = sent_image(emu)
    # A clean RGB PNG travels as the PNG every other backend gets (Azure OpenAI takes PNG), chunks stripped.
    assert head == "data:image/png;base64" and data[:4] == b"\x89PNG"
    assert data == derm_cloud.prepare_payload(buf.getvalue()).data
    assert metadata_markers(data) == frozenset()
    assert emu.last_image_bytes == data


def test_token_usage_follows_image_detail(emu: AzureOpenAIEmulator, dev_images: list[Path]) -> None:
    with azure_openai_backend_for(emu, detail="low") as low, azure_openai_backend_for(emu, detail="high") as high:
        a, b = low.predict(dev_images[0]), high.predict(dev_images[0])
    width, height = Image.open(dev_images[0]).size
    assert b.extra["prompt_tokens"] - a.extra["prompt_tokens"] == image_tokens(width, height, "high") - 85
    assert a.extra["completion_tokens"] > 0
    assert a.extra["total_tokens"] == a.extra["prompt_tokens"] + a.extra["completion_tokens"]
    assert b.extra["image_detail"] == "high"


def test_image_token_rule() -> None:
    # docs/reference/cloud-apis.md section 7: low = 85; high = 85 + 170 per 512-px tile after fitting and short side
    # <= 768.
    assert image_tokens(600, 450, "low") == 85
    assert image_tokens(600, 450, "high") == 85 + 170 * 2
    assert image_tokens(4000, 3000, "high") == 85 + 170 * 4  # -> 2048x1536 -> 1024x768


def test_metadata_goes_into_the_prompt_only_when_asked(emu: AzureOpenAIEmulator, dev_images: list[Path]) -> None:
    with azure_openai_backend_for(emu, use_metadata=True) as clf:
        clf.predict(dev_images[0], {"age": 45, "sex": "male", "site": "back"})
    text = emu.requests[-1].json()["messages"][0]["content"][0]["text"]
    assert text.endswith("Patient context: age 45 years, sex male, site back.")


def test_throttling_honours_retry_after(emu: AzureOpenAIEmulator, dev_images: list[Path]) -> None:
    sleeps: list[float] = []
    emu.inject(Fault("throttle", retry_after=0.2))
    with azure_openai_backend_for(emu, retry=RetryPolicy(max_attempts=3, sleep=sleeps.append)) as clf:
        assert clf.predict(dev_images[0]).attempts == 2
    assert sleeps == [pytest.approx(0.2)]  # retry-after-ms is finer than Retry-After: 1


def test_wrong_key_and_deployment(emu: AzureOpenAIEmulator, dev_images: list[Path]) -> None:
    clf = azure_openai_backend_for(emu, api_key="nope", retry=no_retry())
    with clf, pytest.raises(AuthenticationError) as info:
        clf.predict(dev_images[0])
    assert info.value.status == 401 and not info.value.retryable
    clf = azure_openai_backend_for(emu, deployment="gpt-5-missing", retry=no_retry())
    with clf, pytest.raises(NotFoundError, match="gpt-5-missing"):
        clf.predict(dev_images[0])


def test_content_filter_is_a_clear_non_retryable_error(emu: AzureOpenAIEmulator, dev_images: list[Path]) -> None:
    emu.inject(Fault("error", status=400))
    with azure_openai_backend_for(emu) as clf, pytest.raises(ServiceError, match="content filter") as info:
        clf.predict(dev_images[0])
    assert not info.value.retryable and info.value.status == 400
    assert len(emu.requests) == 1  # not retried


@pytest.mark.parametrize(
    ("fault", "error", "retryable"),
    [
        (Fault("timeout", delay=1.0), DeadlineExceededError, True),
        (Fault("reset"), ServiceError, True),
        (Fault("error", status=503), ServiceError, True),
        (Fault("malformed"), InvalidResponseError, False),
    ],
)
def test_faults_are_translated(
    emu: AzureOpenAIEmulator, dev_images: list[Path], fault: Fault, error: type[Exception], retryable: bool
) -> None:
    emu.inject(fault)
    with azure_openai_backend_for(emu, timeout=0.3, retry=no_retry()) as clf, pytest.raises(error) as info:
        clf.predict(dev_images[0])
    assert info.value.retryable is retryable  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("The lesion looks benign; I cannot diagnose.", "not JSON"),
        ('{"mel": 0.5, "nv": 0.5}', "exactly the keys"),
        ('{"akiec": 0, "bcc": 0, "bkl": 0, "df": 0, "mel": 1.4, "nv": 0, "vasc": 0}', "outside 0..1"),
        ('{"akiec": 0, "bcc": 0, "bkl": 0, "df": 0, "mel": "high", "nv": 0, "vasc": 0}', "not a number"),
        ('{"akiec": 0, "bcc": 0, "bkl": 0, "df": 0, "mel": 0, "nv": 0, "vasc": 0}', "every score is 0"),
    ],
)
def test_answers_that_break_the_schema_are_invalid(
    emu: AzureOpenAIEmulator, dev_images: list[Path], content: str, match: str
) -> None:
    emu.scripted_content = content
    with azure_openai_backend_for(emu, retry=no_retry()) as clf, pytest.raises(InvalidResponseError, match=match):
        clf.predict(dev_images[0])


def test_describe_carries_the_calibration_caveat(emu: AzureOpenAIEmulator) -> None:
    with azure_openai_backend_for(emu, model_name="gpt-4o-mini", region="swedencentral") as clf:
        info = clf.describe()
    assert (info.provider, info.region, info.model_id) == ("azure", "swedencentral", "gpt-4o-derm")
    assert info.model_facts["calibrated"] is False and "not calibrated" in info.model_facts["caveat"]
    assert info.billing["sku"] == "azure.openai.gpt-4o-mini" and info.billing["image_detail"] == "low"
    assert info.stores_images is None and info.emulated and info.data_leaves_machine
    assert "not calibrated" in (AzureOpenaiClassifier.__doc__ or "")


def test_configuration_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AZURE_OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("AZURE_OPENAI_AD_TOKEN", raising=False)
    monkeypatch.delenv("AZURE_OPENAI_ENDPOINT", raising=False)
    with pytest.raises(ConfigError, match="azure_endpoint"):
        AzureOpenaiClassifier("gpt-4o", api_key="k")
    with pytest.raises(ConfigError, match="api_key"):
        AzureOpenaiClassifier("gpt-4o", azure_endpoint="https://res.openai.azure.com")
    with pytest.raises(ConfigError, match="detail"):
        AzureOpenaiClassifier("gpt-4o", azure_endpoint="https://res.openai.azure.com", api_key="k", detail="max")  # type: ignore[arg-type]


def test_created_by_registry_name(emu: AzureOpenAIEmulator, dev_images: list[Path]) -> None:
    with derm_cloud.create(
        "azure-openai", deployment="gpt-4o-derm", azure_endpoint=emu.url, api_key="sekret-key"
    ) as clf:
        assert clf.predict(dev_images[0]).mapped


def test_injected_client_stays_open_after_close(emu: AzureOpenAIEmulator, dev_images: list[Path]) -> None:
    import openai

    client = openai.AzureOpenAI(
        azure_endpoint=emu.url, api_version="2024-10-21", api_key=emu.api_key, max_retries=0, timeout=10
    )
    try:
        with azure_openai_backend_for(emu, client=client) as clf:
            first = clf.predict(dev_images[0])
        assert not client.is_closed()  # the caller's client is the caller's to close
        with azure_openai_backend_for(emu, client=client) as again:
            assert again.predict(dev_images[0]).probabilities == first.probabilities  # and still usable
    finally:
        client.close()
    owned = azure_openai_backend_for(emu)
    owned.close()
    assert owned._client.is_closed()  # a client the classifier built is closed with it
