"""``load_dataset``: one entry point for an image folder, a CSV manifest, the HAM10000 layout and parquet.

Layouts, detected from the path (``kind=`` overrides detection):

* ``folder``: a folder of images (searched recursively), unlabelled; image id = file stem.
* ``csv``: a manifest with a path column (``file``/``path``/``image``...) relative to the CSV, a label column
  (``label``/``dx``), and optional ``age``, ``sex``, ``site``/``localization``, ``fitzpatrick``/
  ``fitzpatrick_scale``, ``lesion_id``, ``dx_type``, ``split``. ISIC-style one-hot label columns (``MEL``,
  ``NV`` ... all seven) are accepted instead of a label column.
* ``ham10000``: ``HAM10000_metadata.csv`` beside ``HAM10000_images_part_1/``, ``HAM10000_images_part_2/`` or
  ``images/``.
* ``parquet``: Hugging Face parquet shards such as ``marmal88/skin_cancer`` (``data/train-*.parquet``,
  ``validation-*``, ``test-*``; columns ``image{bytes,path}``, ``image_id``, ``lesion_id``, ``dx`` ...).
"""

from __future__ import annotations

import csv
import difflib
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from derm_cloud.data.dataset import Dataset, Sample
from derm_cloud.data.fields import canonical_label, find_column, metadata_from_row
from derm_cloud.errors import ConfigError, DermCloudError, InvalidImageError

