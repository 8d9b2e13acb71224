"""A CSV manifest read a slice at a time: how the Ray executor shards 100,000 images with flat memory.

`ManifestSamples` records the byte offset of every row once (8 bytes a row, in an `array`) and parses only
the rows asked for, into the `Sample`s the CSV loader (`derm_cloud.data.load_dataset`) makes of them: the
image path relative to the manifest (or `images_dir`), the canonical label, patient metadata. A driver that
walks it shard by shard (`manifest[i:i + 64]`) holds one shard of rows, never the manifest, and never an image:
the worker that classifies a sample reads its file.

Unlike `load_dataset`, it checks no image file up front (that would touch every file before the first
request): a missing image becomes its row's `InvalidImageError` result, like any unreadable image.

Example:
    >>> samples = ManifestSamples("manifest-100k.csv")  # doctest: +SKIP
    >>> len(samples), samples[0].image_id, len(samples[64:128])  # doctest: +SKIP
    (100000, 'img-000000', 64)
"""

from __future__ import annotations

import csv
import io
import os
from array import array
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import overload

from derm_cloud.data import Sample
from derm_cloud.data.fields import canonical_label, find_column, metadata_from_row
from derm_cloud.errors import ConfigError, DermCloudError
from derm_cloud.taxonomy import CLASS_CODES

__all__ = ["ManifestSamples"]

# Rows parsed per read when iterating: big enough to amortise a seek, small enough to stay flat.
_BLOCK_ROWS = 1024


