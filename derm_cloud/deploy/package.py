"""Package a model directory with its serving adapter, in the layout each cloud expects.

``derm-cloud deploy package --cloud CLOUD MODEL_DIR --out DIR`` writes:

* **sagemaker**: ``model.tar.gz`` with the model files at the root plus ``code/inference.py`` and
  ``code/requirements.txt`` (the SageMaker inference-toolkit convention, for AWS framework containers such as
  the PyTorch inference DLC), and ``container/``, the build context of the derm-cloud "bring your own
  container" image (``serve`` entry point answering ``/ping`` and ``/invocations`` on 8080) that uses the same
  ``model.tar.gz`` as ``ModelDataUrl``.
* **azureml**: ``model/`` (register it as the model), ``code/score.py`` (``init()`` / ``run()``),
  ``environment/conda.yaml``, and ``endpoint.yml`` + ``deployment.yml`` for ``az ml online-endpoint create`` /
  ``az ml online-deployment create`` (managed online endpoint, key auth).
* **vertex**: ``container/``, the custom-container build context (``server.py`` on ``$AIP_HTTP_PORT`` with the
  model baked in at ``/opt/model``), and ``model/`` to upload to Cloud Storage as the model's ``artifactUri``
  (``AIP_STORAGE_URI`` then takes precedence over the baked copy).

Each artefact carries its own copy of the ``derm_cloud`` library (pure Python), so the cloud runs exactly the
serving code that packaged it, with runtime requirements pinned to the versions installed here. The adapters
themselves come from ``adapters/`` (thin wrappers over :mod:`derm_cloud.serving`). Archives are reproducible:
sorted entries, zero timestamps and owners, so the same inputs give the same ``sha256`` in ``MANIFEST.json``.

Example:
    >>> result = package_model("sagemaker", "~/.cache/derm-cloud/models/sklesion-0.2.2", "dist/sm")  # doctest: +SKIP
    >>> [p.name for p in result.artefacts]  # doctest: +SKIP
    ['model.tar.gz', 'container']
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.metadata
import io
import json
import os
import re
import shutil
import tarfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from derm_cloud.errors import ConfigError, ModelSpecError

__all__ = ["CLOUDS", "Cloud", "PackageResult", "find_adapters_dir", "package_model", "runtime_requirements"]

Cloud = Literal["sagemaker", "azureml", "vertex"]
CLOUDS: tuple[str, ...] = ("sagemaker", "azureml", "vertex")
_ADAPTER_FILES = {
    "sagemaker": ("sagemaker/serve.py", "sagemaker/inference.py"),
    "azureml": ("azureml/score.py",),
    "vertex": ("vertex/server.py",),
}
_SKIP = {"__pycache__", "_adapters", ".mypy_cache", ".pytest_cache"}
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


@dataclass(frozen=True)
class PackageResult:
    """What :func:`package_model` wrote.

    Attributes:
        cloud: ``sagemaker``, ``azureml`` or ``vertex``.
        out_dir: the output folder.
        artefacts: the top-level artefacts to upload or build (archive, folders, YAML files).
        manifest: ``MANIFEST.json`` (every file with its sha256, the model id, the derm-cloud version).
        next_steps: the commands that deploy the artefacts (also written to ``README.txt``).
    """

    cloud: str
    out_dir: Path
    artefacts: list[Path]
    manifest: Path
    next_steps: list[str] = field(default_factory=list)


def find_adapters_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The ``adapters/`` folder: ``explicit``, the copy shipped in the wheel, or the source checkout's.

    Raises:
        ConfigError: none of them exists; the message says how to point at one.
    """
    import derm_cloud

    package = Path(derm_cloud.__file__).parent
    candidates = [Path(explicit).expanduser()] if explicit is not None else []
    candidates += [package / "_adapters", package.parent / "adapters"]
    for folder in candidates:
        if (folder / "sagemaker" / "serve.py").is_file():
            return folder
    raise ConfigError(
        f"cannot find the derm-cloud serving adapters (looked in {', '.join(str(c) for c in candidates)}); "
        "pass --adapters-dir pointing at the adapters/ folder of a derm-cloud source checkout"
    )


