"""local-onnx on tiny models built at test time, the AutoML export layout, and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import derm_cloud
from derm_cloud.cli import main
from derm_cloud.errors import ModelSpecError
from derm_cloud.models.spec import ModelSpec
from derm_cloud.preprocess import resize_bilinear_half_pixel
from derm_cloud.testing.tiny_models import build_tiny_automl_export, build_tiny_onnx_model


def test_batch_equals_single(tiny_model_dir: Path, dev_images: list[Path]) -> None:
    with derm_cloud.create("local-onnx", model_dir=tiny_model_dir, intra_op_threads=1) as clf:
        singles = [clf.predict(p) for p in dev_images]
        batch = clf.predict_batch(dev_images, batch_size=3)
    for a, b in zip(singles, batch, strict=True):
        assert np.allclose(a.vector(), b.vector(), atol=1e-6)
        assert sum(a.vector()) == pytest.approx(1.0, abs=1e-5)
    assert batch[0].extra["batch_size"] == 3


def test_metadata_changes_the_output(tiny_meta_model_dir: Path, dev_images: list[Path]) -> None:
    meta = {"age": 70, "sex": "male", "site": "back"}
    with derm_cloud.create("local-onnx", model_dir=tiny_meta_model_dir) as clf:
        with_meta = clf.predict(dev_images[0], meta)
        unknown = clf.predict(dev_images[0])
    with derm_cloud.create("local-onnx", model_dir=tiny_meta_model_dir, use_metadata=False) as clf:
        ignored = clf.predict(dev_images[0], meta)
    assert not np.allclose(with_meta.vector(), unknown.vector())
    assert np.allclose(ignored.vector(), unknown.vector())
    assert with_meta.extra["used_metadata"] is True and ignored.extra["used_metadata"] is False


def test_automl_export_layout_is_read_from_labels_json(tmp_path: Path, dev_images: list[Path]) -> None:
    names = [
        "melanoma",
        "melanocytic_Nevi",
        "basal_cell_carcinoma",
        "actinic_keratoses",
        "benign_keratosis-like_lesions",
        "dermatofibroma",
        "vascular_lesions",
    ]
    d = build_tiny_automl_export(tmp_path / "automl", labels=names)
    spec = ModelSpec.load(d)
    assert spec.source_layout == "azureml-automl" and spec.output == "logits"
    assert spec.preprocess.crop == (224, 224) and spec.preprocess.shorter == 256
    with derm_cloud.create("local-onnx", model_dir=d) as clf:
        pred = clf.predict(dev_images[0])
    # Provider labels kept as given; probabilities re-ordered into canonical codes and softmaxed.
    assert {s.label for s in pred.provider_scores} == set(names)
    assert sum(pred.vector()) == pytest.approx(1.0, abs=1e-6)
    by_name = {s.label: s.score for s in pred.provider_scores}
    assert pred.probabilities["mel"] == pytest.approx(by_name["melanoma"])


def test_spec_errors_name_the_problem(tmp_path: Path) -> None:
    d = build_tiny_onnx_model(tmp_path / "m")
    data = json.loads((d / "spec.json").read_text())
    data["preprocess"]["colour"] = "rgb"
    (d / "spec.json").write_text(json.dumps(data))
    with pytest.raises(ModelSpecError, match=r"unknown key\(s\) \['colour'\]"):
        ModelSpec.load(d)
    (d / "spec.json").write_text("{not json")
    with pytest.raises(ModelSpecError, match="invalid JSON at line 1"):
        ModelSpec.load(d)
    with pytest.raises(ModelSpecError, match="models fetch sklesion"):
        ModelSpec.load(tmp_path / "missing")


def test_imagenet_style_model_fails_at_construction(tmp_path: Path) -> None:
    d = build_tiny_onnx_model(tmp_path / "generic", labels=["tench", "goldfish", "shark"])
    with pytest.raises(derm_cloud.UnmappableLabelsError):
        derm_cloud.create("local-onnx", model_dir=d)
    with derm_cloud.create("local-onnx", model_dir=d, allow_unmapped=True) as clf:
        assert clf.describe().labels_mapped is False


def test_half_pixel_resize_matches_reference_values() -> None:
    # 2x2 -> 4x4 upscaling has known half-pixel bilinear values (edge pixels clamp).
    src = np.array([[[0.0], [10.0]], [[20.0], [30.0]]], np.float32)
    out = resize_bilinear_half_pixel(src, 4, 4)[..., 0]
    assert out[0].tolist() == pytest.approx([0.0, 2.5, 7.5, 10.0])
    assert out[:, 0].tolist() == pytest.approx([0.0, 5.0, 15.0, 20.0])


def test_closed_classifier_refuses_calls(tiny_model_dir: Path, dev_images: list[Path]) -> None:
    clf = derm_cloud.create("local-onnx", model_dir=tiny_model_dir)
    clf.close()
    clf.close()
    with pytest.raises(
        RuntimeError, match=rf"^{type(clf).__name__}\(model_id='.+'\) is closed; create a new classifier$"
    ):
        clf.predict(dev_images[0])


async def test_apredict_gathers_and_matches_predict(tiny_model_dir: Path, dev_images: list[Path]) -> None:
    import asyncio

    with derm_cloud.create("local-onnx", model_dir=tiny_model_dir) as clf:
        results = await asyncio.gather(*(clf.apredict(p) for p in dev_images[:4]))
        assert [r.label for r in results] == [clf.predict(p).label for p in dev_images[:4]]


def test_cli_classify_table_and_json(
    tiny_model_dir: Path, dev_images: list[Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["classify", str(dev_images[0]), "-o", f"model_dir={tiny_model_dir}", "--top-k", "2"]) == 0
    out = capsys.readouterr().out
    assert "probability" in out and "clinician reviews every result" in out
    assert main(["classify", str(dev_images[0]), "-o", f"model_dir={tiny_model_dir}", "--json", "-k", "1"]) == 0
    row = json.loads(capsys.readouterr().out.strip().splitlines()[0])
    assert row["backend"] == "local-onnx" and len(row["top_k"]) == 1
    assert main(["classify", str(tiny_model_dir / "spec.json"), "-o", f"model_dir={tiny_model_dir}"]) == 1
    assert "invalid image" in capsys.readouterr().err


def test_cli_backends_lists_install_hints(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["backends", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    onnx = next(r for r in rows if r["name"] == "local-onnx")
    assert onnx["installed"] is True and onnx["install"] == "pip install 'derm-cloud[onnx]'"


def test_cli_reports_typed_errors_without_traceback(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["classify", "x.jpg", "-o", f"model_dir={tmp_path / 'none'}"]) == 1
    err = capsys.readouterr().err
    assert "ModelSpecError" in err and "Traceback" not in err


def test_batch_size_must_be_positive(tiny_model_dir: Path, dev_images: list[Path]) -> None:
    clf = derm_cloud.create("local-onnx", model_dir=tiny_model_dir)
    with clf, pytest.raises(derm_cloud.ConfigError, match="batch_size must be at least 1"):
        clf.predict_batch(dev_images[:2], batch_size=0)