class ManifestSamples(Sequence[Sample]):
    """The rows of a CSV manifest as `Sample`s, parsed only when asked for.

    Args:
        path: the CSV file: a path column (`file`, `path`, `image` ...) and/or an `image_id` column, optionally
            `label` (or one column per class), `age`, `sex`, `site`, `fitzpatrick`, `lesion_id`, `dx_type`.
        images_dir: the folder relative image paths start from (default: the manifest's folder).
        label_map: extra `{dataset label: code}` entries, as for `load_dataset`.
        head: only the first `head` rows.

    Raises:
        ConfigError: the file cannot be read, has no header or no image column.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        images_dir: str | os.PathLike[str] | None = None,
        label_map: Mapping[str, str] | None = None,
        head: int | None = None,
    ) -> None:
        self.path = Path(path)
        self.images_dir = Path(images_dir) if images_dir is not None else self.path.parent
        self.label_map = dict(label_map or {})
        try:
            self._offsets, self.header = _index(self.path, head)
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise ConfigError(f"cannot read CSV {str(self.path)!r}: {exc}") from exc
        if not self.header:
            raise ConfigError(f"{str(self.path)!r} is empty; a manifest needs a header row")
        self._path_col = find_column(self.header, "path")
        self._id_col = find_column(self.header, "image_id")
        if self._path_col is None and self._id_col is None:
            raise ConfigError(
                f"{self.path.name}: no image column; add a 'file' (or 'path'/'image') column with paths relative "
                f"to the CSV. Columns found: {', '.join(self.header)}"
            )
        self._label_col = find_column(self.header, "label")
        lower = {h.strip().lower(): h for h in self.header}
        self._one_hot = (
            {code: lower[code] for code in CLASS_CODES}
            if self._label_col is None and all(code in lower for code in CLASS_CODES)
            else None
        )
        self._meta_cols = {f: find_column(self.header, f) for f in ("age", "sex", "site", "fitzpatrick")}
        self._lesion_col = find_column(self.header, "lesion_id")
        self._dx_type_col = find_column(self.header, "dx_type")
        named = (self._path_col, self._id_col, self._label_col, self._lesion_col, self._dx_type_col)
        self._used = {c for c in (*named, *self._meta_cols.values(), *(self._one_hot or {}).values()) if c}

    def __len__(self) -> int:
        return len(self._offsets) - 1

    @overload
    def __getitem__(self, index: int) -> Sample: ...

    @overload
    def __getitem__(self, index: slice) -> list[Sample]: ...

    def __getitem__(self, index: int | slice) -> Sample | list[Sample]:
        if isinstance(index, slice):
            start, stop, step = index.indices(len(self))
            if step != 1:
                return [self[i] for i in range(start, stop, step)]
            return self._read(start, max(start, stop))
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"row {index} of a {len(self)}-row manifest")
        return self._read(index, index + 1)[0]

    def __iter__(self) -> Iterator[Sample]:
        for start in range(0, len(self), _BLOCK_ROWS):
            yield from self._read(start, min(len(self), start + _BLOCK_ROWS))

    def _read(self, start: int, stop: int) -> list[Sample]:
        """Rows `start` to `stop` (exclusive): one seek and one read of just their bytes."""
        if start >= stop:
            return []
        with self.path.open("rb") as fh:
            fh.seek(self._offsets[start])
            text = fh.read(self._offsets[stop] - self._offsets[start]).decode("utf-8")
        rows = [r for r in csv.reader(io.StringIO(text, newline="")) if r]
        if len(rows) != stop - start:  # the file changed since it was indexed
            raise ConfigError(f"{self.path.name} changed while it was read; rerun to index it again")
        return [self._sample(start + i, dict(zip(self.header, r, strict=False))) for i, r in enumerate(rows)]

    def _sample(self, index: int, row: dict[str, str]) -> Sample:
        ref = (row.get(self._path_col or "") or row.get(self._id_col or "") or "").strip()
        line = f"{self.path.name} row {index + 1}"
        if not ref:
            raise ConfigError(f"{line}: empty image reference in column {self._path_col or self._id_col!r}")
        image_id = (row.get(self._id_col) if self._id_col else None) or Path(ref).stem
        source: Path | str = ref
        if "://" not in ref:
            candidate = Path(ref).expanduser()
            source = candidate if candidate.is_absolute() else self.images_dir / candidate
        try:
            if self._one_hot is not None:
                scores = {code: float(row.get(col) or 0) for code, col in self._one_hot.items()}
                label = max(scores, key=lambda c: scores[c]) if max(scores.values()) > 0 else None
            else:
                label = canonical_label(row.get(self._label_col) if self._label_col else None, self.label_map)
            metadata = metadata_from_row(row, self._meta_cols)
        except (DermCloudError, ValueError) as exc:
            raise ConfigError(f"{line} ({image_id}): {exc}") from exc
        return Sample(
            image_id=image_id,
            source=source,
            label=label,
            metadata=metadata,
            lesion_id=(row.get(self._lesion_col) or None) if self._lesion_col else None,
            dx_type=(row.get(self._dx_type_col) or None) if self._dx_type_col else None,
            extra={k: v for k, v in row.items() if k not in self._used},
        )


def _index(path: Path, head: int | None) -> tuple[array[int], list[str]]:
    """The byte offset where each data row starts (plus where the last ends), and the header.

    A row ends at a newline outside quotes; CSV doubles a quote inside a quoted field, so counting quotes tells
    inside from outside, and a quoted field may span lines.
    """
    offsets: array[int] = array("q")
    header: list[str] = []
    with path.open("rb") as fh:
        first = fh.read(3)
        position = 3 if first == b"\xef\xbb\xbf" else 0  # a UTF-8 byte-order mark (Excel's CSV) is no header
        fh.seek(position)
        row_start, pending, quoted = position, b"", False
        for line in fh:
            pending += line
            quoted ^= line.count(b'"') % 2 == 1
            position += len(line)
            if quoted:
                continue
            if not header:
                header = next(csv.reader([pending.decode("utf-8")]), [])
            elif pending.strip():
                if head is not None and len(offsets) >= head:
                    break
                offsets.append(row_start)
            row_start, pending = position, b""
        end = row_start if head is not None and len(offsets) >= head else position
    offsets.append(end)
    return offsets, header
