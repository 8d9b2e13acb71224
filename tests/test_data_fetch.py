"""`derm-cloud data fetch` end to end against a local HTTP server (127.0.0.1) that mirrors each source's layout.

The archives are built at test time in each source's real layout, from a few real HAM10000 images (Tschandl et al.
2018, CC BY-NC 4.0, read from ../shared/data, never copied into the repo) or generated images. Every fetcher:
downloads, resumes a download cut half-way (HTTP Range), rejects a wrong checksum with a typed error, and the
result loads with load_dataset.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from file_host import FileHost, file_host
from PIL import Image
from tests_helpers import DEV_CSV, dev_image, dev_rows

from derm_cloud.cli import main
from derm_cloud.data import load_dataset
from derm_cloud.data.download import Progress, download, mirror_url
from derm_cloud.data.fetch import DatasetSource, catalogue, fetch_dataset
from derm_cloud.errors import ChecksumMismatchError, ConfigError, DownloadError

ATTRIBUTION = "HAM10000, Tschandl et al. 2018, CC BY-NC 4.0"


@pytest.fixture
def mirror() -> Iterator[FileHost]:
    with file_host() as host:
        yield host


def jpeg(seed: int, size: tuple[int, int] = (64, 48)) -> bytes:
    img = Image.new("RGB", size, (40 * seed % 255, 90, 200 - 10 * seed % 200))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def png(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (40, 40), (10 * seed % 255, 120, 60)).save(buf, "PNG")
    return buf.getvalue()


def zipped(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def csv_bytes(header: list[str], rows: list[list[Any]]) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue().encode()


def ham_rows(n: int) -> list[dict[str, Any]]:
    """Real dev.csv rows and image bytes (HAM10000, Tschandl et al. 2018, CC BY-NC 4.0), at least one melanoma.

    On a machine without the data folder, generated images with HAM10000-style ids stand in: the fetchers only
    move bytes, so the test still proves downloading, resuming, verifying and loading.
    """
    if DEV_CSV.is_file():
        rows = dev_rows(200)
        picked = [r for r in rows if r["dx"] == "mel"][:2] + [r for r in rows if r["dx"] != "mel"][: n - 2]
        return [{**r, "data": dev_image(r).read_bytes()} for r in picked]
    labels = ["mel", "mel", "nv", "bkl", "bcc", "akiec", "df", "vasc"]
    return [
        {"image_id": f"ISIC_{24306 + i:07d}", "lesion_id": f"HAM_{i:07d}", "dx": labels[i % len(labels)],
         "dx_type": "histo", "age": "50.0", "sex": "female", "localization": "back", "data": jpeg(i)}
        for i in range(n)
    ]  # fmt: skip


def published_rows(source: DatasetSource, name: str) -> int:
    """The row count the catalogue states for one of ``source``'s CSVs."""
    rows = next(f.rows for f in source.files if f.name == name)
    assert rows is not None
    return rows


# --- each source, in its real layout -------------------------------------------------------------------------------
# A builder serves the source's files and returns (the catalogue entry adjusted to the test files, the big file to
# cut / corrupt, {label: count} expected after loading, images expected).


def build_ham10000(m: FileHost, source: DatasetSource) -> tuple[DatasetSource, str, dict[str, int], int]:
    rows = ham_rows(6)
    serve_ham10000(m, rows)
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["dx"]] = counts.get(r["dx"], 0) + 1
    return source, "/m/dataverse.harvard.edu/api/access/datafile/1", counts, 6


