"""Turn each source's own files into a layout `load_dataset` reads.

HAM10000 and the parquet shards are read as they come (HAM10000 also gets `dev.csv`, a development split
derived from its metadata: `derm_cloud.data.dev_split`). The others get a `manifest.csv` (`file` relative to
the manifest, `image_id`, `label` as a HAM10000 code or empty, `age`, `sex`, `site`, `fitzpatrick`,
`lesion_id`, plus the source's own diagnosis) written from the source's metadata; the label mappings are
stated in the catalogue's `note` of each dataset.
"""

from __future__ import annotations

import csv
import shutil
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from derm_cloud.errors import ConfigError, DermCloudError

__all__ = ["MANIFEST_FIELDS", "prepare"]

MANIFEST_FIELDS = ("file", "image_id", "label", "age", "sex", "site", "fitzpatrick", "lesion_id", "source_label")
_IMAGES = (".jpg", ".jpeg", ".png")

PAD_LABELS = {"ACK": "akiec", "BCC": "bcc", "MEL": "mel", "NEV": "nv", "SEK": "bkl", "SCC": "akiec"}
ISIC2019_LABELS = {"MEL": "mel", "NV": "nv", "BCC": "bcc", "AK": "akiec", "SCC": "akiec", "BKL": "bkl",
                   "DF": "df", "VASC": "vasc"}  # fmt: skip
ISIC2020_LABELS = {
    "melanoma": "mel",
    "nevus": "nv",
    "atypical melanocytic proliferation": "nv",
    "seborrheic keratosis": "bkl",
    "lentigo nos": "bkl",
    "solar lentigo": "bkl",
    "lichenoid keratosis": "bkl",
}
FITZPATRICK17K_LABELS = {
    "melanoma": "mel",
    "basal cell carcinoma": "bcc",
    "actinic keratosis": "akiec",
    "squamous cell carcinoma": "akiec",
    "seborrheic keratosis": "bkl",
    "dermatofibroma": "df",
    "pyogenic granuloma": "vasc",
    "congenital nevus": "nv",
    "halo nevus": "nv",
}


def prepare(
    layout: str,
    folder: Path,
    *,
    mirror: str | None = None,
    quiet: bool = False,
    limit: int | None = None,
    say: Callable[[str], None] = print,
) -> list[str]:
    """Lay out a fetched dataset in `folder`; returns notes for the user.

    Raises:
        ConfigError: an expected file is missing from the download (names it), or an unknown layout.
    """
    downloads = folder / "downloads"
    if layout == "ham10000":
        # A copy, not a move: the download stays where a rerun finds it complete.
        shutil.copyfile(_need(downloads / "HAM10000_metadata.csv"), folder / "HAM10000_metadata.csv")
        from derm_cloud.data.dev_split import write_dev_split

        written = write_dev_split(folder)
        if written is None:
            return []
        return [
            f"dev.csv: a lesion-level development split of {written[1]} images (one per lesion), derived from the "
            "metadata by a fixed rule (SHA-256 of the lesion id): what `derm-cloud compare` and the tests use"
        ]
    if layout == "parquet":
        return []  # the shards are read where they were downloaded
    if layout == "pad-ufes-20":
        return _write(folder, _pad_rows(folder, downloads))
    if layout == "isic2019":
        return _write(folder, _isic2019_rows(folder, downloads))
    if layout == "isic2020":
        return _write(folder, _isic2020_rows(folder, downloads))
    if layout == "fitzpatrick17k":
        return _fitzpatrick17k(folder, downloads, mirror=mirror, quiet=quiet, limit=limit, say=say)
    raise ConfigError(f"unknown dataset layout {layout!r} in the catalogue")


def _need(path: Path) -> Path:
    if not path.is_file():
        raise ConfigError(f"{path.name} is missing from the download in {path.parent}; fetch the dataset again")
    return path


def _read(path: Path) -> list[dict[str, str]]:
    with _need(path).open(newline="", encoding="utf-8-sig") as fh:
        return list(csv.DictReader(fh))


def _index(folder: Path) -> dict[str, Path]:
    """Image files under `folder` by stem (every source names its images by id)."""
    return {p.stem: p for p in folder.rglob("*") if p.suffix.lower() in _IMAGES and "downloads" not in p.parts}


