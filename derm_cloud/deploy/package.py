"""Package a model directory with its serving adapter, in the layout each cloud expects.

`derm-cloud deploy package --cloud CLOUD MODEL_DIR --out DIR` writes:

* **sagemaker**: `model.tar.gz` with the model files at the root plus `code/inference.py` and
  `code/requirements.txt` (the SageMaker inference-toolkit convention, for AWS framework containers such as
  the PyTorch inference DLC), and `container/`, the build context of the derm-cloud "bring your own
  container" image (`serve` entry point answering `/ping` and `/invocations` on 8080) that uses the same
  `model.tar.gz` as `ModelDataUrl`.
* **azureml**: `model/` (register it as the model), `code/score.py` (`init()` / `run()`),
  `environment/conda.yaml`, and `endpoint.yml` + `deployment.yml` for `az ml online-endpoint create` /
  `az ml online-deployment create` (managed online endpoint, key auth).
* **vertex**: `container/`, the custom-container build context (`server.py` on `$AIP_HTTP_PORT` with the
  model baked in at `/opt/model`), and `model/` to upload to Cloud Storage as the model's `artifactUri`
  (`AIP_STORAGE_URI` then takes precedence over the baked copy).

Each artefact carries its own copy of the `derm_cloud` library (pure Python), so the cloud runs exactly the
serving code that packaged it, with runtime requirements pinned to the versions installed here. The adapters
themselves come from `adapters/` (thin wrappers over `derm_cloud.serving`). Archives are reproducible:
sorted entries, zero timestamps and owners, so the same inputs give the same `sha256` in `MANIFEST.json`.

Example:
    >>> result = package_model("sagemaker", "~/.cache/derm-cloud/models/sklesion-0.2.2", "dist/sm")  # doctest: +SKIP
    >>> [p.name for p in result.artefacts]  # doctest: +SKIP
    ['model.tar.gz', 'container']
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from derm_cloud.deploy.files import model_files, write_manifest
from derm_cloud.deploy.layouts import azureml_layout, sagemaker_layout, slug, vertex_layout
from derm_cloud.errors import ConfigError

__all__ = ["CLOUDS", "Cloud", "PackageResult", "find_adapters_dir", "package_model", "runtime_requirements"]

Cloud = Literal["sagemaker", "azureml", "vertex"]
CLOUDS: tuple[str, ...] = ("sagemaker", "azureml", "vertex")
_ADAPTER_FILES = {
    "sagemaker": ("sagemaker/serve.py", "sagemaker/inference.py"),
    "azureml": ("azureml/score.py",),
    "vertex": ("vertex/server.py",),
}


@dataclass(frozen=True)
class PackageResult:
    """What `package_model` wrote.

    Attributes:
        cloud: `sagemaker`, `azureml` or `vertex`.
        out_dir: the output folder.
        artefacts: the top-level artefacts to upload or build (archive, folders, YAML files).
        manifest: `MANIFEST.json` (every file with its sha256, the model id, the derm-cloud version).
        next_steps: the commands that deploy the artefacts (also written to `README.txt`).
    """

    cloud: str
    out_dir: Path
    artefacts: list[Path]
    manifest: Path
    next_steps: list[str] = field(default_factory=list)


def find_adapters_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The `adapters/` folder: `explicit`, the copy shipped in the wheel, or the source checkout's.

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
            ML runs `score.py` in its own server and needs neither.
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
    """Write `cloud`'s deployment artefacts for `model_dir` into `out_dir`.

    Args:
        cloud: `sagemaker`, `azureml` or `vertex`.
        model_dir: a model directory (`model.onnx` + `spec.json`, or an AutoML export) or `sklesion`.
        out_dir: output folder; must be empty or absent unless `overwrite`.
        adapters_dir: the `adapters/` folder (default: shipped copy, else the source checkout's).
        endpoint_name, instance_type, instance_count: Azure ML endpoint and deployment settings.
        overwrite: replace an existing, non-empty `out_dir`.

    Raises:
        ConfigError: unknown cloud, non-empty output folder, or adapters not found.
        ModelSpecError: `model_dir` is not a servable model directory.
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
    files, model_id, left_out = model_files(model_root)
    adapters = find_adapters_dir(adapters_dir)
    out = Path(out_dir).expanduser().resolve()
    _check_out_dir(out, model_root, adapters.resolve(), overwrite)
    if out.exists() and any(out.iterdir()):
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    extra = ("google-cloud-storage",) if cloud == "vertex" else ()
    requirements = runtime_requirements(extra, http_server=cloud != "azureml")
    if cloud == "sagemaker":
        steps = sagemaker_layout(files, model_root, out, adapters, requirements)
        artefacts = [out / "model.tar.gz", out / "container"]
    elif cloud == "azureml":
        steps = azureml_layout(
            files,
            model_root,
            out,
            adapters,
            requirements,
            model_id,
            endpoint_name=slug(endpoint_name),
            instance_type=instance_type,
            instance_count=str(instance_count),
        )
        artefacts = [out / "model", out / "code", out / "environment", out / "endpoint.yml", out / "deployment.yml"]
    else:
        steps = vertex_layout(files, model_root, out, adapters, requirements)
        artefacts = [out / "container", out / "model"]
    manifest = write_manifest(out, cloud, model_id, requirements, steps, left_out)
    return PackageResult(cloud, out, artefacts, manifest, steps)
