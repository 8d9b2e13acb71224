"""A probe over an embedding endpoint: its cache key, its recorded endpoint, and `emulate = true` in a compare.

One MedSigLIP emulator (the real `google-cloud-aiplatform` REST client) hosts a tiny ONNX encoder for the module.
"""

from __future__ import annotations

import csv
import hashlib
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from google.auth.credentials import AnonymousCredentials
from PIL import Image

from derm_cloud.data import load_dataset
from derm_cloud.embedders.local_onnx import LocalOnnxEmbedder
from derm_cloud.embedders.vertex_endpoint import VertexMedSiglipEmbedder
from derm_cloud.probe.cache import EmbeddingCache, embedder_key
from derm_cloud.taxonomy import CLASS_CODES
from derm_cloud.testing.emulators.vertex_embeddings import VertexEmbeddingEmulator, vertex_embedder_for
from derm_cloud.testing.tiny_embedders import TINY_EMBEDDER_DIMENSION, build_tiny_embedder


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_embedder(tmp_path_factory.mktemp("enc") / "tiny-embedder")


@pytest.fixture(scope="module")
def medsiglip(encoder_dir: Path) -> Iterator[VertexEmbeddingEmulator]:
    emu = VertexEmbeddingEmulator(encoder_dir, serving_api="medsiglip")
    emu.start()
    yield emu
    emu.stop()


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """35 images of 35 lesions, five per class, each class its own colour (the tiny encoder separates them)."""
    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(1)
    rows = []
    for k, code in enumerate(CLASS_CODES):
        colour = np.asarray([(k * 37) % 256, (k * 91) % 256, (k * 151) % 256])
        for lesion in range(5):
            pixels = np.clip(colour + rng.normal(0, 25, (20, 20, 3)), 0, 255).astype(np.uint8)
            name = f"{code}-{lesion}.png"
            Image.fromarray(pixels).save(root / name)
            rows.append([name.removesuffix(".png"), f"L-{code}-{lesion}", code, name])
    path = root / "manifest.csv"
    with path.open("w", newline="") as f:
        csv.writer(f).writerows([["image_id", "lesion_id", "dx", "file"], *rows])
    return path


def _far_endpoint(**options: object) -> VertexMedSiglipEmbedder:
    """The same endpoint id on Google's host (never called: building the client opens no connection)."""
    return VertexMedSiglipEmbedder(
        "2345678901", project="derm-cloud-test", location="us-central1", credentials=AnonymousCredentials(), **options
    )


def test_endpoint_cache_key_is_stable_and_keeps_the_stand_in_apart(
    medsiglip: VertexEmbeddingEmulator, manifest: Path, tmp_path: Path
) -> None:
    with vertex_embedder_for(medsiglip) as emb, _far_endpoint() as real, _far_endpoint(dimension=512) as pinned:
        path = EmbeddingCache.for_embedder(emb, tmp_path).path
        assert "None" not in path.name  # the dimension is unknown until the first answer: not part of the key
        readers = [s.read_bytes for s in load_dataset(manifest).samples[:6]]
        cache = EmbeddingCache.for_embedder(emb, tmp_path)
        assert cache.embed_all(emb, readers, chunk=4)[2] == 6
        cache.close()
        assert emb.dimension == TINY_EMBEDDER_DIMENSION
        # The same embedder once its dimension is known (the next run, or a pinned dimension) keeps its key ...
        again = EmbeddingCache.for_embedder(emb, tmp_path)
        assert again.path == path and again.embed_all(emb, readers)[2] == 0
        again.close()
        assert embedder_key(real) == embedder_key(pinned)
        # ... and the stand-in behind an emulator never shares a cache with the provider's model at that endpoint.
        assert embedder_key(real) != embedder_key(emb)
        assert EmbeddingCache.for_embedder(real, tmp_path).path != path


def test_a_local_encoders_cache_under_the_former_key_is_taken_over(
    encoder_dir: Path, manifest: Path, tmp_path: Path
) -> None:
    readers = [s.read_bytes for s in load_dataset(manifest).samples[:5]]
    with LocalOnnxEmbedder(encoder_dir) as emb:
        legacy_key = f"{emb.backend_name}:{emb.model_id}:{emb.dimension}"  # the key before the fix
        legacy_file = tmp_path / (re.sub(r"[^A-Za-z0-9._-]+", "_", legacy_key) + ".sqlite")
        legacy = EmbeddingCache(legacy_file, legacy_key)
        vectors = emb.embed_batch([read() for read in readers])
        legacy.put([(hashlib.sha256(read()).hexdigest(), v.vector) for read, v in zip(readers, vectors, strict=True)])
        legacy.close()
        cache = EmbeddingCache.for_embedder(emb, tmp_path)
        assert cache.path != legacy_file
        assert cache.embed_all(emb, readers)[2] == 0  # taken over: nothing embedded again
        cache.close()