__all__ = ["IMAGE_SUFFIXES", "KINDS", "detect_kind", "load_dataset"]

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif"})
KINDS = ("folder", "csv", "ham10000", "parquet")
_ALIASES = {"images": "folder", "manifest": "csv", "ham": "ham10000", "marmal88": "parquet", "hf": "parquet"}
_OPTIONS = ("kind", "name", "label_map", "split", "on_missing", "dedupe", "images_dir", "check_files")
HAM_METADATA = "HAM10000_metadata.csv"


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
        source: a path, or a dict ``{"path": ..., **options}`` (as in a comparison config).
        kind: ``"folder"``, ``"csv"``, ``"ham10000"`` or ``"parquet"``; detected when ``None``.
        name: dataset name for reports (default from the path: ``"ham10000/dev"``, ``"HAM10000"`` ...).
        label_map: ``{dataset label: canonical code}`` for labels not known under any standard name.
        split: parquet split(s) to load (``"test"``), or the value(s) of a CSV ``split`` column.
        on_missing: ``"error"`` (default) or ``"skip"`` rows whose image file is missing.
        dedupe: drop repeated image ids, keeping the first (default: on for parquet, whose public copies repeat
            rows; off elsewhere, where a duplicate is an error).
        images_dir: where to find images named by id when a manifest has no path column.
        check_files: check that every image file exists while loading (one ``stat`` per image).

    Raises:
        ConfigError: the source is missing, its layout is not recognised, or a required column or file is
            missing; the message names it and the fix.
        MissingDependencyError: parquet needs ``pyarrow`` (``pip install 'derm-cloud[compare]'``).

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
    """Guess the layout of ``path`` (see the module docstring).

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


def _image_files(root: Path, limit: int | None = None) -> list[Path]:
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for fn in sorted(filenames):
            if Path(fn).suffix.lower() in IMAGE_SUFFIXES and not fn.startswith("."):
                found.append(Path(dirpath) / fn)
                if limit is not None and len(found) >= limit:
                    return found
    return found


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


def _index_images(folders: Iterable[Path]) -> dict[str, Path]:
    index: dict[str, Path] = {}
    for folder in folders:
        if folder.is_dir():
            for f in _image_files(folder):
                index.setdefault(f.stem, f)
    return index


def _read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            rows = list(reader)
            header = list(reader.fieldnames or [])
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ConfigError(f"cannot read CSV {str(path)!r}: {exc}") from exc
    if not header:
        raise ConfigError(f"{str(path)!r} is empty; a manifest needs a header row")
    return header, rows


def _one_hot_columns(header: Sequence[str]) -> dict[str, str] | None:
    from derm_cloud.taxonomy import CLASS_CODES

    by_lower = {h.strip().lower(): h for h in header}
    if all(code in by_lower for code in CLASS_CODES):
        return {code: by_lower[code] for code in CLASS_CODES}
    return None


def _load_csv(
    path: Path,
    *,
    name: str | None,
    label_map: Mapping[str, str] | None,
    split: str | Sequence[str] | None,
    on_missing: str,
    dedupe: bool,
    images_dir: Path | None,
    check_files: bool,
) -> Dataset:
    header, rows = _read_csv(path)
    base = path.parent
    path_col = find_column(header, "path")
    id_col = find_column(header, "image_id")
    if path_col is None and id_col is None:
        raise ConfigError(
            f"{path.name}: no image column; add a 'file' (or 'path'/'image') column with paths relative to the "
            f"CSV, or an 'image_id' column plus images_dir=. Columns found: {', '.join(header)}"
        )
    label_col = find_column(header, "label")
    one_hot = None if label_col else _one_hot_columns(header)
    if split is not None:
        split_col = find_column(header, "split")
        if split_col is None:
            raise ConfigError(f"{path.name}: split={split!r} was given but the manifest has no 'split' column")
        wanted = {split} if isinstance(split, str) else set(split)
        rows = [r for r in rows if r.get(split_col, "") in wanted]
    index: dict[str, Path] | None = None

    def locate(value: str) -> Path | None:
        nonlocal index
        candidate = Path(value).expanduser()
        if not candidate.is_absolute():
            candidate = (images_dir or base) / candidate
        if candidate.suffix.lower() in IMAGE_SUFFIXES and (not check_files or candidate.is_file()):
            return candidate
        if index is None:  # ids without a suffix (ISIC ground-truth CSVs): look them up by stem
            index = _index_images([images_dir] if images_dir else [base, base / "images"])
        return index.get(Path(value).stem if candidate.suffix.lower() in IMAGE_SUFFIXES else Path(value).name)

    return _build(
        path,
        rows,
        header,
        name=name or f"{base.name}/{path.stem}",
        kind="csv",
        locate=locate,
        path_col=path_col,
        id_col=id_col,
        label_col=label_col,
        one_hot=one_hot,
        label_map=label_map,
        on_missing=on_missing,
        dedupe=dedupe,
        check_files=check_files,
    )


def _load_ham(
    path: Path,
    *,
    name: str | None,
    label_map: Mapping[str, str] | None,
    on_missing: str,
    dedupe: bool,
    images_dir: str | os.PathLike[str] | None,
    check_files: bool,
) -> Dataset:
    root = path.parent if path.is_file() else path
    meta = path if path.is_file() else root / HAM_METADATA
    if not meta.is_file():
        raise ConfigError(f"{str(root)!r} has no {HAM_METADATA}; the HAM10000 layout needs it beside the image folders")
    if images_dir:
        folders = [Path(images_dir)]
    else:
        folders = sorted(
            d
            for d in root.iterdir()
            if d.is_dir() and (d.name.lower().startswith("ham10000_images") or d.name == "images")
        )
    if not folders:
        raise ConfigError(
            f"no image folder beside {HAM_METADATA} in {str(root)!r}: expected HAM10000_images_part_1/ and "
            "HAM10000_images_part_2/ (or images/), or pass images_dir="
        )
    header, rows = _read_csv(meta)
    for required in ("image_id", "label"):
        if find_column(header, required) is None:
            raise ConfigError(f"{meta.name} has no {required!r} column (HAM10000 uses image_id and dx)")
    index = _index_images(folders)
    return _build(
        meta,
        rows,
        header,
        name=name or "HAM10000",
        kind="ham10000",
        locate=lambda value: index.get(value),
        path_col=None,
        id_col=find_column(header, "image_id"),
        label_col=find_column(header, "label"),
        one_hot=None,
        label_map=label_map,
        on_missing=on_missing,
        dedupe=dedupe,
        check_files=check_files,
        root=root,
        where=", ".join(f.name + "/" for f in folders),
    )


def _build(
    manifest: Path,
    rows: list[dict[str, str]],
    header: Sequence[str],
    *,
    name: str,
    kind: str,
    locate: Any,
    path_col: str | None,
    id_col: str | None,
    label_col: str | None,
    one_hot: dict[str, str] | None,
    label_map: Mapping[str, str] | None,
    on_missing: str,
    dedupe: bool,
    check_files: bool = True,
    root: Path | None = None,
    where: str | None = None,
) -> Dataset:
    fields = ("age", "sex", "site", "fitzpatrick")
    meta_cols = {f: find_column(header, f) for f in fields}
    lesion_col, dx_type_col = find_column(header, "lesion_id"), find_column(header, "dx_type")
    used = {c for c in (path_col, id_col, label_col, lesion_col, dx_type_col, *meta_cols.values()) if c}
    used |= set((one_hot or {}).values())
    samples: list[Sample] = []
    missing: list[str] = []
    seen: set[str] = set()
    dropped = 0
    for line, row in enumerate(rows, start=2):
        ref = row.get(path_col or "") or row.get(id_col or "") or ""
        if not ref.strip():
            raise ConfigError(f"{manifest.name}:{line}: empty image reference in column {path_col or id_col!r}")
        image_id = (row.get(id_col) if id_col else None) or Path(ref).stem
        if image_id in seen and dedupe:
            dropped += 1
            continue
        seen.add(image_id)
        location = locate(ref.strip())
        if location is None or (check_files and not Path(location).is_file()):
            missing.append(ref)
            continue
        try:
            if one_hot is not None:
                scores = {code: float(row[col] or 0) for code, col in one_hot.items()}
                label = max(scores, key=lambda c: scores[c]) if max(scores.values()) > 0 else None
            else:
                label = canonical_label(row.get(label_col) if label_col else None, label_map)
            metadata = metadata_from_row(row, meta_cols)
        except (DermCloudError, ValueError) as exc:
            raise ConfigError(f"{manifest.name}:{line} ({image_id}): {exc}") from exc
        samples.append(
            Sample(
                image_id=image_id,
                source=Path(location),
                label=label,
                metadata=metadata,
                lesion_id=(row.get(lesion_col) or None) if lesion_col else None,
                dx_type=(row.get(dx_type_col) or None) if dx_type_col else None,
                extra={k: v for k, v in row.items() if k not in used and k is not None},
            )
        )
    if missing and on_missing == "error":
        shown = ", ".join(repr(m) for m in missing[:3])
        raise ConfigError(
            f"{manifest.name}: {len(missing)} of {len(rows)} images not found ({shown}"
            + (" ..." if len(missing) > 3 else "")
            + f") {'in ' + where if where else 'relative to ' + str(manifest.parent)}; fix the paths, or pass "
            "on_missing='skip' to evaluate on the images that exist"
        )
    if not samples:
        raise InvalidImageError(f"{manifest.name}: no usable rows (all {len(rows)} images missing or filtered out)")
    info = {"manifest": str(manifest), "rows": len(rows), "missing_images_skipped": len(missing)}
    if dedupe:
        info["duplicates_dropped"] = dropped
    return Dataset(name, samples, kind=kind, root=root or manifest, info=info)