def serve_ham10000(m: FileHost, rows: list[dict[str, Any]]) -> None:
    """HAM10000 as Harvard Dataverse serves it: the JSON file listing (with each file's MD5) and the three files,
    HAM10000_images_part_1.zip and _part_2.zip (JPEGs at the archive's root) and the metadata CSV."""
    half = len(rows) // 2
    part1 = zipped({f"{r['image_id']}.jpg": r["data"] for r in rows[:half]})
    part2 = zipped({f"{r['image_id']}.jpg": r["data"] for r in rows[half:]})
    header = ["lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization", "dataset"]
    meta = csv_bytes(header, [[r["lesion_id"], r["image_id"], r["dx"], r["dx_type"], r["age"], r["sex"],
                               r["localization"], "vidir_modern"] for r in rows])  # fmt: skip
    server = "https://dataverse.harvard.edu"
    bodies = {"HAM10000_images_part_1.zip": part1, "HAM10000_images_part_2.zip": part2, "HAM10000_metadata.tab": meta}
    listing = []
    for i, (name, body) in enumerate(bodies.items(), 1):
        m.put(f"{server}/api/access/datafile/{i}", body)
        data_file = {"id": i, "filename": name, "md5": hashlib.md5(body).hexdigest()}
        listing.append({"dataFile": {**data_file, **({"originalFileName": "HAM10000_metadata.csv"} if i == 3 else {})}})
    m.put(f"{server}/api/datasets/:persistentId/", json.dumps({"data": {"latestVersion": {"files": listing}}}).encode())


def build_pad(m: FileHost, source: DatasetSource) -> tuple[DatasetSource, str, dict[str, int], int]:
    diag = ["MEL", "BCC", "NEV", "SCC", "SEK", "ACK"]
    names = [f"PAT_{i}_{100 + i}_{500 + i}.png" for i in range(6)]
    header = ["patient_id", "lesion_id", "age", "gender", "fitspatrick", "region", "diagnostic", "img_id", "biopsed"]
    meta = csv_bytes(header, [[f"PAT_{i}", 100 + i, 50 + i, "FEMALE" if i % 2 else "MALE", float(i % 6 + 1), "ARM",
                               d, n, "True"] for i, (d, n) in enumerate(zip(diag, names, strict=True))])  # fmt: skip
    parts = [zipped({f"imgs_part_{k + 1}/{n}": png(i) for i, n in enumerate(names) if i % 3 == k}) for k in range(3)]
    pins = {"metadata.csv": meta, "imgs_part_1.zip": parts[0], "imgs_part_2.zip": parts[1], "imgs_part_3.zip": parts[2]}
    files = []
    for f in source.files:
        m.put(str(f.url), pins[f.name])
        files.append(dataclasses.replace(f, sha256=hashlib.sha256(pins[f.name]).hexdigest()))
    big = mirror_url(str(source.files[1].url), "/m")
    return dataclasses.replace(source, files=tuple(files)), big, {"mel": 1, "bcc": 1, "nv": 1, "akiec": 2, "bkl": 1}, 6


def build_isic2019(m: FileHost, source: DatasetSource) -> tuple[DatasetSource, str, dict[str, int], int]:
    rows = ham_rows(5)
    images = zipped({f"ISIC_2019_Training_Input/{r['image_id']}.jpg": r["data"] for r in rows})
    cols = ["MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC", "UNK"]
    code = {"mel": "MEL", "nv": "NV", "bcc": "BCC", "akiec": "AK", "bkl": "BKL", "df": "DF", "vasc": "VASC"}
    # As many rows as the real CSVs have (the fetch checks the count the catalogue states); the rows without an
    # image in the archive are left out of the manifest, as they would be for a partial copy.
    filler = [f"ISIC_{9500000 + i}" for i in range(published_rows(source, "ISIC_2019_Training_GroundTruth.csv") - 5)]
    truth = csv_bytes(["image", *cols], [[r["image_id"], *[float(code[r["dx"]] == c) for c in cols]] for r in rows]
                      + [[i, *[float(c == "UNK") for c in cols]] for i in filler])  # fmt: skip
    meta = csv_bytes(["image", "age_approx", "anatom_site_general", "lesion_id", "sex"],
                     [[r["image_id"], r["age"], "anterior torso", r["lesion_id"], r["sex"]] for r in rows]
                     + [[i, "", "", "", ""] for i in filler])  # fmt: skip
    for f, body in zip(source.files, (images, truth, meta), strict=True):
        m.put(str(f.url), body)
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["dx"]] = counts.get(r["dx"], 0) + 1
    return source, mirror_url(str(source.files[0].url), "/m"), counts, 5