def _write(folder: Path, rows: Iterable[dict[str, Any]]) -> list[str]:
    rows = list(rows)
    with (folder / "manifest.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, MANIFEST_FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    unlabelled = sum(1 for r in rows if not r.get("label"))
    return [f"{len(rows)} images in manifest.csv" + (f" ({unlabelled} without a HAM10000 class)" if unlabelled else "")]


def _row(folder: Path, image: Path, image_id: str, label: str | None, **fields: Any) -> dict[str, Any]:
    return {"file": image.relative_to(folder).as_posix(), "image_id": image_id, "label": label or "", **fields}


def _pad_rows(folder: Path, downloads: Path) -> Iterable[dict[str, Any]]:
    images = _index(folder / "images")
    for r in _read(downloads / "metadata.csv"):
        stem = Path(r["img_id"]).stem
        if stem not in images:
            continue
        fitz = r.get("fitspatrick", "")  # sic: the column is spelled so in PAD-UFES-20
        yield _row(
            folder,
            images[stem],
            stem,
            PAD_LABELS.get(r.get("diagnostic", "").strip().upper()),
            age=r.get("age", ""),
            sex=r.get("gender", "").strip().lower(),
            site=r.get("region", "").strip().lower(),
            fitzpatrick=str(int(float(fitz))) if fitz.strip() not in ("", "nan", "NaN") else "",
            lesion_id=f"PAD_{r['lesion_id']}" if r.get("lesion_id") else "",
            source_label=r.get("diagnostic", ""),
        )


def _isic2019_rows(folder: Path, downloads: Path) -> Iterable[dict[str, Any]]:
    images = _index(folder)
    meta = {r["image"]: r for r in _read(downloads / "ISIC_2019_Training_Metadata.csv")}
    for r in _read(downloads / "ISIC_2019_Training_GroundTruth.csv"):
        if r["image"] not in images:
            continue
        hot = [c for c in (*ISIC2019_LABELS, "UNK") if float(r.get(c) or 0) > 0.5]
        m = meta.get(r["image"], {})
        yield _row(
            folder,
            images[r["image"]],
            r["image"],
            ISIC2019_LABELS.get(hot[0]) if hot else None,
            age=m.get("age_approx", ""),
            sex=m.get("sex", ""),
            site=m.get("anatom_site_general", ""),
            lesion_id=m.get("lesion_id", ""),
            source_label=hot[0] if hot else "",
        )


def _isic2020_rows(folder: Path, downloads: Path) -> Iterable[dict[str, Any]]:
    images = _index(folder)
    for r in _read(downloads / "ISIC_2020_Training_GroundTruth_v2.csv"):
        if r["image_name"] not in images:
            continue
        yield _row(
            folder,
            images[r["image_name"]],
            r["image_name"],
            ISIC2020_LABELS.get(r.get("diagnosis", "").strip().lower()),
            age=r.get("age_approx", ""),
            sex=r.get("sex", ""),
            site=r.get("anatom_site_general_challenge", ""),
            lesion_id=r.get("lesion_id", ""),
            source_label=r.get("diagnosis", ""),
        )


def _fitzpatrick17k(
    folder: Path, downloads: Path, *, mirror: str | None, quiet: bool, limit: int | None, say: Callable[[str], None]
) -> list[str]:
    """Fetch each image from its URL (already-fetched ones are kept), then write the manifest."""
    from derm_cloud.data.download import download, mirror_url

    rows = [r for r in _read(downloads / "fitzpatrick17k.csv") if r.get("url", "").startswith("http")]
    rows = rows[:limit] if limit else rows
    images_dir = folder / "images"
    missing: list[str] = []
    out: list[dict[str, Any]] = []
    last = time.monotonic()
    for i, r in enumerate(rows, 1):
        suffix = Path(r["url"].split("?")[0]).suffix.lower()
        image = images_dir / f"{r['md5hash']}{suffix if suffix in _IMAGES else '.jpg'}"
        if not image.is_file():
            try:
                download(mirror_url(r["url"], mirror), image, retries=1, quiet=True)
            except DermCloudError as exc:  # one dead link must not stop 16,000 others
                missing.append(f"{r['md5hash']}\t{r['url']}\t{exc}")
                continue
        fitz = r.get("fitzpatrick_scale", "")
        out.append(
            _row(
                folder,
                image,
                r["md5hash"],
                FITZPATRICK17K_LABELS.get(r.get("label", "").strip().lower()),
                fitzpatrick=fitz if fitz.strip() not in ("", "-1") else "",
                source_label=r.get("label", ""),
            )
        )
        if not quiet and (time.monotonic() - last >= 10 or i == len(rows)):
            last = time.monotonic()
            print(f"fitzpatrick17k images: {i}/{len(rows)} ({len(missing)} unreachable)", file=sys.stderr, flush=True)
    (folder / "missing.txt").write_text("".join(f"{m}\n" for m in missing), encoding="utf-8")
    notes = _write(folder, out)
    if missing:
        notes.append(f"{len(missing)} image URLs were unreachable (listed in missing.txt); rerun to retry them")
    return notes
