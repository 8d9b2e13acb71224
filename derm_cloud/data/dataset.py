"""Samples and datasets: image references with labels and patient metadata, read lazily.

A `Dataset` never holds the images of a whole set in memory: each `Sample` keeps a reference (a
file path, a `file://` or `http(s)://` URI, or a row of a parquet file) and reads the bytes when asked.
That keeps a 10,000-image evaluation set at a few megabytes of Python objects, whatever the image sizes.
"""

from __future__ import annotations

import hashlib
import threading
import urllib.parse
import urllib.request
from collections import Counter, OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeAlias, overload

from derm_cloud.errors import ConfigError, InvalidImageError
from derm_cloud.taxonomy import CLASS_CODES
from derm_cloud.types import PatientMetadata

__all__ = ["Dataset", "ImageRef", "ParquetRef", "Sample"]

_FINGERPRINT_HEAD = 64 * 1024
_URL_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class ParquetRef:
    """An image stored as bytes inside a parquet file (Hugging Face `Image` feature: `{bytes, path}`).

    Attributes:
        path: the parquet file.
        row_group: index of the row group holding the row.
        index: row index inside that row group.
        column: the struct column holding `bytes` (and optionally `path`).

    Reading one image decodes one row group's image column; the last two row groups are cached so that a
    sequential pass over a file reads each row group once.
    """

    path: Path
    row_group: int
    index: int
    column: str = "image"

    def read_bytes(self) -> bytes:
        """The image bytes of this row."""
        value = _read_parquet_cell(self.path, self.row_group, self.index, self.column)
        data = value.get("bytes") if isinstance(value, dict) else value
        if isinstance(data, (bytes, bytearray, memoryview)) and len(data):
            return bytes(data)
        # Hugging Face writes {bytes: None, path: ...} when images were kept as files next to the parquet.
        rel = value.get("path") if isinstance(value, dict) else None
        if rel:
            candidate = Path(rel) if Path(rel).is_absolute() else self.path.parent / rel
            if candidate.is_file():
                return candidate.read_bytes()
        raise InvalidImageError(
            f"row {self.index} of row group {self.row_group} in {self.path.name} has no image bytes"
            + (f" and its path {rel!r} does not exist" if rel else "")
            + "; re-export the parquet with embedded images"
        )


_PARQUET_CACHE: OrderedDict[tuple[str, int, str], list[Any]] = OrderedDict()
_PARQUET_LOCK = threading.Lock()
_PARQUET_CACHE_SIZE = 2


def _read_parquet_cell(path: Path, row_group: int, index: int, column: str) -> Any:
    key = (str(path), row_group, column)
    with _PARQUET_LOCK:
        cached = _PARQUET_CACHE.get(key)
        if cached is not None:
            _PARQUET_CACHE.move_to_end(key)
            return cached[index]
    import pyarrow.parquet as pq

    with pq.ParquetFile(path) as pf:
        values = pf.read_row_group(row_group, columns=[column]).column(column).to_pylist()
    with _PARQUET_LOCK:
        _PARQUET_CACHE[key] = values
        while len(_PARQUET_CACHE) > _PARQUET_CACHE_SIZE:
            _PARQUET_CACHE.popitem(last=False)
    return values[index]


ImageRef: TypeAlias = Path | str | ParquetRef
"""Where a sample's image lives: a path, a `file://`/`http(s)://` URI, or a parquet row."""


def _read_ref(source: ImageRef) -> bytes:
    if isinstance(source, ParquetRef):
        return source.read_bytes()
    if isinstance(source, str) and "://" in source:
        scheme = urllib.parse.urlsplit(source).scheme.lower()
        if scheme == "file":
            return Path(urllib.request.url2pathname(urllib.parse.urlsplit(source).path)).read_bytes()
        if scheme in ("http", "https"):
            with urllib.request.urlopen(
                source, timeout=_URL_TIMEOUT_S
            ) as resp:  # scheme checked above: no file:/ftp: surprises
                return bytes(resp.read())
        raise ConfigError(
            f"cannot read images from {scheme}:// URIs; download the images and load the local folder or manifest"
        )
    path = Path(source)
    if not path.is_file():
        raise InvalidImageError(f"image file {str(path)!r} does not exist; check the dataset manifest and paths")
    return path.read_bytes()


