"""Tests of the sklesion fetch-and-convert pipeline (derm_cloud.models.sklesion).

Fast tests cover the numpy preprocessing (against Keras' and onnxruntime's own resize on real HAM10000 images),
the metadata encoding, the checksum guards and the atomic install. Tests marked ``slow`` use the fetched model
directory: ``$DERM_CLOUD_SKLESION_DIR`` if set, else ``<models cache>/sklesion-0.2.2``, which is fetched (about a
minute: download, conversion, parity check) when it is not there yet.

HAM10000 images (Tschandl et al. 2018, CC BY-NC 4.0) are read from ``../shared/data`` and never copied.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tests_helpers import DEV_CSV  # one discovery of the data folder for every test

from derm_cloud.errors import ChecksumMismatchError, ConfigError, ConversionError, DermCloudError, InvalidImageError
from derm_cloud.models import pypi
from derm_cloud.models import sklesion as sk
from derm_cloud.models.sklesion import fetch as sk_fetch

ROOT = Path(__file__).resolve().parents[1]

# Every value of HAM10000's `localization` column, with the group our mapping gives it.
HAM10000_SITES = {
    "abdomen": "trunk",
    "acral": "unknown",
    "back": "trunk",
    "chest": "trunk",
    "ear": "head-or-neck",
    "face": "head-or-neck",
    "foot": "leg-or-genital",
    "genital": "leg-or-genital",
    "hand": "arm",
    "lower extremity": "leg-or-genital",
    "neck": "head-or-neck",
    "scalp": "head-or-neck",
    "trunk": "trunk",
    "unknown": "unknown",
    "upper extremity": "arm",
}


def _dev_set(limit: int | None) -> tuple[list[Path], list[np.ndarray]]:
    if not DEV_CSV.is_file():
        pytest.fail(f"HAM10000 dev manifest not found at {DEV_CSV}; set DERM_CLOUD_DATA to the shared data folder")
    return sk.load_verify_set(DEV_CSV, limit=limit)


def _first_image_of_size(height: int, width: int) -> np.ndarray:
    import csv

    _dev_set(limit=1)  # fails clearly if the data folder is missing
    with DEV_CSV.open(newline="") as fh:
        for row in csv.DictReader(fh):
            if (int(row["height"]), int(row["width"])) == (height, width):
                arr = sk.load_image_rgb(DEV_CSV.parent / row["file"])
                assert arr.shape == (height, width, 3)
                return arr
    pytest.fail(f"no {width}x{height} image in {DEV_CSV}")


# ----------------------------------------------------------------------------------------------------------------
# Resize
# ----------------------------------------------------------------------------------------------------------------
def test_resize_downscale_by_two_averages_pixel_pairs() -> None:
    # With half-pixel centres a 2x downscale samples exactly between two source pixels.
    row = np.array([[[0], [10], [20], [40]]], dtype=np.uint8)
    out = sk.resize_bilinear_half_pixel(row, 1, 2)
    assert out.dtype == np.float32
    assert out.shape == (1, 2, 1)
    assert out[0, :, 0].tolist() == [5.0, 30.0]


def test_resize_upscale_clamps_edges_like_tensorflow() -> None:
    # 2 -> 4: sample positions -0.25, 0.25, 0.75, 1.25; TF clamps the outer two to the edge pixels.
    row = np.array([[[0], [100]]], dtype=np.uint8)
    out = sk.resize_bilinear_half_pixel(row, 1, 4)[0, :, 0]
    np.testing.assert_allclose(out, [0.0, 25.0, 75.0, 100.0], atol=1e-5)


def test_resize_same_size_is_identity_and_keeps_range() -> None:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, size=(37, 53, 3), dtype=np.uint8)
    out = sk.resize_bilinear_half_pixel(img, 37, 53)
    np.testing.assert_array_equal(out, img.astype(np.float32))
    small = sk.resize_bilinear_half_pixel(img, 254, 254)
    assert small.shape == (254, 254, 3)
    assert float(small.min()) >= 0.0
    assert float(small.max()) <= 255.0


@pytest.mark.parametrize("bad", [np.zeros((4, 4), np.uint8), np.zeros((0, 4, 3), np.uint8)])
def test_resize_rejects_non_images(bad: np.ndarray) -> None:
    with pytest.raises(InvalidImageError):
        sk.resize_bilinear_half_pixel(bad, 8, 8)


@pytest.mark.parametrize(("height", "width"), [(450, 600), (224, 224)])
def test_resize_matches_keras_ops_on_real_image(height: int, width: int) -> None:
    """Downscale (600x450) and upscale (224x224) real dev images like keras.ops.image.resize (torch backend)."""
    # find_spec, not importorskip: importing keras before KERAS_BACKEND=torch is set would fail for lack of
    # TensorFlow and be mistaken for "not installed".
    for dist in ("torch", "keras"):
        # CI installs the convert extra: a missing reference is a failure, never a skip.
        assert importlib.util.find_spec(dist) is not None, (
            f"the Keras reference needs {dist}: pip install 'derm-cloud[convert]'"
        )
    keras = sk.import_keras_torch()
    img = _first_image_of_size(height, width)
    ours = sk.resize_bilinear_half_pixel(img, sk.IMAGE_SIZE, sk.IMAGE_SIZE)
    ref = keras.ops.convert_to_numpy(
        keras.ops.image.resize(
            img.astype(np.float32), (sk.IMAGE_SIZE, sk.IMAGE_SIZE), interpolation="bilinear", antialias=False
        )
    )
    assert ref.shape == ours.shape == (254, 254, 3)
    # float32 rounding differences only (values up to 255): measured max 6.1e-4 on 40 dev images.
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-3)


def test_resize_matches_onnxruntime_resize_on_real_image() -> None:
    """Same result as an ONNX Resize node (mode=linear, half_pixel), i.e. an in-graph resize would agree."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    img = _first_image_of_size(450, 600)
    node = helper.make_node(
        "Resize", ["x", "", "", "sizes"], ["y"], mode="linear", coordinate_transformation_mode="half_pixel"
    )
    graph = helper.make_graph(
        [node],
        "resize",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 450, 600, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializer=[helper.make_tensor("sizes", TensorProto.INT64, [4], [1, 254, 254, 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    ref = session.run(None, {"x": img[None].astype(np.float32)})[0][0]
    ours = sk.resize_bilinear_half_pixel(img, 254, 254)
    diff = np.abs(ours - ref)
    # onnxruntime derives sample positions with its own float arithmetic: up to ~7e-3 (of 255) apart.
    assert float(diff.max()) < 1e-2
    assert float(diff.mean()) < 1e-4


# ----------------------------------------------------------------------------------------------------------------
# Metadata
# ----------------------------------------------------------------------------------------------------------------
def test_encode_metadata_all_unknown() -> None:
    vec = sk.encode_metadata(None, None, None)
    assert vec.dtype == np.float32
    assert vec.shape == (10,)
    expected = [0, 0, 1, 0, 0, 0, 0, 1, sk.AGE_MEAN / sk.AGE_MAX, 1]
    np.testing.assert_allclose(vec, expected, atol=1e-7)
    # docs/reference/local-models.md rounds this to 0.5763 (from HAM10000's overall mean age 51.863); the author's
    # model_props.pkl holds 51.9018 -> 0.5767. Both agree to 1e-3.
    assert abs(float(vec[8]) - 0.5763) < 1e-3
    assert vec[8] == pytest.approx(51.90180032733224 / 90.0)


def test_encode_metadata_female_arm_35() -> None:
    vec = sk.encode_metadata(35, "female", "upper extremity")
    np.testing.assert_allclose(vec, [1, 0, 0, 1, 0, 0, 0, 0, 0.3889, 0], atol=1e-4)
    np.testing.assert_array_equal(vec, sk.encode_metadata(35.0, "Female ", "arm"))


def test_encode_metadata_male_trunk_60() -> None:
    np.testing.assert_allclose(sk.encode_metadata(60, "male", "back"), [0, 1, 0, 0, 0, 0, 1, 0, 60 / 90, 0], atol=1e-7)


@pytest.mark.parametrize(("site", "group"), sorted(HAM10000_SITES.items()))
def test_every_ham10000_localization_maps_to_a_group(site: str, group: str) -> None:
    assert sk.site_group(site) == group
    vec = sk.encode_metadata(50, "male", site)
    assert vec[3:8].sum() == 1.0
    assert vec[3 + sk.LOCATION_GROUPS.index(group)] == 1.0


def test_site_mapping_covers_all_of_dev_csv() -> None:
    import csv

    with DEV_CSV.open(newline="") as fh:
        sites = {row["localization"] for row in csv.DictReader(fh)}
    assert sites <= set(HAM10000_SITES)
    assert set(sk.SITE_TO_GROUP) == set(HAM10000_SITES)


@pytest.mark.parametrize("site", [None, "", "  ", "left knee", "ARM_PIT", "mucosa"])
def test_unrecognised_sites_are_unknown(site: str | None) -> None:
    assert sk.site_group(site) == "unknown"
    assert sk.encode_metadata(40, "female", site)[7] == 1.0


@pytest.mark.parametrize(
    ("text", "group"),
    [("Head-or-Neck", "head-or-neck"), ("head or neck", "head-or-neck"), ("LOWER_EXTREMITY", "leg-or-genital")],
)
def test_site_names_are_normalised(text: str, group: str) -> None:
    assert sk.site_group(text) == group


@pytest.mark.parametrize(("sex", "index"), [("female", 0), ("MALE", 1), ("unknown", 2), (None, 2), ("other", 2)])
def test_sex_one_hot(sex: str | None, index: int) -> None:
    vec = sk.encode_metadata(30, sex, "face")
    assert vec[:3].tolist() == [1.0 if i == index else 0.0 for i in range(3)]


def test_nan_age_is_missing_and_bad_ages_are_rejected() -> None:
    np.testing.assert_array_equal(
        sk.encode_metadata(math.nan, "male", "back"), sk.encode_metadata(None, "male", "back")
    )
    with pytest.raises(ConfigError):
        sk.encode_metadata(-3, "male", "back")
    with pytest.raises(ConfigError):
        sk.encode_metadata(math.inf, "male", "back")


@pytest.mark.project_data
def test_load_verify_set_reads_dev_csv_metadata() -> None:
    paths, metas = _dev_set(limit=5)
    assert len(paths) == len(metas) == 5
    assert all(p.is_file() for p in paths)
    # First dev row: ISIC_0024306, male, 45, trunk.
    assert paths[0].name == "ISIC_0024306.jpg"
    np.testing.assert_allclose(metas[0], sk.encode_metadata(45, "male", "trunk"))


# ----------------------------------------------------------------------------------------------------------------
# Checksums, spec and atomic install (no network, no Keras)
# ----------------------------------------------------------------------------------------------------------------
def _fake_wheel(path: Path, payload: bytes = b"not the sklesion model") -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(sk.KERAS_MEMBER, payload)
    return path


def test_extract_rejects_a_model_with_the_wrong_digest(tmp_path: Path) -> None:
    wheel = _fake_wheel(tmp_path / sk.WHEEL_FILENAME)
    with pytest.raises(ChecksumMismatchError) as info:
        sk.extract_keras_model(wheel, tmp_path / "out")
    assert info.value.expected == sk.KERAS_SHA256
    assert isinstance(info.value, DermCloudError)
    assert "SHA-256 mismatch" in str(info.value)
    assert list((tmp_path / "out").iterdir()) == []  # nothing half-verified is left behind


def test_extract_rejects_a_zip_without_the_model(tmp_path: Path) -> None:
    wheel = tmp_path / "other.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("sklesion/__init__.py", "")
    with pytest.raises(ConversionError, match="model.keras"):
        sk.extract_keras_model(wheel, tmp_path / "out")


def test_download_reuses_a_verified_wheel_without_network(tmp_path: Path) -> None:
    wheel = _fake_wheel(tmp_path / "demo-1.0-py3-none-any.whl")
    digest = pypi.sha256_file(wheel)
    # method="urllib" would fail at once without network; a present, verified wheel never gets that far.
    found = pypi.download_wheel("demo", "1.0", wheel.name, digest, tmp_path, method="urllib", timeout=0.001)
    assert found == wheel and wheel.is_file()
    payload = b"not the sklesion model"  # what _fake_wheel stores
    out = pypi.extract_member(wheel, sk.KERAS_MEMBER, hashlib.sha256(payload).hexdigest(), tmp_path / "x" / "m.keras")
    assert out.read_bytes() == payload
    assert sorted(p.name for p in out.parent.iterdir()) == ["m.keras"]  # no .partial left behind


def test_failed_fetch_leaves_no_model_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fake_download(dest_dir: Path, **_: Any) -> Path:
        dest_dir.mkdir(parents=True, exist_ok=True)
        return _fake_wheel(dest_dir / sk.WHEEL_FILENAME)

    monkeypatch.setattr(sk_fetch, "download_wheel", fake_download)  # where fetch_sklesion looks it up
    cache = tmp_path / "cache"
    image = tmp_path / "never-used.jpg"
    image.write_bytes(b"the fetch fails before the parity check reads this")
    with pytest.raises(ChecksumMismatchError):
        sk.fetch_sklesion(cache, verify_images=[image])
    assert list(cache.iterdir()) == []  # neither the model dir nor the temporary work dir


def test_fetch_returns_an_existing_complete_dir_without_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    final = tmp_path / sk.MODEL_ID
    final.mkdir()
    (final / "model.onnx").write_bytes(b"x")
    (final / "spec.json").write_text(json.dumps({"model_id": sk.MODEL_ID}))

    def no_download(*_: Any, **__: Any) -> Path:
        raise AssertionError("a complete model directory must not be fetched again")

    monkeypatch.setattr(sk_fetch, "download_wheel", no_download)
    assert sk.fetch_sklesion(tmp_path, verify_images=[]) == final
    assert sk.is_complete_model_dir(final)
    (final / "spec.json").write_text(json.dumps({"model_id": "something-else"}))
    assert not sk.is_complete_model_dir(final)


def test_fetch_needs_existing_verification_images(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="verify_images"):
        sk.fetch_sklesion(tmp_path, verify_images=[])
    with pytest.raises(ConfigError, match="not found"):
        sk.fetch_sklesion(tmp_path, verify_images=[tmp_path / "missing.jpg"])
    assert list(tmp_path.iterdir()) == []


def _conversion_info(dynamic: bool) -> sk.ConversionInfo:
    return sk.ConversionInfo(
        onnx_path=Path("model.onnx"),
        route="torch-dynamo-dynamic-batch" if dynamic else "keras-export-fixed-batch",
        dynamic_batch=dynamic,
        max_batch=None if dynamic else 1,
        export_seconds=20.0,
        total_seconds=40.0,
        opset=18,
        onnx_bytes=86_000_000,
        input_names=("image", "metadata"),
        input_shapes=(("batch" if dynamic else 1, 254, 254, 3), ("batch" if dynamic else 1, 10)),
        output_names=("probabilities",),
        batch_check_max_abs_diff={1: 0.0, 4: 1e-7, 16: 1e-7} if dynamic else {},
        keras_max_abs_diff=5e-7,
        parameters=sk.N_PARAMETERS,
        versions={"torch": "2.13.0"},
    )


def _parity() -> sk.ParityReport:
    return sk.ParityReport(
        n_images=20,
        atol=1e-4,
        max_abs_diff=2e-6,
        mean_abs_diff=5e-8,
        top1_agree=20,
        top1_agreement=1.0,
        passed=True,
        disagreements=(),
        batch_size=8,
        keras_seconds=7.0,
        onnx_seconds=2.0,
    )


@pytest.mark.parametrize("dynamic", [True, False])
def test_spec_dict_is_valid_json_and_a_valid_model_spec(dynamic: bool) -> None:
    from derm_cloud.models.spec import ModelSpec

    spec = json.loads(json.dumps(sk.build_spec_dict(_conversion_info(dynamic), _parity())))
    assert spec["model_id"] == "sklesion-0.2.2"
    assert spec["labels"] == ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
    assert spec["max_batch"] == (None if dynamic else 1)
    assert spec["facts"]["sha256_keras"] == sk.KERAS_SHA256
    assert spec["facts"]["parameters"] == 21_432_382
    assert spec["facts"]["parity"]["top1_agreement"] == 1.0
    parsed = ModelSpec.from_dict(spec)
    assert parsed.layout == "NHWC"
    assert parsed.metadata_encoding == "sklesion-v1"
    assert parsed.preprocess.interpolation == "bilinear_half_pixel"
    assert parsed.preprocess.output_size == (254, 254)


# ----------------------------------------------------------------------------------------------------------------
# The fetched model (slow)
# ----------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fetched_dir() -> Path:
    """The fetched sklesion directory; fetched now (download + convert + parity on 20 images) if missing."""
    env = os.environ.get("DERM_CLOUD_SKLESION_DIR")
    if env:
        path = Path(env).expanduser()
        if not sk.is_complete_model_dir(path):
            pytest.fail(f"DERM_CLOUD_SKLESION_DIR={env} is not a complete sklesion model directory")
        return path
    from derm_cloud.models.cache import models_dir

    paths, metas = _dev_set(limit=20)
    return sk.fetch_sklesion(models_dir(), verify_images=paths, verify_metadata=metas)


@pytest.mark.slow
def test_fetched_dir_has_spec_and_dynamic_batch(fetched_dir: Path) -> None:
    from derm_cloud.models.spec import ModelSpec

    spec = json.loads((fetched_dir / "spec.json").read_text())
    assert spec["max_batch"] is None, "the conversion fell back to a fixed batch"
    assert spec["facts"]["converted_with"]["dynamic_batch"] is True
    assert spec["facts"]["sha256_keras"] == sk.KERAS_SHA256
    assert spec["facts"]["parity"]["max_abs_diff"] <= 1e-4
    assert ModelSpec.load(fetched_dir).labels == sk.LABELS
    assert sk.sha256_file(fetched_dir / "model.keras") == sk.KERAS_SHA256


@pytest.mark.slow
def test_fetched_onnx_batches_give_per_image_results(fetched_dir: Path) -> None:
    import onnxruntime as ort

    session = ort.InferenceSession(str(fetched_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    image_in, meta_in = session.get_inputs()
    assert isinstance(image_in.shape[0], str)
    assert isinstance(meta_in.shape[0], str)
    paths, metas = _dev_set(limit=16)
    x = np.stack([sk.preprocess_image(p) for p in paths])
    m = np.stack(metas)
    single = np.concatenate(
        [session.run(None, {image_in.name: x[i : i + 1], meta_in.name: m[i : i + 1]})[0] for i in range(16)]
    )
    np.testing.assert_allclose(single.sum(axis=1), 1.0, atol=1e-5)
    for batch in (4, 16):
        out = np.concatenate(
            [
                session.run(None, {image_in.name: x[i : i + batch], meta_in.name: m[i : i + batch]})[0]
                for i in range(0, 16, batch)
            ]
        )
        np.testing.assert_allclose(out, single, rtol=0, atol=1e-5)


@pytest.mark.slow
def test_fetched_onnx_agrees_with_keras_on_100_dev_images(fetched_dir: Path) -> None:
    """The dermapred-free check: ONNX top-1 equals Keras (torch backend) on >= 99 of the first 100 dev images."""
    paths, metas = _dev_set(limit=100)
    report = sk.parity_check(fetched_dir / "model.keras", fetched_dir / "model.onnx", paths, metadata=metas)
    assert report.n_images == 100
    assert report.top1_agree >= 99, report.disagreements
    assert report.max_abs_diff <= 1e-4
    assert report.passed
