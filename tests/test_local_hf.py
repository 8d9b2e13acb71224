"""local-hf on tiny random ViT folders built at test time (no hub): label mapping, batching, quirks, errors.

Images: HAM10000 dev images (Tschandl et al. 2018, CC BY-NC 4.0), read from shared/data.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

import derm_cloud
from derm_cloud.cli import main
from derm_cloud.errors import ConfigError, MissingDependencyError, ModelSpecError, UnmappableLabelsError
from derm_cloud.taxonomy import CLASS_CODES
from derm_cloud.testing.tiny_hf import ANWARKH1_LABELS, IMAGENET_STYLE_LABELS, build_tiny_vit

# docs/reference/dermatology.md section 2: Anwarkh1 / marmal88 dx strings -> canonical codes, written out
# independently here.
ANWARKH1_TO_CODE = {
    "benign_keratosis-like_lesions": "bkl",
    "basal_cell_carcinoma": "bcc",
    "actinic_keratoses": "akiec",
    "vascular_lesions": "vasc",
    "melanocytic_Nevi": "nv",
    "melanoma": "mel",
    "dermatofibroma": "df",
}


@pytest.fixture(scope="module")
def vit_codes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_vit(tmp_path_factory.mktemp("hf") / "tiny-vit-codes", labels=CLASS_CODES, seed=0)


@pytest.fixture(scope="module")
def vit_anwarkh1(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_vit(tmp_path_factory.mktemp("hf") / "tiny-vit-anwarkh1", labels=ANWARKH1_LABELS, seed=1)


def test_predict_and_batch_agree_on_canonical_labels(vit_codes: Path, dev_images: list[Path]) -> None:
    with derm_cloud.create("local-hf", model=vit_codes, batch_size=3) as clf:
        singles = [clf.predict(p) for p in dev_images[:5]]
        batch = clf.predict_batch(dev_images[:5], batch_size=5)
        info = clf.describe()
    for single, batched in zip(singles, batch, strict=True):
        assert single.backend == "local-hf" and single.mapped
        assert sum(single.vector()) == pytest.approx(1.0, abs=1e-5)
        assert np.allclose(single.vector(), batched.vector(), atol=1e-5)
        assert len(single.provider_scores) == 7  # top_k=None returns every label
    assert batch[0].extra["batch_size"] == 5 and batch[0].extra["used_metadata"] is False
    # Different images give different outputs: the pipeline really ran on each.
    assert not np.allclose(singles[0].vector(), singles[1].vector())
    assert info.data_leaves_machine is False and info.provider == "local"
    assert info.model_facts["parameters"] == 129_415  # docs/reference/local-models.md section 3
    assert info.model_facts["licence"] == "mit"  # read from the folder's model card


def test_anwarkh1_names_map_to_codes_like_the_raw_pipeline(vit_anwarkh1: Path, dev_images: list[Path]) -> None:
    from transformers import pipeline

    raw = pipeline("image-classification", model=str(vit_anwarkh1), device="cpu")
    from PIL import Image

    with Image.open(dev_images[2]) as im:
        expected = {o["label"]: o["score"] for o in raw(im.convert("RGB"), top_k=7)}
    with derm_cloud.create("local-hf", model=str(vit_anwarkh1)) as clf:
        pred = clf.predict(dev_images[2])
    for label, code in ANWARKH1_TO_CODE.items():
        assert pred.probabilities[code] == pytest.approx(expected[label], abs=1e-6)
    assert {s.label for s in pred.provider_scores} == set(ANWARKH1_LABELS)


def test_imagenet_style_labels_fail_at_construction(tmp_path: Path, dev_images: list[Path]) -> None:
    folder = build_tiny_vit(tmp_path / "generic", labels=IMAGENET_STYLE_LABELS)
    with pytest.raises(UnmappableLabelsError) as err:
        derm_cloud.create("local-hf", model=folder)
    assert "tench" in err.value.labels
    with derm_cloud.create("local-hf", model=folder, allow_unmapped=True) as clf:
        pred = clf.predict(dev_images[0])
        assert clf.describe().labels_mapped is False
    assert pred.mapped is False and pred.label is None
    assert {s.label for s in pred.provider_scores} == set(IMAGENET_STYLE_LABELS)


def test_label_overrides_rescue_renamed_tags(tmp_path: Path, dev_images: list[Path]) -> None:
    tags = ["AK", "BCC-tag", "BKL", "DF", "MEL", "naevus", "angioma"]
    folder = build_tiny_vit(tmp_path / "tags", labels=tags)
    with pytest.raises(UnmappableLabelsError):
        derm_cloud.create("local-hf", model=folder)
    overrides = {"BCC-tag": "bcc", "angioma": "vasc"}
    with derm_cloud.create("local-hf", model=folder, label_overrides=overrides) as clf:
        pred = clf.predict(dev_images[0])
    scores = {s.label: s.score for s in pred.provider_scores}
    assert pred.probabilities["vasc"] == pytest.approx(scores["angioma"])
    assert pred.probabilities["nv"] == pytest.approx(scores["naevus"])


def test_preprocessor_quirk_uses_vit_defaults_explicitly(
    vit_anwarkh1: Path, tmp_path: Path, dev_images: list[Path]
) -> None:
    quirk = tmp_path / "quirk"
    shutil.copytree(vit_anwarkh1, quirk)
    # As in the Anwarkh1 repo: preprocessor_config.json is a renamed copy of config.json
    # (docs/reference/dermatology.md 3.1).
    shutil.copyfile(quirk / "config.json", quirk / "preprocessor_config.json")
    with derm_cloud.create("local-hf", model=quirk) as clf:
        quirky = clf.predict(dev_images[1])
        facts = clf.describe().model_facts
    with derm_cloud.create("local-hf", model=vit_anwarkh1) as clf:
        normal = clf.predict(dev_images[1])
    assert "image_mean" in facts["preprocessing_note"] and "ViTImageProcessor defaults" in facts["preprocessing_note"]
    assert facts["preprocessing"]["image_mean"] == [0.5, 0.5, 0.5]
    assert facts["preprocessing"]["size"] == {"height": 224, "width": 224}
    # The fixture's own processor has exactly those values, so the outputs must not move.
    assert np.allclose(quirky.vector(), normal.vector(), atol=1e-6)


def test_exif_orientation_is_applied_before_the_pipeline(
    vit_codes: Path, dev_images: list[Path], tmp_path: Path
) -> None:
    from PIL import Image

    with Image.open(dev_images[3]) as im:
        upright = im.convert("RGB").resize((160, 120))
    upright.save(tmp_path / "upright.png")
    exif = Image.Exif()
    exif[0x0112] = 3  # "rotate 180" tag: the stored pixels are upside down
    upright.rotate(180).save(tmp_path / "rotated.png", exif=exif.tobytes())
    with derm_cloud.create("local-hf", model=vit_codes) as clf:
        a = clf.predict(tmp_path / "upright.png")
        b = clf.predict(tmp_path / "rotated.png")
        c = clf.predict(upright.rotate(180))  # the same pixels without the tag
    assert np.allclose(a.vector(), b.vector(), atol=1e-6)
    assert not np.allclose(a.vector(), c.vector(), atol=1e-4)


def test_top_k_threads_and_local_files_only(vit_codes: Path, dev_images: list[Path]) -> None:
    import torch

    threads = torch.get_num_threads()
    try:
        with derm_cloud.create("local-hf", model=vit_codes, top_k=2, local_files_only=True, torch_threads=1) as clf:
            pred = clf.predict(dev_images[0])
            assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
    assert len(pred.provider_scores) == 2
    assert sum(1 for p in pred.probabilities.values() if p > 0) == 2  # labels not returned count as 0
    with pytest.raises(ConfigError, match="top_k must be between 1 and 7"):
        derm_cloud.create("local-hf", model=vit_codes, top_k=0)


def test_hub_unreachable_is_a_typed_error() -> None:
    with pytest.raises(MissingDependencyError) as err:
        derm_cloud.create("local-hf", model="Anwarkh1/Skin_Cancer-Image_Classification", local_files_only=True)
    message = str(err.value)
    assert "unreachable" in message and "model=DIR" in message and "HF_HUB_OFFLINE" in message


def test_bad_sources_name_the_problem(tmp_path: Path, vit_codes: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelSpecError, match="no config.json"):
        derm_cloud.create("local-hf", model=tmp_path / "empty")
    with pytest.raises(ConfigError, match="neither an existing folder nor a Hugging Face hub id"):
        derm_cloud.create("local-hf", model=str(tmp_path / "missing" / "a" / "b"))
    with pytest.raises(ConfigError, match="only applies to hub ids"):
        derm_cloud.create("local-hf", model=vit_codes, revision="main")


def test_classify_cli_runs_local_hf(
    vit_anwarkh1: Path, dev_images: list[Path], capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["classify", str(dev_images[0]), "-b", "local-hf", "-o", f"model={vit_anwarkh1}", "-k", "7"])
    out = capsys.readouterr().out
    assert code == 0
    assert "local-hf / tiny-vit-anwarkh1" in out and "not a diagnosis" in out
    assert all(code in out for code in CLASS_CODES)
