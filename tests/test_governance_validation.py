"""The validation-set builder: seeded, split by lesion, stratified, with unfilled cells reported."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from tests_helpers import DEV_CSV

from derm_cloud.cli import main
from derm_cloud.data import Dataset, Sample, load_dataset
from derm_cloud.errors import ConfigError
from derm_cloud.governance._records import load_table
from derm_cloud.governance.validation_set import build_validation_set
from derm_cloud.taxonomy import CLASS_CODES
from derm_cloud.types import PatientMetadata

HAM_META = DEV_CSV.parent / "HAM10000_metadata.csv"
FAST = ("label", "sex", "age_band", "site")  # ITA for every dev image takes ~30 s; tested on a subset below


@pytest.fixture(scope="module")
def dev() -> pd.DataFrame:
    return pd.read_csv(DEV_CSV)


@pytest.fixture(scope="module")
def dev_set() -> object:
    return build_validation_set(DEV_CSV, size=200, seed=0, strata=FAST)


def test_dev_set_has_200_images_every_class_and_no_shared_lesion(dev_set, dev: pd.DataFrame) -> None:
    assert len(dev_set.selected) == 200
    chosen = dev[dev["image_id"].isin(dev_set.selected)]
    rest = dev[dev["image_id"].isin(dev_set.rest)]
    assert len(chosen) + len(rest) == len(dev)  # nothing excluded without images_per_lesion
    assert set(chosen["lesion_id"]).isdisjoint(rest["lesion_id"])  # checked with pandas, not the set's own method
    assert dev_set.shared_lesions() == set()
    assert set(chosen["dx"]) == set(CLASS_CODES)
    counts = chosen["dx"].value_counts()
    assert counts.min() >= 25 and counts.max() - counts.min() <= 3  # balanced: ~200/7 per class
    assert dev_set.class_counts() == {c: int(counts.get(c, 0)) for c in CLASS_CODES}


def test_same_seed_same_set_other_seed_other_set(dev_set) -> None:
    again = build_validation_set(DEV_CSV, size=200, seed=0, strata=FAST)
    assert again.selected == dev_set.selected
    other = build_validation_set(DEV_CSV, size=200, seed=1, strata=FAST)
    assert other.selected != dev_set.selected
    # The order of the input rows does not change the pick: only the seed does.
    shuffled = load_table(DEV_CSV)
    shuffled.frame = shuffled.frame.sample(frac=1.0, random_state=7).reset_index(drop=True)
    assert set(build_validation_set(shuffled, size=200, seed=0, strata=FAST).selected) == set(dev_set.selected)


@pytest.mark.project_data
def test_every_group_is_covered_and_unfilled_cells_are_the_impossible_ones(dev_set, dev: pd.DataFrame) -> None:
    chosen = dev[dev["image_id"].isin(dev_set.selected)]
    lesions_per_site = dev.groupby("localization")["lesion_id"].nunique()
    for site, n in lesions_per_site.items():
        if site == "unknown":
            continue
        cell = next(c for c in dev_set.cells if c.stratum == "site" and c.value == site)
        assert cell.available == n
        assert cell.chosen == chosen[chosen["localization"] == site]["lesion_id"].nunique() >= min(2, n)
    short_sites = {s for s, n in lesions_per_site.items() if n < 2 and s != "unknown"}
    assert short_sites == {"genital"}
    unfilled = {(c.stratum, c.value): c for c in dev_set.unfilled}
    assert unfilled[("site", "genital")].reason == "only 1 lesion in the data"
    # Classes absent from a group are reported: dev.csv has no dermatofibroma on the scalp.
    assert not ((dev["dx"] == "df") & (dev["localization"] == "scalp")).any()
    assert unfilled[("label x site", "df / scalp")].reason == "no lesion in the data"
    # Every class-within-group cell the data can fill is filled at size 200.
    for c in dev_set.cells:
        if " x " in c.stratum and c.available >= c.target:
            assert c.filled, c
    assert all(c.reason for c in dev_set.unfilled)


@pytest.mark.project_data
def test_manifest_loads_with_load_dataset_and_report_lists_unfilled(dev_set, tmp_path: Path) -> None:
    out = tmp_path / "val" / "validation.csv"
    dev_set.write_manifest(out, rest_path=tmp_path / "rest.csv")
    ds = load_dataset(out)
    assert ds.image_ids == list(dev_set.selected)
    original = {s.image_id: s for s in load_dataset(DEV_CSV)}
    for s in ds:
        assert s.label == original[s.image_id].label
        assert s.lesion_id == original[s.image_id].lesion_id
        assert s.metadata == original[s.image_id].metadata
        assert Path(s.source).resolve() == Path(original[s.image_id].source).resolve()
    rest = load_dataset(tmp_path / "rest.csv")
    assert {s.lesion_id for s in rest}.isdisjoint({s.lesion_id for s in ds})
    json_path, md_path = dev_set.write_report(tmp_path / "validation.report")
    report = json.loads(json_path.read_text())
    assert report["size"] == 200 and report["shared_lesions"] == []
    assert {(c["stratum"], c["value"]) for c in report["unfilled"]} >= {("site", "genital")}
    md = md_path.read_text()
    assert "## Unfilled cells" in md and "| site | genital | 1 | 1 | 2 | only 1 lesion in the data |" in md


def test_skin_tone_stratum_from_ita_estimates(dev: pd.DataFrame) -> None:
    table = load_table(DEV_CSV)
    table.frame = table.frame.iloc[:45].reset_index(drop=True)
    vs = build_validation_set(table, size=15, seed=2)
    assert vs.skin_tone_source == "ita"
    tones = {c.value for c in vs.cells if c.stratum == "skin_tone"}
    assert tones and tones <= {"very light", "light", "intermediate", "tan", "brown", "dark"}
    assert vs.groups["skin_tone"].isin([*tones, "unknown"]).all()
    assert "not the patient's skin type" in vs.to_markdown()


def test_fitzpatrick_metadata_is_the_skin_tone_source() -> None:
    samples = [
        Sample(
            f"img{i}",
            Path(f"img{i}.jpg"),
            CLASS_CODES[i % 7],
            PatientMetadata(age=30 + i, sex="female" if i % 2 else "male", fitzpatrick=1 + (i // 2) % 6),
            lesion_id=f"L{i // 2}",
        )
        for i in range(84)
    ]
    vs = build_validation_set(Dataset("fst", samples), size=30, seed=0)
    assert vs.skin_tone_source == "fitzpatrick"
    roman = ["I", "II", "III", "IV", "V", "VI"]
    assert {c.value for c in vs.cells if c.stratum == "skin_tone"} == {f"FST {r}" for r in roman}
    assert all(c.chosen >= 2 for c in vs.cells if c.stratum == "skin_tone")
    lesion = {s.image_id: s.lesion_id for s in samples}
    assert {lesion[i] for i in vs.selected}.isdisjoint({lesion[i] for i in vs.rest})


def test_one_image_per_lesion_gives_exact_size_and_excludes_siblings() -> None:
    table = load_table(HAM_META, resolve_images=False)
    table.frame = table.frame.iloc[:1500].reset_index(drop=True)
    vs = build_validation_set(table, size=101, seed=3, strata=FAST, images_per_lesion=1)
    frame = table.frame.set_index("image_id")
    chosen_lesions = frame.loc[list(vs.selected), "lesion_id"]
    assert len(vs.selected) == 101 and chosen_lesions.is_unique
    assert vs.excluded and set(frame.loc[list(vs.excluded), "lesion_id"]) <= set(chosen_lesions)
    assert set(frame.loc[list(vs.rest), "lesion_id"]).isdisjoint(chosen_lesions)


@pytest.mark.project_data
def test_fraction_and_bad_parameters() -> None:
    vs = build_validation_set(DEV_CSV, holdout_fraction=0.1, seed=0, strata=("label",))
    assert len(vs.selected) == round(1321 * 0.1)
    with pytest.raises(ConfigError, match="not smaller"):
        build_validation_set(DEV_CSV, size=5000, strata=FAST)
    with pytest.raises(ConfigError, match="strata"):
        build_validation_set(DEV_CSV, size=10, strata=("label", "colour"))
    with pytest.raises(ConfigError, match="no label"):
        build_validation_set(Dataset("u", [Sample(f"{i}", Path(f"{i}.jpg")) for i in range(20)]), size=5)


def test_cli_build_validation(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "v.csv"
    code = main(
        [
            *("dataset", "build-validation", str(DEV_CSV), "--size", "60", "--seed", "4", "--out", str(out)),
            *("--strata", "label,sex,site", "--skin-tone", "none"),
        ]
    )
    printed = capsys.readouterr().out
    assert code == 0
    assert "60 images from" in printed and "0 lesions shared" in printed and "unfilled cells:" in printed
    assert len(pd.read_csv(out)) == 60
    assert (tmp_path / "v.report.json").is_file() and (tmp_path / "v.report.md").is_file()
    same = build_validation_set(DEV_CSV, size=60, seed=4, strata=("label", "sex", "site"), skin_tone="none")
    assert list(pd.read_csv(out)["image_id"]) == list(same.selected)
