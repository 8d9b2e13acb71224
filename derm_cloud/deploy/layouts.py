"""What each cloud's package holds: the model, the adapter, its requirements, a Dockerfile or YAML, next steps.

One function per cloud, each returning the commands that deploy what it wrote (see `package`).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from derm_cloud.deploy.files import copy_model, tar_gz, vendor, write_text, write_yaml

__all__ = ["azureml_layout", "sagemaker_layout", "slug", "vertex_layout"]

_DOCKER_BASE = "python:3.11-slim"
_DOCKERFILE_HEAD = f"""\
FROM {_DOCKER_BASE}

ENV PYTHONDONTWRITEBYTECODE=1 \\
    PYTHONUNBUFFERED=1 \\
    PIP_NO_CACHE_DIR=1 \\
    PYTHONPATH=/opt/program

COPY requirements.txt /opt/program/requirements.txt
RUN pip install -r /opt/program/requirements.txt
COPY derm_cloud /opt/program/derm_cloud
"""
_DOCKERFILE_TAIL = """\
WORKDIR /opt/program
# The server needs no write access to the model or code: run unprivileged.
RUN useradd --system --uid 10001 derm
USER derm
EXPOSE 8080
"""


def slug(text: str) -> str:
    """A resource name the clouds accept (lower-case letters, digits, hyphens; starts with a letter)."""
    name = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
    return ("m-" + name if not name[:1].isalpha() else name)[:32].rstrip("-") or "derm-cloud"


def sagemaker_layout(
    files: list[Path], model_root: Path, out: Path, adapters: Path, requirements: list[str]
) -> list[str]:
    """`model.tar.gz` (model + `code/inference.py`) and `container/`, the bring-your-own-container context."""
    staging = out / ".model-staging"
    copy_model(files, model_root, staging)
    code = staging / "code"
    code.mkdir()
    shutil.copy2(adapters / "sagemaker" / "inference.py", code / "inference.py")
    write_text(code / "requirements.txt", "\n".join(requirements) + "\n")
    vendor(code)
    tar_gz(staging, out / "model.tar.gz")
    shutil.rmtree(staging)
    ctx = out / "container"
    ctx.mkdir()
    for name in ("serve.py", "inference.py"):
        shutil.copy2(adapters / "sagemaker" / name, ctx / name)
    write_text(ctx / "requirements.txt", "\n".join(requirements) + "\n")
    vendor(ctx)
    write_text(
        ctx / "Dockerfile",
        "# derm-cloud SageMaker serving image: `serve` answers GET /ping and POST /invocations on 8080;\n"
        "# SageMaker unpacks model.tar.gz into /opt/ml/model.\n"
        + _DOCKERFILE_HEAD
        + "COPY serve.py inference.py /opt/program/\n"
        + _DOCKERFILE_TAIL
        + 'ENTRYPOINT ["python", "/opt/program/serve.py"]\nCMD ["serve"]\n',
    )
    return [
        "aws s3 cp model.tar.gz s3://<model-bucket>/<prefix>/model.tar.gz --sse aws:kms --sse-kms-key-id <kms-key-arn>",
        "either: a framework container (e.g. the PyTorch inference DLC) with ModelDataUrl = that S3 URI "
        "(code/inference.py and code/requirements.txt follow the inference-toolkit convention)",
        "or: docker build -t <account>.dkr.ecr.<region>.amazonaws.com/derm-cloud-sagemaker:<tag> container/ && "
        "docker push ... ; then infra/aws-sagemaker (terraform) or derm_cloud.deploy.sagemaker_jumpstart."
        "create_endpoint(image_uri=..., model_data_url=...)",
    ]


def azureml_layout(
    files: list[Path], model_root: Path, out: Path, adapters: Path, requirements: list[str], model_id: str, **opts: str
) -> list[str]:
    """`model/`, `code/score.py`, `environment/conda.yaml` and the endpoint and deployment YAML files."""
    copy_model(files, model_root, out / "model")
    (out / "code").mkdir()
    shutil.copy2(adapters / "azureml" / "score.py", out / "code" / "score.py")
    vendor(out / "code")
    conda = {
        "name": "derm-cloud-onnx",
        "channels": ["conda-forge"],
        "dependencies": ["python=3.11", "pip", {"pip": ["azureml-inference-server-http", *requirements]}],
    }
    write_yaml(out / "environment" / "conda.yaml", conda)
    endpoint = opts["endpoint_name"]
    write_yaml(
        out / "endpoint.yml",
        {
            "$schema": "https://azuremlschemas.azureedge.net/latest/managedOnlineEndpoint.schema.json",
            "name": endpoint,
            "auth_mode": "key",
            "description": "derm-cloud adapter (triage support, not a diagnosis; a clinician reviews every result)",
        },
    )
    write_yaml(
        out / "deployment.yml",
        {
            "$schema": "https://azuremlschemas.azureedge.net/latest/managedOnlineDeployment.schema.json",
            "name": "blue",
            "endpoint_name": endpoint,
            "model": {"name": slug(model_id), "path": "./model"},
            "code_configuration": {"code": "./code", "scoring_script": "score.py"},
            "environment": {
                "name": "derm-cloud-onnx",
                "image": "mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu22.04:latest",
                "conda_file": "./environment/conda.yaml",
            },
            "instance_type": opts["instance_type"],
            "instance_count": int(opts["instance_count"]),
            "request_settings": {"request_timeout_ms": 5000, "max_concurrent_requests_per_instance": 1},
        },
    )
    return [
        "az ml online-endpoint create -f endpoint.yml -g <resource-group> -w <workspace>",
        "az ml online-deployment create -f deployment.yml -g <resource-group> -w <workspace> --all-traffic",
        "or: infra/azure-ml (terraform) creates the workspace, endpoint and deployment from these files",
    ]


def vertex_layout(files: list[Path], model_root: Path, out: Path, adapters: Path, requirements: list[str]) -> list[str]:
    """`container/` (`server.py`, the model baked in) and `model/` to upload as the `artifactUri`."""
    copy_model(files, model_root, out / "model")
    ctx = out / "container"
    copy_model(files, model_root, ctx / "model")
    shutil.copy2(adapters / "vertex" / "server.py", ctx / "server.py")
    write_text(ctx / "requirements.txt", "\n".join(requirements) + "\n")
    vendor(ctx)
    write_text(
        ctx / "Dockerfile",
        "# derm-cloud Vertex AI custom prediction image: health and predict routes on $AIP_HTTP_PORT (8080).\n"
        "# The model is baked in at /opt/model; a model uploaded with an artifactUri (AIP_STORAGE_URI) wins.\n"
        + _DOCKERFILE_HEAD
        + "COPY model /opt/model\nCOPY server.py /opt/program/server.py\nENV DERM_CLOUD_MODEL_DIR=/opt/model\n"
        + _DOCKERFILE_TAIL
        + 'ENTRYPOINT ["python", "/opt/program/server.py"]\n',
    )
    return [
        "docker build -t <region>-docker.pkg.dev/<project>/<repo>/derm-cloud-vertex:<tag> container/ "
        "&& docker push ...",
        "gcloud storage cp -r model gs://<cmek-bucket>/<prefix>/   (optional: the image already holds the model)",
        "gcloud ai models upload --region=<region> --display-name=derm-cloud --container-image-uri=<image> "
        "--container-health-route=/health --container-predict-route=/predict [--artifact-uri=gs://...]",
        "or: infra/gcp-vertex (terraform) creates the endpoint; the model upload and deploy-model step is the "
        "gcloud command above (see infra/gcp-vertex/README.md)",
    ]
