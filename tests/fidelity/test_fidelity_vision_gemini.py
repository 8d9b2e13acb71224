"""Cloud Vision and Vertex Gemini emulators against the SDKs' own types.

Cloud Vision answers round-trip strictly through ``google.cloud.vision_v1.BatchAnnotateImagesResponse``; Gemini
answers through both ``google.cloud.aiplatform_v1.GenerateContentResponse`` (the Vertex proto) and
``google-genai``'s pydantic ``GenerateContentResponse`` (extra fields forbidden, enums checked); errors through
Google's JSON error envelope.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from spec_capture import Exchange, capturing, sample_jpeg
from spec_google import Problem, check_error_envelope, check_genai, check_json
from spec_mutations import rename, retype

from derm_cloud.errors import DermCloudError
from derm_cloud.retry import RetryPolicy
from derm_cloud.testing.emulators.base import Fault
from derm_cloud.testing.emulators.cloud_vision import CloudVisionEmulator, cloud_vision_backend_for
from derm_cloud.testing.emulators.gemini import GeminiEmulator, gemini_backend_for


def one_try() -> RetryPolicy:
    """One attempt, and a circuit breaker of its own (a policy's breaker is shared by every backend using it)."""
    return RetryPolicy(max_attempts=1)


FAULTS = (Fault("throttle", retry_after=0.5), Fault("not_ready"), Fault("truncated"), Fault("error", status=500),
          Fault("error", status=503), Fault("error", status=400))  # fmt: skip


def _quietly(fn: Any) -> None:
    with contextlib.suppress(DermCloudError):  # the answer is what is under test
        fn()


# --- Cloud Vision ------------------------------------------------------------------------------------------------


def vision_types() -> Any:
    from google.cloud import vision_v1

    return vision_v1.BatchAnnotateImagesResponse


def check_vision(x: Exchange) -> list[Problem]:
    if x.response.status >= 400:
        return check_error_envelope(x.response.status, x.json())
    return check_json(vision_types(), x.json())


@pytest.fixture(scope="module")
def vision_exchanges() -> list[Exchange]:
    import base64
    import json
    import urllib.request

    def annotate(emu: CloudVisionEmulator, requests: list[Any], key: str | None = None) -> None:
        data = json.dumps({"requests": requests}).encode()
        headers = {"Content-Type": "application/json", **({"x-goog-api-key": key} if key else {})}
        request = urllib.request.Request(f"{emu.url}/v1/images:annotate", data=data, headers=headers)
        with contextlib.suppress(urllib.error.HTTPError):  # the answer is what is under test
            urllib.request.urlopen(request, timeout=10).read()

    label = [{"type": "LABEL_DETECTION", "maxResults": 3}]
    image = {"content": base64.b64encode(sample_jpeg()).decode()}
    seen: list[Exchange] = []
    with CloudVisionEmulator() as emu, capturing(emu) as answers:
        with cloud_vision_backend_for(emu) as clf:
            for fault in (None, *FAULTS):
                if fault is not None:
                    emu.inject(fault)
                clf.retry = one_try()  # a fresh breaker: a streak of faults must not open it
                _quietly(lambda c=clf: c.predict(sample_jpeg()))
        broken = {"image": {"content": "bm90IGFuIGltYWdl"}, "features": label}
        annotate(emu, [{"image": image, "features": label}, broken, {"image": image, "features": [{"type": "FACE"}]}])
        annotate(emu, [{"image": image, "features": label}] * 17)  # over the 16-image limit
        seen += answers
    with CloudVisionEmulator(api_key="right-key") as emu, capturing(emu) as answers:
        annotate(emu, [{"image": image, "features": label}])
        annotate(emu, [{"image": image, "features": label}], key="wrong-key")
        seen += answers
    return seen


def test_every_vision_answer_round_trips_through_the_sdk_types(vision_exchanges: list[Exchange]) -> None:
    problems = [(x, p) for x in vision_exchanges for p in check_vision(x)]
    assert not problems, "\n".join(f"{x.response.status} fault={x.fault}: {p}" for x, p in problems)
    assert {x.response.status for x in vision_exchanges} >= {200, 400, 403, 429, 500, 503}
    per_image = [r for x in vision_exchanges if x.response.status == 200 for r in x.json()["responses"]]
    assert any("error" in r for r in per_image) and any(r == {} for r in per_image)


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda d: rename(d, ["responses", 0, "labelAnnotations", 0, "description"], "label"), "label"),
        (lambda d: retype(d, ["responses", 0, "labelAnnotations", 0, "score"], "0.9"), "score"),
        (lambda d: rename(d, ["responses", 0, "labelAnnotations"], "labels"), "labels"),
    ],
)
def test_a_changed_vision_field_is_rejected(vision_exchanges: list[Exchange], mutate: Any, field: str) -> None:
    body = next(x.json() for x in vision_exchanges if x.response.status == 200 and x.fault is None)
    found = check_json(vision_types(), mutate(body))
    assert any(field in str(p) for p in found), found


