"""What a run records about its backends and its environment, beside the results.

* `backend_facts`: `describe()` of each backend plus what the report needs (emulated, billing, metadata mode,
  the hosted model's facts, the fingerprint of the model file it serves).
* `model_fingerprint`: SHA-256 of a model directory's `spec.json` and model file, which the same-model check
  (`derm_cloud.compare.analysis.same_model`) compares.
* `versions`: Python, platform and the installed versions of derm-cloud and every SDK the backends use.
* `machine_facts`, `load_reading`: the cores, CPU model and load average of the machine that timed the
  backends (read before and after each run and each timing window).
* `computes_here`: whether a backend's answer is computed on this machine (a local model, an emulator, any
  endpoint on a loopback address): such backends are timed one at a time, and their latency is labelled as
  this machine's (`latency_basis`).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import platform
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from derm_cloud.compare.run.backends import can_use_metadata
from derm_cloud.compare.run.config import redact_config
from derm_cloud.compare.run.latency_basis import LATENCY_BASES, latency_basis
from derm_cloud.compare.run.probe_emulation import EMBEDDING_BACKENDS

if TYPE_CHECKING:
    from derm_cloud.compare.run.backends import BackendRuntime

__all__ = [
    "LATENCY_BASES",
    "MACHINE_FACT",
    "backend_facts",
    "computes_here",
    "latency_basis",
    "load_reading",
    "machine_facts",
    "model_fingerprint",
    "runtime_computes_here",
    "versions",
]

#: The run store's `facts` rows (their `backend` column) that hold each session's machine facts.
MACHINE_FACT = "<machine>"

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


def computes_here(facts: Mapping[str, Any]) -> bool:
    """Whether the backend computes on this machine, so that timing it beside another would time contention."""
    return latency_basis(facts) != "remote"


def runtime_computes_here(rt: BackendRuntime) -> bool:
    """`computes_here` of a running backend (its `describe()`, and `emulate = true` from its config)."""
    info = rt.classifier.describe()
    facts = {"emulated": info.emulated or rt.cfg.emulate, "provider": info.provider, "endpoint": info.endpoint}
    return computes_here(facts)


def load_average() -> tuple[float, float, float] | None:
    """The 1, 5 and 15-minute load averages (`None` where the system has none)."""
    try:
        return os.getloadavg()
    except (AttributeError, OSError):
        return None


def load_reading() -> dict[str, Any]:
    """The time (seconds since the epoch) and the 1/5/15-minute load averages now."""
    load = load_average()
    return {"at": time.time(), "load": list(load) if load is not None else None}


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def machine_facts() -> dict[str, Any]:
    """Cores (all, and those this process may use), CPU model and platform of this machine."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "cpu_model": _cpu_model(),
        "platform": platform.platform(),
    }


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
    # A probe's emulator hosts a stand-in encoder, not a classifier: its facts come from the probe folder.
    if rt.cfg.emulate and rt.cfg.model_dir and rt.cfg.type not in EMBEDDING_BACKENDS:
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
    facts["latency_basis"] = latency_basis(facts)
    # describe() may name the endpoint by a URL that carries its key (an Azure Functions ``?code=``).
    return dict(redact_config(facts))
