"""The Azure OpenAI emulator against Microsoft's published inference spec (stable 2024-10-21, our default version).

Every answer the emulator gives while the ``openai`` SDK and our backend drive it validates against the vendored
OpenAPI 3.0 extract, strictly; the published chat-completion example, replayed on 127.0.0.1, is parsed by our
backend as a real answer. Where the service's wire format and the spec disagree, the emulator follows the wire and
``WIRE_DEVIATIONS`` names each difference with its evidence; the test fails if one is no longer needed.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from spec_capture import Exchange, Replay, capturing, sample_jpeg
from spec_mutations import drop, rename, retype
from spec_openapi import ApiSpec, Problem, example_response
from tests_helpers import DATA_DIR

from derm_cloud.backends.azure_openai import AzureOpenaiClassifier
from derm_cloud.errors import InvalidResponseError
from derm_cloud.retry import RetryPolicy
from derm_cloud.taxonomy import CLASS_CODES
from derm_cloud.testing.emulators.azure_openai import AzureOpenAIEmulator, azure_openai_backend_for
from derm_cloud.testing.emulators.base import Fault, Response

SPECS = DATA_DIR / "specs" / "azure"  # not vendored: content read through the search tool stays out of commits
INFERENCE = ApiSpec(SPECS / "azure-openai-inference-2024-10-21.json")
CHAT = "/deployments/{deployment-id}/chat/completions"
EXAMPLE = SPECS / "examples" / "azure-openai-inference-2024-10-21" / "chat_completions.json"


def one_try() -> RetryPolicy:
    """One attempt, and a circuit breaker of its own (a policy's breaker is shared by every backend using it)."""
    return RetryPolicy(max_attempts=1)


# The content filter's 400 as the service sends it, which the spec's ``error`` schema does not describe. Evidence:
# the body Microsoft shows in "Azure OpenAI content filtering" (learn.microsoft.com/azure/ai-services/openai/
# concepts/content-filter) and that client libraries quote from captured answers: "type": null, "status": 400,
# "innererror" (not the spec's "inner_error") with "content_filter_result" (singular).
WIRE_DEVIATIONS = {
    ("error", "'innererror'"): "the wire's name for the spec's inner_error",
    ("error", "'status'"): "the HTTP status repeated in the body",
    ("error.type", "None is not of type 'string'"): "type is null on content-filter errors",
}


def deviation(problem: Problem) -> bool:
    return any(problem.where == where and text in problem.problem for where, text in WIRE_DEVIATIONS)


def check_exchange(x: Exchange) -> list[Problem]:
    return INFERENCE.check_response(x.json(), CHAT, "post", x.response.status)


@pytest.fixture(scope="module")
def emulator(derm_model_dir: Path) -> Iterator[AzureOpenAIEmulator]:
    with AzureOpenAIEmulator(derm_model_dir) as emu:
        yield emu


@pytest.fixture(scope="module")
def exchanges(emulator: AzureOpenAIEmulator) -> list[Exchange]:
    import openai

    image = sample_jpeg()

    def client(**kw: Any) -> Any:
        options = {"azure_endpoint": emulator.url, "api_version": "2024-10-21", "api_key": emulator.api_key}
        return openai.AzureOpenAI(**{**options, **kw}, max_retries=0, timeout=10)

    def chat(c: Any, deployment: str = "gpt-4o", content: Any = "describe") -> None:
        with contextlib.suppress(openai.APIError):  # the answer is what is under test
            c.chat.completions.create(model=deployment, messages=[{"role": "user", "content": content}])

    with_image = [{"type": "image_url", "image_url": {"url": "data:image/png;base64,bm90IGFuIGltYWdl"}}]
    with capturing(emulator) as seen:
        with azure_openai_backend_for(emulator, retry=one_try()) as clf:
            clf.predict(image)
        emulator.scripted_content = "Looks like a mole."
        with azure_openai_backend_for(emulator, retry=one_try()) as clf, pytest.raises(InvalidResponseError):
            clf.predict(image)
        emulator.scripted_content = None
        chat(client(api_key="wrong"))
        chat(client(), deployment="no-such-deployment")
        chat(client())  # no image part
        chat(client(), content=with_image)  # an image that does not decode
        for fault in (Fault("throttle", retry_after=1), Fault("error", status=400), Fault("error", status=500),
                      Fault("error", status=503), Fault("not_ready"), Fault("truncated")):  # fmt: skip
            emulator.inject(fault)
            chat(client())
    return seen


def test_every_answer_matches_the_published_spec_or_a_named_wire_deviation(exchanges: list[Exchange]) -> None:
    assert {x.response.status for x in exchanges} >= {200, 400, 401, 404, 429, 500, 503}
    problems = [(x, p) for x in exchanges for p in check_exchange(x)]
    unexplained = [(x, p) for x, p in problems if not deviation(p)]
    assert not unexplained, "\n".join(f"{x.response.status} fault={x.fault}: {p}" for x, p in unexplained)
    used = {
        (where, text) for where, text in WIRE_DEVIATIONS for _, p in problems if p.where == where and text in p.problem
    }
    assert used == set(WIRE_DEVIATIONS), "a listed wire deviation no longer occurs: drop it from WIRE_DEVIATIONS"
    ok = [x for x in exchanges if x.response.status == 200 and x.fault is None]
    assert ok and all(x.header("apim-request-id") for x in ok)  # the request id header the spec documents


def _completion(exchanges: list[Exchange]) -> dict[str, Any]:
    return next(x for x in exchanges if x.response.status == 200 and x.fault is None).json()


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda d: drop(d, ["model"]), "model"),
        (lambda d: rename(d, ["choices", 0, "finish_reason"], "stop_reason"), "stop_reason"),
        (lambda d: retype(d, ["choices", 0, "finish_reason"], "done"), "finish_reason"),
        (lambda d: retype(d, ["usage", "prompt_tokens"], "85"), "prompt_tokens"),
        (lambda d: drop(d, ["choices", 0, "message", "refusal"]), "refusal"),
        (lambda d: retype(d, ["object"], "chat.completion.chunk"), "object"),
    ],
)
def test_a_changed_completion_field_is_rejected(exchanges: list[Exchange], mutate: Any, field: str) -> None:
    body = _completion(exchanges)
    assert INFERENCE.check_definition(body, "createChatCompletionResponse") == []
    found = INFERENCE.check_definition(mutate(body), "createChatCompletionResponse")
    assert any(field in str(p) for p in found), found


