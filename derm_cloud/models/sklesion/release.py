"""The upstream artefact, pinned: the sklesion 0.2.2 wheel on PyPI, its digests, and the model it holds.

The generic work (download, SHA-256, extraction) is done by `derm_cloud.models.pypi`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final, Literal

from derm_cloud.models import pypi

__all__ = [
    "IMAGE_SIZE",
    "KERAS_MEMBER",
    "KERAS_SHA256",
    "LABELS",
    "MODEL_ID",
    "N_PARAMETERS",
    "SKLESION_VERSION",
    "SOURCE_URL",
    "WHEEL_FILENAME",
    "WHEEL_SHA256",
    "download_wheel",
    "extract_keras_model",
]

# --------------------------------------------------------------------------------------------------------------
# Pinned facts about the upstream artefact. Changing any of them is a deliberate, reviewed act.
# --------------------------------------------------------------------------------------------------------------
SKLESION_VERSION: Final = "0.2.2"
MODEL_ID: Final = f"sklesion-{SKLESION_VERSION}"
WHEEL_FILENAME: Final = f"sklesion-{SKLESION_VERSION}-py3-none-any.whl"
WHEEL_SHA256: Final = "a4ef0ebc99c6b0a7e1e55b1a0c3ba418f0d6d6cfdffd18a7dd414460a0f671b0"
KERAS_MEMBER: Final = "sklesion/model.keras"
KERAS_SHA256: Final = "df1a81a62ffabeda48384c4a733138133af8bb463959503545422a2a1c1e75b1"
SOURCE_URL: Final = f"https://pypi.org/project/sklesion/{SKLESION_VERSION}/"

# The model's own class order (model_props["i_cl_map"]); identical to derm_cloud.taxonomy.CLASS_CODES.
LABELS: Final[tuple[str, ...]] = ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")
IMAGE_SIZE: Final = 254  # model_props["img_shape"] == [254, 254] (height, width)
N_PARAMETERS: Final = 21_432_382


def download_wheel(
    dest_dir: Path,
    *,
    method: Literal["auto", "pip", "urllib"] = "auto",
    timeout: float = 600.0,
) -> Path:
    """Download the `sklesion==0.2.2` wheel (no dependencies) and verify its pinned SHA-256.

    A wheel already present in `dest_dir` with the right digest is reused without network access.

    Args:
        dest_dir: directory to download into (created if missing).
        method: `"pip"` runs `python -m pip download --no-deps` (honours pip's index configuration),
            `"urllib"` reads PyPI's JSON simple index directly, `"auto"` uses pip when it is importable and
            urllib otherwise.
        timeout: seconds allowed for the download.

    Returns:
        Path of the verified wheel.

    Raises:
        ChecksumMismatchError: the wheel's digest is not `WHEEL_SHA256` (the file is deleted).
        ConversionError: the download itself failed.

    Example:
        >>> download_wheel(Path("downloads"))  # doctest: +SKIP
        PosixPath('downloads/sklesion-0.2.2-py3-none-any.whl')
    """
    # --no-deps matters here: sklesion pins tensorflow==2.17.0, pandas and numpy 1.26.
    return pypi.download_wheel(
        "sklesion", SKLESION_VERSION, WHEEL_FILENAME, WHEEL_SHA256, dest_dir, method=method, timeout=timeout
    )


def extract_keras_model(wheel_path: Path, dest_dir: Path) -> Path:
    """Extract `sklesion/model.keras` from the wheel and verify its pinned SHA-256.

    Args:
        wheel_path: the sklesion wheel (a zip file).
        dest_dir: directory to write `model.keras` into (created if missing).

    Returns:
        Path of the verified `model.keras`.

    Raises:
        ChecksumMismatchError: the extracted file's digest is not `KERAS_SHA256` (nothing is left behind).
        ConversionError: the wheel is not a zip file or has no `sklesion/model.keras`.

    Example:
        >>> extract_keras_model(wheel, Path("keras"))  # doctest: +SKIP
        PosixPath('keras/model.keras')
    """
    return pypi.extract_member(wheel_path, KERAS_MEMBER, KERAS_SHA256, Path(dest_dir) / "model.keras")
