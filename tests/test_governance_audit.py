"""Dataset audit: every count checked against pandas; a marmal88-style export; duplicates; reports; CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image
from tests_helpers import DEV_CSV, dev_image, dev_rows

from derm_cloud.cli import main
from derm_cloud.governance.audit import audit_dataset, compare_audits, write_audit_report
from derm_cloud.taxonomy import CLASS_CODES

HAM_META = DEV_CSV.parent / "HAM10000_metadata.csv"
# marmal88/skin_cancer dx strings (the reference's label table) for the synthetic export below.
MARMAL_DX = {
    "akiec": "actinic_keratoses",
    "bcc": "basal_cell_carcinoma",
    "bkl": "benign_keratosis-like_lesions",
    "df": "dermatofibroma",
    "mel": "melanoma",
    "nv": "melanocytic_Nevi",
    "vasc": "vascular_lesions",
}


@pytest.fixture(scope="module")
def dev() -> pd.DataFrame:
    return pd.read_csv(DEV_CSV)


@pytest.fixture(scope="module")
def ham() -> pd.DataFrame:
    return pd.read_csv(HAM_META)


@pytest.fixture(scope="module")
def audits() -> tuple:
    return audit_dataset(DEV_CSV, images=False), audit_dataset(HAM_META, images=False)


@pytest.mark.project_data
def test_class_mix_and_images_per_lesion_equal_pandas(audits: tuple, dev: pd.DataFrame, ham: pd.DataFrame) -> None:
    for audit, frame in zip(audits, (dev, ham), strict=True):
        counts = frame["dx"].value_counts()
        assert audit.class_counts == {c: int(counts.get(c, 0)) for c in CLASS_CODES}
        assert audit.class_share == pytest.approx({c: counts.get(c, 0) / len(frame) for c in CLASS_CODES})
        per_lesion = frame.groupby("lesion_id").size()
        assert audit.lesions == frame["lesion_id"].nunique()
        assert audit.images_per_lesion["mean"] == pytest.approx(len(frame) / frame["lesion_id"].nunique())
        assert audit.images_per_lesion["max"] == per_lesion.max()
        assert audit.images_per_lesion["distribution"] == {str(k): int(v) for k, v in per_lesion.value_counts().items()}
        assert audit.class_lesions == {c: frame[frame["dx"] == c]["lesion_id"].nunique() for c in CLASS_CODES}
        assert audit.dx_type == frame["dx_type"].value_counts().to_dict()
        assert audit.sex == frame["sex"].value_counts().to_dict()
        assert audit.completeness["age"] == pytest.approx(frame["age"].notna().mean())
        assert audit.completeness["site"] == pytest.approx((frame["localization"] != "unknown").mean())
        assert audit.age["median"] == pytest.approx(frame["age"].median())
        assert audit.rows == audit.unique_images == len(frame) and audit.duplicate_rows == 0
    dev_audit, ham_audit = audits
    assert ham_audit.lesions == 7470 and ham_audit.images_available == 2105  # only these images exist locally
    assert dev_audit.images_available == 1321 and dev_audit.images_checked == 0


@pytest.mark.project_data
def test_comparison_reports_the_class_mix_difference(audits: tuple, dev: pd.DataFrame, ham: pd.DataFrame) -> None:
    comparison = compare_audits(*audits)
    dev_share, ham_share = dev["dx"].value_counts(normalize=True), ham["dx"].value_counts(normalize=True)
    for c in CLASS_CODES:
        assert comparison.class_share_diff[c] == pytest.approx(100 * (ham_share[c] - dev_share[c]))
    assert comparison.total_variation == pytest.approx(0.5 * (ham_share - dev_share).abs().sum())
    assert comparison.overlap["image_ids_in_both"] == len(set(dev["image_id"]) & set(ham["image_id"])) == 1321
    assert comparison.overlap["lesion_ids_in_both"] == len(set(dev["lesion_id"]) & set(ham["lesion_id"]))
    text = " ".join(comparison.findings)
    assert f"nv {100 * dev_share['nv']:.1f}% in ham10000/dev.csv vs {100 * ham_share['nv']:.1f}%" in text
    per_lesion_dev = len(dev) / dev["lesion_id"].nunique()
    per_lesion_ham = len(ham) / ham["lesion_id"].nunique()
    assert f"Images per lesion: {per_lesion_dev:.3f} in ham10000/dev.csv vs {per_lesion_ham:.3f}" in text
    assert "Every image id of ham10000/dev.csv is in ham10000/HAM10000_metadata.csv" in text


@pytest.fixture(scope="module")
def marmal88_export(tmp_path_factory: pytest.TempPathFactory, ham: pd.DataFrame) -> Path:
    """A synthetic marmal88-style export (NOT the real dataset): HAM10000 metadata with 3,339 rows repeated
    across train/validation/test parquet files and marmal88's dx strings, 13,354 rows like the real one."""
    folder = tmp_path_factory.mktemp("marmal88") / "data"
    folder.mkdir()
    frame = ham.assign(dx=ham["dx"].map(MARMAL_DX))
    repeats = frame.sample(n=3339, random_state=0)
    rows = pd.concat([frame, repeats]).sample(frac=1.0, random_state=1).reset_index(drop=True)
    bounds = {"train": (0, 9577), "validation": (9577, 12069), "test": (12069, 13354)}
    for split, (lo, hi) in bounds.items():
        rows.iloc[lo:hi].to_parquet(folder / f"{split}-00000-of-00001.parquet", index=False)
    return folder


