"""One table of rows for the governance tools, whatever the dataset came from.

The audit must see a dataset's rows *as stored*: `derm_cloud.data.Dataset` refuses duplicate image
ids (rightly, for evaluation), but an audit exists to find them. So CSV and parquet manifests are read here
row by row; a `Dataset` or a pandas `DataFrame` is accepted too. Every source becomes a
`DataFrame` with the columns in `COLUMNS` plus `ref` (something `read_image` can read, or
`None` when the image is not available locally: HAM10000_metadata.csv has no file column).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from derm_cloud.errors import ConfigError, MissingDependencyError

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["AGE_BANDS", "COLUMNS", "Table", "age_band", "load_table", "pandas", "read_image"]

COLUMNS = ("image_id", "lesion_id", "label", "dx_type", "age", "sex", "site", "fitzpatrick", "split")

#: Age bands used by the validation-set builder and the audit (years, lower bound inclusive).
AGE_BANDS: tuple[tuple[str, float, float], ...] = (
    ("<30", 0, 30),
    ("30-44", 30, 45),
    ("45-59", 45, 60),
    ("60-74", 60, 75),
    ("75+", 75, 200),
)

_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
_HAM_IMAGE_DIRS = ("images", "HAM10000_images_part_1", "HAM10000_images_part_2", "HAM10000_images", ".")


def pandas() -> Any:
    """Import pandas or say which extra installs it."""
    try:
        import pandas as pd
    except ImportError as exc:  # pragma: no cover - CI installs the extra
        raise MissingDependencyError(
            "dataset audits and validation sets need pandas; run: pip install 'derm-cloud[compare]'"
        ) from exc
    return pd


def age_band(age: float | None) -> str:
    """`47.0` -> `"45-59"`; missing -> `"unknown"`."""
    if age is None or age != age:  # NaN check without importing math for a hot loop
        return "unknown"
    for name, low, high in AGE_BANDS:
        if low <= age < high:
            return name
    return "unknown"


@dataclass
class Table:
    """A dataset as rows, with where it came from.

    Attributes:
        name: a short name for reports.
        source: the path or description it was read from.
        frame: one row per stored row (duplicates kept), columns `COLUMNS` + `ref` + `extra`.
        info: loading facts (raw row count, columns found, splits, loader notes).
        dataset: the `Dataset` it came from, when it came from one.
    """

    name: str
    source: str
    frame: pd.DataFrame
    info: dict[str, Any] = field(default_factory=dict)
    dataset: Any = None

    def images_available(self) -> int:
        return int(self.frame["ref"].notna().sum())


def load_table(source: Any, *, name: str | None = None, resolve_images: bool = True) -> Table:
    """Read a dataset into a `Table`.

    Args:
        source: a `Dataset`, a pandas `DataFrame` (HAM10000 or manifest columns), a
            CSV manifest / metadata file, a parquet file or a folder of parquet files (marmal88 layout), or
            anything `derm_cloud.data.load_dataset` reads.
        name: name for reports (default: derived from the source).
        resolve_images: look for image files next to a CSV that has no file column (HAM10000 layout).

    Raises:
        ConfigError: the source does not exist or has no image id / label columns.
    """
    pd = pandas()
    if isinstance(source, Table):
        return source
    if isinstance(source, pd.DataFrame):
        return _from_frame(source, name or "dataframe", "dataframe", None, resolve_images=False)
    if hasattr(source, "samples") and hasattr(source, "name"):
        return _from_dataset(source, name)
    path = Path(os.fspath(source)).expanduser()
    if path.is_dir() and (path / "HAM10000_metadata.csv").is_file():
        path = path / "HAM10000_metadata.csv"  # the HAM10000 layout: metadata beside the image folders
    if path.is_file() and path.suffix.lower() == ".csv":
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        return _from_frame(frame, name or _short_name(path), str(path), path.parent, resolve_images=resolve_images)
    parquet_files = (
        [path]
        if path.is_file() and path.suffix.lower() == ".parquet"
        else (sorted(path.rglob("*.parquet")) if path.is_dir() else [])
    )
    if parquet_files:
        return _from_parquet(parquet_files, name or _short_name(path), str(path))
    if path.is_dir():
        from derm_cloud.data import load_dataset

        return _from_dataset(load_dataset(str(path)), name)
    raise ConfigError(
        f"cannot read a dataset from {str(path)!r}: give a CSV manifest (image_id, dx/label, ...), a parquet file "
        "or folder, or a folder derm_cloud.data.load_dataset understands"
    )


def read_image(ref: Any) -> bytes:
    """The encoded bytes of a table row's `ref` (a path or a dataset sample)."""
    if hasattr(ref, "read_bytes"):
        data: bytes = ref.read_bytes()
        return data
    return Path(ref).read_bytes()


# --- sources -------------------------------------------------------------------------------------------------------


def _short_name(path: Path) -> str:
    return f"{path.parent.name}/{path.name}" if path.parent.name else path.name