@dataclass(frozen=True)
class Sample:
    """One image of a dataset, its label (if known) and patient metadata.

    Attributes:
        image_id: identifier, unique within the dataset (`ISIC_0024306` for HAM10000).
        source: where the image is read from (never the pixels themselves).
        label: canonical class code (`"mel"`...) or `None` when unlabelled.
        metadata: age, sex, site and Fitzpatrick type when known.
        lesion_id: the lesion this image shows (HAM10000 has several images per lesion).
        dx_type: how the label was established (`histo`, `follow_up`, `consensus`, `confocal`).
        extra: other manifest columns, as strings (width, variant, split ...).

    Example:
        >>> s = Sample("ISIC_0024306", Path("ISIC_0024306.jpg"), "nv")
        >>> s.label, s.metadata.sex
        ('nv', 'unknown')
    """

    image_id: str
    source: ImageRef
    label: str | None = None
    metadata: PatientMetadata = field(default_factory=PatientMetadata)
    lesion_id: str | None = None
    dx_type: str | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        if self.label is not None and self.label not in CLASS_CODES:
            raise ConfigError(
                f"sample {self.image_id!r}: label {self.label!r} is not a canonical code ({', '.join(CLASS_CODES)}); "
                "map it with derm_cloud.data.canonical_label first"
            )

    def read_bytes(self) -> bytes:
        """Read the encoded image (JPEG/PNG ... bytes exactly as stored; EXIF is stripped later, before upload).

        Raises:
            InvalidImageError: the file or parquet row is missing.
        """
        return _read_ref(self.source)

    def _content_digest(self) -> tuple[int, str]:
        # Length + hash of the first 64 KiB: reproducible across machines and copies (unlike mtimes) and cheap
        # for local files, which need only a stat and one short read.
        if isinstance(self.source, Path) or (isinstance(self.source, str) and "://" not in self.source):
            path = Path(self.source)
            if not path.is_file():
                raise InvalidImageError(f"image file {str(path)!r} of sample {self.image_id!r} does not exist")
            with path.open("rb") as fh:
                head = fh.read(_FINGERPRINT_HEAD)
            return path.stat().st_size, hashlib.sha256(head).hexdigest()
        data = self.read_bytes()
        return len(data), hashlib.sha256(data[:_FINGERPRINT_HEAD]).hexdigest()