def test_marmal88_style_export_has_more_rows_than_images_and_the_audit_says_why(
    marmal88_export: Path, audits: tuple, ham: pd.DataFrame
) -> None:
    raw = pd.concat(pd.read_parquet(p) for p in sorted(marmal88_export.glob("*.parquet")))
    audit = audit_dataset(marmal88_export, name="marmal88-style")
    assert audit.rows == len(raw) == 13354
    assert audit.unique_images == raw["image_id"].nunique() == 10015
    assert audit.duplicate_rows == 3339
    assert audit.rows_per_image == {int(k): int(v) for k, v in raw.groupby("image_id").size().value_counts().items()}
    assert audit.splits == {"train": 9577, "validation": 2492, "test": 1285}
    # Splits come from the file names, as in the real export; a repeated id can land in two of them.
    split_of = pd.concat(
        pd.read_parquet(p).assign(split=p.name.split("-")[0]) for p in sorted(marmal88_export.glob("*.parquet"))
    )
    leaks = int((split_of.groupby("image_id")["split"].nunique() > 1).sum())
    assert audit.split_leaks["image_ids_in_several_splits"] == leaks > 0
    assert audit.class_counts == audits[1].class_counts  # deduplicated, the classes are HAM10000's
    assert audit.images_available == 0
    comparison = compare_audits(audits[1], audit)
    text = " ".join(comparison.findings)
    assert "marmal88-style has 13,354 rows but ham10000/HAM10000_metadata.csv has 10,015 images" in text
    assert "3,339 of its rows repeat an image id (up to" in text
    assert "Deduplicated, marmal88-style has 10,015 unique images" in text
    assert comparison.overlap["image_ids_in_both"] == 10015


@pytest.mark.project_data
def test_image_checks_find_a_re_encoded_copy_and_estimate_skin_tone(tmp_path: Path) -> None:
    # Two pairs of different lesions that pHash alone calls near-identical (a small dark lesion on plain skin).
    look_alike = {"ISIC_0028869", "ISIC_0029502", "ISIC_0031485", "ISIC_0033152"}
    rows = dev_rows(20) + [r for r in dev_rows() if r["image_id"] in look_alike]
    copy = tmp_path / "copy_of_first.png"
    with Image.open(dev_image(rows[0])) as im:
        im.convert("RGB").resize((300, 225)).save(copy)  # another size and format, same picture
    manifest = pd.DataFrame(
        [
            {"image_id": r["image_id"], "lesion_id": r["lesion_id"], "dx": r["dx"], "file": str(dev_image(r))}
            for r in rows
        ]
        + [{"image_id": "COPY_1", "lesion_id": "HAM_COPY", "dx": rows[0]["dx"], "file": str(copy)}]
    )
    path = tmp_path / "m.csv"
    manifest.to_csv(path, index=False)
    audit = audit_dataset(path)
    assert audit.images_checked == 25
    groups = [set(g) for g in audit.duplicates["groups"]]
    assert groups == [{rows[0]["image_id"], "COPY_1"}]  # the copy is found, the look-alikes are not
    assert audit.duplicates["groups_across_lesions"] >= 1
    ita = audit.ita
    assert ita["estimated"] + sum(ita["undefined"].values()) == 25
    assert sum(ita["categories"].values()) == ita["estimated"] == len(ita["values"])
    assert "not the patient's skin type" in ita["caveat"]
    capped = audit_dataset(path, max_images=10)
    assert capped.images_checked == 10 and capped.duplicates["sampled"]


@pytest.mark.project_data
def test_report_files(audits: tuple, tmp_path: Path) -> None:
    comparison = compare_audits(*audits)
    paths = write_audit_report(list(audits), tmp_path, comparison)
    md = paths["markdown"].read_text()
    assert "| class mel | 304 (23.0%) | 1,113 (11.1%) |" in md
    assert "## Differences" in md and "Tschandl" in md and "not the patient's skin type" in md
    html = paths["html"].read_text()
    assert html.count("data:image/png;base64,") == len(paths["plots"]) >= 3
    data = json.loads(paths["json"].read_text())
    assert [d["name"] for d in data["datasets"]] == ["ham10000/dev.csv", "ham10000/HAM10000_metadata.csv"]
    assert data["datasets"][0]["class_counts"]["mel"] == 304 and "table" not in data["datasets"][0]


def test_cli_audit(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["dataset", "audit", str(DEV_CSV), "--against", str(HAM_META), "--out", str(tmp_path), "--no-images"])
    printed = capsys.readouterr().out
    assert code == 0
    assert "differences:" in printed and "Class mix differs" in printed
    assert (tmp_path / "audit.html").is_file() and (tmp_path / "audit.md").is_file()
