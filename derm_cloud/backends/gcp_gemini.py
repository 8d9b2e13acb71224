"""`vertex-gemini`: a Gemini model on Vertex AI asked for the seven class scores (zero-shot), via google-genai.

The Vertex AI counterpart of the `azure-openai` baseline, built the same way so the two are comparable: the
same prompt (triage support, never a diagnosis), the same seven-number JSON answer enforced by a response
schema (`response_json_schema`), the same validation (all seven keys, finite, within 0..1) and the same
renormalisation; the raw self-reported values stay in `Prediction.provider_scores` and
`extra["self_reported"]`. The image goes inline (`Part.from_bytes`), EXIF-stripped.

The client is the Google Gen AI SDK (`google-genai`) in Vertex mode; the older `vertexai.generative_models`
module of `google-cloud-aiplatform` is deprecated for Gemini. The SDK's own retries are switched off
(`HttpRetryOptions(attempts=1)`) so the shared `RetryPolicy` decides, and
thinking is off by default (`thinking_budget=0`) so cost and latency stay those of one short answer.

Caveat: a general-purpose multimodal model is not a calibrated classifier; its "probabilities" are
self-reported text. Measure it as a baseline, never use it to triage without calibration and clinical validation.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from derm_cloud.backends._http import cut_off_error, is_cut_off, is_loopback
from derm_cloud.backends._zero_shot import SelfReportedScores, prompt_with_context, validated_scores
from derm_cloud.backends.azure_openai import DEFAULT_PROMPT
from derm_cloud.base import BackendInfo, Classifier, RawResult
from derm_cloud.errors import (
    AuthenticationError,
    ConfigError,
    DeadlineExceededError,
    InvalidResponseError,
    MissingDependencyError,
    NotFoundError,
    RemoteError,
    ServiceError,
    ThrottledError,
)
from derm_cloud.images import DEFAULT_LIMITS, ImageLimits, PreparedImage
from derm_cloud.retry import RetryPolicy, call_timeout, retry_after_seconds
from derm_cloud.taxonomy import CLASS_CODES, CLASSES
from derm_cloud.types import PatientMetadata

if TYPE_CHECKING:
    from google import genai

__all__ = ["DEFAULT_MODEL", "GcpGeminiClassifier", "response_json_schema"]

DEFAULT_MODEL = "gemini-2.5-flash"
#: finish reasons that mean a filter withheld the answer (not retryable: the same image trips it again).
_BLOCKED = frozenset({"SAFETY", "PROHIBITED_CONTENT", "BLOCKLIST", "SPII", "RECITATION", "IMAGE_SAFETY"})


def response_json_schema() -> dict[str, Any]:
    """The JSON schema every answer must follow: one required number per class code, nothing else."""
    return {
        "type": "object",
        "properties": {
            c.code: {"type": "number", "description": f"probability of {c.name}, between 0 and 1"} for c in CLASSES
        },
        "required": list(CLASS_CODES),
        "additionalProperties": False,
    }


class GcpGeminiClassifier(SelfReportedScores, Classifier):
    """Zero-shot lesion scores from a Gemini model on Vertex AI (self-reported, not calibrated).

    Args:
        model: the Gemini model id (`gemini-2.5-flash`, `gemini-2.5-pro` ...).
        project: Google Cloud project (env `GOOGLE_CLOUD_PROJECT`).
        location: Vertex AI region (`us-central1`; `global` for the global endpoint).
        credentials: `google.auth` credentials; default: Application Default Credentials.
        api_endpoint: override the service URL (an emulator on 127.0.0.1, a private endpoint).
        use_metadata: add age, sex and site to the prompt when known (off by default: data minimisation).
        prompt: the instruction text; it must keep the triage-not-diagnosis framing.
        timeout: seconds per HTTP call (the retry policy's deadline may shorten it).
        retry: the shared retry policy; the SDK's own retries are switched off.
        max_output_tokens: answer token cap (the JSON answer needs about 60).
        thinking_budget: thinking tokens allowed (0 = off, where the model allows it; `None` = model default).
        max_image_bytes: inline image cap; larger payloads are re-encoded before sending.
        region: reported region (defaults to `location`).
        client: a `google.genai.Client` built elsewhere; the caller keeps ownership.

    Example:
        >>> clf = GcpGeminiClassifier(project="my-project", location="us-central1")  # doctest: +SKIP
        >>> clf.predict("lesion.jpg").extra["prompt_tokens"]  # doctest: +SKIP
    """

    backend_name = "vertex-gemini"
    default_concurrency = 4

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        project: str | None = None,
        location: str = "us-central1",
        credentials: Any = None,
        api_endpoint: str | None = None,
        use_metadata: bool = False,
        prompt: str = DEFAULT_PROMPT,
        timeout: float = 60.0,
        retry: RetryPolicy | None = None,
        max_output_tokens: int = 256,
        thinking_budget: int | None = 0,
        max_image_bytes: int = 7_000_000,
        region: str | None = None,
        client: genai.Client | None = None,
        image_limits: ImageLimits = DEFAULT_LIMITS,
        concurrency: int | None = None,
    ) -> None:
        if not model:
            raise ConfigError("model is required: a Gemini model id such as 'gemini-2.5-flash'")
        if max_output_tokens < 16:
            raise ConfigError(
                f"max_output_tokens must be at least 16 (the answer needs about 60), got {max_output_tokens}"
            )
        super().__init__(
            label_map=_canonical(),
            model_id=model,
            retry=retry if retry is not None else RetryPolicy.for_timeout(timeout),
            image_limits=image_limits,
            concurrency=concurrency,
        )
        self.model = model
        self.project = project or os.environ.get("GOOGLE_CLOUD_PROJECT")
        self.location = location
        self.api_endpoint = api_endpoint
        self.use_metadata = use_metadata
        self.prompt = prompt
        self.timeout = timeout
        self.max_output_tokens = max_output_tokens
        self.thinking_budget = thinking_budget
        self.max_image_bytes = max_image_bytes
        self.region = region or location
        self._owns_client = client is None
        self._client: Any = client if client is not None else self._build_client(credentials)

    def _build_client(self, credentials: Any) -> genai.Client:
        try:
            from google import genai
            from google.genai import types
        except ImportError as exc:
            raise MissingDependencyError(
                "the vertex-gemini backend needs google-genai; run: pip install 'derm-cloud[vertex]'"
            ) from exc
        if not self.project:
            raise ConfigError("project is required for Vertex AI: pass project= or set GOOGLE_CLOUD_PROJECT")
        options = types.HttpOptions(
            base_url=self.api_endpoint,
            timeout=int(self.timeout * 1000),
            # One attempt: the shared RetryPolicy retries, so every backend spends the same calls on a fault.
            retry_options=types.HttpRetryOptions(attempts=1),
        )
        try:
            return genai.Client(
                vertexai=True,
                project=self.project,
                location=self.location,
                credentials=credentials,
                http_options=options,
            )
        except Exception as exc:  # google.auth's DefaultCredentialsError and the SDK's ValueError
            raise ConfigError(
                f"cannot build the Vertex AI Gemini client ({type(exc).__name__}: {exc}); run "
                "`gcloud auth application-default login` or pass credentials="
            ) from None

    # --- the call ---------------------------------------------------------------------------------------------

    def request_text(self, metadata: PatientMetadata) -> str:
        """The prompt for one image, with patient context only when `use_metadata` is on."""
        return prompt_with_context(self.prompt, metadata if self.use_metadata else None)

    def _predict_one(self, image: PreparedImage, metadata: PatientMetadata, timeout: float | None) -> RawResult:
        from google.genai import types

        data, mime = image.upload_bytes(max_bytes=self.max_image_bytes, formats=("JPEG", "PNG"))
        seconds = call_timeout(self.timeout, timeout)
        config = types.GenerateContentConfig(
            temperature=0,
            response_mime_type="application/json",
            response_json_schema=response_json_schema(),
            max_output_tokens=self.max_output_tokens,
            thinking_config=(
                types.ThinkingConfig(thinking_budget=self.thinking_budget) if self.thinking_budget is not None else None
            ),
            http_options=types.HttpOptions(timeout=max(1, int(seconds * 1000))),
        )
        contents = [
            types.Content(
                role="user",
                parts=[
                    types.Part.from_bytes(data=data, mime_type=mime),
                    types.Part.from_text(text=self.request_text(metadata)),
                ],
            )
        ]
        try:
            response = self._client.models.generate_content(model=self.model, contents=contents, config=config)
        except Exception as exc:
            raise _translate(exc, self.model) from exc
        return self._parse(response)

    def _parse(self, response: Any) -> RawResult:
        request_id = getattr(response, "response_id", None)
        feedback = getattr(response, "prompt_feedback", None)
        if feedback is not None and getattr(feedback, "block_reason", None):
            raise ServiceError(
                f"Gemini's safety filters blocked the prompt ({feedback.block_reason}); clinical skin images can "
                "trip them: review the safety settings for medical images on this project",
                backend=self.backend_name,
                request_id=request_id,
                retryable=False,
            )
        candidates = getattr(response, "candidates", None) or []
        if not candidates:
            raise InvalidResponseError(
                "Gemini answered no candidates", backend=self.backend_name, request_id=request_id
            )
        reason = str(getattr(candidates[0].finish_reason, "value", candidates[0].finish_reason) or "")
        if reason in _BLOCKED:
            raise ServiceError(
                f"Gemini withheld the answer (finish reason {reason}); clinical skin images can trip its filters",
                backend=self.backend_name,
                request_id=request_id,
                retryable=False,
            )
        if reason == "MAX_TOKENS":
            raise InvalidResponseError(
                f"the answer was cut at max_output_tokens={self.max_output_tokens}; raise max_output_tokens "
                "(or lower thinking_budget)",
                backend=self.backend_name,
                request_id=request_id,
            )
        reported = validated_scores(response.text, request_id)
        total = sum(reported.values())
        extra: dict[str, Any] = {
            "self_reported": reported,
            "self_reported_sum": total,
            "model": getattr(response, "model_version", None) or self.model,
            "calibrated": False,
        }
        usage = getattr(response, "usage_metadata", None)
        if usage is not None:
            # Thinking tokens are billed as output tokens.
            output = (usage.candidates_token_count or 0) + (usage.thoughts_token_count or 0)
            extra.update(
                prompt_tokens=usage.prompt_token_count, completion_tokens=output, total_tokens=usage.total_token_count
            )
        scores = [(code, reported[code] / total) for code in CLASS_CODES]
        return RawResult(scores=scores, request_id=request_id, extra=extra)

    def describe(self) -> BackendInfo:
        endpoint = self.api_endpoint or f"https://{self.location}-aiplatform.googleapis.com"
        return BackendInfo(
            backend=self.backend_name,
            provider="gcp",
            service="Vertex AI Gemini generateContent (image input, JSON schema)",
            model_id=self.model,
            region=self.region,
            endpoint=endpoint,
            data_leaves_machine=True,
            # Vertex AI does not train on customer data; its abuse logging of prompts is not stated in our reference.
            stores_images=None,
            emulated=is_loopback(self.api_endpoint),
            labels_mapped=True,
            billing={"sku": f"gcp.vertex.{self.model}", "unit": "1M tokens"},
            model_facts={
                "model": self.model,
                "zero_shot": True,
                "calibrated": False,
                "thinking_budget": self.thinking_budget,
                "caveat": "a general multimodal model's self-reported probabilities are not calibrated",
            },
        )

    def _close(self) -> None:
        close = getattr(self._client, "close", None)
        if self._owns_client and callable(close):
            close()


def _canonical() -> Any:
    from derm_cloud.taxonomy import LabelMap

    return LabelMap.canonical()


def _translate(exc: Exception, model: str) -> RemoteError:
    """The one place where google-genai (and its httpx transport) exceptions become derm-cloud errors."""
    import httpx
    from google.genai import errors as genai_errors

    backend = GcpGeminiClassifier.backend_name
    if is_cut_off(exc):
        return cut_off_error("Vertex AI Gemini", exc, backend=backend)
    if isinstance(exc, httpx.TimeoutException):
        return DeadlineExceededError(f"Vertex AI Gemini did not answer in time: {exc}", backend=backend)
    if isinstance(exc, httpx.TransportError):
        return ServiceError(
            f"cannot reach Vertex AI ({type(exc).__name__}: {exc}); check api_endpoint", backend=backend
        )
    if not isinstance(exc, genai_errors.APIError):
        if isinstance(exc, RemoteError):
            return exc
        return ServiceError(
            f"Vertex AI Gemini call failed: {type(exc).__name__}: {exc}", backend=backend, retryable=False
        )
    status = exc.code
    headers = getattr(getattr(exc, "response", None), "headers", None) or {}
    common: dict[str, Any] = {"backend": backend, "status": status}
    message = str(exc.message or exc.status or "")
    if status == 429:
        return ThrottledError(
            f"Vertex AI Gemini quota exhausted (RESOURCE_EXHAUSTED): {message}; request a quota increase or "
            "provisioned throughput",
            retry_after=retry_after_seconds(headers.get("retry-after")),
            **common,
        )
    if status in (401, 403):
        return AuthenticationError(
            f"Vertex AI refused the credentials: {message}. The caller needs roles/aiplatform.user on the project",
            **common,
        )
    if status == 404:
        return NotFoundError(
            f"Vertex AI has no model {model!r} in this project/location: {message}. Check the model id and "
            "location (not every Gemini model is in every region)",
            **common,
        )
    if status == 400:
        return ServiceError(f"Vertex AI rejected the request (400): {message}", retryable=False, **common)
    if isinstance(status, int) and status >= 500:
        return ServiceError(f"Vertex AI failed on its side ({status}): {message}", **common)
    return ServiceError(f"Vertex AI error {status}: {message}", retryable=False, **common)
