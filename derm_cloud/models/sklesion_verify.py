"""Images for sklesion's Keras-to-ONNX parity check that any machine can get, with or without a dataset.

The parity check compares two runtimes on the same arrays, so what it needs are realistic *inputs*, not
labelled ones. The best inputs are real dermoscopic images (`--verify-images`, `--verify-csv` or
`$DERM_CLOUD_DATA/ham10000/dev.csv`). A fresh machine has none, and the fetch must not stop there, so
`fallback_verify_set` builds a set it can always get: the example photo of the `dermapred` 0.0.3 wheel
on PyPI (a real photograph of skin, SHA-256-pinned) plus seeded generated images of lesion-like blobs on skin
tones, at the image sizes the model meets in practice (HAM10000's 600x450, square, portrait), each with a
different valid metadata vector so the metadata branch is exercised too.

Example:
    >>> paths, metas, described = fallback_verify_set(Path("work"))  # doctest: +SKIP
    >>> described  # doctest: +SKIP
    'the dermapred example photo and 11 generated images (no lesion images were given)'
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Final

import numpy as np
from numpy.typing import NDArray

from derm_cloud.errors import DermCloudError
from derm_cloud.models.sklesion import LOCATION_GROUPS, encode_metadata

__all__ = ["GENERATED_IMAGES", "fallback_verify_set", "generated_lesion_images"]

#: Generated images added to the example photo: with it, 12 images, one and a half parity batches of 8.
GENERATED_IMAGES: Final = 11

# (width, height) cycled through: HAM10000's 600x450, the model's own 254x254, a portrait phone crop and a
# small image that is upscaled, so every resize path of the preprocessing is compared.
_SIZES: Final = ((600, 450), (254, 254), (360, 480), (200, 150))
# Skin tones from light to dark (RGB), roughly Fitzpatrick I to VI.
_SKIN: Final = ((236, 205, 185), (224, 180, 150), (198, 150, 115), (160, 110, 80), (115, 75, 50), (70, 45, 30))


def _lesion_image(rng: np.random.Generator, width: int, height: int, skin: tuple[int, int, int]) -> NDArray[np.uint8]:
    """A skin-coloured field with lighting falloff, a darker irregular blob and sensor noise."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    cx, cy = width * rng.uniform(0.35, 0.65), height * rng.uniform(0.35, 0.65)
    base = np.asarray(skin, np.float32)
    # Vignetting as in dermoscopy: darker towards the corners.
    r2 = ((xx - width / 2) / width) ** 2 + ((yy - height / 2) / height) ** 2
    img = base[None, None, :] * (1.0 - 0.6 * r2)[..., None]
    # An ellipse with a wobbly border (a few angular harmonics) and a two-tone pigment.
    rx, ry = width * rng.uniform(0.12, 0.3), height * rng.uniform(0.12, 0.3)
    angle = np.arctan2(yy - cy, xx - cx)
    wobble = 1.0 + sum(rng.uniform(0.02, 0.12) * np.cos(k * angle + rng.uniform(0, 6.3)) for k in (2, 3, 5))
    dist = np.sqrt(((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2) / wobble
    inside = np.clip(1.2 - dist, 0.0, 1.0)[..., None]
    pigment = np.asarray(rng.uniform([60, 30, 15], [150, 95, 70]), np.float32)
    core = np.clip(1.0 - dist * 1.6, 0.0, 1.0)[..., None] * rng.uniform(0.3, 0.7)
    img = img * (1 - inside) + pigment * inside
    img = img * (1 - core) + pigment * 0.45 * core
    img += rng.normal(0.0, 6.0, img.shape).astype(np.float32)
    out: NDArray[np.uint8] = np.clip(img, 0, 255).astype(np.uint8)
    return out


def generated_lesion_images(folder: Path, n: int = GENERATED_IMAGES, seed: int = 0) -> list[Path]:
    """Write `n` seeded lesion-like JPEGs into `folder` (created if missing) and return their paths.

    Args:
        folder: destination folder.
        n: images to write.
        seed: the same seed always gives the same images.

    Returns:
        The image paths, in order.
    """
    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        width, height = _SIZES[i % len(_SIZES)]
        path = folder / f"generated-{i:02d}.jpg"
        Image.fromarray(_lesion_image(rng, width, height, _SKIN[i % len(_SKIN)])).save(path, quality=92)
        paths.append(path)
    return paths


def _generated_metadata(n: int, seed: int) -> list[NDArray[np.float32]]:
    # Every sex and site group in turn, ages across the range, and every fourth age missing.
    rng = np.random.default_rng(seed + 1)
    sexes = ("female", "male", None)
    out = []
    for i in range(n):
        age = None if i % 4 == 3 else float(rng.integers(5, 90))
        out.append(encode_metadata(age, sexes[i % 3], LOCATION_GROUPS[i % len(LOCATION_GROUPS)]))
    return out


def fallback_verify_set(
    folder: Path, n_generated: int = GENERATED_IMAGES, seed: int = 0
) -> tuple[list[Path], list[NDArray[np.float32]], str]:
    """The parity inputs of a machine with no lesion images: the dermapred example photo plus generated images.

    The example photo is downloaded once into derm-cloud's cache; without network access to PyPI the check
    runs on the generated images alone (and says so) rather than failing.

    Args:
        folder: a scratch folder for the generated images (the caller removes it).
        n_generated: generated images to add.
        seed: seed of the generated images and their metadata.

    Returns:
        `(image_paths, metadata_vectors, description)`; the description says what the set is.
    """
    from derm_cloud.models.example_image import example_image_dir

    paths = generated_lesion_images(Path(folder), n_generated, seed)
    metas = _generated_metadata(n_generated, seed)
    try:
        example = example_image_dir() / "dermapred-example.jpg"
    except (DermCloudError, OSError, subprocess.SubprocessError) as exc:
        reason = f"{type(exc).__name__}: {exc}"
        return paths, metas, f"{n_generated} generated images (the dermapred example photo is unavailable: {reason})"
    return (
        [example, *paths],
        [encode_metadata(None, None, None), *metas],
        f"the dermapred example photo and {n_generated} generated images",
    )
