"""Dataset loaders on the real dev split (HAM10000, Tschandl et al. 2018, CC BY-NC 4.0) and on HAM10000 /
marmal88-parquet / folder layouts built from a few dev images in tmp dirs (never under the project)."""

from __future__ import annotations

import csv
import hashlib
import shutil
from collections import Counter
from pathlib import Path

import pytest
from tests_helpers import DEV_CSV, dev_image, dev_rows

from derm_cloud.data import (
    Dataset,
    ParquetRef,
    Sample,
    canonical_label,
    dataset_overlap_warning,
    detect_kind,
    is_ham10000_id,
    load_dataset,
)
from derm_cloud.errors import ConfigError
from derm_cloud.taxonomy import CLASS_CODES
from derm_cloud.types import PatientMetadata

MARMAL88_DX = {
    "akiec": "actinic_keratoses",
    "bcc": "basal_cell_carcinoma",
    "bkl": "benign_keratosis-like_lesions",
    "df": "dermatofibroma",
    "mel": "melanoma",
    "nv": "melanocytic_Nevi",
    "vasc": "vascular_lesions",
}
HAM_COLUMNS = ["lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization"]


@pytest.fixture(scope="module")
def dev() -> Dataset:
    return load_dataset(DEV_CSV)


def _one_per_class(n_each: int = 2) -> list[dict[str, str]]:
    """A few dev rows of every class (and both image variants), in file order."""
    rows, taken = [], Counter()
    for row in dev_rows():
        if taken[row["dx"]] < n_each:
            rows.append(row)
            taken[row["dx"]] += 1
    return rows


# --- dev.csv -----------------------------------------------------------------------------------------------------


@pytest.mark.project_data
def test_dev_csv_loads_every_row_with_labels_and_metadata(dev: Dataset) -> None:
    rows = dev_rows()
    assert len(dev) == len(rows) == 1321
    assert dev.kind == "csv" and dev.name == "ham10000/dev" and dev.labelled
    assert dev.class_counts() == {c: Counter(r["dx"] for r in rows)[c] for c in CLASS_CODES}
    assert dev.class_counts() == {"akiec": 112, "bcc": 168, "bkl": 365, "df": 39, "mel": 304, "nv": 283, "vasc": 50}
    by_id = {s.image_id: s for s in dev}
    for row in rows[::97]:
        s = by_id[row["image_id"]]
        assert s.label == row["dx"]
        assert s.lesion_id == row["lesion_id"] and s.dx_type == row["dx_type"]
        assert s.metadata.age == (float(row["age"]) if row["age"] else None)
        assert s.metadata.sex == row["sex"]
        assert s.metadata.site == (None if row["localization"] == "unknown" else row["localization"])
        assert s.extra["variant"] == row["variant"]
        assert isinstance(s.source, Path)  # a reference, not the pixels
    first = dev[0]
    assert first.read_bytes() == dev_image(rows[0]).read_bytes()


@pytest.mark.project_data
def test_describe_counts_lesions_and_metadata(dev: Dataset) -> None:
    rows = dev_rows()
    d = dev.describe()
    assert d["n"] == 1321 and d["unlabelled"] == 0
    assert d["lesions"] == len({r["lesion_id"] for r in rows})
    assert d["sex"] == dict(sorted(Counter(r["sex"] for r in rows).items()))
    assert d["dx_type"] == dict(sorted(Counter(r["dx_type"] for r in rows).items()))
    assert d["age"]["known"] == sum(1 for r in rows if r["age"])
    assert abs(sum(d["class_mix"].values()) - 1.0) < 1e-12
    assert "not a natural" in d["class_mix_note"]


