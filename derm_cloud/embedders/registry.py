"""Embedders by name, imported lazily: the `derm_cloud.registry` of classifiers, for `Embedder`s.

`available_embedders()` imports nothing; `create_embedder(name, **options)` imports the one asked for and,
when its extra is missing, raises `MissingDependencyError` naming the `pip install` that fixes it. Third-party
packages add embedders through the entry-point group `derm_cloud.embedders`:

```toml
[project.entry-points."derm_cloud.embedders"]
my-encoder = "my_package.embedder:MyEmbedder"
```
"""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
from typing import TYPE_CHECKING, Any

from derm_cloud.errors import BackendNotFoundError, ConfigError, MissingDependencyError
from derm_cloud.registry import BackendEntry

if TYPE_CHECKING:
    from derm_cloud.embedders.base import Embedder

__all__ = ["available_embedders", "create_embedder", "get_embedder_class", "register_embedder"]

ENTRY_POINT_GROUP = "derm_cloud.embedders"

# One entry per embedder backend; cloud endpoints add theirs here (name, "module:Class", extra, distributions).
_BUILTIN: tuple[BackendEntry, ...] = (
    BackendEntry(
        "local-onnx",
        "derm_cloud.embedders.local_onnx:LocalOnnxEmbedder",
        "onnx",
        ("onnxruntime",),
        "any image encoder exported to ONNX, on this machine (onnxruntime); e.g. sklesion cut at its penultimate layer",
    ),
    BackendEntry(
        "vertex-medsiglip",
        "derm_cloud.embedders.vertex_endpoint:VertexMedSiglipEmbedder",
        "vertex",
        ("google-cloud-aiplatform",),
        "Google's MedSigLIP deployed from Vertex AI Model Garden: images and text in one space (zero-shot)",
    ),
    BackendEntry(
        "vertex-derm-foundation",
        "derm_cloud.embedders.vertex_endpoint:VertexDermFoundationEmbedder",
        "vertex",
        ("google-cloud-aiplatform",),
        "Google's Derm Foundation (legacy) deployed from Vertex AI Model Garden: skin-image embeddings",
    ),
    BackendEntry(
        "azure-medimageinsight",
        "derm_cloud.embedders.azure_medimageinsight:MedImageInsightEmbedder",
        "azure",
        ("requests",),
        "Microsoft's MedImageInsight on an Azure AI Foundry / Azure ML managed online endpoint: images and text",
    ),
)

_EXTRA: dict[str, BackendEntry] = {}
_SCANNED: dict[str, BackendEntry] | None = None


def register_embedder(name: str, target: str, *, extra: str | None = None, summary: str = "") -> None:
    """Register an embedder at run time (the entry-point group is the usual way for packages)."""
    if ":" not in target:
        raise ConfigError(f"embedder target must look like 'package.module:ClassName', got {target!r}")
    _EXTRA[name] = BackendEntry(name, target, extra, (), summary or target, third_party=True)


def _entries() -> dict[str, BackendEntry]:
    global _SCANNED
    if _SCANNED is None:
        entries = {e.name: e for e in _BUILTIN}
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            if ep.name not in entries:
                dist = ep.dist.name if ep.dist is not None else ""
                entries[ep.name] = BackendEntry(
                    ep.name, ep.value, None, (dist,) if dist else (), f"third-party embedder from {dist}", True
                )
        _SCANNED = entries
    return _SCANNED | _EXTRA


def available_embedders() -> list[BackendEntry]:
    """Every known embedder, built-in then third-party, with whether it is installed. Imports nothing."""
    return list(_entries().values())


def get_embedder_class(name: str) -> type[Embedder]:
    """Import and return the class of embedder `name`.

    Raises:
        BackendNotFoundError: no embedder has that name, or its target names no Embedder subclass.
        MissingDependencyError: its optional dependencies are not installed.
    """
    entries = _entries()
    if name not in entries:
        raise BackendNotFoundError(f"no embedder named {name!r}; known embedders: {', '.join(sorted(entries))}")
    entry = entries[name]
    if entry.missing:
        raise MissingDependencyError(
            f"embedder {name!r} needs {', '.join(entry.missing)}, which is not installed; run: {entry.install_hint}"
        )
    module_name, _, attr = entry.target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise MissingDependencyError(
            f"embedder {name!r} could not import {exc.name or module_name}; run: {entry.install_hint}"
        ) from exc
    from derm_cloud.embedders.base import Embedder

    cls = getattr(module, attr, None)
    if not (isinstance(cls, type) and issubclass(cls, Embedder)):
        raise BackendNotFoundError(
            f"embedder {name!r} points at {entry.target!r}, which is not an Embedder subclass; fix the entry point "
            "(or register_embedder) target to 'package.module:ClassName'"
        )
    return cls


def create_embedder(name: str, **options: Any) -> Embedder:
    """Create an embedder by registry name.

    Example:
        >>> emb = create_embedder("local-onnx", model_dir="~/.cache/derm-cloud/models/sklesion-embed")  # doctest: +SKIP
    """
    cls = get_embedder_class(name)
    try:
        # Check option names first: a typo otherwise surfaces as a bare TypeError from deep in __init__.
        inspect.signature(cls).bind(**options)
    except TypeError as exc:
        raise ConfigError(f"embedder {name!r}: {exc}; see help({cls.__module__}.{cls.__name__})") from None
    from derm_cloud.options import check_option_types

    check_option_types(name, cls, options)
    return cls(**options)
