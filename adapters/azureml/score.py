"""Azure Machine Learning scoring script: ``init()`` loads the model, ``run(raw_data)`` answers one request.

Deploy as the ``scoring_script`` of a managed online deployment (``code_configuration``) with an environment
that has ``derm-cloud[onnx]`` installed, and register the model folder (``model.onnx`` + ``spec.json``, or an
AutoML for Images ONNX export with ``labels.json``). The request and response follow the AutoML for Images
schema, so clients written for AutoML endpoints work unchanged::

    {"input_data": {"columns": ["image"], "data": ["<base64 image>", ...]}}
    -> [{"probs": [...], "labels": [...]}, ...]

Extra columns ``age``, ``sex``, ``site`` pass patient metadata to models that use it. All logic lives in
``derm_cloud.serving.ModelServer``; errors keep their HTTP status (400 bad image, 413 too large, 503 with
``Retry-After`` when the decode budget is spent) and their JSON body ``{"error": {"code", "message"}}`` when
the Azure ML inference server (``azureml-inference-server-http``) is present. ``DERM_CLOUD_DECODE_BUDGET_MB``
and ``DERM_CLOUD_MAX_BODY_MB`` set the decode memory budget and body limit of each worker
(``derm_cloud.serving_limits.ServerLimits``); the server's own worker count and timeouts stay Azure ML's.
"""

from __future__ import annotations

import json
import os
from typing import Any

from derm_cloud.serving import ModelServer, ServerBusyError, error_response
from derm_cloud.serving_http import find_model_dir
from derm_cloud.serving_limits import DecodeBudget, ServerLimits

_server: ModelServer | None = None


def init() -> None:
    """Called once per worker: load the model found under ``AZUREML_MODEL_DIR``."""
    global _server
    root = os.environ.get("AZUREML_MODEL_DIR")
    if not root:
        raise RuntimeError("AZUREML_MODEL_DIR is not set; Azure ML sets it to the registered model's folder")
    limits = ServerLimits.from_env()
    _server = ModelServer(
        find_model_dir(root),
        max_body_bytes=limits.max_body_bytes,
        decode_budget=DecodeBudget(limits.decode_budget_bytes),
    )


def run(raw_data: str | bytes) -> Any:
    """Score one request body; returns the AutoML response (a list, one entry per image)."""
    if _server is None:
        raise RuntimeError("run() called before init()")
    try:
        body, _ = _server.azureml_score(raw_data)
    except Exception as exc:
        return _error(exc)
    return json.loads(body)


def _error(exc: Exception) -> Any:
    """An ``AMLResponse`` keeps the status on the Azure ML inference server; elsewhere re-raise with ``status``.

    The body is handed over as the parsed object with ``json_str=True`` (AMLResponse serialises it once); a
    string there would be encoded a second time (``"{\\"error\\": ...}"``).
    """
    try:
        from azureml.contrib.services.aml_response import AMLResponse  # type: ignore[import-not-found]
    except ImportError:
        raise exc from None
    status, served = error_response(exc)
    headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, ServerBusyError) else {}
    return AMLResponse(json.loads(served.body), status, response_headers=headers, json_str=True)
