"""Image files in folders: which suffixes count as images, and how folders are searched for them.

Shared by `derm_cloud.data.loaders` (image folders, layout detection) and `derm_cloud.data.manifests` (images
named by id).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

__all__ = ["IMAGE_SUFFIXES"]

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif"})


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


def _index_images(folders: Iterable[Path]) -> dict[str, Path]:
    index: dict[str, Path] = {}
    for folder in folders:
        if folder.is_dir():
            for f in _image_files(folder):
                index.setdefault(f.stem, f)
    return index