def test_fingerprint_is_content_based_and_reproducible(dev: Dataset, tmp_path: Path) -> None:
    rows = _one_per_class(1)
    ids = {r["image_id"] for r in rows}
    part = Dataset("part", [s for s in dev if s.image_id in ids])
    # The same images copied elsewhere, listed in another order under a new manifest: same fingerprint.
    for r in rows:
        shutil.copy(dev_image(r), tmp_path / Path(r["file"]).name)
    manifest = tmp_path / "m.csv"
    with manifest.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label"])
        for r in reversed(rows):
            w.writerow([Path(r["file"]).name, r["dx"]])
    copy = load_dataset(manifest)
    assert copy.fingerprint() == part.fingerprint() == Dataset("again", list(part)).fingerprint()
    assert part.fingerprint().startswith("sha256:") and len(part.fingerprint()) == 71
    # A changed label or a changed byte changes it.
    relabelled = [
        Sample(s.image_id, s.source, "nv" if s.label != "nv" else "mel") if i == 0 else s for i, s in enumerate(part)
    ]
    assert Dataset("x", relabelled).fingerprint() != part.fingerprint()
    victim = tmp_path / Path(rows[0]["file"]).name
    data = bytearray(victim.read_bytes())
    data[100] ^= 0xFF
    victim.write_bytes(bytes(data))
    assert load_dataset(manifest).fingerprint() != part.fingerprint()


def test_subset_is_stratified_seeded_and_ordered(dev: Dataset) -> None:
    a, b, c = dev.subset(100, seed=0), dev.subset(100, seed=0), dev.subset(100, seed=1)
    assert len(a) == 100 and a.image_ids == b.image_ids and a.image_ids != c.image_ids
    full = dev.class_counts()
    for code, count in a.class_counts().items():
        assert abs(count - 100 * full[code] / len(dev)) <= 1, code
        assert count >= 1
    positions = [dev.image_ids.index(i) for i in a.image_ids]
    assert positions == sorted(positions)
    tiny = dev.subset(7, seed=3)
    assert set(tiny.class_counts().values()) == {1}  # every class kept at n == number of classes
    assert len(dev.subset(5000)) == len(dev)
    with pytest.raises(ConfigError, match="positive integer"):
        dev.subset(0)


# --- other layouts -------------------------------------------------------------------------------------------------


