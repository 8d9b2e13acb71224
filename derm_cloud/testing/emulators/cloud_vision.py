"""Google Cloud Vision `images:annotate` emulator (label detection) on 127.0.0.1.

A contract emulator, not a model: it answers the wire format of `POST /v1/images:annotate`
(docs/reference/cloud-apis.md §6)
with a few generic labels ("Skin", "Mole", "Brown", "Pink", "Close-up", "Pattern") whose scores are computed
deterministically from simple image statistics (skin-colour pixel share, centre-versus-border darkness, hue
shares, texture). The same image always gets the same labels; the numbers mean nothing medically, exactly like
the real service's generic labels for a lesion photo. `mid` values are emulator ids, not Knowledge Graph ids.

Honoured: `features[].type` `LABEL_DETECTION` (as a name or the enum number 4 that the REST transport sends),
`maxResults` (default 10), up to 16 images per request, per-image errors in `responses[i].error` (`Bad
image data.`), a request size limit (10 MB, decimal, as published for Product Search; an option), an API key check
(`x-goog-api-key` header or `?key=`) when `api_key` is set, and injected `Fault` s in Google's error
envelope. Other feature types are ignored (their annotations are simply absent).

Example:
    >>> with CloudVisionEmulator() as emu:  # doctest: +SKIP
    ...     clf = cloud_vision_backend_for(emu)
    ...     clf.predict("lesion.jpg").provider_scores
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from derm_cloud.testing.emulators.base import EmulatorServer, Fault, Response
from derm_cloud.testing.emulators.vertex_errors import _GoogleError

if TYPE_CHECKING:
    import numpy as np

    from derm_cloud.backends.gcp_vision import GcpVisionClassifier

__all__ = ["CloudVisionEmulator", "cloud_vision_backend_for", "label_scores"]

_LABEL_DETECTION = ("LABEL_DETECTION", 4)
_MAX_IMAGES = 16
# Product Search's published limits (docs/reference/cloud-apis.md §6); the general Vision limits page was not available.
DEFAULT_MAX_REQUEST_BYTES = 10_000_000  # "10 MB" as published: decimal bytes, as the backend enforces it


def label_scores(pixels: np.ndarray) -> dict[str, float]:
    """Deterministic generic-label scores in [0, 1] for an RGB `uint8` array (the emulator's "model").

    Example:
        >>> import numpy as np
        >>> sorted(label_scores(np.full((64, 64, 3), (200, 150, 120), np.uint8)))[:2]
        ['Brown', 'Close-up']
    """
    import numpy as np

    rgb = pixels.astype(np.float64)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    mx, mn = rgb.max(axis=-1), rgb.min(axis=-1)
    # A classic RGB skin-colour rule (Kovac et al. 2003): enough for "does this look like skin".
    skin = (r > 95) & (g > 40) & (b > 20) & (mx - mn > 15) & (np.abs(r - g) > 15) & (r > g) & (r > b)
    luminance = 0.299 * r + 0.587 * g + 0.114 * b
    h, w = luminance.shape
    centre = luminance[h // 3 : 2 * h // 3, w // 3 : 2 * w // 3]
    border = np.concatenate([luminance[: h // 6].ravel(), luminance[-(h // 6) :].ravel()])
    darker_centre = max(0.0, float(border.mean() - centre.mean()) / 255.0) if centre.size and border.size else 0.0
    saturation = np.where(mx > 0, (mx - mn) / np.maximum(mx, 1), 0.0)
    brownish = (r > g) & (g > b) & (saturation > 0.2) & (mx < 200)
    pinkish = (r > 150) & (b > g) & (saturation > 0.15)
    texture = float(np.abs(np.diff(luminance, axis=1)).mean()) / 64.0
    return {
        "Skin": 0.5 + 0.49 * float(skin.mean()),
        "Mole": min(0.99, 0.45 + 2.5 * darker_centre),
        "Brown": min(0.99, 0.4 + 0.6 * float(brownish.mean())),
        "Pink": min(0.99, 0.4 + 0.8 * float(pinkish.mean())),
        "Close-up": min(0.99, 0.55 + 0.4 * (1.0 - min(1.0, texture))),
        "Pattern": min(0.99, 0.35 + 0.6 * min(1.0, texture)),
    }


class CloudVisionEmulator(EmulatorServer):
    """Cloud Vision label detection over REST.

    Args:
        api_key: when set, requests must carry it (`x-goog-api-key` or `?key=`): missing -> 403, wrong -> 400.
        max_request_bytes: request body limit (400 `INVALID_ARGUMENT` above); `None` disables it.
        min_score: labels scoring below this are not returned (the service also omits weak labels).
    """

    name = "cloud-vision"

    def __init__(
        self,
        *,
        api_key: str | None = None,
        max_request_bytes: int | None = DEFAULT_MAX_REQUEST_BYTES,
        min_score: float = 0.5,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        super().__init__(host=host, port=port)
        self.api_key = api_key
        self.max_request_bytes = max_request_bytes
        self.min_score = min_score
        #: the image bytes of the last request, base64-decoded (to assert no EXIF arrived).
        self.last_image_bytes: bytes | None = None

    def handle(self, method: str, path: str, headers: Mapping[str, str], body: bytes) -> Response:
        parts = urlsplit(path)
        try:
            self._check_key(headers, parse_qs(parts.query).get("key", [None])[0])
            if method != "POST" or parts.path != "/v1/images:annotate":
                raise _GoogleError(404, f"{method} {parts.path} is not served by the Cloud Vision emulator.")
            if self.max_request_bytes is not None and len(body) > self.max_request_bytes:
                raise _GoogleError(400, f"Request payload size exceeds the limit: {self.max_request_bytes} bytes.")
            try:
                payload = json.loads(body)
            except ValueError:
                raise _GoogleError(400, "Invalid JSON payload received.") from None
            requests = payload.get("requests") if isinstance(payload, dict) else None
            if not isinstance(requests, list) or not requests:
                raise _GoogleError(400, "Invalid JSON payload received. 'requests' must be a non-empty list.")
            if len(requests) > _MAX_IMAGES:
                raise _GoogleError(400, f"Too many images per request: {len(requests)}; the limit is {_MAX_IMAGES}.")
            return Response.json({"responses": [self._annotate(r) for r in requests]})
        except _GoogleError as exc:
            return exc.response()

    def _check_key(self, headers: Mapping[str, str], query_key: str | None) -> None:
        if self.api_key is None:
            return
        lower = {k.lower(): v for k, v in headers.items()}
        key = lower.get("x-goog-api-key") or query_key
        if not key:
            raise _GoogleError(403, "The request is missing a valid API key.")
        if key != self.api_key:
            raise _GoogleError(400, "API key not valid. Please pass a valid API key.")

    def _annotate(self, request: Any) -> dict[str, Any]:
        from derm_cloud.errors import InvalidImageError
        from derm_cloud.images import load_image

        if not isinstance(request, dict):
            return {"error": {"code": 3, "message": "Each request must be an object."}}
        image = request.get("image") or {}
        content = image.get("content")
        if not isinstance(content, str):
            return {"error": {"code": 3, "message": "This emulator accepts image.content only (no image.source)."}}
        features = request.get("features") or []
        wanted = [f for f in features if isinstance(f, dict) and f.get("type") in _LABEL_DETECTION]
        if not wanted:
            return {}
        try:
            raw = base64.b64decode(content, validate=True)
            self.last_image_bytes = raw
            prepared = load_image(raw)
        except (binascii.Error, ValueError, InvalidImageError):
            return {"error": {"code": 3, "message": "Bad image data."}}
        limit = int(wanted[0].get("maxResults") or 10)
        small = prepared.image.resize((64, 64))
        import numpy as np

        scores = label_scores(np.asarray(small, dtype=np.uint8))
        ranked = sorted(((s, label) for label, s in scores.items() if s >= self.min_score), reverse=True)[:limit]
        return {
            "labelAnnotations": [
                {
                    "mid": f"/g/dcemu_{label.lower().replace('-', '_')}",
                    "description": label,
                    "score": round(score, 6),
                    "topicality": round(score, 6),
                }
                for score, label in ranked
            ]
        }

    def fault_response(self, fault: Fault) -> Response:
        if fault.kind == "truncated":  # a whole BatchAnnotateImagesResponse, which the base server then cuts
            label = {"mid": "/g/dcemu_skin", "description": "Skin", "score": 0.9, "topicality": 0.9}
            return Response.json({"responses": [{"labelAnnotations": [label]}]})
        if fault.kind == "malformed":
            return super().fault_response(fault)
        if fault.kind == "throttle":
            exc = _GoogleError(
                429, "Quota exceeded for quota metric 'Requests' of service 'vision.googleapis.com'.", fault.retry_after
            )
        elif fault.kind == "not_ready":
            exc = _GoogleError(503, "The service is currently unavailable.")
        else:
            exc = _GoogleError(fault.status, "Injected failure.")
        return exc.response()


def cloud_vision_backend_for(emulator: CloudVisionEmulator, **options: Any) -> GcpVisionClassifier:
    """A `GcpVisionClassifier` wired to a running emulator (REST, http).

    Uses the emulator's API key when it has one, anonymous credentials otherwise; options pass through.
    """
    from derm_cloud.backends.gcp_vision import GcpVisionClassifier

    options.setdefault("api_endpoint", emulator.url)
    if emulator.api_key is not None:
        options.setdefault("api_key", emulator.api_key)
    elif "credentials" not in options and "api_key" not in options:
        from google.auth.credentials import AnonymousCredentials

        options["credentials"] = AnonymousCredentials()  # type: ignore[no-untyped-call]
    return GcpVisionClassifier(transport="rest", **options)
