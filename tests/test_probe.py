"""Local ONNX embedder, the cut at the penultimate layer, `probe fit` and the `probe` backend (tiny models)."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import derm_cloud
from derm_cloud import ConversionError, ModelSpecError, PreparedImage
from derm_cloud.backends.probe import ProbeClassifier
from derm_cloud.backends.probe_head import LinearHead
from derm_cloud.data import load_dataset
from derm_cloud.embedders.base import RawEmbedding
from derm_cloud.embedders.local_onnx import LocalOnnxEmbedder
from derm_cloud.models.embedder_cut import export_classifier_embedder, penultimate_layer
from derm_cloud.probe.cache import EmbeddingCache
from derm_cloud.probe.fit import fit_probe
from derm_cloud.taxonomy import CLASS_CODES
from derm_cloud.testing.tiny_embedders import (
    TINY_EMBEDDER_DIMENSION,
    build_tiny_classifier_with_head,
    build_tiny_embedder,
)

# A colour per class, so the tiny embedder (channel means) separates them; noise makes each image different.
_COLOURS = {
    code: colour
    for code, colour in zip(
        CLASS_CODES,
        [(200, 40, 40), (40, 200, 40), (40, 40, 200), (200, 200, 40), (200, 40, 200), (40, 200, 200), (120, 120, 120)],
        strict=True,
    )
}


@pytest.fixture(scope="module")
def tiny_embedder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_embedder(tmp_path_factory.mktemp("emb") / "tiny-embedder")


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """84 images of 56 lesions: eight lesions per class, every other lesion photographed twice."""
    root = tmp_path_factory.mktemp("probe-data")
    rng = np.random.default_rng(0)
    rows = []
    for code, colour in _COLOURS.items():
        for lesion in range(8):
            for shot in range(2 if lesion % 2 else 1):
                pixels = np.clip(np.asarray(colour) + rng.normal(0, 60, (24, 24, 3)), 0, 255).astype(np.uint8)
                name = f"{code}-{lesion}-{shot}.png"
                Image.fromarray(pixels).save(root / name)
                rows.append([name.removesuffix(".png"), f"L-{code}-{lesion}", code, name])
    path = root / "manifest.csv"
    with path.open("w", newline="") as f:
        csv.writer(f).writerows([["image_id", "lesion_id", "dx", "file"], *rows])
    return path


@pytest.fixture(scope="module")
def probe_dir(tiny_embedder_dir: Path, manifest: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("probe") / "probe"
    with LocalOnnxEmbedder(tiny_embedder_dir) as emb:
        fit_probe(
            load_dataset(manifest),
            emb,
            out,
            embedder_name="local-onnx",
            embedder_options={"model_dir": str(tiny_embedder_dir)},
            outer_splits=3,
            sizes=(14, 28),
            holdout=0.25,
            cache_root=tmp_path_factory.mktemp("cache"),
        )
    return out


def test_cut_equals_the_full_graphs_penultimate_activation(tmp_path: Path) -> None:
    source = build_tiny_classifier_with_head(tmp_path / "clf")
    spec, check = export_classifier_embedder(source, tmp_path / "emb", images=[np.full((20, 30, 3), 90, np.uint8)])
    assert (spec.dimension, check.tensor) == (TINY_EMBEDDER_DIMENSION, "penultimate")
    assert check.images == 7 and check.max_abs_diff_embedding <= 1e-6 and check.max_abs_diff_probabilities <= 1e-6
    with pytest.raises(ConversionError, match="exists"):
        export_classifier_embedder(source, tmp_path / "emb")


def test_a_graph_without_a_dense_head_is_refused(tmp_path: Path) -> None:
    import onnx

    from derm_cloud.testing.tiny_models import build_tiny_onnx_model

    # The tiny metadata classifier adds two branches' logits: no single dense layer to cut before.
    graph = onnx.load(str(build_tiny_onnx_model(tmp_path / "m", with_metadata=True) / "model.onnx")).graph
    with pytest.raises(ModelSpecError, match="dense layer"):
        penultimate_layer(graph)


def test_local_onnx_embedder_batches_and_checks_its_folder(tiny_embedder_dir: Path, tmp_path: Path) -> None:
    images = [np.full((20, 20, 3), value, np.uint8) for value in (0, 100, 200)]
    with derm_cloud.create_embedder("local-onnx", model_dir=tiny_embedder_dir, max_batch=2) as emb:
        out = emb.embed_batch(images)
        assert emb.describe().labels_mapped is False
    assert [e.batch_size for e in out] == [2, 2, 1]
    assert all(e.dimension == TINY_EMBEDDER_DIMENSION for e in out)
    # Channel means scaled to 0..1 lead the vector: grey 100 -> 100/255 in each of the first three values.
    np.testing.assert_allclose(out[1].vector[:3], 100 / 255, atol=1e-5)
    with pytest.raises(ModelSpecError, match="no embedder.json"):
        LocalOnnxEmbedder(tmp_path)


class _FlakyEmbedder(LocalOnnxEmbedder):
    """Fails on its second request, as a provider outage would half-way through a long run."""

    calls = 0

    def _embed_many(self, images: Sequence[PreparedImage], timeout: float | None) -> list[RawEmbedding]:
        type(self).calls += 1
        if type(self).calls == 2:
            raise derm_cloud.ServiceError("provider outage", backend="local-onnx", retryable=False)
        return super()._embed_many(images, timeout)


def test_embedding_cache_resumes_and_stores_no_image(tiny_embedder_dir: Path, manifest: Path, tmp_path: Path) -> None:
    readers = [s.read_bytes for s in load_dataset(manifest).samples[:20]]
    emb = _FlakyEmbedder(tiny_embedder_dir)
    cache = EmbeddingCache.for_embedder(emb, tmp_path)
    with pytest.raises(derm_cloud.ServiceError):
        cache.embed_all(emb, readers, chunk=8)
    x, _, embedded = cache.embed_all(emb, readers, chunk=8)  # the first chunk was kept
    assert embedded == 12 and x.shape == (20, TINY_EMBEDDER_DIMENSION)
    assert cache.embed_all(emb, readers)[2] == 0
    other = LocalOnnxEmbedder(build_tiny_embedder(tmp_path / "redeployed", seed=3))  # same key, another model
    with pytest.raises(derm_cloud.ConfigError, match="the model behind it changed"):
        cache.embed_all(other, readers)
    cache.close()
    stored = cache.path.read_bytes()
    assert readers[0]()[16:48] not in stored and b"manifest" not in stored  # vectors and digests only


def test_probe_fit_writes_a_measured_folder(probe_dir: Path) -> None:
    spec = json.loads((probe_dir / "probe.json").read_text())
    assert spec["embedder"] == {
        "name": "local-onnx",
        "options": {"model_dir": spec["embedder"]["options"]["model_dir"]},
        "model_id": "tiny-embedder",
        "dimension": TINY_EMBEDDER_DIMENSION,
    }
    assert len(spec["data"]["sha256"]) == 64 and spec["data"]["holdout"]["images"] > 0
    oof = spec["out_of_fold"]
    low, high = oof["balanced_accuracy_ci"]
    assert low <= oof["balanced_accuracy"] <= high and oof["balanced_accuracy"] > 0.5  # colours separate classes
    assert [p["asked"] for p in spec["learning_curve"]] == [14, 28, "all"]
    held = {row["lesion_id"] for row in csv.DictReader((probe_dir / "holdout.csv").open())}
    assert spec["data"]["images"] + spec["data"]["holdout"]["images"] == 84
    assert held and spec["data"]["lesions"] + len(held) == 56  # lesion-disjoint: no lesion on both sides


def test_probe_backend_classifies_like_its_head(probe_dir: Path) -> None:
    image = np.full((24, 24, 3), _COLOURS["mel"], np.uint8)
    with derm_cloud.create("probe", model_dir=probe_dir) as clf:
        prediction = clf.predict(image)
        info = clf.describe()
        vector = clf.embedder.embed(image).vector
    head = LinearHead.load(probe_dir / "head.npz")
    expected = head.predict_proba(vector[None, :])[0]
    np.testing.assert_allclose([prediction.probabilities[c] for c in CLASS_CODES], expected, rtol=1e-6)
    assert prediction.top(1)[0].label == "mel"
    assert info.provider == "local" and info.model_facts["learning_curve"]


def test_probe_refuses_another_embedding_space(probe_dir: Path, tmp_path: Path) -> None:
    other = build_tiny_embedder(tmp_path / "other", seed=1)
    spec = json.loads((other / "embedder.json").read_text())
    spec["model_id"] = "another-encoder"
    (other / "embedder.json").write_text(json.dumps(spec))
    with pytest.raises(ModelSpecError, match="another embedding space"):
        ProbeClassifier(probe_dir, embedder_options={"model_dir": str(other)})


def test_head_file_with_pickled_objects_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "head.npz"
    arrays = {"mean": np.zeros(2), "scale": np.ones(2), "coef": np.zeros((1, 2)), "intercept": np.zeros(1)}
    np.savez(path, beta=np.asarray(1.0), classes=np.asarray([{"code": "mel"}], dtype=object), **arrays)
    with pytest.raises(ModelSpecError, match="cannot read the probe head"):
        LinearHead.load(path)


def test_report_section_and_learning_curve_figure(probe_dir: Path) -> None:
    from derm_cloud.compare.report.cells import md_table
    from derm_cloud.compare.report.probe_section import learning_curve_figure, probe_section

    with ProbeClassifier(probe_dir) as clf:
        facts = clf.describe().model_facts
    summary = {
        "backends": {"probe": {"model_facts": facts}, "sklesion": {"model_facts": {"architecture": "Xception"}}},
        "quality": {
            "backends": {
                "probe": {"balanced_accuracy": 0.61, "ci": {"balanced_accuracy": [0.5, 0.7]}},
                "sklesion": {"balanced_accuracy": 0.72, "ci": {"balanced_accuracy": [0.65, 0.79]}},
            }
        },
        "emulated": [],
    }
    section = probe_section(summary, md_table)
    assert section is not None
    title, intro, tables = section
    assert "Probes" in title and "counted as nil" in intro
    assert "| 61.0% [50.0%, 70.0%] |" in tables[0]  # this run's figure beside the out-of-fold one
    assert tables[1].count("| probe |") == len(facts["learning_curve"])
    figure = learning_curve_figure(summary)
    assert figure is not None and figure.png.startswith(b"\x89PNG")
    kinds = [(r["backend"], r["kind"]) for r in figure.rows]
    assert kinds.count(("probe", "probe")) == len(facts["learning_curve"]) and ("sklesion", "reference") in kinds
    assert probe_section({"backends": {"sklesion": {"model_facts": {}}}}, md_table) is None


def test_sklesion_embedder_on_real_lesions(sklesion_model_dir: Path, dev_images: list[Path], tmp_path: Path) -> None:
    """The real cut: exact on dermoscopy, and sklesion's own head on the embedder's output is sklesion's answer."""
    import onnx

    from derm_cloud.preprocess import softmax

    spec, check = export_classifier_embedder(sklesion_model_dir, tmp_path / "emb", images=dev_images[:2])
    assert (spec.dimension, check.images) == (32, 8)
    assert check.max_abs_diff_embedding <= 1e-5 and check.max_abs_diff_probabilities <= 1e-5
    with LocalOnnxEmbedder(tmp_path / "emb") as emb:
        vector = emb.embed(dev_images[2]).vector  # an image the export's check never saw
    with derm_cloud.create("local-onnx", model_dir=sklesion_model_dir, use_metadata=False) as clf:
        expected = clf.predict(dev_images[2]).vector()
    _, weight, bias = penultimate_layer(onnx.load(str(sklesion_model_dir / "model.onnx")).graph)
    np.testing.assert_allclose(softmax(vector[None, :] @ weight + bias)[0], expected, atol=1e-5)


def test_probe_on_a_stand_in_encoder_says_so(probe_dir: Path) -> None:
    class StandIn(LocalOnnxEmbedder):
        def describe(self) -> derm_cloud.BackendInfo:
            info = super().describe()
            facts = dict(info.model_facts, stand_in="hosts a local encoder as a stand-in for MedSigLIP")
            return derm_cloud.BackendInfo(**{**info.__dict__, "emulated": True, "model_facts": facts})

    recorded = json.loads((probe_dir / "probe.json").read_text())["embedder"]["options"]["model_dir"]
    with ProbeClassifier(probe_dir, embedder=StandIn(recorded)) as clf:
        info = clf.describe()
    assert info.emulated and "stand-in for MedSigLIP" in info.model_facts["stand_in"]
