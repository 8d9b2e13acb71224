"""Dataset loaders: image folders, CSV manifests, the HAM10000 layout and Hugging Face parquet shards.

Every loader returns a `Dataset` of `Sample` objects whose images are read lazily, with labels
mapped to the canonical HAM10000 codes and patient metadata as `PatientMetadata`.

Example:
    >>> from derm_cloud.data import load_dataset
    >>> ds = load_dataset("../shared/data/ham10000/dev.csv")  # doctest: +SKIP
    >>> ds.describe()["class_counts"]  # doctest: +SKIP
    {'akiec': 112, 'bcc': 168, 'bkl': 365, 'df': 39, 'mel': 304, 'nv': 283, 'vasc': 50}

HAM10000 images: Tschandl, Rosendahl & Kittler, Sci. Data 5, 180161 (2018), CC BY-NC 4.0.
"""

from __future__ import annotations

from derm_cloud.data.dataset import Dataset, ImageRef, ParquetRef, Sample
from derm_cloud.data.fields import canonical_label
from derm_cloud.data.loaders import KINDS, detect_kind, load_dataset
from derm_cloud.data.overlap import HAM10000_ID_RANGE, dataset_overlap_warning, is_ham10000_id

__all__ = [
    "HAM10000_ID_RANGE",
    "KINDS",
    "Dataset",
    "ImageRef",
    "ParquetRef",
    "Sample",
    "canonical_label",
    "dataset_overlap_warning",
    "detect_kind",
    "is_ham10000_id",
    "load_dataset",
]
