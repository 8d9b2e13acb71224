"""What a run records about its backends and its environment, beside the results.

* `backend_facts`: `describe()` of each backend plus what the report needs (emulated, billing, metadata mode,
  the hosted model's facts, the fingerprint of the model file it serves).
* `model_fingerprint`: SHA-256 of a model directory's `spec.json` and model file, which the same-model check
  (`derm_cloud.compare.analysis.same_model`) compares.
* `versions`: Python, platform and the installed versions of derm-cloud and every SDK the backends use.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import platform
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from derm_cloud.compare.run.backends import can_use_metadata
from derm_cloud.compare.run.config import redact_config

if TYPE_CHECKING:
    from derm_cloud.compare.run.backends import BackendRuntime

__all__ = ["backend_facts", "model_fingerprint", "versions"]

_SDKS = (
    "derm-cloud",
    "numpy",
    "onnxruntime",
    "boto3",
    "botocore",
    "azure-cognitiveservices-vision-customvision",
    "azure-ai-ml",
    "requests",
    "google-cloud-aiplatform",
    "google-cloud-vision",
    "grpcio",
    "openai",
    "scikit-learn",
    "matplotlib",
    "pillow",
    "ray",
    "tqdm",
)


def versions() -> dict[str, str | None]:
    """Python, platform and installed versions of derm-cloud and every SDK the backends use."""
    out: dict[str, str | None] = {"python": sys.version.split()[0], "platform": platform.platform()}
    for dist in _SDKS:
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = None
    return out


_CACHE: dict[tuple[str, int, float], str] = {}


def model_fingerprint(model_dir: str | Path | None) -> str | None:
    """SHA-256 of a model directory's `spec.json` and model file(s), or `None` when it has none.

    Cached per file size and modification time: a comparison fingerprints the same 80 MB model once.
    """
    if model_dir is None:
        return None
    directory = Path(model_dir)
    files = sorted(p for p in directory.glob("*") if p.is_file() and p.suffix in (".json", ".onnx", ".safetensors"))
    files = [p for p in files if p.name == "spec.json" or p.suffix != ".json"]
    if not any(p.suffix != ".json" for p in files):
        return None
    digest = hashlib.sha256()
    for path in files:
        stat = path.stat()
        key = (str(path.resolve()), stat.st_size, stat.st_mtime)
        if key not in _CACHE:
            h = hashlib.sha256()
            with path.open("rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
            _CACHE[key] = h.hexdigest()
        digest.update(path.name.encode() + b"\0" + _CACHE[key].encode())
    return digest.hexdigest()


def backend_facts(rt: BackendRuntime) -> dict[str, Any]:
    """`describe()` as a dict plus what the report needs: emulation, the hosted model's facts."""
    from dataclasses import asdict

    facts = asdict(rt.classifier.describe())
    facts["name"] = rt.name
    facts["type"] = rt.cfg.type
    facts["emulated"] = bool(facts.get("emulated") or rt.cfg.emulate)
    facts["billing"] = {**facts.get("billing", {}), **rt.cfg.billing}
    facts["rate_limit"] = rt.cfg.rate_limit
    facts["options"] = redact_config(rt.cfg.options)
    facts["uses_metadata"] = can_use_metadata(rt)
    facts["metadata_used"] = rt.recipe.use_metadata and facts["uses_metadata"]
    facts["variant_of"] = rt.variant_of
    facts["export_of"] = rt.cfg.export_of
    if rt.cfg.emulate and rt.cfg.model_dir:
        from derm_cloud.models.cache import resolve_model_dir
        from derm_cloud.models.spec import ModelSpec

        model_dir = resolve_model_dir(rt.cfg.model_dir)
        spec = ModelSpec.load(model_dir)
        facts["hosted_model"] = {"model_id": spec.model_id, "model_dir": str(model_dir), **spec.facts}
        facts["model_facts"] = {**spec.facts, **facts.get("model_facts", {})}
    # The model file a backend serves (emulators: the hosted one; local-onnx: its own) for the same-model check.
    served = (facts.get("hosted_model") or {}).get("model_dir") or getattr(
        getattr(rt.classifier, "model", None), "directory", None
    )
    facts["model_fingerprint"] = model_fingerprint(served)
    # describe() may name the endpoint by a URL that carries its key (an Azure Functions ``?code=``).
    return dict(redact_config(facts))