#: What the HTTP adapters (SageMaker ``serve.py``, Vertex ``server.py``) need on top of the model runtime.
HTTP_SERVER_REQUIREMENTS: tuple[tuple[str, str], ...] = (("starlette", "0.37"), ("uvicorn", "0.30"))


def runtime_requirements(extra: Iterable[str] = (), *, http_server: bool = False) -> list[str]:
    """The adapters' runtime requirements, pinned to the versions installed here when they are installed.

    Args:
        extra: more distributions to add (pinned the same way).
        http_server: add the HTTP server the SageMaker and Vertex adapters run on (Starlette + uvicorn); Azure
            ML runs ``score.py`` in its own server and needs neither.
    """
    wanted = [("onnxruntime", "1.18"), ("numpy", "1.26"), ("pillow", "10.0")]
    wanted += list(HTTP_SERVER_REQUIREMENTS) if http_server else []
    wanted += [(e, "") for e in extra]
    out = []
    for name, minimum in wanted:
        try:
            out.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            out.append(f"{name}>={minimum}" if minimum else name)
    return out


def _model_files(model_dir: Path) -> tuple[list[Path], str, list[str]]:
    """The files the serving code loads from a model directory, its model id, and what is left out.

    Serving reads the spec (``spec.json``, or an AutoML ``labels.json``), the ONNX file it names and that file's
    external-data files; anything else in the folder (sklesion's 86 MB ``model.keras``, notes, caches) would
    only make the package bigger, so it stays behind and ``MANIFEST.json`` lists it under ``left_out``.
    """
    from derm_cloud.models.spec import ModelSpec
    from derm_cloud.serving_http import find_model_dir

    if not model_dir.is_dir():
        raise ModelSpecError(f"model directory {str(model_dir)!r} does not exist; pass a folder with spec.json")
    found = find_model_dir(model_dir, max_depth=0)
    spec = ModelSpec.load(found)
    model_id = spec.model_id if (found / "spec.json").is_file() else found.name
    spec_file = "spec.json" if (found / "spec.json").is_file() else "labels.json"
    wanted = {spec_file, spec.model_file, *_external_data(found / spec.model_file)}
    every = sorted(p for p in found.rglob("*") if p.is_file() and not (_SKIP & set(p.relative_to(found).parts)))
    files = [p for p in every if p.relative_to(found).as_posix() in wanted]
    missing = sorted(wanted - {p.relative_to(found).as_posix() for p in files})
    if missing:
        raise ModelSpecError(f"{str(found)!r} lacks {', '.join(missing)}, which the model needs")
    left_out = [p.relative_to(found).as_posix() for p in every if p not in files]
    return files, model_id, left_out


def _external_data(model_file: Path) -> list[str]:
    """Relative paths of the external-data files an ONNX model references (weights stored beside it)."""
    try:
        import onnx
    except ImportError:  # without onnx, keep the conventional names beside the model
        return [p.name for p in model_file.parent.glob(f"{model_file.name}.data")]
    model = onnx.load(str(model_file), load_external_data=False)
    locations: set[str] = set()
    tensors = list(model.graph.initializer)
    for node in model.graph.node:
        tensors += [a.t for a in node.attribute if a.HasField("t")]
    for tensor in tensors:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            locations.update(e.value for e in tensor.external_data if e.key == "location")
    return sorted(locations)


def _copy_model(files: list[Path], src: Path, dest: Path) -> None:
    for f in files:
        target = dest / f.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(f, target)


def _vendor(dest: Path) -> None:
    """Copy the installed ``derm_cloud`` package (pure Python) into ``dest/derm_cloud``."""
    import derm_cloud

    src = Path(derm_cloud.__file__).parent
    shutil.copytree(
        src, dest / "derm_cloud", ignore=lambda _d, names: [n for n in names if n in _SKIP or n.endswith(".pyc")]
    )


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def _write_yaml(path: Path, data: Mapping[str, Any]) -> None:
    """YAML written by PyYAML: every value is quoted or escaped as needed, so no value can add keys."""
    import yaml

    _write(path, yaml.safe_dump(data, sort_keys=False, default_flow_style=False, allow_unicode=True))


