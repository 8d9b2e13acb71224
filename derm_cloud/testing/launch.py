"""Start the emulator of a backend type, hosting a model, and build that backend wired to it.

One table maps each backend type (`sagemaker`, `vertex`, ...) to its emulator class in
`derm_cloud.testing.emulators` and to the emulator module's own `*_backend_for` helper (the supported wiring:
the real SDK client pointed at 127.0.0.1). The pytest fixtures, `derm-cloud emulate` and the comparator's
`emulate = true` all start emulators through here.

Example:
    >>> emu = start("sagemaker", model_dir, options={}, transport=None)  # doctest: +SKIP
    >>> clf = build_local("sagemaker", emu, {"instance_type": "ml.m5.large"})  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from derm_cloud.errors import ConfigError

if TYPE_CHECKING:
    from derm_cloud.base import Classifier
    from derm_cloud.embedders.base import Embedder

__all__ = ["EMULATED_EMBEDDER_TYPES", "EMULATED_TYPES", "build_local", "build_local_embedder", "start"]

_MODULES = {
    "sagemaker": ("sagemaker", "SageMakerRuntimeEmulator", "sagemaker_backend_for"),
    "vertex": ("vertex", "VertexEmulator", "vertex_backend_for"),
    "azure-custom-vision": ("azure_custom_vision", "CustomVisionEmulator", "custom_vision_backend_for"),
    "azure-openai": ("azure_openai", "AzureOpenAIEmulator", "azure_openai_backend_for"),
    "azure-ml": ("azure_ml", "AzureMLEmulator", "azure_ml_backend_for"),
    "google-vision": ("cloud_vision", "CloudVisionEmulator", "cloud_vision_backend_for"),
    "vertex-gemini": ("gemini", "GeminiEmulator", "gemini_backend_for"),
    "rekognition-custom-labels": ("rekognition", "RekognitionEmulator", "rekognition_backend_for"),
}
#: backend types that ``emulate = true`` supports.
EMULATED_TYPES = frozenset(_MODULES)
#: Embedding endpoints (`derm_cloud.embedders`): the emulator hosts an embedding model, the helper builds an embedder.
_EMBEDDING_MODULES = {
    "vertex-medsiglip": ("vertex_embeddings", "VertexEmbeddingEmulator", "vertex_embedder_for"),
    "vertex-derm-foundation": ("vertex_embeddings", "VertexEmbeddingEmulator", "vertex_embedder_for"),
    "azure-medimageinsight": ("medimageinsight", "MedImageInsightEmulator", "medimageinsight_embedder_for"),
}
#: embedder types with an emulator.
EMULATED_EMBEDDER_TYPES = frozenset(_EMBEDDING_MODULES)


def _module(kind: str) -> Any:
    name = f"derm_cloud.testing.emulators.{(_MODULES.get(kind) or _EMBEDDING_MODULES[kind])[0]}"
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise ConfigError(f"emulate = true for {kind!r} needs {name}, which cannot be imported: {exc}") from exc


def start(kind: str, model_dir: Path | None, *, options: Mapping[str, Any], transport: str | None) -> Any:
    """Start the emulator for `kind` hosting `model_dir` (Cloud Vision hosts no model: generic labels).

    For an embedder type (`vertex-medsiglip`, `vertex-derm-foundation`, `azure-medimageinsight`) `model_dir` is an
    embedding model directory, hosted as a stand-in for the provider's model.
    """
    if kind in _EMBEDDING_MODULES:
        return _start_embedding(kind, model_dir, transport)
    if kind not in _MODULES:
        raise ConfigError(
            f"no derm-cloud emulator for backend type {kind!r}; emulate = true works for {', '.join(sorted(_MODULES))}"
        )
    cls = getattr(_module(kind), _MODULES[kind][1])
    if kind == "sagemaker":
        emu = cls()
        emu.add_endpoint(
            options.get("endpoint_name", "derm-cloud"),
            model_dir,
            response_format=options.get("response_format", "adapter"),
            serverless=bool(options.get("serverless", False)),
        )
    elif kind == "vertex":
        emu = cls(model_dir, schema=options.get("schema", "automl"), grpc=(transport or "rest") == "grpc")
    elif kind == "google-vision":
        emu = cls()
    else:
        emu = cls(model_dir)
    emu.start()
    emu.derm_transport = transport or "rest"
    return emu


def _start_embedding(kind: str, model_dir: Path | None, transport: str | None) -> Any:
    if model_dir is None:
        raise ConfigError(f"the {kind} emulator hosts an embedding model: pass its model directory")
    cls = getattr(_module(kind), _EMBEDDING_MODULES[kind][1])
    if kind.startswith("vertex-"):
        api = kind.removeprefix("vertex-")
        emu = cls(model_dir, serving_api=api, grpc=(transport or "rest") == "grpc")
    else:
        emu = cls(model_dir)
    emu.start()
    emu.derm_transport = transport or "rest"
    return emu


def build_local_embedder(kind: str, emulator: Any, options: Mapping[str, Any]) -> Embedder:
    """The embedder wired to a live embedding-endpoint emulator in this process (the emulator module's helper)."""
    helper = getattr(_module(kind), _EMBEDDING_MODULES[kind][2])
    opts = dict(options)
    if kind.startswith("vertex-"):
        transport = opts.pop("transport", None) or getattr(emulator, "derm_transport", "rest")
        return helper(emulator, transport=transport, **opts)  # type: ignore[no-any-return]
    return helper(emulator, **opts)  # type: ignore[no-any-return]


def build_local(kind: str, emulator: Any, options: Mapping[str, Any]) -> Classifier:
    """The backend wired to a live emulator in this process, with the emulator module's own helper."""
    helper = getattr(_module(kind), _MODULES[kind][2])
    opts = dict(options)
    if kind == "sagemaker":
        name = opts.pop("endpoint_name", "derm-cloud")
        opts.setdefault("response_format", "adapter")
        return helper(emulator, name, **opts)  # type: ignore[no-any-return]
    if kind == "vertex":
        transport = opts.pop("transport", None) or getattr(emulator, "derm_transport", "rest")
        return helper(emulator, transport=transport, **opts)  # type: ignore[no-any-return]
    return helper(emulator, **opts)  # type: ignore[no-any-return]
