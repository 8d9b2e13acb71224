"""Load a model directory once and answer requests in each cloud's hosting format: the core of every adapter.

The adapters in `adapters/` (SageMaker, Azure ML, Vertex AI) and the emulators in `derm_cloud.testing` are
thin wrappers over `ModelServer`, so a model answers with the same probabilities wherever it is hosted;
`derm_cloud.serving_http` puts it behind a small HTTP server with each cloud's routes.
Every public method takes the raw request body (plus content type or headers) and returns `Served`
`(body, content_type)`; failures raise a `ServingError` whose `status` the wrapper sends as the HTTP
status (400 bad request or image, 413 too large, 415/406 wrong media type, 500 anything else).

Request and response shapes:

* SageMaker `/invocations`: `application/x-image` or `image/*` bytes -> our JSON `{"labels",
  "probabilities", "predicted_label", "model_id"}`; `Accept: application/json;verbose` gives the JumpStart
  verbose shape. `sagemaker_format` impersonates the containers users actually deploy: `jumpstart`, `hf`
  (`[{"label", "score"}]`, top 5 like the pipeline) and `builtin` (`{"prediction": [...]}`).
  Patient metadata rides in `X-Amzn-SageMaker-Custom-Attributes` (see `custom_attributes_for`) or in a
  JSON body `{"b64": ..., "metadata": {...}}` / `{"instances": [...]}`.
* Azure ML AutoML for Images: `{"input_data": {"columns": ["image"], "data": [b64, ...]}}` ->
  `[{"probs": [...], "labels": [...]}]`; extra columns `age`, `sex`, `site` carry metadata.
* Vertex AutoML: `{"instances": [{"content": b64}], "parameters": {...}}` -> `ids` / `displayNames` /
  `confidences` sorted by confidence; Vertex custom container: `{"instances": [{"b64": ..., "metadata":
  {...}}]}` -> `{"predictions": [{"labels", "probabilities", ...}]}`.

Image bytes are never logged: log lines carry sizes, counts and timings only.

This module is the core (load the model, decode, classify); each cloud's formats live in
`derm_cloud.serving_formats` and the decode-budget reservation in `derm_cloud.serving_decode`.

Example:
    >>> server = ModelServer("~/.cache/derm-cloud/models/sklesion-0.2.2")  # doctest: +SKIP
    >>> body, content_type = server.sagemaker_invocations(jpeg_bytes, "application/x-image")  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from derm_cloud.backends._sagemaker_formats import custom_attributes_for
from derm_cloud.errors import ConfigError, InvalidImageError
from derm_cloud.images import DEFAULT_LIMITS, ImageLimits, PreparedImage, prepare_for_model
from derm_cloud.serving_errors import (
    BadRequestError,
    NotAcceptableError,
    RequestTooLargeError,
    Served,
    ServerBusyError,
    ServingError,
    UnsupportedMediaTypeError,
    error_response,
)
from derm_cloud.serving_formats import (
    _JSON,
    SAGEMAKER_FORMATS,
    CloudFormats,
    SageMakerFormat,
    SageMakerRequest,
    metadata_from_custom_attributes,
)
from derm_cloud.serving_limits import DEFAULT_MAX_BODY_BYTES, DecodeBudget
from derm_cloud.types import PatientMetadata

if TYPE_CHECKING:
    from derm_cloud.backends._runner import ModelRunner

__all__ = [
    "SAGEMAKER_FORMATS",
    "BadRequestError",
    "ModelServer",
    "NotAcceptableError",
    "RequestTooLargeError",
    "SageMakerFormat",
    "SageMakerRequest",
    "Served",
    "ServerBusyError",
    "ServingError",
    "UnsupportedMediaTypeError",
    "custom_attributes_for",
    "error_response",
    "metadata_from_custom_attributes",
]

logger = logging.getLogger("derm_cloud.serving")


# --- the model server ----------------------------------------------------------------------------------------------


class ModelServer(CloudFormats):
    """A model directory loaded once, answering each cloud's request format.

    Args:
        model_dir: model directory (`spec.json` + `model.onnx`, or an AutoML `labels.json` export).
        sagemaker_format: default SageMaker response shape: `adapter` (ours), `jumpstart`, `hf`, `builtin`.
        max_body_bytes: largest request body accepted (413 above).
        max_instances: most images in one JSON request (400 above).
        hf_top_k: labels returned by the `hf` format when the request does not say (the pipeline default, 5).
        image_limits: decode limits for each image.
        intra_op_threads: onnxruntime threads (default: onnxruntime's choice).
        decode_budget: working memory shared by concurrent decodes, checked from each image's header before it
            is decoded (`derm_cloud.serving_limits`); `None` gives a budget of
            `DEFAULT_DECODE_BUDGET_BYTES` for this server.

    Example:
        >>> server = ModelServer(model_dir)  # doctest: +SKIP
        >>> server.vertex_custom_predict(b'{"instances": [{"b64": "..."}]}')  # doctest: +SKIP
    """

    def __init__(
        self,
        model_dir: str | os.PathLike[str],
        *,
        sagemaker_format: SageMakerFormat = "adapter",
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        max_instances: int = 32,
        hf_top_k: int = 5,
        image_limits: ImageLimits = DEFAULT_LIMITS,
        intra_op_threads: int | None = None,
        decode_budget: DecodeBudget | None = None,
    ) -> None:
        from derm_cloud.backends._local_model import load_model

        if sagemaker_format not in SAGEMAKER_FORMATS:
            raise ConfigError(f"sagemaker_format must be one of {', '.join(SAGEMAKER_FORMATS)}")
        # ONNX or TFLite, by the spec's model_file: an imported edge export can be hosted like any model.
        self.model: ModelRunner = load_model(model_dir, intra_op_threads=intra_op_threads)
        self.labels: list[str] = list(self.model.spec.labels)
        self.model_id = self.model.spec.model_id
        self.sagemaker_format: SageMakerFormat = sagemaker_format
        self.max_body_bytes = max_body_bytes
        self.max_instances = max_instances
        self.hf_top_k = hf_top_k
        self.image_limits = image_limits
        self.decode_budget = decode_budget or DecodeBudget()
        self._scope = threading.local()  # reservations of the request this thread is answering

    def health(self) -> Served:
        """Readiness answer for `/ping` and health routes (the model is loaded by construction)."""
        return Served(json.dumps({"status": "ok", "model_id": self.model_id}).encode(), _JSON)

    def predict(self, images: Sequence[PreparedImage], metadata: Sequence[PatientMetadata]) -> list[list[float]]:
        """Probabilities per image, in the model's label order (`self.labels`)."""
        start = time.perf_counter()
        probs = self.model.run(images, metadata).tolist()
        logger.debug("classified %d image(s) in %.1f ms", len(images), (time.perf_counter() - start) * 1000)
        return [[float(p) for p in row] for row in probs]

    def _decode_all(self, encoded: Sequence[tuple[bytes, str]]) -> list[PreparedImage]:
        """Decode a request's images (`(bytes, where)`) once their decode cost is reserved, all of it at once."""
        with self.decode_scope():
            self._reserve_decode(encoded)
            images = []
            for data, where in encoded:
                try:
                    # One strict decode that is also the damage check, as local-onnx decodes: the server
                    # classifies every pixel, so a separate entropy walk first would decode the image twice.
                    images.append(prepare_for_model(data, limits=self.image_limits))
                except InvalidImageError as exc:
                    raise BadRequestError(f"{where}: {exc}") from None
            return images