def build_isic2020(m: FileHost, source: DatasetSource) -> tuple[DatasetSource, str, dict[str, int], int]:
    ids = [f"ISIC_{9000000 + i}" for i in range(5)]
    images = zipped({f"train/{i}.jpg": jpeg(k) for k, i in enumerate(ids)})
    diagnoses = ["melanoma", "nevus", "unknown", "seborrheic keratosis", "unknown"]
    header = ["image_name", "patient_id", "lesion_id", "sex", "age_approx", "anatom_site_general_challenge",
              "diagnosis", "benign_malignant", "target"]  # fmt: skip
    filler = [f"ISIC_{9500000 + i}" for i in range(published_rows(source, "ISIC_2020_Training_GroundTruth_v2.csv") - 5)]
    truth = csv_bytes(header, [[i, f"IP_{k}", f"IL_{k}", "female", 45, "torso", d,
                                "malignant" if d == "melanoma" else "benign", int(d == "melanoma")]
                               for k, (i, d) in enumerate(zip(ids, diagnoses, strict=True))]
                      + [[i, "IP_0", "", "", "", "", "unknown", "benign", 0] for i in filler])  # fmt: skip
    for f, body in zip(source.files, (images, truth), strict=True):
        m.put(str(f.url), body)
    return source, mirror_url(str(source.files[0].url), "/m"), {"mel": 1, "nv": 1, "bkl": 1}, 5


def build_fitzpatrick17k(m: FileHost, source: DatasetSource) -> tuple[DatasetSource, str, dict[str, int], int]:
    conditions = ["melanoma", "psoriasis", "basal cell carcinoma", "dermatofibroma", "melanoma"]
    header = ["md5hash", "fitzpatrick_scale", "fitzpatrick_centaur", "label", "nine_partition_label",
              "three_partition_label", "qc", "url", "url_alphanum"]  # fmt: skip
    rows = []
    for i, cond in enumerate(conditions):
        url = f"https://www.dermaamin.com/site/images/clinical-pic/x/{cond.replace(' ', '')}{i}.jpg"
        if i != 4:  # the last URL is dead, as many of the real ones are
            m.put(url, jpeg(i))
        rows.append([f"{i:032x}", i % 6 + 1, -1, cond, "x", "malignant" if "melan" in cond else "benign", "", url, ""])
    m.put(str(source.files[0].url), csv_bytes(header, rows))
    return source, mirror_url(str(source.files[0].url), "/m"), {"mel": 1, "bcc": 1, "df": 1}, 4


def build_marmal88(m: FileHost, source: DatasetSource) -> tuple[DatasetSource, str, dict[str, int], int]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = ham_rows(6)
    names = {"mel": "melanoma", "nv": "melanocytic_Nevi", "bkl": "benign_keratosis-like_lesions",
             "bcc": "basal_cell_carcinoma", "akiec": "actinic_keratoses", "df": "dermatofibroma",
             "vasc": "vascular_lesions"}  # fmt: skip
    tree = []
    counts: dict[str, int] = {}
    for split, chunk in (("train", rows[:4]), ("test", rows[4:])):
        table = pa.table({
            "image": [{"bytes": r["data"], "path": f"{r['image_id']}.jpg"} for r in chunk],
            "image_id": [r["image_id"] for r in chunk], "lesion_id": [r["lesion_id"] for r in chunk],
            "dx": [names[r["dx"]] for r in chunk], "dx_type": [r["dx_type"] for r in chunk],
            "age": [float(r["age"] or 0) for r in chunk], "sex": [r["sex"] for r in chunk],
            "localization": [r["localization"] for r in chunk],
        })  # fmt: skip
        buf = io.BytesIO()
        pq.write_table(table, buf)
        body = buf.getvalue()
        path = f"data/{split}-00000-of-00001.parquet"
        m.put(f"https://huggingface.co/datasets/marmal88/skin_cancer/resolve/main/{path}", body)
        sha = hashlib.sha256(body).hexdigest()
        tree.append({"type": "file", "path": path, "size": len(body), "oid": "0" * 40,
                     "lfs": {"oid": sha, "size": len(body), "pointerSize": 134}})  # fmt: skip
        for r in chunk:
            counts[r["dx"]] = counts.get(r["dx"], 0) + 1
    tree.append({"type": "file", "path": "README.md", "size": 10, "oid": "1" * 40})
    m.put("https://huggingface.co/api/datasets/marmal88/skin_cancer/tree/main", json.dumps(tree).encode())
    big = "/m/huggingface.co/datasets/marmal88/skin_cancer/resolve/main/data/train-00000-of-00001.parquet"
    return source, big, counts, 6


