"""Azure OpenAI chat completions emulator (image input, structured output) on 127.0.0.1.

Speaks the wire contract the `openai` package uses with `AzureOpenAI(azure_endpoint=emu.url, ...)`:

```text
POST /openai/deployments/{deployment}/chat/completions?api-version=...
api-key: <key>                      (or Authorization: Bearer <Entra token>)
{"model": ..., "messages": [{"role": "user", "content": [{"type": "text", ...},
  {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,...", "detail": "low"}}]}],
 "response_format": {"type": "json_schema", "json_schema": {"name": ..., "strict": true, "schema": {...}}}}
```

It is a contract emulator, not a language model. When a model directory is hosted, the numbers it "self-reports"
are that real model's probabilities, rounded the way an LLM writes them (2 decimals by default, so they need
not sum to 1); without one they are a deterministic function of the image's colour statistics. It answers one
JSON object with exactly the keys the request's schema requires. Token usage is estimated: text as characters/4
plus a per-message overhead, images by the GPT-4o rule in docs/reference/cloud-apis.md §7 (`low` = 85;
`high`/`auto` =
85 + 170 per 512-px tile after fitting 2048x2048 and scaling the short side down to 768; small images are not
upscaled - whether the service upscales them is unverified).

Azure-shaped failures: wrong key -> 401, unknown deployment -> 404 `DeploymentNotFound`, missing
`api-version` -> 404, undecodable image -> 400, an injected `Fault("error", status=400)` -> the content
filter's 400 (`code: content_filter`, `ResponsibleAIPolicyViolation`), `Fault("throttle")` -> 429 with
`Retry-After` and `retry-after-ms`. `scripted_content` replaces the message content (e.g. prose that is
not JSON) to test the client's validation.

Example:
    >>> with AzureOpenAIEmulator(model_dir) as emu:  # doctest: +SKIP
    ...     clf = azure_openai_backend_for(emu)
    ...     clf.predict("lesion.jpg").extra["prompt_tokens"]
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import os
import re
import threading
import uuid
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from derm_cloud.testing.emulators.base import EmulatorServer, Fault, Response

if TYPE_CHECKING:
    from derm_cloud.backends.azure_openai import AzureOpenaiClassifier
    from derm_cloud.backends.local_onnx import OnnxModel
    from derm_cloud.images import PreparedImage

__all__ = ["AzureOpenAIEmulator", "azure_openai_backend_for", "image_tokens"]

_PATH = re.compile(r"^/openai/deployments/(?P<dep>[^/]+)/chat/completions$")


def image_tokens(width: int, height: int, detail: str) -> int:
    """GPT-4o image input tokens for one image (a third-party rule; small images are not upscaled).

    The rule is in docs/reference/cloud-apis.md §7.

    Example:
        >>> image_tokens(600, 450, "low"), image_tokens(600, 450, "high")
        (85, 425)
    """
    if detail == "low":
        return 85
    w, h = float(width), float(height)
    fit = min(1.0, 2048 / max(w, h))
    w, h = w * fit, h * fit
    short = min(w, h)
    if short > 768:
        w, h = w * 768 / short, h * 768 / short
    tiles = math.ceil(w / 512) * math.ceil(h / 512)
    return 85 + 170 * tiles


def _text_tokens(text: str) -> int:
    return max(1, math.ceil(len(text) / 4))


class AzureOpenAIEmulator(EmulatorServer):
    """An Azure OpenAI resource with chat deployments that read images.

    Args:
        model_dir: a derm-cloud model directory whose real probabilities are reported (rounded); `None`
            answers from image colour statistics instead.
        deployments: deployment names that exist; others get 404 `DeploymentNotFound`.
        api_key: the key the `api-key` header must carry. Bearer tokens are accepted when `accept_bearer`.
        model_name: the `model` field of answers (the deployment's model version).
        decimals: how many decimals the "self-reported" numbers keep.
    """

    name = "azure-openai"

    def __init__(
        self,
        model_dir: str | os.PathLike[str] | None = None,
        *,
        deployments: Sequence[str] = ("gpt-4o",),
        api_key: str = "emulator-key",
        accept_bearer: bool = True,
        model_name: str = "gpt-4o-2024-08-06",
        decimals: int = 2,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        super().__init__(host=host, port=port)
        self.model_dir = model_dir
        self.deployments = set(deployments)
        self.api_key = api_key
        self.accept_bearer = accept_bearer
        self.model_name = model_name
        self.decimals = decimals
        #: when set, replaces the assistant message content (to test client-side validation).
        self.scripted_content: str | None = None
        #: the image bytes of the last request, as decoded from its data URI (to assert no EXIF arrived).
        self.last_image_bytes: bytes | None = None
        self._model: OnnxModel | None = None
        self._model_lock = threading.Lock()

    def start(self) -> AzureOpenAIEmulator:
        # Load the hosted model before the first request so that call's latency is not the model's load time.
        if self.model_dir is not None:
            self._hosted()
        super().start()
        return self

    # --- routes ---------------------------------------------------------------------------------------------

    def handle(self, method: str, path: str, headers: Mapping[str, str], body: bytes) -> Response:
        parts = urlsplit(path)
        match = _PATH.match(parts.path)
        if method != "POST" or match is None:
            return _error(404, "404", "Resource not found")
        if not parse_qs(parts.query).get("api-version"):
            # Azure answers a missing api-version with a bare 404 too, which is why the SDK requires one.
            return _error(404, "404", "Resource not found")
        if not self._authorised(headers):
            return _error(
                401,
                "401",
                "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid "
                "key for an active subscription and use a correct regional API endpoint for your resource.",
            )
        deployment = match.group("dep")
        if deployment not in self.deployments:
            return _error(
                404,
                "DeploymentNotFound",
                "The API deployment for this resource does not exist. If you created the deployment within the "
                "last 5 minutes, please wait a moment and try again.",
            )
        try:
            request = json.loads(body)
        except ValueError:
            return _error(400, "BadRequest", "The request body is not valid JSON.")
        messages = request.get("messages") if isinstance(request, dict) else None
        if not isinstance(messages, list) or not messages:
            return _error(400, "BadRequest", "'messages' is a required property and must be a non-empty array.")
        texts, images = _parts(messages)
        if len(images) != 1:
            return _error(400, "BadRequest", f"this emulator expects exactly one image_url part, got {len(images)}")
        url, detail = images[0]
        from derm_cloud.errors import InvalidImageError
        from derm_cloud.images import prepare_for_model

        try:
            raw = _decode_data_uri(url)
            self.last_image_bytes = raw
            prepared = prepare_for_model(raw)
        except (ValueError, InvalidImageError) as exc:
            return _error(400, "invalid_image", f"Invalid image data: {exc}")
        content = self._content(request, prepared)
        prompt_tokens = sum(_text_tokens(t) for t in texts) + 7 * len(messages) + image_tokens(*prepared.size, detail)
        return _completion(self.model_name, content, prompt_tokens)

    def _authorised(self, headers: Mapping[str, str]) -> bool:
        lower = {k.lower(): v for k, v in headers.items()}
        if "api-key" in lower:
            return lower["api-key"] == self.api_key
        auth = lower.get("authorization", "")
        return self.accept_bearer and auth.startswith("Bearer ") and len(auth) > len("Bearer ")

    def _content(self, request: dict[str, Any], image: PreparedImage) -> str:
        if self.scripted_content is not None:
            return self.scripted_content
        fmt = request.get("response_format") or {}
        schema = (fmt.get("json_schema") or {}).get("schema") if fmt.get("type") == "json_schema" else None
        if not isinstance(schema, dict):
            # Without structured output an LLM answers prose; a client must not pretend it is JSON.
            return "The image shows a pigmented skin lesion. I cannot give a diagnosis; please consult a clinician."
        keys = [str(k) for k in schema.get("required") or list((schema.get("properties") or {}).keys())]
        scores = self._scores(image, keys)
        return json.dumps({k: round(scores.get(k, 0.0), self.decimals) for k in keys})

    def _scores(self, prepared: PreparedImage, keys: Sequence[str]) -> dict[str, float]:
        if self.model_dir is None:
            return _stat_scores(prepared.array(), keys)
        from derm_cloud.types import PatientMetadata

        model = self._hosted()
        probs = model.run([prepared], [PatientMetadata()])[0]
        return {str(label): float(p) for label, p in zip(model.spec.labels, probs.tolist(), strict=True)}

    def _hosted(self) -> OnnxModel:
        from derm_cloud.backends.local_onnx import OnnxModel

        with self._model_lock:
            if self._model is None:
                assert self.model_dir is not None
                self._model = OnnxModel(self.model_dir)
            return self._model

    # --- faults ----------------------------------------------------------------------------------------------

    def fault_response(self, fault: Fault) -> Response:
        if fault.kind == "throttle":
            wait = fault.retry_after if fault.retry_after is not None else 1.0
            headers = {"Retry-After": f"{math.ceil(wait)}", "retry-after-ms": f"{int(wait * 1000)}"}
            return _error(
                429,
                "429",
                "Requests to the ChatCompletions_Create Operation under Azure OpenAI API have exceeded token rate "
                f"limit of your current OpenAI S0 pricing tier. Please retry after {math.ceil(wait)} second.",
                headers,
            )
        if fault.kind == "error" and fault.status == 400:
            return Response.json(
                {
                    "error": {
                        "message": "The response was filtered due to the prompt triggering Azure OpenAI's content "
                        "management policy. Please modify your prompt and retry.",
                        "type": None,
                        "param": "prompt",
                        "code": "content_filter",
                        "status": 400,
                        "innererror": {
                            "code": "ResponsibleAIPolicyViolation",
                            "content_filter_result": {
                                "hate": {"filtered": False, "severity": "safe"},
                                "self_harm": {"filtered": False, "severity": "safe"},
                                "sexual": {"filtered": True, "severity": "medium"},
                                "violence": {"filtered": False, "severity": "safe"},
                            },
                        },
                    }
                },
                400,
            )
        if fault.kind == "error":
            return _error(fault.status, str(fault.status), "The server had an error processing your request.")
        if fault.kind == "not_ready":
            return _error(503, "503", "The engine is currently overloaded, please try again later.")
        if fault.kind == "truncated":  # a whole completion, which the base server then cuts half-way
            return _completion(self.model_name, json.dumps({"mel": 0.5, "nv": 0.5}), 100)
        return super().fault_response(fault)


def _completion(model: str, content: str, prompt_tokens: int) -> Response:
    """A chat completion as the published spec's `createChatCompletionResponse` describes it."""
    completion_tokens = _text_tokens(content)
    request_id = str(uuid.uuid4())
    payload = {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
        "object": "chat.completion",
        "created": 1_767_225_600,
        "model": model,
        "system_fingerprint": "fp_emulator",
        "choices": [
            {
                "index": 0,
                "finish_reason": "stop",
                "logprobs": None,
                "message": {"role": "assistant", "content": content, "refusal": None},
                "content_filter_results": {},
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }
    return Response.json(payload, headers={"x-request-id": request_id, "apim-request-id": request_id})


def _error(status: int, code: str, message: str, headers: Mapping[str, str] | None = None) -> Response:
    return Response.json({"error": {"code": code, "message": message}}, status, headers)


def _parts(messages: list[Any]) -> tuple[list[str], list[tuple[str, str]]]:
    texts: list[str] = []
    images: list[tuple[str, str]] = []
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            texts.append(content)
            continue
        for part in content or []:
            if part.get("type") == "text":
                texts.append(str(part.get("text", "")))
            elif part.get("type") == "image_url":
                image = part.get("image_url") or {}
                images.append((str(image.get("url", "")), str(image.get("detail", "auto"))))
    return texts, images


def _decode_data_uri(url: str) -> bytes:
    head, sep, data = url.partition(",")
    if not sep or not head.startswith("data:image/") or not head.endswith(";base64"):
        raise ValueError("expected a data:image/...;base64, URI (this emulator does not fetch URLs)")
    try:
        return base64.b64decode(data, validate=True)
    except binascii.Error as exc:
        raise ValueError(f"bad base64 ({exc})") from None


def _stat_scores(pixels: Any, keys: Sequence[str]) -> dict[str, float]:
    """Deterministic pseudo-scores from colour statistics (no model hosted): a softmax over fixed projections."""
    import numpy as np

    feats = pixels.reshape(-1, 3).astype(np.float64).mean(axis=0) / 255.0
    features = np.array([*feats, float(pixels.std()) / 128.0, 1.0])
    rng = np.random.default_rng(7)
    weights = rng.normal(0.0, 2.0, size=(len(features), len(keys)))
    logits = features @ weights
    exp = np.exp(logits - logits.max())
    probs = exp / exp.sum()
    return {k: float(p) for k, p in zip(keys, probs.tolist(), strict=True)}


def azure_openai_backend_for(emulator: AzureOpenAIEmulator, **options: Any) -> AzureOpenaiClassifier:
    """An `AzureOpenaiClassifier` wired to a running emulator.

    Options are passed through (`detail`, `retry`, `timeout` ...); the deployment defaults to the
    emulator's first one.
    """
    from derm_cloud.backends.azure_openai import AzureOpenaiClassifier

    options.setdefault("deployment", sorted(emulator.deployments)[0])
    options.setdefault("api_key", emulator.api_key)
    return AzureOpenaiClassifier(azure_endpoint=emulator.url, **options)
