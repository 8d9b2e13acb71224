"""Hugging Face parquet shards with embedded images, e.g. `marmal88/skin_cancer`.

Only the small columns are read at load time; each `Sample` points at its row
(`ParquetRef`) and the image bytes are read when the sample is. Public copies of
`marmal88/skin_cancer` hold 13,354 rows for 10,015 HAM10000 images, so repeated image ids are dropped by
default (first occurrence kept, counted in `Dataset.info`) and lesions that appear in several splits are
counted too: an image-level split puts the same lesion in train and test.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from derm_cloud.data.dataset import Dataset, ParquetRef, Sample
from derm_cloud.data.fields import canonical_label, find_column, metadata_from_row
from derm_cloud.errors import ConfigError, DermCloudError, MissingDependencyError

__all__ = ["load_parquet", "split_of"]

_KNOWN_SPLITS = ("train", "validation", "valid", "val", "test")
_MARMAL88_HINTS = ("melanocytic_nevi", "benign_keratosis-like_lesions", "basal_cell_carcinoma")


def split_of(file: Path) -> str:
    """The split a shard belongs to: `data/test-00000-of-00001.parquet` -> `"test"`.

    Example:
        >>> split_of(Path("data/validation-00000-of-00002-1a2b.parquet"))
        'validation'
    """
    stem = file.name.split("-")[0].split(".")[0].lower()
    if stem in _KNOWN_SPLITS:
        return stem
    if file.parent.name.lower() in _KNOWN_SPLITS:
        return file.parent.name.lower()
    return stem


def load_parquet(
    path: Path,
    *,
    name: str | None = None,
    split: str | Sequence[str] | None = None,
    dedupe: bool = True,
    label_map: Mapping[str, str] | None = None,
) -> Dataset:
    """Load parquet shards (one file, or every `*.parquet` under a folder).

    Args:
        path: a `.parquet` file or a folder of shards.
        name: dataset name (default `"marmal88/skin_cancer"` when the labels are its `dx` strings).
        split: keep only these splits (`"test"`, `["validation", "test"]`); all when `None`.
        dedupe: drop repeated `image_id` rows, keeping the first.
        label_map: `{dataset label: canonical code}` for unknown label names.

    Raises:
        ConfigError: no shards, no image column, or an unknown split; the message lists what exists.
        MissingDependencyError: `pyarrow` is not installed.
    """
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:  # pragma: no cover - pyarrow is in the compare extra
        raise MissingDependencyError(
            "reading parquet datasets needs pyarrow: pip install 'derm-cloud[compare]'"
        ) from exc
    files = [path] if path.is_file() else sorted(path.rglob("*.parquet"))
    if not files:
        raise ConfigError(f"no .parquet files under {str(path)!r}")
    available = sorted({split_of(f) for f in files})
    if split is not None:
        wanted = {split} if isinstance(split, str) else set(split)
        unknown = sorted(wanted - set(available))
        if unknown:
            raise ConfigError(f"split {unknown[0]!r} not found in {str(path)!r}; splits there: {', '.join(available)}")
        files = [f for f in files if split_of(f) in wanted]

    samples: list[Sample] = []
    seen: dict[str, str | None] = {}
    dropped = conflicts = 0
    per_split: dict[str, int] = defaultdict(int)
    lesion_splits: dict[str, set[str]] = defaultdict(set)
    labels_seen: set[str] = set()
    for file in files:
        with pq.ParquetFile(file) as pf:
            names = list(pf.schema_arrow.names)
            image_col = "image" if "image" in names else None
            if image_col is None:
                raise ConfigError(
                    f"{file.name} has no 'image' column (Hugging Face Image feature with bytes); columns: "
                    f"{', '.join(names)}"
                )
            cols = {f: find_column(names, f) for f in ("image_id", "label", "age", "sex", "site", "fitzpatrick")}
            cols["lesion_id"] = find_column(names, "lesion_id")
            cols["dx_type"] = find_column(names, "dx_type")
            wanted_cols = sorted({c for c in cols.values() if c})
            rows = (
                pf.read(columns=wanted_cols).to_pylist() if wanted_cols else [{} for _ in range(pf.metadata.num_rows)]
            )
            positions = [(rg, i) for rg in range(pf.num_row_groups) for i in range(pf.metadata.row_group(rg).num_rows)]
        shard_split = split_of(file)
        for row_no, (row, (rg, idx)) in enumerate(zip(rows, positions, strict=True)):
            image_id = str(row[cols["image_id"]]) if cols["image_id"] else f"{file.stem}:{row_no}"
            raw_label = row.get(cols["label"]) if cols["label"] else None
            if isinstance(raw_label, str):
                labels_seen.add(raw_label)
            try:
                label = canonical_label(raw_label, label_map)
                metadata = metadata_from_row(row, cols)
            except (DermCloudError, ValueError) as exc:
                raise ConfigError(f"{file.name} row {row_no} ({image_id}): {exc}") from exc
            lesion = row.get(cols["lesion_id"]) if cols["lesion_id"] else None
            if lesion:
                lesion_splits[str(lesion)].add(shard_split)
            if image_id in seen and dedupe:
                dropped += 1
                conflicts += seen[image_id] != label
                continue
            seen[image_id] = label
            per_split[shard_split] += 1
            samples.append(
                Sample(
                    image_id=image_id,
                    source=ParquetRef(file, rg, idx, image_col),
                    label=label,
                    metadata=metadata,
                    lesion_id=str(lesion) if lesion else None,
                    dx_type=(row.get(cols["dx_type"]) or None) if cols["dx_type"] else None,
                    extra={"split": shard_split, "file": file.name},
                )
            )
    is_marmal88 = "marmal88" in str(path).lower() or any(lab.lower() in _MARMAL88_HINTS for lab in labels_seen)
    base_name = name or ("marmal88/skin_cancer" if is_marmal88 else (path.stem if path.is_file() else path.name))
    if name is None and split is not None:
        base_name += ":" + (split if isinstance(split, str) else "+".join(sorted(split)))
    info: dict[str, Any] = {
        "files": [f.name for f in files],
        "splits": dict(sorted(per_split.items())),
        "duplicates_dropped": dropped,
        "duplicate_label_conflicts": conflicts,
        "lesions_in_several_splits": sum(1 for s in lesion_splits.values() if len(s) > 1),
    }
    return Dataset(base_name, samples, kind="parquet", root=path, info=info)
