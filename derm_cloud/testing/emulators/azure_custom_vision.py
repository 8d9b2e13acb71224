"""Azure AI Custom Vision prediction API on 127.0.0.1, hosting a real model directory.

Speaks the v3.0/v3.1 classification routes the `azure-cognitiveservices-vision-customvision` SDK calls
(docs/reference/cloud-apis.md section 3):

```text
POST /customvision/v3.{0,1}/prediction/{projectId}/classify/iterations/{publishedName}/image[/nostore]
POST /customvision/v3.{0,1}/prediction/{projectId}/classify/iterations/{publishedName}/url[/nostore]
```

The image arrives as `multipart/form-data` (part `imageData`; the SDK always sends multipart) or as
`application/octet-stream`. The answer is an `ImagePrediction` whose probabilities come from the hosted
model (via `derm_cloud.serving.ModelServer`), tags named as configured and sorted by probability.

Answers follow Microsoft's published OpenAPI documents of each version (`tests/specs/azure`, checked by
`tests/fidelity`): `Prediction.tagType` only on v3.1 routes (v3.0 has no such field). Errors use the service's
two body shapes: the API gateway's `{"error": {"code": "401", "message": ...}}` for a wrong or missing
`Prediction-Key` and for rate limiting (429 with `Retry-After`; the spec's `CustomVisionErrorCodes` has no
rate-limit code), and the spec's `CustomVisionError` `{"code", "message"}` with a `CustomVisionErrorCodes`
value for everything else (`NotFoundProject`, `NotFoundIteration`, `BadRequestImageSizeBytes`,
`BadRequestImageFormat`). Which code the live service sends for an unknown project or iteration is not
documented (docs/reference/cloud-apis.md section 3).

Every call is kept in `CustomVisionEmulator.calls` with whether the stored or the no-store route was
used, so tests can prove that images are only kept on opt-in (`CustomVisionEmulator.stored_images`).

Example:
    >>> with CustomVisionEmulator(model_dir) as emu:  # doctest: +SKIP
    ...     clf = custom_vision_backend_for(emu)
    ...     clf.predict("lesion.jpg")
"""

from __future__ import annotations

import datetime as dt
import json
import re
import threading
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from derm_cloud.testing.emulators.base import EmulatorServer, Fault, Response, header_value, retry_after_header

if TYPE_CHECKING:
    import os

    from derm_cloud.backends.azure_custom_vision import AzureCustomVisionClassifier
    from derm_cloud.serving import ModelServer

__all__ = [
    "DEFAULT_PREDICTION_KEY",
    "DEFAULT_PROJECT_ID",
    "DEFAULT_PUBLISHED_NAME",
    "CustomVisionCall",
    "CustomVisionEmulator",
    "custom_vision_backend_for",
    "parse_multipart",
]

DEFAULT_PROJECT_ID = "0f3c1a52-6d2e-4c55-9a7b-3e8d2b1f4a10"
DEFAULT_PUBLISHED_NAME = "Iteration1"
DEFAULT_PREDICTION_KEY = "emulator-prediction-key"
#: The service's prediction image limit ("4 MB"), as decimal bytes: the same figure the backend enforces, so CI
#: catches an image between 4,000,000 and 4,194,304 bytes that the real service may refuse.
MAX_IMAGE_BYTES = 4_000_000

_ROUTE = re.compile(
    r"^/customvision/v(?P<version>3\.[01])/prediction/(?P<project>[^/]+)/classify/iterations/(?P<name>[^/]+)"
    r"/(?P<kind>image|url)(?P<nostore>/nostore)?/?$"
)
_GATEWAY_401 = (
    "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key for an "
    "active subscription and use a correct regional API endpoint for your resource."
)


@dataclass(frozen=True)
class CustomVisionCall:
    """One classification the emulator answered.

    Attributes:
        project_id, published_name: the iteration addressed.
        stored: `True` for the `/image` and `/url` routes (the service keeps the image 30 days),
            `False` for `/nostore`.
        via: `multipart`, `octet-stream` or `url`.
        image: the image bytes exactly as received (for EXIF and size assertions).
        prediction_id: the `id` returned.
    """

    project_id: str
    published_name: str
    stored: bool
    via: str
    image: bytes
    prediction_id: str


