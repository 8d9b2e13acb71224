"""A probe or zero-shot over an embedding endpoint: its cache key, its recorded endpoint, `emulate = true` in a compare.

One MedSigLIP emulator (the real `google-cloud-aiplatform` REST client) hosts a tiny ONNX encoder for the module.
"""

from __future__ import annotations

import csv
import hashlib
import json
import pickle
import re
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from google.auth.credentials import AnonymousCredentials
from PIL import Image

from derm_cloud import ConfigError, ModelSpecError
from derm_cloud.backends.probe import ProbeClassifier, recordable_options
from derm_cloud.backends.zero_shot import ZeroShotClassifier
from derm_cloud.compare.pipeline import run_comparison
from derm_cloud.compare.run.backends import prepare
from derm_cloud.compare.run.config import BackendConfig
from derm_cloud.compare.run.probe_emulation import start_embedding_emulator
from derm_cloud.data import load_dataset
from derm_cloud.embedders.local_onnx import LocalOnnxEmbedder
from derm_cloud.embedders.vertex_endpoint import VertexMedSiglipEmbedder
from derm_cloud.probe.cache import EmbeddingCache, embedder_key
from derm_cloud.probe.fit import fit_probe
from derm_cloud.probe.zero_shot import write_zero_shot
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


@pytest.fixture(scope="module")
def emulated_probe(
    medsiglip: VertexEmbeddingEmulator, manifest: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A probe fitted through the emulator, as `derm-cloud probe fit --embedder vertex-medsiglip` records it."""
    out = tmp_path_factory.mktemp("probe") / "probe-medsiglip"
    options = {"endpoint_id": medsiglip.endpoint_id, "project": medsiglip.project, "api_endpoint": medsiglip.url}
    with vertex_embedder_for(medsiglip) as emb:
        fit_probe(
            load_dataset(manifest),
            emb,
            out,
            embedder_name="vertex-medsiglip",
            embedder_options=options,
            outer_splits=2,
            sizes=(14,),
            holdout=0.34,
            cache_root=tmp_path_factory.mktemp("cache"),
        )
    return out


def test_a_probe_fitted_through_an_emulator_records_no_port_and_says_how_to_compare_it(
    emulated_probe: Path, tmp_path: Path
) -> None:
    recorded = json.loads((emulated_probe / "probe.json").read_text())["embedder"]
    assert recorded["emulated"] is True and "api_endpoint" not in recorded["options"]
    assert recorded["options"]["endpoint_id"] == "2345678901"  # the endpoint's identity stays
    # Nor is a key ever written (an Azure endpoint's key is read from the caller, never from probe.json).
    options = {"key": "k", "scoring_uri": "http://127.0.0.1:1/score", "instance_type": "Standard_NC4as_T4_v3"}
    assert recordable_options(options) == {"instance_type": "Standard_NC4as_T4_v3"}
    with pytest.raises(ModelSpecError, match="emulate = true"):
        ProbeClassifier(emulated_probe)
    # A folder written before the fix recorded the emulator's port; once the emulator stops, the same fix is named.
    legacy = tmp_path / "legacy"
    shutil.copytree(emulated_probe, legacy)
    spec = json.loads((legacy / "probe.json").read_text())
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]  # closed when the block ends: nothing listens there
    spec["embedder"].pop("emulated")
    spec["embedder"]["options"]["api_endpoint"] = f"http://127.0.0.1:{dead}"
    (legacy / "probe.json").write_text(json.dumps(spec))
    with pytest.raises(ModelSpecError, match=f"127.0.0.1:{dead}, where no emulator listens.*emulate = true"):
        ProbeClassifier(legacy)


def test_compare_with_emulate_true_starts_the_probes_embedding_emulator(
    emulated_probe: Path, encoder_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    prices = tmp_path / "prices.json"
    sku = "gcp.vertex.custom.n1-standard-8+NVIDIA_TESLA_T4"
    entry = {"id": sku, "basis": "node_hour", "price": 1.0, "unit": "node-hour", "currency": "USD"}
    entry |= {"region": "us-central1", "as_of": "2026-12-01", "source": "test value", "status": "test"}
    prices.write_text(json.dumps({"entries": [entry]}))
    monkeypatch.setenv("DERM_CLOUD_PRICES", str(tmp_path / "no-user-catalogue.json"))
    options = {"model_dir": str(emulated_probe), "embedder_options": {"machine_type": "n1-standard-8"}}
    options["embedder_options"]["accelerator"] = "NVIDIA_TESLA_T4"
    cfg = {
        "title": "probe through its emulated endpoint",
        "output": str(tmp_path / "out"),
        "seed": 1,
        "dataset": {"source": str(emulated_probe / "holdout.csv")},
        "scenarios": {
            "warmup": 0,
            "min_samples": 2,
            "bootstrap": 20,
            "single_stream": {"queries": 2},
            "server": {"enabled": False},
            "offline": {"enabled": False},
            "cold_start": {"enabled": False},
        },
        "fairness": {"skin_tone": "none"},
        "cost": {"prices": [str(prices)]},
        "backends": [
            {"name": "probe", "type": "probe", "emulate": True, "model_dir": str(encoder_dir), "options": options}
        ],
    }
    result = run_comparison(cfg)
    report = json.loads(result.json.read_text())
    assert report["backends"]["probe"]["emulated"] is True
    cost = report["cost"]["backends"]["probe"]
    assert cost["known"] and cost["entry"]["id"] == sku
    assert cost["assumptions"].startswith("embedding endpoint: 1 x ") and "counted as nil" in cost["assumptions"]
    md = result.markdown.read_text()
    assert "EMULATED" in md and "counted as nil" in md
    (stand_in,) = [w for w in result.warnings if w.startswith("STAND-IN MODEL (probe)")]
    assert "stand-in for MedSigLIP" in stand_in and stand_in in md


# --- zero-shot, the other backend made of an embedder (and prompt embeddings instead of a head) ----------------


@pytest.fixture(scope="module")
def emulated_zero_shot(medsiglip: VertexEmbeddingEmulator, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A zero-shot folder written through the emulator, as `derm-cloud probe zero-shot` records it."""
    out = tmp_path_factory.mktemp("zero-shot") / "zero-shot-medsiglip"
    options = {"endpoint_id": medsiglip.endpoint_id, "project": medsiglip.project, "api_endpoint": medsiglip.url}
    with vertex_embedder_for(medsiglip) as emb:
        write_zero_shot(emb, out, embedder_name="vertex-medsiglip", embedder_options=options)
    return out


def test_a_zero_shot_folder_written_through_an_emulator_records_no_port_and_says_how_to_compare_it(
    emulated_zero_shot: Path, medsiglip: VertexEmbeddingEmulator
) -> None:
    recorded = json.loads((emulated_zero_shot / "zero_shot.json").read_text())["embedder"]
    assert recorded["emulated"] is True and "api_endpoint" not in recorded["options"]
    assert recorded["options"]["endpoint_id"] == medsiglip.endpoint_id  # the endpoint's identity stays
    with pytest.raises(ModelSpecError, match="emulate = true"):
        ZeroShotClassifier(emulated_zero_shot)
    # Options that name no address (a machine type) are no emulator either: the same fix is named.
    with pytest.raises(ModelSpecError, match="zero-shot folder .*`emulate = true`"):
        ZeroShotClassifier(emulated_zero_shot, embedder_options={"machine_type": "n1-standard-8"})


def _compare_config(tmp_path: Path, manifest: Path, backends: list[dict[str, object]]) -> dict[str, object]:
    return {
        "title": "zero-shot through emulated embedding endpoints",
        "output": str(tmp_path / "out"),
        "seed": 1,
        "dataset": {"source": str(manifest), "limit": 7},
        "scenarios": {
            "warmup": 0,
            "min_samples": 2,
            "bootstrap": 20,
            "single_stream": {"queries": 2},
            "server": {"enabled": False},
            "offline": {"enabled": False},
            "cold_start": {"enabled": False},
        },
        "fairness": {"skin_tone": "none"},
        "backends": backends,
    }


def test_compare_with_emulate_true_starts_the_zero_shot_embedders_emulator(
    emulated_zero_shot: Path, encoder_dir: Path, manifest: Path, tmp_path: Path
) -> None:
    backends: list[dict[str, object]] = [
        # From the folder: the recorded MedSigLIP endpoint, served again by its emulator.
        {
            "name": "zs-folder",
            "type": "zero-shot",
            "emulate": True,
            "model_dir": str(encoder_dir),
            "options": {"model_dir": str(emulated_zero_shot)},
        },
        # Without a folder: the embedder named in the options; its real address (never called) is replaced.
        {
            "name": "zs-direct",
            "type": "zero-shot",
            "emulate": True,
            "model_dir": str(encoder_dir),
            "options": {
                "embedder": "azure-medimageinsight",
                "embedder_options": {"scoring_uri": "https://medimageinsight.westeurope.inference.ml.azure.com/score"},
            },
        },
    ]
    result = run_comparison(_compare_config(tmp_path, manifest, backends))
    report = json.loads(result.json.read_text())
    md = result.markdown.read_text()
    assert "for zs-direct, zs-folder a stand-in encoder, not the provider's model" in md  # not "the same model"
    for name, provider in (("zs-folder", "MedSigLIP"), ("zs-direct", "MedImageInsight")):
        assert report["backends"][name]["emulated"] is True
        assert report["quality"]["backends"][name]["n"] == 7
        (stand_in,) = [w for w in result.warnings if w.startswith(f"STAND-IN MODEL ({name})")]
        assert "stand-in for" in stand_in and provider in stand_in and stand_in in md


def test_an_emulated_zero_shot_recipe_pickles_and_builds_where_the_emulator_object_is_not(
    emulated_zero_shot: Path, encoder_dir: Path
) -> None:
    """What a Ray worker does: unpickle the recipe and build the backend from the emulator's view alone."""
    cfg = BackendConfig(
        name="zs",
        type="zero-shot",
        emulate=True,
        model_dir=str(encoder_dir),
        options={"model_dir": str(emulated_zero_shot)},
    )
    rt = prepare(cfg, 30.0)
    try:
        recipe = pickle.loads(pickle.dumps(rt.recipe))
        assert recipe.emulated is not None and recipe.emulated["embedder"] == "vertex-medsiglip"
        with recipe.create() as remote:
            pixels = np.full((24, 24, 3), (190, 90, 70), np.uint8)
            np.testing.assert_allclose(remote.predict(pixels).vector(), rt.classifier.predict(pixels).vector())
    finally:
        rt.close()
    # A folder written on the provider's endpoint is refused: the stand-in's text vectors are other vectors.
    real = encoder_dir.parent / "zero-shot-real"
    shutil.copytree(emulated_zero_shot, real, dirs_exist_ok=True)
    spec = json.loads((real / "zero_shot.json").read_text())
    spec["embedder"].pop("emulated")
    (real / "zero_shot.json").write_text(json.dumps(spec))
    with pytest.raises(ConfigError, match="provider's vertex-medsiglip endpoint.*prompt embeddings"):
        prepare(BackendConfig(name="zs", type="zero-shot", emulate=True, options={"model_dir": str(real)}), 30.0)


def test_a_zero_shot_row_refuses_a_stand_in_exported_without_its_head(encoder_dir: Path, tmp_path: Path) -> None:
    """An embedder folder cut before the head was kept answers text with hash vectors: zero-shot through it is noise."""
    old = tmp_path / "old-embedder"
    shutil.copytree(encoder_dir, old)
    (old / "dropped_head.npz").unlink()
    cfg = BackendConfig(
        name="zs",
        type="zero-shot",
        emulate=True,
        model_dir=str(old),
        options={"embedder": "vertex-medsiglip", "embedder_options": {"endpoint_id": "1", "project": "p"}},
    )
    with pytest.raises(ConfigError, match=r"dropped_head\.npz.*--overwrite"):
        start_embedding_emulator(cfg)
