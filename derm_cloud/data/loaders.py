"""`load_dataset`: one entry point for an image folder, a CSV manifest, the HAM10000 layout and parquet.

Layouts, detected from the path (`kind=` overrides detection):

* `folder`: a folder of images (searched recursively), unlabelled; image id = file stem.
* `csv`: a manifest with a path column (`file`/`path`/`image`...) relative to the CSV, a label column
  (`label`/`dx`), and optional `age`, `sex`, `site`/`localization`, `fitzpatrick`/
  `fitzpatrick_scale`, `lesion_id`, `dx_type`, `split`. ISIC-style one-hot label columns (`MEL`,
  `NV` ... all seven) are accepted instead of a label column.
* `ham10000`: `HAM10000_metadata.csv` beside `HAM10000_images_part_1/`, `HAM10000_images_part_2/` or
  `images/`.
* `parquet`: Hugging Face parquet shards such as `marmal88/skin_cancer` (`data/train-*.parquet`,
  `validation-*`, `test-*`; columns `image{bytes,path}`, `image_id`, `lesion_id`, `dx` ...).
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from derm_cloud.data.dataset import Dataset, Sample
from derm_cloud.data.image_files import IMAGE_SUFFIXES, _image_files
from derm_cloud.data.manifests import HAM_METADATA as HAM_METADATA
from derm_cloud.data.manifests import _load_csv, _load_ham
from derm_cloud.errors import ConfigError

__all__ = ["IMAGE_SUFFIXES", "KINDS", "detect_kind", "load_dataset"]

KINDS = ("folder", "csv", "ham10000", "parquet")
_ALIASES = {"images": "folder", "manifest": "csv", "ham": "ham10000", "marmal88": "parquet", "hf": "parquet"}
_OPTIONS = ("kind", "name", "label_map", "split", "on_missing", "dedupe", "images_dir", "check_files")


def load_dataset(
    source: str | os.PathLike[str] | Mapping[str, Any],
    *,
    kind: str | None = None,
    name: str | None = None,
    label_map: Mapping[str, str] | None = None,
    split: str | Sequence[str] | None = None,
    on_missing: str = "error",
    dedupe: bool | None = None,
    images_dir: str | os.PathLike[str] | None = None,
    check_files: bool = True,
) -> Dataset:
    """Load a dataset from a folder, CSV manifest, HAM10000 layout or parquet files.

    Args:
        source: a path, or a dict `{"path": ..., **options}` (as in a comparison config).
        kind: `"folder"`, `"csv"`, `"ham10000"` or `"parquet"`; detected when `None`.
        name: dataset name for reports (default from the path: `"ham10000/dev"`, `"HAM10000"` ...).
        label_map: `{dataset label: canonical code}` for labels not known under any standard name.
        split: parquet split(s) to load (`"test"`), or the value(s) of a CSV `split` column.
        on_missing: `"error"` (default) or `"skip"` rows whose image file is missing.
        dedupe: drop repeated image ids, keeping the first (default: on for parquet, whose public copies repeat
            rows; off elsewhere, where a duplicate is an error).
        images_dir: where to find images named by id when a manifest has no path column.
        check_files: check that every image file exists while loading (one `stat` per image).

    Raises:
        ConfigError: the source is missing, its layout is not recognised, or a required column or file is
            missing; the message names it and the fix.
        MissingDependencyError: parquet needs `pyarrow` (`pip install 'derm-cloud[compare]'`).

    Example:
        >>> ds = load_dataset("../shared/data/ham10000/dev.csv")  # doctest: +SKIP
        >>> ds.name, len(ds), ds.class_counts()["mel"]  # doctest: +SKIP
        ('ham10000/dev', 1321, 304)
    """
    if isinstance(source, Mapping):
        options = dict(source)
        path_value = options.pop("path", None) or options.pop("source", None)
        if path_value is None:
            raise ConfigError("dataset dict needs a 'path' key (a folder, CSV or parquet file)")
        unknown = sorted(set(options) - set(_OPTIONS))
        if unknown:
            hint = difflib.get_close_matches(unknown[0], _OPTIONS, n=1)
            raise ConfigError(
                f"unknown dataset option {unknown[0]!r}"
                + (f" (did you mean {hint[0]!r}?)" if hint else "")
                + f"; options are {', '.join(_OPTIONS)}"
            )
        explicit: dict[str, Any] = {
            "kind": kind,
            "name": name,
            "label_map": label_map,
            "split": split,
            "dedupe": dedupe,
            "images_dir": images_dir,
        }
        if on_missing != "error":
            explicit["on_missing"] = on_missing
        if not check_files:
            explicit["check_files"] = False
        merged = {**options, **{k: v for k, v in explicit.items() if v is not None}}
        return load_dataset(path_value, **merged)
    if on_missing not in ("error", "skip"):
        raise ConfigError(f"on_missing must be 'error' or 'skip', got {on_missing!r}")
    path = Path(source).expanduser()
    if isinstance(source, str) and "://" in source:
        raise ConfigError(
            f"dataset source {source!r} is a URI; download the dataset and pass the local folder or file "
            "(e.g. `huggingface-cli download marmal88/skin_cancer --repo-type dataset --local-dir ...`)"
        )
    resolved = _normalise_kind(kind) if kind else detect_kind(path)
    if not path.exists():
        raise ConfigError(f"dataset source {str(path)!r} does not exist; check the path")
    if resolved != "parquet" and split is not None and resolved != "csv":
        raise ConfigError(f"split= applies to parquet files and CSV manifests with a split column, not {resolved}")
    common: dict[str, Any] = {"label_map": label_map, "on_missing": on_missing, "check_files": check_files}
    if resolved == "folder":
        if not path.is_dir():
            raise ConfigError(f"kind='folder' needs a folder of images, got the file {str(path)!r}")
        return _load_folder(path, name=name)
    if resolved == "csv":
        return _load_csv(
            path,
            name=name,
            split=split,
            dedupe=bool(dedupe),
            images_dir=Path(images_dir) if images_dir else None,
            **common,
        )
    if resolved == "ham10000":
        return _load_ham(path, name=name, dedupe=bool(dedupe), images_dir=images_dir, **common)
    from derm_cloud.data.parquet import load_parquet

    return load_parquet(path, name=name, split=split, dedupe=True if dedupe is None else dedupe, label_map=label_map)


def _normalise_kind(kind: str) -> str:
    k = _ALIASES.get(kind.strip().lower(), kind.strip().lower())
    if k not in KINDS:
        raise ConfigError(f"unknown dataset kind {kind!r}; use one of {', '.join(KINDS)}")
    return k


def detect_kind(path: Path) -> str:
    """Guess the layout of `path` (see the module docstring).

    Raises:
        ConfigError: the path does not exist or matches no layout.
    """
    if not path.exists():
        raise ConfigError(f"dataset source {str(path)!r} does not exist; check the path")
    if path.is_file():
        suffix = path.suffix.lower()
        if path.name.lower() == HAM_METADATA.lower():
            return "ham10000"
        if suffix == ".csv":
            return "csv"
        if suffix == ".parquet":
            return "parquet"
        raise ConfigError(
            f"cannot load a dataset from {path.name!r}: expected a .csv manifest, a .parquet file, "
            f"{HAM_METADATA} or a folder of images"
        )
    if (path / HAM_METADATA).is_file():
        return "ham10000"
    if any(path.glob("*.parquet")) or any(path.glob("*/*.parquet")):
        return "parquet"
    if _image_files(path, limit=1):
        return "folder"
    csvs = sorted(p.name for p in path.glob("*.csv"))
    raise ConfigError(
        f"no images, parquet files or {HAM_METADATA} in {str(path)!r}"
        + (f"; to use a manifest, pass the CSV file itself ({', '.join(csvs[:3])})" if csvs else "")
    )


def _load_folder(root: Path, *, name: str | None) -> Dataset:
    files = _image_files(root)
    if not files:
        raise ConfigError(f"no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) in {str(root)!r}")
    stems: dict[str, int] = {}
    for f in files:
        stems[f.stem] = stems.get(f.stem, 0) + 1
    samples = []
    for f in files:
        # File stems are the natural ids (ISIC_0024306.jpg); only clashing stems fall back to relative paths.
        image_id = f.stem if stems[f.stem] == 1 else f.relative_to(root).with_suffix("").as_posix()
        samples.append(Sample(image_id, f))
    return Dataset(name or root.name, samples, kind="folder", root=root)
