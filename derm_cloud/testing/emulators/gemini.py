"""Vertex AI Gemini `generateContent` emulator on 127.0.0.1, driven through the real `google-genai` SDK.

Speaks the REST contract the SDK uses in Vertex mode with `HttpOptions(base_url=emu.url)`:

```text
POST /{v1|v1beta1}/projects/{project}/locations/{location}/publishers/google/models/{model}:generateContent
Authorization: Bearer <token>
{"contents": [{"role": "user", "parts": [{"inlineData": {"mimeType": "image/jpeg", "data": "<base64>"}},
                                         {"text": "..."}]}],
 "generationConfig": {"responseMimeType": "application/json", "responseJsonSchema": {...}, ...}}
```

Like the Azure OpenAI emulator it is a contract emulator, not a language model: when a model directory is hosted
the numbers it "self-reports" are that model's probabilities rounded the way an LLM writes them (2 decimals), so
they need not sum to 1. Token usage is estimated: text as characters/4; an image as 258 tokens when both sides are
at most 384 px, else 258 per 768x768 tile (Google's published rule for Gemini 2.x; not checked against a bill).

Google-shaped failures (`{"error": {"code", "message", "status"}}`): no bearer token -> 401 UNAUTHENTICATED,
unknown model -> 404 NOT_FOUND, undecodable image -> 400 INVALID_ARGUMENT, `Fault("throttle")` -> 429
RESOURCE_EXHAUSTED with `Retry-After`, `Fault("not_ready")` -> 503 UNAVAILABLE. `finish_reason` set to
`"SAFETY"` answers a withheld candidate, as the service does when its filters trip.

Example:
    >>> with GeminiEmulator(model_dir) as emu:  # doctest: +SKIP
    ...     clf = gemini_backend_for(emu)
    ...     clf.predict("lesion.jpg").extra["prompt_tokens"]
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import os
import re
import uuid
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from derm_cloud.testing.emulators.base import Fault, OneModelEmulator, Response, header_value, retry_after_header

if TYPE_CHECKING:
    from derm_cloud.backends.gcp_gemini import GcpGeminiClassifier
    from derm_cloud.images import PreparedImage

__all__ = ["GeminiEmulator", "gemini_backend_for", "gemini_image_tokens"]

_PATH = re.compile(
    r"^/v1(?:beta1)?/projects/(?P<project>[^/]+)/locations/(?P<location>[^/]+)/publishers/google/models/"
    r"(?P<model>[^/:]+):generateContent$"
)


def gemini_image_tokens(width: int, height: int) -> int:
    """Gemini 2.x image input tokens: 258 up to 384x384, else 258 per 768x768 tile (Google's rule, unverified).

    Example:
        >>> gemini_image_tokens(300, 200), gemini_image_tokens(600, 450), gemini_image_tokens(4000, 3000)
        (258, 258, 5418)
    """
    if width <= 384 and height <= 384:
        return 258
    return 258 * math.ceil(width / 768) * math.ceil(height / 768)


class GeminiEmulator(OneModelEmulator):
    """Vertex AI's Gemini `generateContent` for one project and location.

    Args:
        model_dir: a derm-cloud model directory whose probabilities are "self-reported" (rounded).
        project: the project in the URL path.
        location: the location in the URL path.
        models: Gemini model ids that exist; others get 404.
        decimals: how many decimals the self-reported numbers keep.
    """

    name = "vertex-gemini"

    def __init__(
        self,
        model_dir: str | os.PathLike[str],
        *,
        project: str = "derm-cloud",
        location: str = "us-central1",
        models: Sequence[str] = ("gemini-2.5-flash",),
        decimals: int = 2,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        super().__init__(model_dir, host=host, port=port)
        self.project = project
        self.location = location
        self.models = set(models)
        self.decimals = decimals
        #: when set (e.g. ``"SAFETY"``), candidates come back withheld with this finish reason.
        self.finish_reason: str | None = None
        #: when set, replaces the answer text (to test client-side validation).
        self.scripted_text: str | None = None
        #: the image bytes of the last request (to assert no EXIF arrived).
        self.last_image_bytes: bytes | None = None

    # --- the route ------------------------------------------------------------------------------------------

    def handle(self, method: str, path: str, headers: Mapping[str, str], body: bytes) -> Response:
        match = _PATH.match(path.split("?", 1)[0])
        if method != "POST" or match is None:
            return _error(404, "NOT_FOUND", f"The requested URL {path} was not found on this server.")
        auth = header_value(headers, "Authorization") or ""
        if not auth.startswith("Bearer ") or len(auth) <= len("Bearer "):
            return _error(
                401,
                "UNAUTHENTICATED",
                "Request is missing required authentication credential. Expected OAuth 2 access token.",
            )
        if match.group("project") != self.project or match.group("location") != self.location:
            return _error(403, "PERMISSION_DENIED", "Permission 'aiplatform.endpoints.predict' denied on resource.")
        model = match.group("model")
        if model not in self.models:
            return _error(
                404,
                "NOT_FOUND",
                f"Publisher Model `projects/{self.project}/locations/{self.location}/publishers/google/models/"
                f"{model}` was not found or your project does not have access to it.",
            )
        try:
            request = json.loads(body)
            texts, images = _parts(request["contents"])
        except (ValueError, KeyError, TypeError) as exc:
            return _error(400, "INVALID_ARGUMENT", f"Invalid JSON payload received: {exc}")
        if len(images) != 1:
            return _error(400, "INVALID_ARGUMENT", f"this emulator expects exactly one inline image, got {len(images)}")
        from derm_cloud.errors import InvalidImageError
        from derm_cloud.images import prepare_for_model

        try:
            raw = _b64(images[0])
            self.last_image_bytes = raw
            prepared = prepare_for_model(raw)
        except (ValueError, InvalidImageError) as exc:
            return _error(400, "INVALID_ARGUMENT", f"Unable to process input image: {exc}")
        prompt_tokens = sum(max(1, math.ceil(len(t) / 4)) for t in texts) + gemini_image_tokens(*prepared.size)
        if self.finish_reason is not None:
            candidate: dict[str, Any] = {"finishReason": self.finish_reason, "content": {"role": "model", "parts": []}}
            out_tokens = 0
        else:
            text = self._answer(request.get("generationConfig") or {}, prepared)
            candidate = {"content": {"role": "model", "parts": [{"text": text}]}, "finishReason": "STOP"}
            out_tokens = max(1, math.ceil(len(text) / 4))
        payload = {
            "candidates": [candidate],
            "usageMetadata": {
                "promptTokenCount": prompt_tokens,
                "candidatesTokenCount": out_tokens,
                "totalTokenCount": prompt_tokens + out_tokens,
            },
            "modelVersion": model,
            "responseId": uuid.uuid4().hex[:22],
        }
        return Response.json(payload)

    def _answer(self, config: Mapping[str, Any], image: PreparedImage) -> str:
        if self.scripted_text is not None:
            return self.scripted_text
        schema = config.get("responseJsonSchema") or config.get("responseSchema")
        if config.get("responseMimeType") != "application/json" or not isinstance(schema, dict):
            # Without a response schema a language model answers prose; a client must not pretend it is JSON.
            return "This looks like a pigmented skin lesion. I cannot give a diagnosis; please consult a clinician."
        keys = [str(k) for k in schema.get("required") or list((schema.get("properties") or {}).keys())]
        from derm_cloud.types import PatientMetadata

        server = self._hosted()
        probs = server.predict([image], [PatientMetadata()])[0]
        scores = {str(label): float(p) for label, p in zip(server.labels, probs, strict=True)}
        return json.dumps({k: round(scores.get(k, 0.0), self.decimals) for k in keys})

    # --- faults ----------------------------------------------------------------------------------------------

    def fault_response(self, fault: Fault) -> Response:
        if fault.kind == "throttle":
            return _error(
                429,
                "RESOURCE_EXHAUSTED",
                "Resource exhausted. Please try again later.",
                retry_after_header(fault.retry_after),
            )
        if fault.kind == "error":
            status = {400: "INVALID_ARGUMENT", 500: "INTERNAL", 503: "UNAVAILABLE"}.get(fault.status, "UNKNOWN")
            return _error(fault.status, status, "Injected failure.")
        if fault.kind == "not_ready":
            return _error(503, "UNAVAILABLE", "The service is currently unavailable.")
        if fault.kind == "truncated":  # a whole GenerateContentResponse, which the base server then cuts half-way
            text = json.dumps({"mel": 0.5, "nv": 0.5})
            candidate = {"content": {"role": "model", "parts": [{"text": text}]}, "finishReason": "STOP"}
            return Response.json({"candidates": [candidate], "modelVersion": sorted(self.models)[0]})
        return super().fault_response(fault)


def _error(status: int, code: str, message: str, headers: Mapping[str, str] | None = None) -> Response:
    return Response.json({"error": {"code": status, "message": message, "status": code}}, status, headers)


def _parts(contents: Any) -> tuple[list[str], list[str]]:
    texts: list[str] = []
    images: list[str] = []
    for content in contents:
        for part in content.get("parts") or []:
            if "text" in part:
                texts.append(str(part["text"]))
            inline = part.get("inlineData") or part.get("inline_data")
            if inline:
                images.append(str(inline.get("data", "")))
    return texts, images


def _b64(data: str) -> bytes:
    # The SDK sends URL-safe base64 (bytes fields in its pydantic models); plain base64 is accepted as well.
    try:
        return base64.b64decode(data.replace("-", "+").replace("_", "/"), validate=True)
    except binascii.Error as exc:
        raise ValueError(f"bad base64 ({exc})") from None


def gemini_backend_for(emulator: GeminiEmulator, **options: Any) -> GcpGeminiClassifier:
    """A `GcpGeminiClassifier` wired to a running emulator (dummy token)."""
    from google.oauth2.credentials import Credentials

    from derm_cloud.backends.gcp_gemini import GcpGeminiClassifier

    options.setdefault("model", sorted(emulator.models)[0])
    # A static token that never expires: the SDK sends it as a Bearer header and never tries to refresh it.
    options.setdefault("credentials", Credentials(token="emulator-token"))  # type: ignore[no-untyped-call]
    options.setdefault("project", emulator.project)
    options.setdefault("location", emulator.location)
    return GcpGeminiClassifier(api_endpoint=emulator.url, **options)