class Dataset(Sequence[Sample]):
    """An ordered collection of samples, loaded by `derm_cloud.data.load_dataset`.

    Attributes:
        name: a human-readable name (`"ham10000/dev"`, `"marmal88/skin_cancer:test"` ...).
        samples: the samples, in manifest order.
        kind: the layout it was loaded from (`"folder"`, `"csv"`, `"ham10000"`, `"parquet"`, `"memory"`).
        root: the folder or file it was loaded from, when there is one.
        info: facts from loading (duplicates dropped, rows skipped, split sizes) for reports.

    Example:
        >>> ds = Dataset("demo", [Sample("a", Path("a.jpg"), "mel"), Sample("b", Path("b.jpg"), "nv")])
        >>> len(ds), ds.labelled, ds.class_counts()["mel"]
        (2, True, 1)
    """

    def __init__(
        self,
        name: str,
        samples: Sequence[Sample],
        *,
        kind: str = "memory",
        root: Path | None = None,
        info: dict[str, Any] | None = None,
    ) -> None:
        self.name = name
        self.samples: tuple[Sample, ...] = tuple(samples)
        self.kind = kind
        self.root = root
        self.info: dict[str, Any] = dict(info or {})
        dupes = [image_id for image_id, count in Counter(s.image_id for s in self.samples).items() if count > 1]
        if dupes:
            raise ConfigError(
                f"dataset {name!r} has duplicate image ids ({', '.join(sorted(set(dupes))[:5])}); "
                "each image must appear once (drop the duplicate rows, or load with dedupe=True)"
            )
        self._fingerprint: str | None = None

    def __len__(self) -> int:
        return len(self.samples)

    @overload
    def __getitem__(self, index: int) -> Sample: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[Sample]: ...
    def __getitem__(self, index: int | slice) -> Sample | Sequence[Sample]:
        return self.samples[index]

    def __iter__(self) -> Iterator[Sample]:
        return iter(self.samples)

    def __repr__(self) -> str:
        return f"Dataset(name={self.name!r}, kind={self.kind!r}, n={len(self)}, labelled={self.labelled})"

    @property
    def labelled(self) -> bool:
        """True when every sample has a label (and there is at least one sample)."""
        return bool(self.samples) and all(s.label is not None for s in self.samples)

    @property
    def image_ids(self) -> list[str]:
        """Image ids in dataset order."""
        return [s.image_id for s in self.samples]

    @property
    def labels(self) -> list[str | None]:
        """Labels in dataset order (`None` for unlabelled samples)."""
        return [s.label for s in self.samples]

    def class_counts(self) -> dict[str, int]:
        """Number of samples per canonical class, in canonical order (zeros included)."""
        counts = Counter(s.label for s in self.samples if s.label is not None)
        return {code: counts.get(code, 0) for code in CLASS_CODES}

    def fingerprint(self) -> str:
        """A reproducible content fingerprint: `"sha256:<hex>"`.

        It hashes, sorted by image id, one line per sample: image id, label, the image's byte length and the
        SHA-256 of its first 64 KiB. The same images with the same labels give the same fingerprint on any
        machine, whatever their paths or modification times; a changed label, image or membership changes it.
        Metadata (age, sex, site) is not part of it. Computed once per dataset object (one short read per image).
        """
        if self._fingerprint is None:
            h = hashlib.sha256(b"derm-cloud-dataset-v1\n")
            for sample in sorted(self.samples, key=lambda s: s.image_id):
                size, head = sample._content_digest()
                h.update(f"{sample.image_id}\t{sample.label or ''}\t{size}\t{head}\n".encode())
            self._fingerprint = "sha256:" + h.hexdigest()
        return self._fingerprint

    def subset(self, n: int, seed: int = 0) -> Dataset:
        """A seeded subset of `n` samples, stratified by label, in the original order.

        Each class (unlabelled samples form one more stratum) gets `n * share` samples, rounded by largest
        remainder (ties to the canonical class order); when `n` is at least the number of classes present,
        every class keeps at least one sample. The same `(n, seed)` always picks the same images.

        Raises:
            ConfigError: `n` is not a positive integer.

        Example:
            >>> ds = Dataset("d", [Sample(str(i), Path(f"{i}.jpg"), "mel" if i < 2 else "nv") for i in range(10)])
            >>> ds.subset(5, seed=1).class_counts()["mel"]
            1
        """
        import numpy as np

        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ConfigError(f"subset size must be a positive integer, got {n!r}")
        if n >= len(self):
            return self._derived(self.samples, f"{self.name}", {"subset": None})
        strata: dict[str, list[int]] = {}
        for i, s in enumerate(self.samples):
            strata.setdefault(s.label if s.label is not None else "~unlabelled", []).append(i)
        order = sorted(strata, key=lambda k: CLASS_CODES.index(k) if k in CLASS_CODES else len(CLASS_CODES))
        quotas = {k: n * len(strata[k]) / len(self) for k in order}
        alloc = {k: int(q) for k, q in quotas.items()}
        by_remainder = sorted(order, key=lambda k: (-(quotas[k] - alloc[k]), order.index(k)))
        for k in by_remainder[: n - sum(alloc.values())]:
            alloc[k] += 1
        if n >= len(order):
            # Keep rare classes visible: take one from the largest allocation for each class left at zero.
            for k in order:
                if alloc[k] == 0:
                    donor = max(order, key=lambda d: alloc[d])
                    alloc[donor] -= 1
                    alloc[k] = 1
        rng = np.random.default_rng(seed)
        chosen: list[int] = []
        for k in order:
            members = strata[k]
            picks = rng.permutation(len(members))[: alloc[k]]
            chosen.extend(members[int(p)] for p in picks)
        chosen.sort()
        return self._derived([self.samples[i] for i in chosen], f"{self.name}[n={n},seed={seed}]", {"subset": n})

    def _derived(self, samples: Sequence[Sample], name: str, extra_info: dict[str, Any]) -> Dataset:
        info = {**self.info, **extra_info, "parent": self.name}
        return Dataset(name, samples, kind=self.kind, root=self.root, info=info)

    def describe(self) -> dict[str, Any]:
        """A JSON-compatible summary: size, class mix, lesions, metadata coverage and loading facts.

        The class mix is this dataset's own; it is not a clinic's prevalence unless the data was sampled to be.
        """
        n = len(self)
        counts = self.class_counts()
        labelled_n = sum(counts.values())
        lesions = [s.lesion_id for s in self.samples if s.lesion_id]
        ages = sorted(s.metadata.age for s in self.samples if s.metadata.age is not None)
        sites = Counter(s.metadata.site or "unknown" for s in self.samples)
        fitz = Counter(s.metadata.fitzpatrick for s in self.samples if s.metadata.fitzpatrick is not None)
        return {
            "name": self.name,
            "kind": self.kind,
            "root": str(self.root) if self.root else None,
            "n": n,
            "labelled": self.labelled,
            "unlabelled": n - labelled_n,
            "class_counts": counts,
            "class_mix": {c: (v / labelled_n if labelled_n else None) for c, v in counts.items()},
            "class_mix_note": "the class mix of this dataset, not a natural (clinic) prevalence unless it was "
            "sampled to be one",
            "lesions": len(set(lesions)) if lesions else None,
            "images_per_lesion": (len(lesions) / len(set(lesions))) if lesions else None,
            "sex": dict(sorted(Counter(s.metadata.sex for s in self.samples).items())),
            "age": {
                "known": len(ages),
                "min": ages[0] if ages else None,
                "median": ages[len(ages) // 2] if ages else None,
                "max": ages[-1] if ages else None,
            },
            "sites": dict(sites.most_common()),
            "fitzpatrick": {str(k): v for k, v in sorted(fitz.items())},
            "fitzpatrick_known": sum(fitz.values()),
            "dx_type": dict(sorted(Counter(s.dx_type or "unknown" for s in self.samples).items())),
            "info": dict(self.info),
        }