def test_the_published_example_omits_fields_its_own_spec_requires() -> None:
    # Recorded so that the replay below is read knowing it: the example has no "object", "model", "logprobs" or
    # "refusal", all required by createChatCompletionResponse in the same document.
    found = INFERENCE.check_response(example_response(EXAMPLE), CHAT, "post", 200)
    missing = {p.problem for p in found}
    assert missing == {
        "'model' is a required property",
        "'object' is a required property",
        "'logprobs' is a required property",
        "'refusal' is a required property",
    }, found


@pytest.mark.parametrize("content", ["as published", "scores"])
def test_the_published_example_is_parsed_as_a_real_answer(content: str) -> None:
    body = example_response(EXAMPLE)
    if content == "scores":  # the same answer, with content our prompt asks for instead of the pirate's prose
        body["choices"][0]["message"]["content"] = json.dumps({code: 0.1 for code in CLASS_CODES})
    answer = Response.json(body, headers={"apim-request-id": "example-request"})
    with Replay(answer) as server:
        clf = AzureOpenaiClassifier(azure_endpoint=server.url, deployment="gpt-4o", api_key="example", retry=one_try())
        with clf:
            if content == "as published":
                with pytest.raises(InvalidResponseError, match="not JSON"):
                    clf.predict(sample_jpeg())
                return
            prediction = clf.predict(sample_jpeg())
    assert prediction.probabilities == pytest.approx({code: 1 / 7 for code in CLASS_CODES})
    usage = {k: prediction.extra[k] for k in ("prompt_tokens", "completion_tokens", "total_tokens")}
    assert usage == {"prompt_tokens": 33, "completion_tokens": 557, "total_tokens": 590}
    assert prediction.extra["model"] is None  # the example has no model; the backend does not invent one
    assert prediction.request_id == "example-request"  # apim-request-id: the request id header the spec documents
