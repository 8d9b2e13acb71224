"""CSV manifests and the HAM10000 layout: rows to samples, with labels, metadata and image paths checked.

`load_dataset` in `derm_cloud.data.loaders` is the entry point; this module reads the two layouts that are
tables of image references.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from derm_cloud.data.dataset import Dataset, Sample
from derm_cloud.data.fields import canonical_label, find_column, metadata_from_row
from derm_cloud.data.image_files import IMAGE_SUFFIXES, _index_images
from derm_cloud.errors import ConfigError, DermCloudError, InvalidImageError

HAM_METADATA = "HAM10000_metadata.csv"


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
