#!/usr/bin/env python3
"""SageMaker serving container entry point: ``GET /ping`` and ``POST /invocations`` on port 8080.

SageMaker starts the image as ``docker run <image> serve`` with the model archive unpacked in
``/opt/ml/model``. Everything here is wiring; requests are answered by ``derm_cloud.serving.ModelServer``.

Environment:
    SM_MODEL_DIR: model directory (default ``/opt/ml/model``); a single model folder below it is found too.
    SAGEMAKER_BIND_TO_PORT: port (default 8080; SageMaker sets it for multi-container endpoints).
    DERM_CLOUD_SAGEMAKER_FORMAT: response shape ``adapter`` (default), ``jumpstart``, ``hf`` or ``builtin``.
    DERM_CLOUD_MAX_CONCURRENCY, DERM_CLOUD_DECODE_BUDGET_MB, DERM_CLOUD_HEADER_TIMEOUT ...: server limits, see
        ``derm_cloud.serving_limits.ServerLimits`` (uvicorn + Starlette, SIGTERM drains in-flight requests).

Run locally: ``python adapters/sagemaker/serve.py --model-dir ~/.cache/derm-cloud/models/sklesion-0.2.2``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from derm_cloud.serving import ModelServer
from derm_cloud.serving_http import find_model_dir, make_http_server, sagemaker_routes, serve_forever
from derm_cloud.serving_limits import DecodeBudget, ServerLimits


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="derm-cloud SageMaker serving container")
    parser.add_argument("command", nargs="?", default="serve", choices=["serve"], help="SageMaker passes 'serve'")
    parser.add_argument("--model-dir", default=os.environ.get("SM_MODEL_DIR", "/opt/ml/model"))
    parser.add_argument("--host", default="0.0.0.0")  # a container must listen on all interfaces
    parser.add_argument("--port", type=int, default=int(os.environ.get("SAGEMAKER_BIND_TO_PORT", "8080")))
    parser.add_argument("--format", default=os.environ.get("DERM_CLOUD_SAGEMAKER_FORMAT", "adapter"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    limits = ServerLimits.from_env()
    server = ModelServer(
        find_model_dir(args.model_dir),
        sagemaker_format=args.format,
        max_body_bytes=limits.max_body_bytes,
        decode_budget=DecodeBudget(limits.decode_budget_bytes),
    )
    httpd = make_http_server(sagemaker_routes(server), host=args.host, port=args.port, limits=limits)
    # The first stdout line names the bound port, so tests and scripts can start it on port 0.
    print(f"derm-cloud sagemaker adapter listening on {args.host}:{httpd.port}", flush=True)
    serve_forever(httpd)
    return 0


if __name__ == "__main__":
    sys.exit(main())