@dataclass
class _Iteration:
    server: ModelServer
    tags: list[str]
    tag_ids: list[str]
    iteration_id: str


class CustomVisionEmulator(EmulatorServer):
    """The Custom Vision prediction endpoint, hosting real models as published iterations.

    Args:
        model_dir: model directory published as `project_id` / `published_name` (`None`: publish later
            with `publish`).
        project_id: project GUID of that first iteration.
        published_name: its publish name.
        prediction_key: the key every request must carry in `Prediction-Key`.
        tags: tag names for the model's labels, either in label order or as `{model_label: tag_name}`
            (e.g. the names a team typed when training: `{"mel": "Melanoma"}`); default: the labels.
        max_image_bytes: the service's image size limit (400 `BadRequestImageSizeBytes` above it).
        host, port: where to listen (port 0 picks a free port).
    """

    name = "azure-custom-vision"

    def __init__(
        self,
        model_dir: str | os.PathLike[str] | None = None,
        *,
        project_id: str = DEFAULT_PROJECT_ID,
        published_name: str = DEFAULT_PUBLISHED_NAME,
        prediction_key: str = DEFAULT_PREDICTION_KEY,
        tags: Sequence[str] | Mapping[str, str] | None = None,
        max_image_bytes: int = MAX_IMAGE_BYTES,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        super().__init__(host=host, port=port)
        self.prediction_key = prediction_key
        self.max_image_bytes = max_image_bytes
        self.project_id = project_id
        self.published_name = published_name
        self.calls: list[CustomVisionCall] = []
        self._iterations: dict[tuple[str, str], _Iteration] = {}
        self._calls_lock = threading.Lock()
        if model_dir is not None:
            self.publish(model_dir, project_id=project_id, published_name=published_name, tags=tags)

    def publish(
        self,
        model_dir: str | os.PathLike[str],
        *,
        project_id: str = DEFAULT_PROJECT_ID,
        published_name: str = DEFAULT_PUBLISHED_NAME,
        tags: Sequence[str] | Mapping[str, str] | None = None,
    ) -> None:
        """Publish a model directory as an iteration (loads the model now, so errors surface here)."""
        from derm_cloud.serving import ModelServer

        server = ModelServer(model_dir)
        labels = server.labels
        if tags is None:
            names = list(labels)
        elif isinstance(tags, Mapping):
            names = [tags.get(label, label) for label in labels]
        else:
            names = list(tags)
            if len(names) != len(labels):
                raise ValueError(f"tags has {len(names)} names for a model with {len(labels)} labels")
        ids = [str(uuid.uuid5(uuid.NAMESPACE_URL, f"customvision:{project_id}:{n}")) for n in names]
        iteration_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"customvision:{project_id}:{published_name}"))
        self._iterations[(project_id.lower(), published_name)] = _Iteration(server, names, ids, iteration_id)

    @property
    def stored_images(self) -> int:
        """How many images went through a storing route (the live service keeps those 30 days)."""
        with self._calls_lock:
            return sum(1 for c in self.calls if c.stored)

    @property
    def last_image_bytes(self) -> bytes | None:
        """The image of the last classification, exactly as received (`None` before any)."""
        with self._calls_lock:
            return self.calls[-1].image if self.calls else None

    def reset(self) -> None:
        """Forget recorded requests, calls and pending faults."""
        super().reset()
        with self._calls_lock:
            self.calls.clear()

    # --- the API ---------------------------------------------------------------------------------------------

    def handle(self, method: str, path: str, headers: Mapping[str, str], body: bytes) -> Response:
        key = header_value(headers, "Prediction-Key")
        if key is None:
            return _gateway(
                401,
                "Access denied due to missing subscription key. Make sure to include the "
                "subscription key when making requests to an API.",
            )
        if key != self.prediction_key:
            return _gateway(401, _GATEWAY_401)
        route = _ROUTE.match(urlsplit(path).path)
        if route is None:
            return _gateway(404, "Resource not found")
        if method != "POST":
            return _error(405, "BadRequestNotSupported", f"{method} is not supported on this route; use POST")
        project, name = route["project"], route["name"]
        if not any(p == project.lower() for p, _ in self._iterations):
            return _error(404, "NotFoundProject", f"Project {project} not found")
        iteration = self._iterations.get((project.lower(), name))
        if iteration is None:
            return _error(404, "NotFoundIteration", f"Iteration {name!r} is not published in project {project}")
        if route["kind"] == "url":
            image, via = self._fetch_url(body)
        else:
            image, via = _image_from_body(headers, body)
        if isinstance(image, Response):
            return image
        if len(image) > self.max_image_bytes:
            return _error(
                400,
                "BadRequestImageSizeBytes",
                f"Image size is {len(image)} bytes; the limit is {self.max_image_bytes} bytes",
            )
        return self._classify(
            iteration, project, name, image, via, stored=not route["nostore"], v31=route["version"] == "3.1"
        )

    def _classify(
        self, iteration: _Iteration, project: str, name: str, image: bytes, via: str, *, stored: bool, v31: bool
    ) -> Response:
        from derm_cloud.errors import InvalidImageError
        from derm_cloud.images import prepare_for_model
        from derm_cloud.types import PatientMetadata

        try:
            prepared = prepare_for_model(image)
        except InvalidImageError:
            return _error(400, "BadRequestImageFormat", "Bad Request Image Format, the image is not valid")
        probs = iteration.server.predict([prepared], [PatientMetadata()])[0]
        order = sorted(range(len(probs)), key=lambda i: -probs[i])
        prediction_id = str(uuid.uuid4())
        payload = {
            "id": prediction_id,
            "project": project,
            "iteration": iteration.iteration_id,
            "created": _now(),
            "predictions": [
                {
                    "probability": probs[i],
                    "tagId": iteration.tag_ids[i],
                    "tagName": iteration.tags[i],
                    **({"tagType": "Regular"} if v31 else {}),  # added in v3.1; the v3.0 Prediction has no tagType
                    "boundingBox": None,
                }
                for i in order
            ],
        }
        with self._calls_lock:
            self.calls.append(CustomVisionCall(project, name, stored, via, image, prediction_id))
        return Response.json(payload, headers={"apim-request-id": str(uuid.uuid4())})

    def _fetch_url(self, body: bytes) -> tuple[bytes | Response, str]:
        import urllib.error
        import urllib.request

        try:
            url = json.loads(body)["url"]
        except (ValueError, KeyError, TypeError):
            return _error(400, "BadRequestImageUrl", 'Expected a JSON body {"url": "..."}'), "url"
        if not isinstance(url, str) or urlsplit(url).scheme not in ("http", "https"):
            return _error(400, "BadRequestImageUrl", "Invalid image URL"), "url"
        try:
            with urllib.request.urlopen(url, timeout=5) as answer:
                return bytes(answer.read(self.max_image_bytes + 1)), "url"
        except (urllib.error.URLError, OSError, ValueError):
            return _error(400, "BadRequestImageUrl", "Unable to download the image from the URL"), "url"

    def fault_response(self, fault: Fault) -> Response:
        """Injected failures in the service's shapes (`{"code", "message"}` bodies; rate limits from the gateway)."""
        if fault.kind == "throttle":
            # CustomVisionErrorCodes has no rate-limit code: the API gateway answers 429 in its own shape.
            headers = retry_after_header(fault.retry_after)
            return _gateway(429, "Rate limit is exceeded. Try again later.", headers)
        if fault.kind == "error":
            code = "ErrorPredictionServiceUnavailable" if fault.status == 503 else "ErrorUnknown"
            return _error(fault.status, code, "injected failure")
        if fault.kind == "not_ready":
            return _error(503, "ErrorPredictionModelNotCached", "The model is being loaded; retry shortly")
        if fault.kind == "malformed":
            # Wrongly typed fields: the SDK's msrest deserializer raises DeserializationError on these.
            bad = {"id": "x", "created": "yesterday", "predictions": [{"probability": "very high", "tagName": 3}]}
            return Response.json(bad)
        if fault.kind == "truncated":
            body = {"id": str(uuid.uuid4()), "project": self.project_id, "created": _now(), "predictions": []}
            return Response.json(body)  # the base server cuts it in half and closes the connection
        return super().fault_response(fault)


