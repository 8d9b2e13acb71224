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

from typing import TYPE_CHECKING, Any

from derm_cloud.registry import BackendEntry, EntryPointRegistry

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


def _embedder_base() -> type[Embedder]:
    from derm_cloud.embedders.base import Embedder  # at run time only here: base is heavier than the registry

    return Embedder


_EMBEDDERS: EntryPointRegistry[Embedder] = EntryPointRegistry(
    kind="embedder",
    group=ENTRY_POINT_GROUP,
    builtin=_BUILTIN,
    base=_embedder_base,
    register_hint="register_embedder",
)
_EXTRA = _EMBEDDERS.extra


def register_embedder(name: str, target: str, *, extra: str | None = None, summary: str = "") -> None:
    """Register an embedder at run time (the entry-point group is the usual way for packages)."""
    _EMBEDDERS.register(name, target, extra=extra, summary=summary)


def available_embedders() -> list[BackendEntry]:
    """Every known embedder, built-in then third-party, with whether it is installed. Imports nothing."""
    return list(_EMBEDDERS.entries().values())


def get_embedder_class(name: str) -> type[Embedder]:
    """Import and return the class of embedder `name`.

    Raises:
        BackendNotFoundError: no embedder has that name, or its target names no Embedder subclass.
        MissingDependencyError: its optional dependencies are not installed.
    """
    return _EMBEDDERS.get_class(name)


def create_embedder(name: str, **options: Any) -> Embedder:
    """Create an embedder by registry name.

    Example:
        >>> emb = create_embedder("local-onnx", model_dir="~/.cache/derm-cloud/models/sklesion-embed")  # doctest: +SKIP
    """
    return _EMBEDDERS.create(name, **options)
