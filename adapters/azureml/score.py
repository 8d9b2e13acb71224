"""Azure Machine Learning scoring script: ``init()`` loads the model, ``run(raw_data)`` answers one request.

Deploy as the ``scoring_script`` of a managed online deployment (``code_configuration``) with an environment
that has ``derm-cloud[onnx]`` installed, and register the model folder (``model.onnx`` + ``spec.json``, or an
AutoML for Images ONNX export with ``labels.json``). The request and response follow the AutoML for Images
schema, so clients written for AutoML endpoints work unchanged::

    {"input_data": {"columns": ["image"], "data": ["<base64 image>", ...]}}
    -> [{"probs": [...], "labels": [...]}, ...]

Extra columns ``age``, ``sex``, ``site`` pass patient metadata to models that use it. All logic lives in
``derm_cloud.serving.ModelServer``; errors keep their HTTP status (400 bad image, 413 too large) when the
Azure ML inference server is present.
"""

from __future__ import annotations

import json
import os
from typing import Any

from derm_cloud.serving import ModelServer, error_response
from derm_cloud.serving_http import find_model_dir

_server: ModelServer | None = None


def init() -> None:
    """Called once per worker: load the model found under ``AZUREML_MODEL_DIR``."""
    global _server
    root = os.environ.get("AZUREML_MODEL_DIR")
    if not root:
        raise RuntimeError("AZUREML_MODEL_DIR is not set; Azure ML sets it to the registered model's folder")
    _server = ModelServer(find_model_dir(root))


def run(raw_data: str | bytes) -> Any:
    """Score one request body; returns the AutoML response (a list, one entry per image)."""
    if _server is None:
        raise RuntimeError("run() called before init()")
    try:
        body, _ = _server.azureml_score(raw_data)
    except Exception as exc:
        status, served = error_response(exc)
        return _error(status, served.body.decode(), exc)
    return json.loads(body)


def _error(status: int, body: str, exc: Exception) -> Any:
    """An ``AMLResponse`` keeps the status on the Azure ML inference server; elsewhere re-raise with ``status``."""
    try:
        from azureml.contrib.services.aml_response import AMLResponse  # type: ignore[import-not-found]
    except ImportError:
        raise exc from None
    return AMLResponse(body, status, json_str=True)