# --- Vertex Gemini -----------------------------------------------------------------------------------------------


def gemini_types() -> tuple[Any, Any]:
    from google.cloud import aiplatform_v1
    from google.genai import types

    return aiplatform_v1.GenerateContentResponse, types.GenerateContentResponse


def check_gemini(x: Exchange) -> list[Problem]:
    if x.response.status >= 400:
        return check_error_envelope(x.response.status, x.json())
    proto, genai = gemini_types()
    return check_json(proto, x.json()) + check_genai(genai, x.json())


@pytest.fixture(scope="module")
def gemini(derm_model_dir: Path) -> Iterator[GeminiEmulator]:
    with GeminiEmulator(derm_model_dir) as emu:
        yield emu


@pytest.fixture(scope="module")
def gemini_exchanges(gemini: GeminiEmulator) -> list[Exchange]:
    import urllib.request

    with capturing(gemini) as seen:
        with gemini_backend_for(gemini) as clf:
            for fault in (None, *FAULTS):
                if fault is not None:
                    gemini.inject(fault)
                clf.retry = one_try()  # a fresh breaker: a streak of faults must not open it
                _quietly(lambda c=clf: c.predict(sample_jpeg()))
            gemini.finish_reason = "SAFETY"
            _quietly(lambda c=clf: c.predict(sample_jpeg()))
            gemini.finish_reason = None
        for options in ({"model": "gemini-0-unknown"}, {"project": "someone-else"}):
            with gemini_backend_for(gemini, retry=one_try(), **options) as clf:
                _quietly(lambda c=clf: c.predict(sample_jpeg()))
        route = f"/v1/projects/{gemini.project}/locations/{gemini.location}/publishers/google/models/gemini-2.5-flash"
        request = urllib.request.Request(gemini.url + route + ":generateContent", data=b"{}", method="POST")
        with contextlib.suppress(urllib.error.HTTPError):  # no bearer token: 401
            urllib.request.urlopen(request, timeout=10)
    return seen


def test_every_gemini_answer_validates_as_proto_and_genai_types(gemini_exchanges: list[Exchange]) -> None:
    problems = [(x, p) for x in gemini_exchanges for p in check_gemini(x)]
    assert not problems, "\n".join(f"{x.response.status} fault={x.fault}: {p}" for x, p in problems)
    assert {x.response.status for x in gemini_exchanges} >= {200, 400, 401, 403, 404, 429, 500, 503}
    reasons = {
        c.get("finishReason") for x in gemini_exchanges if x.response.status == 200 for c in x.json()["candidates"]
    }
    assert {"STOP", "SAFETY"} <= reasons


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda d: rename(d, ["usageMetadata", "promptTokenCount"], "promptTokens"), "promptTokens"),
        (lambda d: retype(d, ["usageMetadata", "totalTokenCount"], 300.5), "totalTokenCount"),
        (lambda d: retype(d, ["candidates", 0, "finishReason"], "DONE"), "DONE"),
        (lambda d: rename(d, ["candidates", 0, "content", "parts", 0, "text"], "txt"), "txt"),
    ],
)
def test_a_changed_gemini_field_is_rejected_by_both_sdks(
    gemini_exchanges: list[Exchange], mutate: Any, field: str
) -> None:
    body = next(x.json() for x in gemini_exchanges if x.response.status == 200 and x.fault is None)
    proto, genai = gemini_types()
    assert check_json(proto, body) == [] and check_genai(genai, body) == []
    changed = mutate(body)
    for found in (check_json(proto, changed), check_genai(genai, changed)):
        assert any(field in str(p) for p in found), found