BUILDERS: dict[str, Callable[[FileHost, DatasetSource], tuple[DatasetSource, str, dict[str, int], int]]] = {
    "ham10000": build_ham10000,
    "pad-ufes-20": build_pad,
    "isic2019": build_isic2019,
    "isic2020": build_isic2020,
    "fitzpatrick17k": build_fitzpatrick17k,
    "marmal88": build_marmal88,
}


def test_every_scriptable_catalogue_entry_has_a_builder_and_a_licence() -> None:
    entries = catalogue()
    assert set(BUILDERS) == {k for k, s in entries.items() if not s.manual}
    for source in entries.values():
        assert source.source_page.startswith("https://") and source.licence and source.attribution
        for f in source.files:
            assert f.sha256 is None or len(f.sha256) == 64


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_fetch_resumes_verifies_and_loads(name: str, mirror: FileHost, tmp_path: Path) -> None:
    source, big, counts, n_images = BUILDERS[name](mirror, catalogue()[name])
    # 1. The biggest file is cut half-way and no retry is allowed: a typed error, the partial file is kept.
    mirror.fail_next(big, "cut")
    dest = tmp_path / name
    with pytest.raises(DownloadError, match="run the same command again to resume"):
        fetch_dataset(source, dest=dest, mirror=mirror.base, quiet=True, retries=0)
    partial = list((dest / "downloads").rglob("*.part"))
    assert len(partial) == 1 and partial[0].stat().st_size > 0
    # 2. The rerun resumes from the partial file with an HTTP Range request, then everything loads.
    cut_at = partial[0].stat().st_size
    result = fetch_dataset(source, dest=dest, mirror=mirror.base, quiet=True, retries=0)
    assert [rng for path, rng in mirror.log if path == big] == [None, f"bytes={cut_at}-"]
    ds = load_dataset(result.load_path)
    assert len(ds) == n_images
    assert {c: n for c, n in ds.class_counts().items() if n} == counts
    for sample in ds:
        with Image.open(io.BytesIO(sample.read_bytes())) as img:
            img.verify()
    # Licence and sources are stored beside the data; every download's digest is recorded.
    assert source.attribution in (dest / "LICENCE.txt").read_text()
    record = json.loads((dest / "SOURCE.json").read_text())
    for f in record["files"]:
        on_disk = dest / "downloads" / f["name"]
        assert hashlib.sha256(on_disk.read_bytes()).hexdigest() == f["sha256"]
    # 3. A rerun downloads nothing again.
    before = len(mirror.log)
    fetch_dataset(source, dest=dest, mirror=mirror.base, quiet=True)
    listing_requests = sum(1 for path, _ in mirror.log[before:] if "/api/datasets/" in path)
    assert len(mirror.log) - before == listing_requests + (1 if name == "fitzpatrick17k" else 0)  # + the dead link
    # 4. A file that is not what the source published or pinned: a typed error naming both digests, nothing kept.
    original = mirror.files[big]
    mirror.files[big] = original + b"tampered"
    pins = {f["name"]: f["sha256"] for f in record["files"]}
    with pytest.raises(ChecksumMismatchError, match="expected") as err:
        fetch_dataset(source, dest=tmp_path / "again", mirror=mirror.base, quiet=True, expect_sha256=pins)
    assert not err.value.path.exists() and not list((tmp_path / "again").rglob("*.part"))
    if name == "fitzpatrick17k":
        assert "unreachable" in " ".join(result.notes) and (dest / "missing.txt").read_text().count("\n") == 1


