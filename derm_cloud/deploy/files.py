"""The files of a package, written so that the same inputs give the same bytes.

Only what serving loads leaves the model directory (`model_files`); the `derm_cloud` library is vendored
as pure Python (`vendor`); YAML goes through PyYAML (`write_yaml`); archives have sorted entries and
no times or owners (`tar_gz`); `MANIFEST.json` lists every file with its sha256 (`write_manifest`).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import shutil
import tarfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from derm_cloud.errors import ModelSpecError

__all__ = ["copy_model", "model_files", "tar_gz", "vendor", "write_manifest", "write_text", "write_yaml"]

_SKIP = {"__pycache__", "_adapters", ".mypy_cache", ".pytest_cache"}


def model_files(model_dir: Path) -> tuple[list[Path], str, list[str]]:
    """The files the serving code loads from a model directory, its model id, and what is left out.

    Serving reads the spec (`spec.json`, or an AutoML `labels.json`), the ONNX file it names and that file's
    external-data files; anything else in the folder (sklesion's 86 MB `model.keras`, notes, caches) would
    only make the package bigger, so it stays behind and `MANIFEST.json` lists it under `left_out`.
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


def copy_model(files: list[Path], src: Path, dest: Path) -> None:
    for f in files:
        target = dest / f.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(f, target)


def vendor(dest: Path) -> None:
    """Copy the installed `derm_cloud` package (pure Python) into `dest/derm_cloud`."""
    import derm_cloud

    src = Path(derm_cloud.__file__).parent
    shutil.copytree(
        src, dest / "derm_cloud", ignore=lambda _d, names: [n for n in names if n in _SKIP or n.endswith(".pyc")]
    )


def write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def write_yaml(path: Path, data: Mapping[str, Any]) -> None:
    """YAML written by PyYAML: every value is quoted or escaped as needed, so no value can add keys."""
    import yaml

    write_text(path, yaml.safe_dump(data, sort_keys=False, default_flow_style=False, allow_unicode=True))


def tar_gz(src: Path, archive: Path) -> None:
    """A reproducible `.tar.gz` of `src`'s contents at the archive root (sorted, no times or owners)."""

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


def write_manifest(
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
    write_text(out / "README.txt", "\n".join(readme) + "\n")
    return manifest