def _tar_gz(src: Path, archive: Path) -> None:
    """A reproducible ``.tar.gz`` of ``src``'s contents at the archive root (sorted, no times or owners)."""

    def normalise(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.mtime = 0
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        info.mode = 0o755 if info.isdir() else 0o644
        return info

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(src.rglob("*")):
            tar.add(path, arcname=path.relative_to(src).as_posix(), recursive=False, filter=normalise)
    with archive.open("wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as gz:
        gz.write(buf.getvalue())


def _slug(text: str) -> str:
    """A resource name the clouds accept (lower-case letters, digits, hyphens; starts with a letter)."""
    slug = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
    return ("m-" + slug if not slug[:1].isalpha() else slug)[:32].rstrip("-") or "derm-cloud"


def _sagemaker(files: list[Path], model_root: Path, out: Path, adapters: Path, requirements: list[str]) -> list[str]:
    staging = out / ".model-staging"
    _copy_model(files, model_root, staging)
    code = staging / "code"
    code.mkdir()
    shutil.copy2(adapters / "sagemaker" / "inference.py", code / "inference.py")
    _write(code / "requirements.txt", "\n".join(requirements) + "\n")
    _vendor(code)
    _tar_gz(staging, out / "model.tar.gz")
    shutil.rmtree(staging)
    ctx = out / "container"
    ctx.mkdir()
    for name in ("serve.py", "inference.py"):
        shutil.copy2(adapters / "sagemaker" / name, ctx / name)
    _write(ctx / "requirements.txt", "\n".join(requirements) + "\n")
    _vendor(ctx)
    _write(
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


def _azureml(
    files: list[Path], model_root: Path, out: Path, adapters: Path, requirements: list[str], model_id: str, **opts: str
) -> list[str]:
    _copy_model(files, model_root, out / "model")
    (out / "code").mkdir()
    shutil.copy2(adapters / "azureml" / "score.py", out / "code" / "score.py")
    _vendor(out / "code")
    conda = {
        "name": "derm-cloud-onnx",
        "channels": ["conda-forge"],
        "dependencies": ["python=3.11", "pip", {"pip": ["azureml-inference-server-http", *requirements]}],
    }
    _write_yaml(out / "environment" / "conda.yaml", conda)
    endpoint = opts["endpoint_name"]
    _write_yaml(
        out / "endpoint.yml",
        {
            "$schema": "https://azuremlschemas.azureedge.net/latest/managedOnlineEndpoint.schema.json",
            "name": endpoint,
            "auth_mode": "key",
            "description": "derm-cloud adapter (triage support, not a diagnosis; a clinician reviews every result)",
        },
    )
    _write_yaml(
        out / "deployment.yml",
        {
            "$schema": "https://azuremlschemas.azureedge.net/latest/managedOnlineDeployment.schema.json",
            "name": "blue",
            "endpoint_name": endpoint,
            "model": {"name": _slug(model_id), "path": "./model"},
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


def _vertex(files: list[Path], model_root: Path, out: Path, adapters: Path, requirements: list[str]) -> list[str]:
    _copy_model(files, model_root, out / "model")
    ctx = out / "container"
    _copy_model(files, model_root, ctx / "model")
    shutil.copy2(adapters / "vertex" / "server.py", ctx / "server.py")
    _write(ctx / "requirements.txt", "\n".join(requirements) + "\n")
    _vendor(ctx)
    _write(
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


def _manifest(
    out: Path, cloud: str, model_id: str, requirements: list[str], steps: list[str], left_out: list[str]
) -> Path:
    import derm_cloud

    entries = []
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        entries.append({"path": path.relative_to(out).as_posix(), "bytes": path.stat().st_size, "sha256": digest})
    manifest = out / "MANIFEST.json"
    data = {
        "cloud": cloud,
        "model_id": model_id,
        "derm_cloud_version": derm_cloud.__version__,
        "requirements": requirements,
        "files": entries,
        "left_out": left_out,
        "next_steps": steps,
    }
    manifest.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    readme = [f"derm-cloud {cloud} package of {model_id}", "", "Next steps:", *[f"  - {s}" for s in steps]]
    readme += ["", "Triage support only, not a diagnosis: a clinician reviews every result."]
    _write(out / "README.txt", "\n".join(readme) + "\n")
    return manifest


def _check_out_dir(out: Path, model_root: Path, adapters: Path, overwrite: bool) -> None:
    """Refuse an output folder whose replacement would delete the model, the adapters or unrelated files."""
    for what, path in (("the model directory", model_root), ("the adapters folder", adapters)):
        if out == path or path in out.parents:
            raise ConfigError(f"--out {str(out)!r} is inside {what}; write the package somewhere else")
        if out in path.parents:
            # --overwrite empties --out first: that would delete the model (or adapters) it is about to package.
            raise ConfigError(
                f"--out {str(out)!r} contains {what} {str(path)!r}; --overwrite would delete it. Write the "
                "package to a folder outside it"
            )
    if not out.exists() or not any(out.iterdir()):
        return
    if not overwrite:
        raise ConfigError(f"--out {str(out)!r} is not empty; choose a new folder or pass --overwrite")
    if not (out / "MANIFEST.json").is_file():
        raise ConfigError(
            f"--out {str(out)!r} is not a derm-cloud package (no MANIFEST.json); --overwrite only replaces an "
            "earlier package. Choose a new or empty folder"
        )


def package_model(
    cloud: str,
    model_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    adapters_dir: str | os.PathLike[str] | None = None,
    endpoint_name: str = "derm-cloud",
    instance_type: str = "Standard_DS3_v2",
    instance_count: int = 1,
    overwrite: bool = False,
) -> PackageResult:
    """Write ``cloud``'s deployment artefacts for ``model_dir`` into ``out_dir``.

    Args:
        cloud: ``sagemaker``, ``azureml`` or ``vertex``.
        model_dir: a model directory (``model.onnx`` + ``spec.json``, or an AutoML export) or ``sklesion``.
        out_dir: output folder; must be empty or absent unless ``overwrite``.
        adapters_dir: the ``adapters/`` folder (default: shipped copy, else the source checkout's).
        endpoint_name, instance_type, instance_count: Azure ML endpoint and deployment settings.
        overwrite: replace an existing, non-empty ``out_dir``.

    Raises:
        ConfigError: unknown cloud, non-empty output folder, or adapters not found.
        ModelSpecError: ``model_dir`` is not a servable model directory.
    """
    from derm_cloud.models.cache import resolve_model_dir

    if cloud not in CLOUDS:
        raise ConfigError(f"unknown cloud {cloud!r}; choose one of {', '.join(CLOUDS)}")
    if instance_count < 1:
        raise ConfigError(f"instance_count must be at least 1, got {instance_count}")
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", instance_type):
        raise ConfigError(
            f"instance_type {instance_type!r} is not an Azure VM size; use a name such as Standard_DS3_v2"
        )
    model_root = resolve_model_dir(os.fspath(model_dir)).resolve()
    files, model_id, left_out = _model_files(model_root)
    adapters = find_adapters_dir(adapters_dir)
    out = Path(out_dir).expanduser().resolve()
    _check_out_dir(out, model_root, adapters.resolve(), overwrite)
    if out.exists() and any(out.iterdir()):
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    extra = ("google-cloud-storage",) if cloud == "vertex" else ()
    requirements = runtime_requirements(extra, http_server=cloud != "azureml")
    if cloud == "sagemaker":
        steps = _sagemaker(files, model_root, out, adapters, requirements)
        artefacts = [out / "model.tar.gz", out / "container"]
    elif cloud == "azureml":
        steps = _azureml(
            files,
            model_root,
            out,
            adapters,
            requirements,
            model_id,
            endpoint_name=_slug(endpoint_name),
            instance_type=instance_type,
            instance_count=str(instance_count),
        )
        artefacts = [out / "model", out / "code", out / "environment", out / "endpoint.yml", out / "deployment.yml"]
    else:
        steps = _vertex(files, model_root, out, adapters, requirements)
        artefacts = [out / "container", out / "model"]
    manifest = _manifest(out, cloud, model_id, requirements, steps, left_out)
    return PackageResult(cloud, out, artefacts, manifest, steps)
