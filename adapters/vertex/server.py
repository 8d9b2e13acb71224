#!/usr/bin/env python3
"""Vertex AI custom prediction container: health and predict routes on ``$AIP_HTTP_PORT``.

Vertex sets ``AIP_HTTP_PORT`` (default 8080), ``AIP_HEALTH_ROUTE``, ``AIP_PREDICT_ROUTE`` and, when the model
was uploaded with an artifact URI, ``AIP_STORAGE_URI`` (a ``gs://`` copy of the artefacts, downloaded here at
start-up). Requests are answered by ``derm_cloud.serving.ModelServer``::

    {"instances": [{"b64": "<base64 image>", "metadata": {"age": 45, "sex": "male", "site": "back"}}]}
    -> {"predictions": [{"labels": [...], "probabilities": [...], "predicted_label": "nv", "model_id": ...}]}

``DERM_CLOUD_VERTEX_FORMAT=automl`` answers the AutoML image classification schema instead
(``{"instances": [{"content": b64}]}`` -> ``ids`` / ``displayNames`` / ``confidences``).

Environment:
    AIP_STORAGE_URI: ``gs://bucket/prefix`` or a local folder holding the model.
    DERM_CLOUD_MODEL_DIR: a model folder baked into the image (used when AIP_STORAGE_URI is unset).
    DERM_CLOUD_MAX_CONCURRENCY, DERM_CLOUD_DECODE_BUDGET_MB, DERM_CLOUD_HEADER_TIMEOUT ...: server limits, see
        ``derm_cloud.serving_limits.ServerLimits`` (uvicorn + Starlette, SIGTERM drains in-flight requests).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from pathlib import Path

from derm_cloud.serving import ModelServer
from derm_cloud.serving_http import find_model_dir, make_http_server, serve_forever, vertex_routes
from derm_cloud.serving_limits import DecodeBudget, ServerLimits


def download_gcs(uri: str, target: Path) -> Path:
    """Copy every object under ``gs://bucket/prefix`` into ``target`` (``google-cloud-storage``)."""
    from google.cloud import storage  # Vertex images ship it with google-cloud-aiplatform

    bucket_name, _, prefix = uri[len("gs://") :].partition("/")
    prefix = prefix.rstrip("/") + "/" if prefix.strip("/") else ""  # "gs://b/m" must not match "gs://b/m2/..."
    client = storage.Client()
    count = 0
    for blob in client.list_blobs(bucket_name, prefix=prefix):
        relative = blob.name[len(prefix) :].lstrip("/")
        if not relative or blob.name.endswith("/"):
            continue
        destination = (target / relative).resolve()
        if target.resolve() not in destination.parents:
            raise ValueError(f"object name {blob.name!r} escapes the download folder")
        destination.parent.mkdir(parents=True, exist_ok=True)
        blob.download_to_filename(str(destination))
        count += 1
    if count == 0:
        raise FileNotFoundError(f"no objects under {uri}; check the model's artifactUri")
    return target


def resolve_model_dir(explicit: str | None) -> Path:
    source = explicit or os.environ.get("AIP_STORAGE_URI") or os.environ.get("DERM_CLOUD_MODEL_DIR")
    if not source:
        raise SystemExit("no model: pass --model-dir, or set AIP_STORAGE_URI or DERM_CLOUD_MODEL_DIR")
    if source.startswith("gs://"):
        return find_model_dir(download_gcs(source, Path(tempfile.mkdtemp(prefix="derm-cloud-model-"))))
    return find_model_dir(source)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="derm-cloud Vertex AI custom prediction container")
    parser.add_argument("--model-dir", default=None)
    parser.add_argument("--host", default="0.0.0.0")  # a container must listen on all interfaces
    parser.add_argument("--port", type=int, default=int(os.environ.get("AIP_HTTP_PORT", "8080")))
    parser.add_argument("--format", choices=["custom", "automl"], default=os.environ.get("DERM_CLOUD_VERTEX_FORMAT"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    limits = ServerLimits.from_env()
    server = ModelServer(
        resolve_model_dir(args.model_dir),
        max_body_bytes=limits.max_body_bytes,
        decode_budget=DecodeBudget(limits.decode_budget_bytes),
    )
    routes = vertex_routes(
        server,
        health_route=os.environ.get("AIP_HEALTH_ROUTE", "/health"),
        predict_route=os.environ.get("AIP_PREDICT_ROUTE", "/predict"),
        automl=args.format == "automl",
    )
    httpd = make_http_server(routes, host=args.host, port=args.port, limits=limits)
    # The first stdout line names the bound port, so tests and scripts can start it on port 0.
    print(f"derm-cloud vertex adapter listening on {args.host}:{httpd.port}", flush=True)
    serve_forever(httpd)
    return 0


if __name__ == "__main__":
    sys.exit(main())