def _from_dataset(dataset: Any, name: str | None) -> Table:
    pd = pandas()
    rows = []
    for sample in dataset.samples:
        meta = sample.metadata
        rows.append(
            {
                "image_id": sample.image_id,
                "lesion_id": sample.lesion_id,
                "label": sample.label,
                "dx_type": sample.dx_type,
                "age": meta.age,
                "sex": meta.sex,
                "site": meta.site,
                "fitzpatrick": meta.fitzpatrick,
                "split": (sample.extra or {}).get("split"),
                "ref": sample,
                "extra": dict(sample.extra or {}),
            }
        )
    frame = pd.DataFrame(rows, columns=[*COLUMNS, "ref", "extra"])
    info = {"rows": len(frame), "loader": getattr(dataset, "kind", "dataset"), **dict(getattr(dataset, "info", {}))}
    return Table(name or dataset.name, str(getattr(dataset, "root", None) or dataset.name), frame, info, dataset)


def _from_frame(raw: pd.DataFrame, name: str, source: str, base: Path | None, *, resolve_images: bool) -> Table:
    from derm_cloud.data.fields import canonical_label, find_column, metadata_from_row

    pd = pandas()
    columns = [str(c) for c in raw.columns]
    found = {f: find_column(columns, f) for f in (*COLUMNS, "path")}
    if found["image_id"] is None and found["path"] is None:
        raise ConfigError(f"{source}: no image id column (image_id, isic_id, id) and no file column; add one")
    meta_cols = {f: found[f] for f in ("age", "sex", "site", "fitzpatrick")}
    used = {c for c in found.values() if c}
    rows = []
    for i, rec in enumerate(raw.to_dict(orient="records")):
        path_value = _text(rec.get(found["path"])) if found["path"] else None
        image_id = _text(rec.get(found["image_id"])) if found["image_id"] else None
        if image_id is None:
            image_id = Path(path_value).stem if path_value else f"row{i}"
        try:
            meta = metadata_from_row(rec, meta_cols)
            label = canonical_label(rec.get(found["label"])) if found["label"] else None
        except ConfigError as exc:
            raise ConfigError(f"{source}, row {i + 2} (image {image_id}): {exc}") from None
        ref = _resolve(path_value, image_id, base, resolve_images)
        rows.append(
            {
                "image_id": image_id,
                "lesion_id": _text(rec.get(found["lesion_id"])) if found["lesion_id"] else None,
                "label": label,
                "dx_type": _text(rec.get(found["dx_type"])) if found["dx_type"] else None,
                "age": meta.age,
                "sex": meta.sex,
                "site": meta.site,
                "fitzpatrick": meta.fitzpatrick,
                "split": _text(rec.get(found["split"])) if found["split"] else None,
                "ref": ref,
                "extra": {k: v for k, v in rec.items() if k not in used and _text(v) is not None},
            }
        )
    frame = pd.DataFrame(rows, columns=[*COLUMNS, "ref", "extra"])
    info = {"rows": len(frame), "loader": "rows as stored", "columns": {k: v for k, v in found.items() if v}}
    return Table(name, source, frame, info)


def _from_parquet(files: list[Path], name: str, source: str) -> Table:
    import pyarrow.parquet as pq

    from derm_cloud.data.dataset import ParquetRef

    pd = pandas()
    parts = []
    for path in files:
        pf = pq.ParquetFile(path)
        names = [n for n in pf.schema_arrow.names if n != "image"]
        table = pf.read(columns=names).to_pandas()
        for col in table.columns:
            table[col] = table[col].map(lambda v: None if v is None else str(v))
        refs: list[Any] = []
        for group in range(pf.num_row_groups):
            n = pf.metadata.row_group(group).num_rows
            has_image = "image" in pf.schema_arrow.names
            refs.extend(ParquetRef(path, group, j) if has_image else None for j in range(n))
        if "split" not in table.columns:
            # marmal88 names its files train-*.parquet, validation-*.parquet, test-*.parquet
            table["split"] = path.stem.split("-")[0]
        table["__ref"] = refs
        parts.append(table)
    raw = pd.concat(parts, ignore_index=True)
    refs_all = list(raw.pop("__ref"))
    out = _from_frame(raw, name, source, None, resolve_images=False)
    out.frame["ref"] = refs_all
    out.info["files"] = [str(p) for p in files]
    return out


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return None if text.lower() in ("", "nan", "none", "null", "na", "n/a") else text


def _resolve(path_value: str | None, image_id: str, base: Path | None, resolve_images: bool) -> str | None:
    if path_value:
        path = Path(path_value)
        if not path.is_absolute() and base is not None:
            path = base / path
        return str(path) if path.is_file() else None
    if not resolve_images or base is None:
        return None
    for folder in _HAM_IMAGE_DIRS:
        directory = os.path.join(base, folder)
        names = _listing(directory)
        for suffix in _IMAGE_SUFFIXES:
            if image_id + suffix in names:
                return os.path.normpath(os.path.join(directory, image_id + suffix))
    return None


@lru_cache(maxsize=32)
def _listing(folder: str) -> frozenset[str]:
    # One listing per folder instead of a stat per row x folder x suffix (10,015 HAM rows, mostly absent).
    try:
        return frozenset(os.listdir(folder))
    except OSError:
        return frozenset()
