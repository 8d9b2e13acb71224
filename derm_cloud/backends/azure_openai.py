"""`azure-openai`: a GPT-4o-family deployment on Azure OpenAI asked for the seven class scores (zero-shot).

The image goes as the shared EXIF-free payload (JPEG or PNG) in a data URI with a text prompt, and structured
output (`response_format` `json_schema`, `strict`) makes the model answer one JSON object with a number
per HAM10000 class. The numbers are validated (all seven keys, finite, within 0..1) and renormalised to sum to
1; the raw self-reported values stay in `Prediction.provider_scores` and `extra["self_reported"]`.

Caveat: a general-purpose LLM is not a calibrated classifier. Its "probabilities" are self-reported text, not
the output of a softmax trained on lesion images; compare them with calibration metrics before trusting any
threshold. The prompt frames the task as research triage support, never a diagnosis.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from derm_cloud.backends._http import cut_off_error, is_cut_off, is_loopback
from derm_cloud.backends._zero_shot import SelfReportedScores, prompt_with_context, validated_scores
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
from derm_cloud.taxonomy import CLASS_CODES, CLASSES, LabelMap
from derm_cloud.types import PatientMetadata

if TYPE_CHECKING:
    import openai

__all__ = ["DEFAULT_API_VERSION", "DEFAULT_PROMPT", "AzureOpenaiClassifier", "response_format"]

#: GA api-version with structured outputs; which versions support ``json_schema`` is not in our reference.
DEFAULT_API_VERSION = "2024-10-21"

DEFAULT_PROMPT = (
    "This is research triage support, not a diagnosis: a clinician reviews every result. "
    "You are shown one dermatoscopic image of a skin lesion. Estimate how likely it belongs to each of the seven "
    "HAM10000 categories: "
    + "; ".join(f"{c.code} = {c.name}" for c in CLASSES)
    + ". Answer only with the JSON object the schema requires: one number between 0 and 1 per category, "
    "the numbers summing to 1."
)

Detail = Literal["low", "high", "auto"]


def response_format() -> dict[str, Any]:
    """The `response_format` sent with every call: one required number per class code, nothing else.

    The 0..1 range is stated in each description rather than with `minimum`/`maximum`, which strict mode
    did not accept in earlier structured-output releases; the client validates the range itself.
    """
    properties = {
        c.code: {"type": "number", "description": f"probability of {c.name}, between 0 and 1"} for c in CLASSES
    }
    return {
        "type": "json_schema",
        "json_schema": {
            "name": "lesion_triage",
            "strict": True,
            "schema": {
                "type": "object",
                "properties": properties,
                "required": list(CLASS_CODES),
                "additionalProperties": False,
            },
        },
    }


class AzureOpenaiClassifier(SelfReportedScores, Classifier):
    """Zero-shot lesion scores from an Azure OpenAI chat deployment with image input.

    Self-reported probabilities from a general LLM are not calibrated; use this backend to measure what a
    general model does, never as a triage model without calibration and clinical validation.

    Args:
        deployment: the Azure OpenAI deployment name (what `model=` means on Azure).
        azure_endpoint: `https://<resource>.openai.azure.com` (env `AZURE_OPENAI_ENDPOINT`).
        api_version: the REST `api-version`; it must support structured outputs.
        api_key: resource key (env `AZURE_OPENAI_API_KEY`); or pass `azure_ad_token_provider` for Entra ID.
        detail: image detail: `low` costs 85 image tokens; `high` tiles the image (more tokens, finer view).
        use_metadata: add age, sex and site to the prompt when known (off by default: data minimisation).
        prompt: the instruction text; it must keep the triage-not-diagnosis framing.
        timeout: seconds per HTTP call (the retry policy's deadline may shorten it).
        retry: the shared retry policy; the SDK's own retries are switched off.
        max_tokens: completion token cap (the JSON answer needs about 60).
        model_name: the deployed model, for billing keys (`gpt-4o`, `gpt-4o-mini`).
        region: the resource's Azure region, for reports.
        client: an `openai.AzureOpenAI` built elsewhere (tests, custom `http_client`); the caller keeps
            ownership: `close` leaves it open.

    Example:
        >>> clf = AzureOpenaiClassifier("gpt-4o", azure_endpoint="https://res.openai.azure.com")  # doctest: +SKIP
        >>> clf.predict("lesion.jpg").extra["prompt_tokens"]
    """

    backend_name = "azure-openai"
    default_concurrency = 4

    def __init__(
        self,
        deployment: str,
        *,
        azure_endpoint: str | None = None,
        api_version: str = DEFAULT_API_VERSION,
        api_key: str | None = None,
        azure_ad_token_provider: Callable[[], str] | None = None,
        detail: Detail = "low",
        use_metadata: bool = False,
        prompt: str = DEFAULT_PROMPT,
        timeout: float = 60.0,
        retry: RetryPolicy | None = None,
        max_tokens: int = 200,
        max_image_bytes: int = 4_000_000,
        model_name: str = "gpt-4o",
        region: str | None = None,
        client: openai.AzureOpenAI | None = None,
        image_limits: ImageLimits = DEFAULT_LIMITS,
        concurrency: int | None = None,
    ) -> None:
        if detail not in ("low", "high", "auto"):
            raise ConfigError(f"detail must be 'low', 'high' or 'auto', got {detail!r}")
        if not deployment:
            raise ConfigError("deployment is required: the name given to the model deployment in Azure AI Foundry")
        super().__init__(
            label_map=LabelMap.canonical(),
            model_id=deployment,
            retry=retry if retry is not None else RetryPolicy.for_timeout(timeout),
            image_limits=image_limits,
            concurrency=concurrency,
        )
        self.deployment = deployment
        self.api_version = api_version
        self.detail: Detail = detail
        self.use_metadata = use_metadata
        self.prompt = prompt
        self.timeout = timeout
        self.max_tokens = max_tokens
        self.max_image_bytes = max_image_bytes
        self.model_name = model_name
        self.region = region
        self.azure_endpoint = azure_endpoint or os.environ.get("AZURE_OPENAI_ENDPOINT")
        # A caller's client stays the caller's to close (it may be shared with other code).
        self._owns_client = client is None
        # Any: the SDK's overloads type messages as TypedDicts; ours are plain dicts checked by the emulator tests.
        self._client: Any = client if client is not None else self._build_client(api_key, azure_ad_token_provider)

    def _build_client(self, api_key: str | None, token_provider: Callable[[], str] | None) -> openai.AzureOpenAI:
        try:
            import openai
        except ImportError as exc:
            raise MissingDependencyError(
                "the azure-openai backend needs the openai package; run: pip install 'derm-cloud[openai]'"
            ) from exc
        if not self.azure_endpoint:
            raise ConfigError(
                "azure_endpoint is required (https://<resource>.openai.azure.com); pass it or set AZURE_OPENAI_ENDPOINT"
            )
        try:
            # max_retries=0: the shared RetryPolicy retries, so every backend spends the same calls on a fault.
            return openai.AzureOpenAI(
                azure_endpoint=self.azure_endpoint,
                api_version=self.api_version,
                api_key=api_key,
                azure_ad_token_provider=token_provider,
                max_retries=0,
                timeout=self.timeout,
            )
        except openai.OpenAIError as exc:
            raise ConfigError(
                f"cannot build the Azure OpenAI client: {exc}. Pass api_key= (or set AZURE_OPENAI_API_KEY) or "
                "azure_ad_token_provider= for Entra ID"
            ) from None

    # --- the call ---------------------------------------------------------------------------------------------

    def messages(self, image: PreparedImage, metadata: PatientMetadata) -> list[dict[str, Any]]:
        """The chat messages for one image: the prompt and the shared EXIF-free payload as a data URI."""
        encoded, mime = image.upload_base64(max_bytes=self.max_image_bytes, formats=("JPEG", "PNG"))
        text = prompt_with_context(self.prompt, metadata if self.use_metadata else None)
        url = f"data:{mime};base64,{encoded}"
        return [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": text},
                    {"type": "image_url", "image_url": {"url": url, "detail": self.detail}},
                ],
            }
        ]

    def _predict_one(self, image: PreparedImage, metadata: PatientMetadata, timeout: float | None) -> RawResult:
        messages = self.messages(image, metadata)
        seconds = call_timeout(self.timeout, timeout)
        completions = self._client.chat.completions
        # The raw response keeps the headers: the spec documents apim-request-id as the request id, which the SDK's
        # own request id (x-request-id) does not fall back to. An injected stand-in without it is called plainly.
        create = getattr(completions, "with_raw_response", completions).create
        try:
            answer = create(
                model=self.deployment,
                messages=messages,
                response_format=response_format(),
                temperature=0,
                max_tokens=self.max_tokens,
                timeout=seconds,
            )
            completion = answer.parse() if hasattr(answer, "parse") else answer
        except Exception as exc:
            raise _translate(exc, self.deployment) from exc
        headers = getattr(answer, "headers", None) or {}
        return self._parse(completion, headers.get("x-request-id") or headers.get("apim-request-id"))

    def _parse(self, completion: Any, request_id: str | None = None) -> RawResult:
        from openai.types.chat import ChatCompletion

        if not isinstance(completion, ChatCompletion):
            # The SDK hands back the raw text when the body is not JSON (a proxy's HTML error page, say).
            raise InvalidResponseError(
                f"Azure OpenAI answered a body that is not a chat completion ({str(completion)[:80]!r}); check "
                "azure_endpoint points at the resource, not a proxy or portal page"
            )
        request_id = request_id or getattr(completion, "_request_id", None)
        if not completion.choices:
            raise InvalidResponseError("Azure OpenAI answered no choices", request_id=request_id)
        choice = completion.choices[0]
        message = choice.message
        if choice.finish_reason == "content_filter":
            raise ServiceError(
                "Azure OpenAI's content filter withheld the answer; clinical skin images can trip it. Ask for a "
                "content-filter configuration suited to medical images on this deployment",
                status="content_filter",
                request_id=request_id,
                retryable=False,
            )
        if getattr(message, "refusal", None):
            raise ServiceError(
                f"the model refused to score the image: {message.refusal!r}; a general LLM may decline medical "
                "questions - this backend cannot be used for that deployment as configured",
                request_id=request_id,
                retryable=False,
            )
        if choice.finish_reason == "length":
            raise InvalidResponseError(
                f"the answer was cut at max_tokens={self.max_tokens}; raise max_tokens", request_id=request_id
            )
        reported = validated_scores(message.content, request_id)
        total = sum(reported.values())
        usage = completion.usage
        extra: dict[str, Any] = {
            "self_reported": reported,
            "self_reported_sum": total,
            "image_detail": self.detail,
            "model": completion.model,
            "calibrated": False,
        }
        if usage is not None:
            extra.update(
                prompt_tokens=usage.prompt_tokens,
                completion_tokens=usage.completion_tokens,
                total_tokens=usage.total_tokens,
            )
        scores = [(code, reported[code] / total) for code in CLASS_CODES]
        return RawResult(scores=scores, request_id=request_id, extra=extra)

    def describe(self) -> BackendInfo:
        return BackendInfo(
            backend=self.backend_name,
            provider="azure",
            service="Azure OpenAI chat completions (image input, structured output)",
            model_id=self.deployment,
            region=self.region,
            endpoint=self.azure_endpoint,
            data_leaves_machine=True,
            # Abuse monitoring may keep prompts (images included) unless an exemption is approved: unknown here.
            stores_images=None,
            emulated=is_loopback(self.azure_endpoint),
            labels_mapped=True,
            billing={
                "sku": f"azure.openai.{self.model_name}",
                "unit": "1M tokens",
                "image_detail": self.detail,
            },
            model_facts={
                "model": self.model_name,
                "api_version": self.api_version,
                "zero_shot": True,
                "calibrated": False,
                "caveat": "a general LLM's self-reported probabilities are not calibrated",
            },
        )

    def _close(self) -> None:
        if self._owns_client:
            self._client.close()


def _retry_after(headers: Any) -> float | None:
    """Azure OpenAI's `retry-after-ms` when valid (finer than whole seconds), else `Retry-After`."""
    if headers is None:
        return None
    milliseconds = headers.get("retry-after-ms")
    if milliseconds:
        try:
            return float(milliseconds) / 1000.0
        except ValueError:
            pass
    return retry_after_seconds(headers.get("retry-after"))


def _translate(exc: Exception, deployment: str) -> RemoteError:
    """The one place where openai exceptions become derm-cloud errors."""
    import openai

    backend = AzureOpenaiClassifier.backend_name
    if isinstance(exc, openai.APITimeoutError):
        return DeadlineExceededError(f"Azure OpenAI did not answer in time: {exc}", backend=backend)
    if isinstance(exc, openai.APIConnectionError) and is_cut_off(exc):
        return cut_off_error("Azure OpenAI", exc, backend=backend)
    if isinstance(exc, openai.APIConnectionError):
        return ServiceError(f"cannot reach Azure OpenAI ({exc}); check azure_endpoint and the network", backend=backend)
    if not isinstance(exc, openai.APIStatusError):
        if isinstance(exc, RemoteError):
            return exc
        return ServiceError(f"Azure OpenAI call failed: {type(exc).__name__}: {exc}", backend=backend, retryable=False)
    status = exc.status_code
    request_id = exc.request_id
    common: dict[str, Any] = {"backend": backend, "status": status, "request_id": request_id}
    body = exc.body if isinstance(exc.body, dict) else {}
    code = str(body.get("code") or "")
    message = str(body.get("message") or exc.message)
    if isinstance(exc, openai.RateLimitError):
        return ThrottledError(
            f"Azure OpenAI rate limit (tokens or requests per minute): {message}",
            retry_after=_retry_after(exc.response.headers),
            **common,
        )
    if isinstance(exc, (openai.AuthenticationError, openai.PermissionDeniedError)):
        return AuthenticationError(
            f"Azure OpenAI refused the credentials: {message}. Check api_key (or the Entra token's role "
            "'Cognitive Services OpenAI User') and that azure_endpoint is this key's resource",
            **common,
        )
    if isinstance(exc, openai.NotFoundError):
        return NotFoundError(
            f"Azure OpenAI has no deployment {deployment!r} at this endpoint, or api-version is unsupported: "
            f"{message}. Check the deployment name in Azure AI Foundry",
            **common,
        )
    if isinstance(exc, openai.BadRequestError):
        if code == "content_filter" or "content management policy" in message:
            return ServiceError(
                "Azure OpenAI's content filter blocked the request; clinical skin images can trip it. Ask for a "
                "content-filter configuration suited to medical images on this deployment",
                retryable=False,
                **common,
            )
        return ServiceError(f"Azure OpenAI rejected the request (400): {message}", retryable=False, **common)
    if status >= 500:
        return ServiceError(f"Azure OpenAI failed on its side ({status}): {message}", **common)
    return ServiceError(f"Azure OpenAI error {status}: {message}", retryable=False, **common)