def parse_multipart(body: bytes, content_type: str) -> dict[str, bytes]:
    """Parts of a `multipart/form-data` body by field name, byte-exact.

    Split on CRLF + `--boundary` as RFC 2046 defines, so binary image data containing the boundary's
    characters elsewhere is not cut.

    Raises:
        ValueError: no boundary parameter or no closing delimiter.
    """
    match = re.search(r'boundary="?([^";]+)"?', content_type, flags=re.IGNORECASE)
    if match is None:
        raise ValueError("multipart Content-Type has no boundary parameter")
    delimiter = b"\r\n--" + match.group(1).encode("latin-1")
    chunks = (b"\r\n" + body).split(delimiter)
    if len(chunks) < 2 or not chunks[-1].startswith(b"--"):
        raise ValueError("multipart body has no closing delimiter")
    parts: dict[str, bytes] = {}
    for chunk in chunks[1:-1]:
        head, sep, content = chunk.partition(b"\r\n\r\n")
        if not sep:
            raise ValueError("multipart part has no header/body separator")
        disposition = ""
        for line in head.split(b"\r\n"):
            field_name, _, value = line.decode("latin-1").partition(":")
            if field_name.strip().lower() == "content-disposition":
                disposition = value
        name = re.search(r'\bname="([^"]*)"', disposition)
        if name is not None:
            parts[name.group(1)] = content
    return parts


