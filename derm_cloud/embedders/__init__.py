"""Embedders: image (and text) embeddings from a local encoder or a medical foundation-model endpoint.

`Embedder` is the interface (`derm_cloud.embedders.base`), `create_embedder` the registry
(`derm_cloud.embedders.registry`). A probe (a small head trained on embeddings of labelled images) turns an
embedder into a `Classifier`: see `derm_cloud.backends.probe`.
"""

from __future__ import annotations

from derm_cloud.embedders.base import Embedder, Embedding, RawEmbedding
from derm_cloud.embedders.registry import available_embedders, create_embedder, get_embedder_class, register_embedder

__all__ = [
    "Embedder",
    "Embedding",
    "RawEmbedding",
    "available_embedders",
    "create_embedder",
    "get_embedder_class",
    "register_embedder",
]
