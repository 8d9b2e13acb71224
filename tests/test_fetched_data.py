"""The documented fix works: after `derm-cloud data fetch ham10000`, labelled data is found wherever it is looked for.

A local HTTP server (127.0.0.1) serves HAM10000 in the real Harvard Dataverse layout (the JSON file listing with
MD5s, ``HAM10000_images_part_1.zip``, ``_part_2.zip`` and the metadata CSV), built at test time from real images of
the data folder (HAM10000, Tschandl et al. 2018, CC BY-NC 4.0; never copied into the repository). Then, as a new
user would: the fetch, `derm-cloud compare` in an empty folder, the labelled example config and its ``--check``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from file_host import FileHost, file_host
from test_data_fetch import serve_ham10000
from tests_helpers import dev_image, dev_rows

from derm_cloud.cli import main
from derm_cloud.compare.analysis.texts import quality_headline
from derm_cloud.compare.run import defaults
from derm_cloud.data.dev_split import in_dev_split

CLASSES = ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")
PER_CLASS = 11  # the default subset takes 10 per class, from more than that


def real_rows() -> tuple[list[dict[str, Any]], set[str]]:
    """Real images and metadata: 11 lesions per class that the dev-split rule picks, 6 that it leaves out."""
    picked: list[dict[str, Any]] = []
    left_out: list[dict[str, Any]] = []
    lesions: set[str] = set()
    for row in dev_rows():
        if row["lesion_id"] in lesions:
            continue
        if in_dev_split(row["lesion_id"], row["dx"]):
            if sum(r["dx"] == row["dx"] for r in picked) < PER_CLASS:
                picked.append(row)
                lesions.add(row["lesion_id"])
        elif len(left_out) < 6:
            left_out.append(row)
            lesions.add(row["lesion_id"])
    assert {c: sum(r["dx"] == c for r in picked) for c in CLASSES} == dict.fromkeys(CLASSES, PER_CLASS)
    rows = [{**r, "data": dev_image(r).read_bytes()} for r in picked + left_out]
    return rows, {r["image_id"] for r in picked}


@pytest.fixture
def dataverse() -> Iterator[FileHost]:
    """A mirror of Harvard Dataverse on 127.0.0.1 (https://HOST/PATH served at MIRROR/HOST/PATH)."""
    with file_host() as host:
        yield host


@pytest.fixture
def fetched(dataverse: FileHost, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> tuple[Path, set[str]]:
    """`derm-cloud data fetch ham10000 --mirror URL` into an empty cache; nothing else points at data."""
    rows, dev_ids = real_rows()
    serve_ham10000(dataverse, rows)
    monkeypatch.setenv("DERM_CLOUD_CACHE", str(tmp_path / "cache"))
    for name in ("DERM_CLOUD_DATA", "DERM_CLOUD_DATA_MIRROR"):
        monkeypatch.delenv(name, raising=False)
    assert main(["data", "fetch", "ham10000", "--mirror", dataverse.base]) == 0
    out = capsys.readouterr().out
    assert f"dev.csv: a lesion-level development split of {len(dev_ids)} images" in out
    folder = tmp_path / "cache" / "datasets" / "ham10000"
    return folder, dev_ids


def test_a_fetch_lays_out_dataverse_files_and_a_dev_split(fetched: tuple[Path, set[str]]) -> None:
    folder, dev_ids = fetched
    assert (folder / "HAM10000_metadata.csv").is_file()
    parts = [folder / "HAM10000_images_part_1", folder / "HAM10000_images_part_2"]
    assert all(any(p.glob("ISIC_*.jpg")) for p in parts) and not (folder / "images").exists()
    dev = pd.read_csv(folder / "dev.csv")
    # Exactly the lesions the rule picks, one image each; the images stay where the archives put them.
    assert set(dev["image_id"]) == dev_ids and dev["lesion_id"].is_unique
    assert all((folder / f).is_file() and f.startswith("HAM10000_images_part_") for f in dev["file"])
    assert defaults.find_labelled_data() == folder / "dev.csv"


def test_compare_in_an_empty_folder_measures_quality_after_the_fetch(
    fetched: tuple[Path, set[str]],
    tmp_path: Path,
    tiny_model_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    folder, dev_ids = fetched
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.chdir(empty)
    # The embedded default, with the tiny model on this machine instead of sklesion on it and behind 8 emulators:
    # what is tested is where the images come from, not how long sklesion takes (nor the 12 s the server scenario
    # spends at 1 query per second).
    backend = f'[[backends]]\nname = "local"\ntype = "local-onnx"\noptions = {{ model_dir = "{tiny_model_dir}" }}\n'
    scenarios = defaults.DEFAULT_CONFIG_TOML.split("[[backends]]")[0].replace("target_qps = 1.0", "target_qps = 20.0")
    monkeypatch.setattr(defaults, "DEFAULT_CONFIG_TOML", scenarios + backend)
    monkeypatch.setattr(defaults, "ensure_sklesion", lambda: tiny_model_dir)
    assert main(["compare", "-q"]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith("Quality figures rest on 70 labelled images of 70 lesions, 7 of 7 classes"), first
    report = json.loads((empty / "derm-cloud-report" / "report.json").read_text())
    subset_csv = Path(report["dataset"]["root"])
    assert subset_csv.is_relative_to(tmp_path / "cache" / "datasets" / "default-compare")
    subset = pd.read_csv(subset_csv)
    # The seeded, class-stratified, lesion-disjoint subset the default draws from a dev split, of the fetched images.
    assert subset["dx"].value_counts().to_dict() == dict.fromkeys(CLASSES, 10) and subset["lesion_id"].is_unique
    assert set(subset["image_id"]) <= dev_ids
    assert all((subset_csv.parent / f).resolve().is_relative_to(folder.resolve()) for f in subset["file"])


def test_the_labelled_example_config_finds_the_fetch(
    fetched: tuple[Path, set[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    folder, dev_ids = fetched
    example = Path(__file__).resolve().parents[1] / "examples" / "compare-dataset.toml"
    assert main(["compare", str(example), "--check"]) == 0
    out = capsys.readouterr().out
    assert f"dataset OK: {len(dev_ids)} images, {len(dev_ids)} labelled ({folder / 'dev.csv'})" in out
    assert main(["compare", "--check"]) == 0  # the embedded default draws its subset from the same split
    assert f"70-image subset of {folder / 'dev.csv'}" in capsys.readouterr().out


def test_check_fails_on_a_dataset_that_is_not_there(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "c.toml"
    config.write_text(
        '[dataset]\nsource = "../shared/data/ham10000/dev.csv"\n'
        '[[backends]]\nname = "local"\ntype = "local-onnx"\noptions = { model_dir = "sklesion" }\n'
    )
    assert main(["compare", str(config), "--check"]) == 1
    captured = capsys.readouterr()
    assert "config OK" not in captured.out
    err = captured.err
    assert f"[dataset] source of {config}" in err and "does not exist" in err
    assert "derm-cloud data fetch ham10000" in err and "'ham10000:dev'" in err


def test_check_names_the_fetch_when_no_labelled_data_is_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DERM_CLOUD_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("DERM_CLOUD_DATA", str(tmp_path / "nothing"))
    monkeypatch.setattr(defaults, "_labelled_candidates", lambda: [tmp_path / "nothing" / "ham10000"])
    example = Path(__file__).resolve().parents[1] / "examples" / "compare-dataset.toml"
    assert main(["compare", str(example), "--check"]) == 1
    err = capsys.readouterr().err
    assert "no labelled HAM10000 images on this machine" in err and "run `derm-cloud data fetch ham10000`" in err


def test_a_ham10000_folder_without_dev_csv_gets_one_derived(
    fetched: tuple[Path, set[str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder, dev_ids = fetched
    # Fetched by a derm-cloud that wrote no dev.csv: completed in place when first looked for.
    (folder / "dev.csv").unlink()
    assert defaults.find_labelled_data() == folder / "dev.csv"
    assert set(pd.read_csv(folder / "dev.csv")["image_id"]) == dev_ids
    # The same layout unpacked by hand under $DERM_CLOUD_DATA: derived into the cache, the folder left untouched.
    own = tmp_path / "mine" / "ham10000"
    own.mkdir(parents=True)
    for name in ("HAM10000_metadata.csv", "HAM10000_images_part_1", "HAM10000_images_part_2"):
        (own / name).symlink_to(folder / name)
    monkeypatch.setenv("DERM_CLOUD_DATA", str(own.parent))
    found = defaults.find_labelled_data()
    assert found is not None and found.is_relative_to(tmp_path / "cache" / "datasets" / "ham10000-dev")
    assert not (own / "dev.csv").exists()
    derived = pd.read_csv(found)
    assert set(derived["image_id"]) == dev_ids and all((found.parent / f).is_file() for f in derived["file"])


def test_an_unlabelled_run_names_the_fetched_split_as_a_fix() -> None:
    line = quality_headline({"available": False}, default_run=False)
    assert line is not None and "`--dataset ham10000:dev` after `derm-cloud data fetch ham10000`" in line