def custom_vision_backend_for(
    emulator: CustomVisionEmulator, *, project_id: str | None = None, published_name: str | None = None, **options: Any
) -> AzureCustomVisionClassifier:
    """An `azure-custom-vision` backend whose real SDK client talks to `emulator`.

    Extra `options` go to `AzureCustomVisionClassifier`.
    """
    from derm_cloud.backends.azure_custom_vision import AzureCustomVisionClassifier

    options.setdefault("prediction_key", emulator.prediction_key)
    return AzureCustomVisionClassifier(
        endpoint=emulator.url,
        project_id=project_id or emulator.project_id,
        published_name=published_name or emulator.published_name,
        **options,
    )


# --- helpers ---------------------------------------------------------------------------------------------------


def _image_from_body(headers: Mapping[str, str], body: bytes) -> tuple[bytes | Response, str]:
    content_type = header_value(headers, "Content-Type") or ""
    if content_type.lower().startswith("multipart/form-data"):
        try:
            parts = parse_multipart(body, content_type)
        except ValueError as exc:
            return _error(400, "BadRequestImageStream", f"Invalid multipart body: {exc}"), "multipart"
        if "imageData" not in parts:
            return _error(400, "BadRequestImageStream", "The multipart body has no 'imageData' part"), "multipart"
        image, via = parts["imageData"], "multipart"
    elif content_type.lower().startswith("application/octet-stream"):
        image, via = body, "octet-stream"
    else:
        return _error(415, "UnsupportedMediaType", f"Unsupported content type {content_type!r}"), "unknown"
    if not image:
        return _error(400, "BadRequestImageStream", "The image stream is empty"), via
    return image, via


def _error(status: int, code: str, message: str, headers: Mapping[str, str] | None = None) -> Response:
    return Response.json({"code": code, "message": message}, status, headers)


def _gateway(status: int, message: str, headers: Mapping[str, str] | None = None) -> Response:
    # Key, rate and quota failures come from the API gateway in front of the service, in this other shape.
    return Response.json({"error": {"code": str(status), "message": message}}, status, headers)


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