def test_ham10000_layout_is_the_standard_one(mirror: FileHost, tmp_path: Path) -> None:
    source, _, _, _ = build_ham10000(mirror, catalogue()["ham10000"])
    result = fetch_dataset(source, dest=tmp_path / "ham", mirror=mirror.base, quiet=True)
    ds = load_dataset(result.load_path)
    assert ds.kind == "ham10000" and ds.name == "HAM10000"  # so the training-overlap warning recognises it
    assert all(s.lesion_id for s in ds) and (tmp_path / "ham" / "HAM10000_images_part_2").is_dir()


def test_pad_metadata_reaches_the_samples(mirror: FileHost, tmp_path: Path) -> None:
    source, _, _, _ = build_pad(mirror, catalogue()["pad-ufes-20"])
    ds = load_dataset(fetch_dataset(source, dest=tmp_path / "pad", mirror=mirror.base, quiet=True).load_path)
    by_id = {s.image_id: s for s in ds}
    first = by_id["PAT_0_100_500"]
    assert first.label == "mel" and first.metadata.sex == "male" and first.metadata.site == "arm"
    assert first.metadata.fitzpatrick is not None and first.lesion_id == "PAD_100"
    assert by_id["PAT_3_103_503"].label == "akiec" and by_id["PAT_3_103_503"].extra["source_label"] == "SCC"


def test_cli_fetch_prints_licence_and_progress_lines(
    mirror: FileHost, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    build_isic2020(mirror, catalogue()["isic2020"])
    monkeypatch.setenv("DERM_CLOUD_DATA_MIRROR", mirror.base)
    monkeypatch.setenv("DERM_CLOUD_CACHE", str(tmp_path / "cache"))
    assert main(["data", "fetch", "isic2020"]) == 0
    out = capsys.readouterr().out
    assert "Licence: CC BY-NC 4.0" in out and "Rotemberg" in out and "ready: load_dataset(" in out
    assert "no SHA-256 is published; recorded" in out
    assert len(load_dataset(tmp_path / "cache" / "datasets" / "isic2020" / "manifest.csv")) == 5
    assert main(["data", "fetch", "isic2020", "-q"]) == 0
    quiet = capsys.readouterr()
    assert "sha256" not in quiet.out and quiet.err == "" and "Licence:" in quiet.out  # the licence always shows
    assert main(["data", "list"]) == 0
    listing = capsys.readouterr().out
    assert "isic2020" in listing and "fetched" in listing and "manual download" in listing
    assert main(["data", "fetch", "ddi"]) == 2
    assert "Stanford AIMI" in capsys.readouterr().out
    assert main(["data", "fetch", "nope"]) == 1
    assert "unknown dataset 'nope'" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="cannot be downloaded by a script"):
        fetch_dataset("ddi")


def test_progress_bar_in_a_terminal_plain_lines_otherwise(mirror: FileHost, tmp_path: Path) -> None:
    plain = io.StringIO()
    p = Progress("x.zip", 4_000_000, interval=0.0, stream=plain)
    p.update(1_000_000)
    p.update(1_000_000)
    assert plain.getvalue().count("\n") == 2 and "x.zip: 2.0 MB / 4.0 MB (50%), ETA" in plain.getvalue()

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    term = Terminal()
    bar = Progress("x.zip", 4_000_000, interval=0.0, stream=term)
    bar.update(2_000_000)
    bar.close()
    assert "x.zip" in term.getvalue() and "%" in term.getvalue() and "ETA" not in term.getvalue()  # tqdm's bar
    quiet = io.StringIO()
    Progress("x.zip", 10, quiet=True, interval=0.0, stream=quiet).update(5)
    assert quiet.getvalue() == ""
    # A cut connection with retries left is resumed inside one call.
    path = mirror.put("https://example.org/f.bin", bytes(range(256)) * 400)
    mirror.fail_next(path, "cut")
    got = download(mirror_url("https://example.org/f.bin", mirror.base), tmp_path / "f.bin", retries=2, quiet=True)
    assert got.size == 102400 and (tmp_path / "f.bin").read_bytes() == mirror.files[path]
    assert [rng is not None for p_, rng in mirror.log if p_ == path] == [False, True]
    with pytest.raises(DownloadError, match="HTTP 404"):
        download(f"{mirror.base}/nowhere", tmp_path / "g.bin", quiet=True)
