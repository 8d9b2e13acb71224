"""`dev.csv` for a HAM10000 folder: a deterministic, lesion-level development split derived from its metadata.

The project develops against a development split of HAM10000 (`ham10000/dev.csv`: one image per lesion, no
lesion shared with the rest, rare classes enriched). A fetched HAM10000 (Dataverse layout: `HAM10000_metadata.csv`
beside `HAM10000_images_part_1/` and `_part_2/`) has no such file, so `write_dev_split` derives one,
the same way on every machine and for every copy:

* a lesion is in the split when the SHA-256 of `"derm-cloud dev split v1|" + lesion_id`, read as a fraction of
  2**64, is below its class's share: one half of the lesions of every class, one in twenty of the `nv` lesions
  (`nv` is 67% of HAM10000; at one half it would swamp the rarer classes);
* of each chosen lesion, the image with the smallest id is kept.

On the 10,015-image release that is 1,350 images of 1,350 lesions (akiec 132, bcc 178, bkl 365, df 36, mel 307,
nv 279, vasc 53): a mix close to the project's own split, not the natural prevalence. The rule depends only on
lesion ids, never on a random generator or a library version, and a lesion that is in the split on one machine
is in it on every machine.

Example:
    >>> in_dev_split("HAM_0000005", "akiec"), in_dev_split("HAM_0000005", "nv")
    (True, False)
"""

from __future__ import annotations

import csv
import hashlib
import os
from pathlib import Path

__all__ = ["DEV_COLUMNS", "DEV_SHARES", "in_dev_split", "write_dev_split"]

_SALT = "derm-cloud dev split v1|"
#: Share of each class's lesions in the split (classes not listed: one half).
DEV_SHARES = {"nv": 0.05}
_DEFAULT_SHARE = 0.5
#: The columns of ``dev.csv`` (those of the project's split): HAM10000's metadata, then the image file and its size.
DEV_COLUMNS = (
    "image_id", "lesion_id", "dx", "dx_type", "age", "sex", "localization", "file", "width", "height", "bytes",
    "variant",
)  # fmt: skip
_METADATA = "HAM10000_metadata.csv"
_IMAGES = (".jpg", ".jpeg", ".png")


def in_dev_split(lesion_id: str, dx: str) -> bool:
    """Whether a lesion belongs to the development split (see the module docstring for the rule)."""
    digest = hashlib.sha256((_SALT + lesion_id).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < DEV_SHARES.get(dx, _DEFAULT_SHARE)


def write_dev_split(folder: Path, out: Path | None = None) -> tuple[Path, int] | None:
    """Write the development split of the HAM10000 layout in `folder` as a manifest.

    Args:
        folder: holds `HAM10000_metadata.csv` and the image folders (`HAM10000_images_part_*/` or
            `images/`).
        out: where to write (default `folder/dev.csv`); its `file` column is relative to `out`'s folder.

    Returns:
        `(manifest path, images in it)`, or `None` when `folder` has no metadata or no chosen image is on
        disk. Lesions whose images are all missing (a partial copy) are left out.
    """
    meta = folder / _METADATA
    if not meta.is_file():
        return None
    images = {
        p.stem: p
        for sub in sorted(folder.iterdir())
        if sub.is_dir() and (sub.name.lower().startswith("ham10000_images") or sub.name == "images")
        for p in sub.rglob("*")
        if p.suffix.lower() in _IMAGES
    }
    with meta.open(newline="", encoding="utf-8-sig") as fh:
        rows = list(csv.DictReader(fh))
    chosen: dict[str, dict[str, str]] = {}
    for row in sorted(rows, key=lambda r: r.get("image_id", "")):
        lesion, dx = row.get("lesion_id", ""), row.get("dx", "")
        if lesion and lesion not in chosen and row.get("image_id") in images and in_dev_split(lesion, dx):
            chosen[lesion] = row
    if not chosen:
        return None
    out = out or folder / "dev.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    with partial.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, DEV_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in sorted(chosen.values(), key=lambda r: r["image_id"]):
            image = images[row["image_id"]]
            width, height = _size(image)
            writer.writerow({
                **row,
                "file": Path(os.path.relpath(image, out.parent)).as_posix(),
                "width": width, "height": height, "bytes": image.stat().st_size,
                "variant": f"original-{width}x{height}",
            })  # fmt: skip
    partial.replace(out)  # atomic: a half-written split never looks finished
    return out, len(chosen)


def _size(image: Path) -> tuple[int, int]:
    from PIL import Image

    with Image.open(image) as img:  # reads the header only
        return img.size
