"""The author's image preprocessing without TensorFlow, and a verification manifest read into model inputs.

`resize_bilinear_half_pixel` is `tf.image.resize(method="bilinear",
antialias=False)` in numpy; the local runtime needs neither TensorFlow nor torch.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from derm_cloud.errors import InvalidImageError
from derm_cloud.models.sklesion.release import IMAGE_SIZE
from derm_cloud.models.sklesion_metadata import encode_metadata
from derm_cloud.preprocess import resize_bilinear_half_pixel

__all__ = ["load_image_rgb", "load_verify_set", "preprocess_image"]


def load_image_rgb(path: Path) -> NDArray[np.uint8]:
    """Decode an image file to an HxWx3 uint8 RGB array.

    EXIF orientation is deliberately ignored, as `tf.image.decode_jpeg` (the author's decoder) ignores it.

    Args:
        path: image file (JPEG, PNG, ...).

    Returns:
        uint8 array of shape (H, W, 3).

    Raises:
        InvalidImageError: the file cannot be decoded.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            rgb = np.asarray(img.convert("RGB"), dtype=np.uint8)
    except (OSError, UnidentifiedImageError) as exc:
        raise InvalidImageError(f"cannot decode image {path}: {exc}") from exc
    return rgb


def preprocess_image(image: Path | NDArray[Any]) -> NDArray[np.float32]:
    """Apply the author's image preprocessing: decode, squash-resize to 254x254, float32 in 0..255.

    No /255 and no mean/std: the model contains its own Normalization layer.

    Args:
        image: an image file or an HxWx3 RGB array.

    Returns:
        float32 array of shape (254, 254, 3).
    """
    arr = load_image_rgb(image) if isinstance(image, (str, Path)) else np.asarray(image)
    return resize_bilinear_half_pixel(arr, IMAGE_SIZE, IMAGE_SIZE)


def load_verify_set(
    csv_path: Path,
    limit: int | None = None,
) -> tuple[list[Path], list[NDArray[np.float32]]]:
    """Read a HAM10000-style manifest (e.g. `dev.csv`) into image paths and encoded metadata.

    The manifest needs columns `age`, `sex`, `localization` and either `file` (relative to the
    manifest's folder) or `image_id` (looked up as `images/<image_id>.jpg`).

    Args:
        csv_path: the manifest.
        limit: read only the first `limit` rows.

    Returns:
        `(image_paths, metadata_vectors)` in manifest order.
    """
    csv_path = Path(csv_path)
    paths: list[Path] = []
    metas: list[NDArray[np.float32]] = []
    with csv_path.open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            if limit is not None and len(paths) >= limit:
                break
            rel = row.get("file") or f"images/{row['image_id']}.jpg"
            age_text = (row.get("age") or "").strip()
            paths.append(csv_path.parent / rel)
            metas.append(
                encode_metadata(float(age_text) if age_text else None, row.get("sex"), row.get("localization"))
            )
    return paths, metas