def test_ham10000_layout_with_two_image_parts(tmp_path: Path) -> None:
    rows = _one_per_class(2)
    for i, r in enumerate(rows):
        part = tmp_path / f"HAM10000_images_part_{1 + i % 2}"
        part.mkdir(exist_ok=True)
        shutil.copy(dev_image(r), part / f"{r['image_id']}.jpg")
    with (tmp_path / "HAM10000_metadata.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, HAM_COLUMNS, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    assert detect_kind(tmp_path) == "ham10000"
    ds = load_dataset(tmp_path)
    assert ds.kind == "ham10000" and ds.name == "HAM10000" and len(ds) == len(rows)
    assert [s.label for s in ds] == [r["dx"] for r in rows]
    assert {Path(s.source).parent.name for s in ds} == {"HAM10000_images_part_1", "HAM10000_images_part_2"}
    assert all(s.read_bytes() == dev_image(r).read_bytes() for s, r in zip(ds, rows, strict=True))
    # The metadata file itself works too, and a missing image is named with the fix.
    assert len(load_dataset(tmp_path / "HAM10000_metadata.csv")) == len(rows)
    (tmp_path / "HAM10000_images_part_1" / f"{rows[0]['image_id']}.jpg").unlink()
    with pytest.raises(ConfigError, match=r"1 of 14 images not found.*on_missing='skip'"):
        load_dataset(tmp_path)
    skipped = load_dataset(tmp_path, on_missing="skip")
    assert len(skipped) == len(rows) - 1 and skipped.info["missing_images_skipped"] == 1


def _write_parquet(path: Path, rows: list[dict[str, str]], *, row_group_size: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table(
        {
            "image": [{"bytes": dev_image(r).read_bytes(), "path": Path(r["file"]).name} for r in rows],
            "image_id": [r["image_id"] for r in rows],
            "lesion_id": [r["lesion_id"] for r in rows],
            "dx": [MARMAL88_DX[r["dx"]] for r in rows],
            "dx_type": [r["dx_type"] for r in rows],
            "age": [float(r["age"]) if r["age"] else float("nan") for r in rows],
            "sex": [r["sex"] for r in rows],
            "localization": [r["localization"] for r in rows],
        }
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, row_group_size=row_group_size)


def test_marmal88_parquet_layout_reads_rows_lazily(tmp_path: Path, dev: Dataset) -> None:
    rows = _one_per_class(2)
    train, test = rows[:9], rows[9:]
    # marmal88 repeats rows across splits: one image appears in train and test.
    _write_parquet(tmp_path / "data" / "train-00000-of-00001.parquet", train, row_group_size=4)
    _write_parquet(tmp_path / "data" / "test-00000-of-00001.parquet", [*test, train[0]], row_group_size=2)
    assert detect_kind(tmp_path) == "parquet"
    ds = load_dataset(tmp_path)
    assert ds.kind == "parquet" and ds.name == "marmal88/skin_cancer"
    assert len(ds) == len(rows) and ds.info["duplicates_dropped"] == 1
    assert ds.info["lesions_in_several_splits"] == 1
    by_id = {r["image_id"]: r for r in rows}
    for s in ds:
        assert isinstance(s.source, ParquetRef)
        assert s.label == by_id[s.image_id]["dx"]
        assert (
            hashlib.sha256(s.read_bytes()).digest()
            == hashlib.sha256(dev_image(by_id[s.image_id]).read_bytes()).digest()
        )
    assert {s.source.row_group for s in ds if isinstance(s.source, ParquetRef)} == {0, 1, 2}
    # Same images and labels as the dev rows: the content fingerprint matches across layouts.
    same = Dataset("dev-part", [s for s in dev if s.image_id in by_id])
    assert ds.fingerprint() == same.fingerprint()
    only_test = load_dataset(tmp_path, split="test")
    assert only_test.name == "marmal88/skin_cancer:test" and len(only_test) == len(test) + 1
    assert {s.extra["split"] for s in only_test} == {"test"}
    with pytest.raises(ConfigError, match="splits there: test, train"):
        load_dataset(tmp_path, split="validation")


def test_folder_of_images_is_unlabelled(tmp_path: Path) -> None:
    rows = dev_rows(3)
    (tmp_path / "sub").mkdir()
    for r in rows[:2]:
        shutil.copy(dev_image(r), tmp_path / Path(r["file"]).name)
    shutil.copy(dev_image(rows[2]), tmp_path / "sub" / Path(rows[2]["file"]).name)
    (tmp_path / "notes.txt").write_text("not an image")
    ds = load_dataset(tmp_path)
    assert ds.kind == "folder" and len(ds) == 3 and not ds.labelled
    assert sorted(ds.image_ids) == sorted(r["image_id"] for r in rows)
    assert set(ds.class_counts().values()) == {0} and ds.describe()["unlabelled"] == 3
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no image files"):
        load_dataset(tmp_path / "empty", kind="folder")
    with pytest.raises(ConfigError, match="no images, parquet files"):
        load_dataset(tmp_path / "empty")


def test_isic_ground_truth_csv_with_one_hot_labels_and_ids(tmp_path: Path) -> None:
    rows = _one_per_class(1)
    for r in rows:
        shutil.copy(dev_image(r), tmp_path / f"{r['image_id']}.jpg")
    header = ["image", "MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC"]
    with (tmp_path / "gt.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        for r in rows:
            w.writerow([r["image_id"], *("1.0" if h.lower() == r["dx"] else "0.0" for h in header[1:])])
    ds = load_dataset(tmp_path / "gt.csv")
    assert [(s.image_id, s.label) for s in ds] == [(r["image_id"], r["dx"]) for r in rows]


# --- errors and labels -----------------------------------------------------------------------------------------------


def _manifest(tmp_path: Path, header: list[str], rows: list[list[str]]) -> Path:
    path = tmp_path / "manifest.csv"
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return path


@pytest.mark.project_data
def test_manifest_errors_name_the_column_file_and_fix(tmp_path: Path) -> None:
    img = dev_image(dev_rows(1)[0])
    with pytest.raises(ConfigError, match=r"no image column; add a 'file'.*Columns found: name, dx"):
        load_dataset(_manifest(tmp_path, ["name", "dx"], [["x", "mel"]]))
    with pytest.raises(ConfigError, match=r"label 'keloid' .*label_map=\{'keloid'"):
        load_dataset(_manifest(tmp_path, ["file", "label"], [[str(img), "keloid"]]))
    ds = load_dataset(_manifest(tmp_path, ["file", "label"], [[str(img), "keloid"]]), label_map={"Keloid": "df"})
    assert ds[0].label == "df"
    with pytest.raises(ConfigError, match=r"manifest.csv:2 .*age must be between 0 and 130"):
        load_dataset(_manifest(tmp_path, ["file", "dx", "age"], [[str(img), "mel", "200"]]))
    with pytest.raises(ConfigError, match=r"1 of 1 images not found \('nope.jpg'\)"):
        load_dataset(_manifest(tmp_path, ["file", "dx"], [["nope.jpg", "mel"]]))
    with pytest.raises(ConfigError, match="duplicate image ids"):
        load_dataset(_manifest(tmp_path, ["file", "dx"], [[str(img), "mel"], [str(img), "mel"]]))
    fst = load_dataset(_manifest(tmp_path, ["file", "dx", "fitzpatrick_scale", "sex"], [[str(img), "nv", "-1", "F"]]))
    assert fst[0].metadata == PatientMetadata(sex="female")
    with pytest.raises(ConfigError, match="does not exist"):
        load_dataset(tmp_path / "missing.csv")
    with pytest.raises(ConfigError, match=r"unknown dataset option 'splt' \(did you mean 'split'\?\)"):
        load_dataset({"path": str(DEV_CSV), "splt": "test"})
    assert len(load_dataset({"path": str(DEV_CSV), "name": "dev"})) == 1321
    with pytest.raises(ConfigError, match="unknown dataset kind"):
        load_dataset(DEV_CSV, kind="zip")


def test_canonical_label_covers_codes_names_and_marmal88_strings() -> None:
    for code, dx in MARMAL88_DX.items():
        assert canonical_label(dx) == code
        assert canonical_label(code.upper()) == code
    assert canonical_label("Melanoma") == "mel" and canonical_label(None) is None and canonical_label("nan") is None
    with pytest.raises(ConfigError, match="not a canonical code"):
        Sample("a", Path("a.jpg"), "melanoma")


@pytest.mark.project_data
def test_overlap_warning_for_ham_trained_models(dev: Dataset) -> None:
    warning = dataset_overlap_warning({"training_data": "HAM10000"}, dev)
    assert warning is not None and "1321 of 1321 evaluation images have HAM10000 ids" in warning
    assert "ISIC_0034524" in warning  # points at held-out data
    assert "marmal88" in (dataset_overlap_warning({"training_data": ["marmal88/skin_cancer train"]}, dev) or "")
    assert dataset_overlap_warning({"training_data": "none: random seeded weights"}, dev) is None
    assert "declares no training data" in (dataset_overlap_warning({}, dev) or "")
    held_out = Dataset("isic2018-test", [Sample("ISIC_0034600", Path("x.jpg"), "mel")])
    assert dataset_overlap_warning({"training_data": "ISIC 2018 Task 3 training"}, held_out) is None
    renamed = Dataset("my HAM10000 copy", [Sample("img1", Path("x.jpg"), "mel")])
    assert dataset_overlap_warning({"training_data": "ISIC 2019"}, renamed) is not None
    assert is_ham10000_id("ISIC_0034320") and not is_ham10000_id("ISIC_0024305")
