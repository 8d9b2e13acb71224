"""Fetch the sklesion 0.2.2 HAM10000 classifier from PyPI and convert it to a dynamic-batch ONNX model.

sklesion (https://pypi.org/project/sklesion/0.2.2/, MIT, by Elio Pereira) ships a real Keras 3 model trained on
HAM10000: an Xception image branch plus a 10-float metadata branch, softmax over the seven HAM10000 classes in
the canonical order. Its wheel pins TensorFlow 2.17, so it is never installed: this module downloads the wheel
without dependencies, checks two pinned SHA-256 digests, loads ``sklesion/model.keras`` with Keras on the
*torch* backend and exports it with the TorchDynamo ONNX exporter with a symbolic batch dimension.

The pipeline, end to end, is :func:`fetch_sklesion`::

    download_wheel -> extract_keras_model -> convert_to_onnx -> parity_check -> <cache>/sklesion-0.2.2/

The four steps are thin sklesion-specific wrappers: the generic work is done by :mod:`~derm_cloud.models.pypi`
(download, SHA-256, extraction), :mod:`~derm_cloud.models.keras_convert` and
:mod:`~derm_cloud.models.keras_parity` (Keras on torch -> checked ONNX), given this model's :data:`MODEL_INPUTS`.

The resulting directory holds ``model.onnx`` (86 MB, inputs ``image`` ``[batch, 254, 254, 3]`` float32 RGB in
0..255 and ``metadata`` ``[batch, 10]``, output ``probabilities`` ``[batch, 7]``), ``spec.json`` and, by default,
the verified ``model.keras`` (kept so the conversion can be re-checked offline). The directory is renamed into
place only once everything has been verified, so its presence means the fetch completed.

The author's preprocessing is reproduced without TensorFlow: :func:`resize_bilinear_half_pixel` is
``tf.image.resize(method="bilinear", antialias=False)`` in numpy, and :func:`encode_metadata` builds the
metadata vector from the values in the wheel's ``model_props.pkl`` (read once with ``pickletools``, never
unpickled at run time).

Heavy dependencies (keras, torch, onnx, onnxruntime, PIL) are imported inside the functions that need them, so
importing this module costs only numpy.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final, Literal

import numpy as np
from numpy.typing import NDArray

from derm_cloud.errors import ChecksumMismatchError, ConfigError, ConversionError, InvalidImageError
from derm_cloud.models import keras_convert, keras_parity, pypi
from derm_cloud.models.keras_convert import DEFAULT_OPSET, ConversionInfo, ImageMetadataInputs, import_keras_torch
from derm_cloud.models.keras_parity import ParityReport
from derm_cloud.models.pypi import sha256_file
from derm_cloud.preprocess import resize_bilinear_half_pixel

__all__ = [
    "AGE_MAX",
    "AGE_MEAN",
    "IMAGE_SIZE",
    "KERAS_MEMBER",
    "KERAS_SHA256",
    "LABELS",
    "LOCATION_GROUPS",
    "METADATA_LENGTH",
    "MODEL_ID",
    "MODEL_INPUTS",
    "N_PARAMETERS",
    "SITE_TO_GROUP",
    "SKLESION_VERSION",
    "SOURCE_URL",
    "WHEEL_FILENAME",
    "WHEEL_SHA256",
    "ChecksumMismatchError",
    "ConversionError",
    "ConversionInfo",
    "ParityReport",
    "build_spec_dict",
    "convert_to_onnx",
    "download_wheel",
    "encode_metadata",
    "extract_keras_model",
    "fetch_sklesion",
    "import_keras_torch",
    "is_complete_model_dir",
    "load_image_rgb",
    "load_verify_set",
    "parity_check",
    "preprocess_image",
    "resize_bilinear_half_pixel",
    "sha256_file",
    "site_group",
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
METADATA_LENGTH: Final = 10
N_PARAMETERS: Final = 21_432_382

# model_props["age_max"] and model_props["age_mean"], bit-exact from the wheel's model_props.pkl (float64
# bytes 0x4049f36e3170b500). Note: docs/reference/local-models.md section 1.2 quotes 51.863 (the mean age of all of
# HAM10000) and hence 0.5763 for a missing age; the author's pipeline uses this value, giving 0.57669.
AGE_MAX: Final = 90.0
AGE_MEAN: Final = 51.90180032733224

# One-hot layouts, in the author's order (model_props["oh_map"]).
_SEXES: Final[tuple[str, ...]] = ("female", "male", "unknown")
LOCATION_GROUPS: Final[tuple[str, ...]] = ("arm", "head-or-neck", "leg-or-genital", "trunk", "unknown")

# HAM10000 ``localization`` -> sklesion location group. sklesion takes the five groups directly and ships no
# mapping, so this one is ours (the grouping suggested in docs/reference/local-models.md section 1.2). "acral" is not an
# anatomical region of one group (palms and soles span arm and leg), so it goes to "unknown".
SITE_TO_GROUP: Final[Mapping[str, str]] = {
    "upper extremity": "arm",
    "hand": "arm",
    "face": "head-or-neck",
    "scalp": "head-or-neck",
    "ear": "head-or-neck",
    "neck": "head-or-neck",
    "lower extremity": "leg-or-genital",
    "foot": "leg-or-genital",
    "genital": "leg-or-genital",
    "back": "trunk",
    "chest": "trunk",
    "abdomen": "trunk",
    "trunk": "trunk",
    "acral": "unknown",
    "unknown": "unknown",
}


# --------------------------------------------------------------------------------------------------------------
# Download and extraction (the generic work is in derm_cloud.models.pypi)
# --------------------------------------------------------------------------------------------------------------
def download_wheel(
    dest_dir: Path,
    *,
    method: Literal["auto", "pip", "urllib"] = "auto",
    timeout: float = 600.0,
) -> Path:
    """Download the ``sklesion==0.2.2`` wheel (no dependencies) and verify its pinned SHA-256.

    A wheel already present in ``dest_dir`` with the right digest is reused without network access.

    Args:
        dest_dir: directory to download into (created if missing).
        method: ``"pip"`` runs ``python -m pip download --no-deps`` (honours pip's index configuration),
            ``"urllib"`` reads PyPI's JSON simple index directly, ``"auto"`` uses pip when it is importable and
            urllib otherwise.
        timeout: seconds allowed for the download.

    Returns:
        Path of the verified wheel.

    Raises:
        ChecksumMismatchError: the wheel's digest is not :data:`WHEEL_SHA256` (the file is deleted).
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
    """Extract ``sklesion/model.keras`` from the wheel and verify its pinned SHA-256.

    Args:
        wheel_path: the sklesion wheel (a zip file).
        dest_dir: directory to write ``model.keras`` into (created if missing).

    Returns:
        Path of the verified ``model.keras``.

    Raises:
        ChecksumMismatchError: the extracted file's digest is not :data:`KERAS_SHA256` (nothing is left behind).
        ConversionError: the wheel is not a zip file or has no ``sklesion/model.keras``.

    Example:
        >>> extract_keras_model(wheel, Path("keras"))  # doctest: +SKIP
        PosixPath('keras/model.keras')
    """
    return pypi.extract_member(wheel_path, KERAS_MEMBER, KERAS_SHA256, Path(dest_dir) / "model.keras")


# --------------------------------------------------------------------------------------------------------------
# Preprocessing (numpy only; the local runtime needs neither TensorFlow nor torch)
# --------------------------------------------------------------------------------------------------------------
def load_image_rgb(path: Path) -> NDArray[np.uint8]:
    """Decode an image file to an HxWx3 uint8 RGB array.

    EXIF orientation is deliberately ignored, as ``tf.image.decode_jpeg`` (the author's decoder) ignores it.

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


# --------------------------------------------------------------------------------------------------------------
# Metadata encoding ("sklesion-v1")
# --------------------------------------------------------------------------------------------------------------
def site_group(site: str | None) -> str:
    """Map an anatomical site to one of sklesion's five location groups.

    Accepts HAM10000 ``localization`` values (see :data:`SITE_TO_GROUP`) and the five group names themselves,
    case- and whitespace-insensitively (underscores count as spaces). ``None``, empty strings and any other
    string map to ``"unknown"``: an unrecognised site is treated as missing rather than rejected, because the
    model has an explicit "unknown" input for exactly that case.

    Args:
        site: site name or ``None``.

    Returns:
        One of :data:`LOCATION_GROUPS`.
    """
    if site is None:
        return "unknown"
    key = " ".join(site.replace("_", " ").strip().lower().split())
    if key in LOCATION_GROUPS:
        return key
    if key.replace(" ", "-") in LOCATION_GROUPS:  # "head or neck" -> "head-or-neck"
        return key.replace(" ", "-")
    return SITE_TO_GROUP.get(key, "unknown")


def encode_metadata(age: float | None, sex: str | None, site: str | None) -> NDArray[np.float32]:
    """Encode patient metadata as sklesion's 10-float input ("sklesion-v1").

    Layout: ``[female, male, unknown sex, arm, head-or-neck, leg-or-genital, trunk, unknown site,
    age / 90, age_missing]``. A missing age (``None`` or NaN) becomes ``AGE_MEAN / 90`` with
    ``age_missing = 1``, as in the author's pipeline. Sex other than female/male (case-insensitive) is
    "unknown"; sites are mapped by :func:`site_group`.

    Args:
        age: age in years, or ``None``/NaN when unknown.
        sex: ``"female"``, ``"male"``, anything else (or ``None``) for unknown.
        site: HAM10000 localization, a sklesion location group, or ``None``.

    Returns:
        float32 array of shape (10,).

    Raises:
        ConfigError: age is not a number, negative or infinite.

    Example:
        >>> v = encode_metadata(35, "female", "upper extremity")
        >>> v[:8].tolist(), round(float(v[8]), 4), float(v[9])
        ([1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0], 0.3889, 0.0)
    """
    vec = np.zeros(METADATA_LENGTH, dtype=np.float32)
    sex_key = sex.strip().lower() if isinstance(sex, str) else "unknown"
    vec[_SEXES.index(sex_key) if sex_key in ("female", "male") else 2] = 1.0
    vec[3 + LOCATION_GROUPS.index(site_group(site))] = 1.0
    try:
        years = None if age is None else float(age)
    except (TypeError, ValueError):
        raise ConfigError(f"age must be a number of years or None, got {age!r}") from None
    if years is None or math.isnan(years):
        vec[8] = AGE_MEAN / AGE_MAX
        vec[9] = 1.0
    else:
        if years < 0 or math.isinf(years):
            raise ConfigError(f"age must be a finite, non-negative number of years, got {age!r}")
        # Not clipped: the author divides by age_max without clipping, so ages > 90 give values > 1.
        vec[8] = years / AGE_MAX
    return vec


def load_verify_set(
    csv_path: Path,
    limit: int | None = None,
) -> tuple[list[Path], list[NDArray[np.float32]]]:
    """Read a HAM10000-style manifest (e.g. ``dev.csv``) into image paths and encoded metadata.

    The manifest needs columns ``age``, ``sex``, ``localization`` and either ``file`` (relative to the
    manifest's folder) or ``image_id`` (looked up as ``images/<image_id>.jpg``).

    Args:
        csv_path: the manifest.
        limit: read only the first ``limit`` rows.

    Returns:
        ``(image_paths, metadata_vectors)`` in manifest order.
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


# --------------------------------------------------------------------------------------------------------------
# Conversion and parity (the generic work is in derm_cloud.models.keras_convert and keras_parity)
# --------------------------------------------------------------------------------------------------------------
def _random_metadata(rng: np.random.Generator, n: int) -> NDArray[np.float32]:
    # Valid one-hots in the author's layout (3 sexes, 5 site groups), an age in 0..1 and some "age missing".
    meta = np.zeros((n, METADATA_LENGTH), dtype=np.float32)
    rows = np.arange(n)
    meta[rows, rng.integers(0, 3, n)] = 1.0
    meta[rows, 3 + rng.integers(0, 5, n)] = 1.0
    meta[:, 8] = rng.uniform(0.0, 1.0, n)
    meta[rows % 3 == 0, 9] = 1.0
    return meta


#: sklesion's inputs, preprocessing and metadata layout, for :mod:`~derm_cloud.models.keras_convert`.
MODEL_INPUTS: Final = ImageMetadataInputs(
    height=IMAGE_SIZE,
    width=IMAGE_SIZE,
    metadata_length=METADATA_LENGTH,
    random_metadata=_random_metadata,
    missing_metadata=tuple(float(v) for v in encode_metadata(None, None, None)),
    preprocess=preprocess_image,
    preprocessing="tf-bilinear-half-pixel-no-antialias 254x254, 0..255; metadata sklesion-v1",
)


def convert_to_onnx(
    keras_path: Path,
    onnx_path: Path,
    *,
    opset: int = DEFAULT_OPSET,
    dynamic_batch: bool = True,
) -> ConversionInfo:
    """Convert sklesion's ``model.keras`` to ONNX via Keras on the torch backend (route A), with its checks.

    :func:`derm_cloud.models.keras_convert.convert_to_onnx` given :data:`MODEL_INPUTS`: dynamic batch first,
    verified with onnxruntime, else Keras' own fixed-batch export; it documents the arguments, the returned
    :class:`ConversionInfo` and the errors (``ConversionError``, ``MissingDependencyError``).

    Example:
        >>> convert_to_onnx(Path("keras/model.keras"), Path("out/model.onnx")).dynamic_batch  # doctest: +SKIP
        True
    """
    return keras_convert.convert_to_onnx(keras_path, onnx_path, MODEL_INPUTS, opset=opset, dynamic_batch=dynamic_batch)


def parity_check(
    keras_path: Path,
    onnx_path: Path,
    images: Sequence[Path],
    atol: float = 1e-4,
    *,
    metadata: Sequence[NDArray[np.float32]] | None = None,
    batch_size: int = 8,
    progress: Callable[[int], None] | None = None,
) -> ParityReport:
    """Compare Keras (torch backend) and onnxruntime outputs on real images with the author's preprocessing.

    :func:`derm_cloud.models.keras_parity.parity_check` given :data:`MODEL_INPUTS`; ``metadata`` holds one
    10-float vector per image (see :func:`encode_metadata`), ``None`` the "all unknown" vector for every image.
    Returns a :class:`ParityReport`; raises ``ConfigError`` for no images or a metadata count that differs.

    Example:
        >>> parity_check(Path("model.keras"), Path("model.onnx"), paths, metadata=metas).passed  # doctest: +SKIP
        True
    """
    return keras_parity.parity_check(
        keras_path, onnx_path, images, MODEL_INPUTS, atol, metadata=metadata, batch_size=batch_size, progress=progress
    )


# --------------------------------------------------------------------------------------------------------------
# Spec and the end-to-end fetch
# --------------------------------------------------------------------------------------------------------------
def build_spec_dict(conversion: ConversionInfo, parity: ParityReport) -> dict[str, Any]:
    """Build the model spec written as ``spec.json`` (a plain dict until the shared spec class exists).

    Args:
        conversion: the result of :func:`convert_to_onnx`.
        parity: the result of :func:`parity_check` on the verification images.

    Returns:
        A JSON-serialisable dict in the ``derm-cloud-model/1`` layout.
    """
    return {
        "format": "derm-cloud-model/1",
        "model_id": MODEL_ID,
        "labels": list(LABELS),
        "output": "probabilities",
        "image_input": {"index": 0, "layout": "NHWC"},
        "preprocess": {
            "resize": "squash",
            "height": IMAGE_SIZE,
            "width": IMAGE_SIZE,
            "interpolation": "bilinear_half_pixel",
            "crop": None,
            "scale": 1.0,
            "mean": [0.0, 0.0, 0.0],
            "std": [1.0, 1.0, 1.0],
        },
        "metadata_input": {"index": 1, "encoding": "sklesion-v1"},
        "max_batch": conversion.max_batch,
        "facts": {
            "architecture": "Xception + metadata MLP",
            "parameters": conversion.parameters,
            "licence": "MIT (weights); trained on HAM10000 CC BY-NC 4.0",
            "training_data": "HAM10000",
            "intended_use": (
                "Research comparison of skin-lesion classifiers on dermoscopic images (seven HAM10000 "
                "classes). Not a medical device; not for diagnosis or for commercial use of HAM10000-derived "
                "results."
            ),
            "source": SOURCE_URL,
            "sha256_wheel": WHEEL_SHA256,
            "sha256_keras": KERAS_SHA256,
            "author_test_metrics": {
                "note": "author's own split (n=1511), split method undocumented: treat as optimistic",
                "accuracy": 0.825,
                "balanced_accuracy": 0.723,
                "melanoma_recall": 0.579,
                "macro_f1": 0.732,
                "n": 1511,
            },
            "converted_with": {
                "route": conversion.route,
                "dynamic_batch": conversion.dynamic_batch,
                "opset": conversion.opset,
                "export_seconds": conversion.export_seconds,
                "onnx_inputs": [
                    {"name": n, "shape": list(s)}
                    for n, s in zip(conversion.input_names, conversion.input_shapes, strict=True)
                ],
                "onnx_outputs": list(conversion.output_names),
                "batch_check_max_abs_diff": {str(k): v for k, v in conversion.batch_check_max_abs_diff.items()},
                "fallback_reason": conversion.fallback_reason,
                "versions": dict(conversion.versions),
            },
            "parity": {
                "n_images": parity.n_images,
                "max_abs_diff": parity.max_abs_diff,
                "mean_abs_diff": parity.mean_abs_diff,
                "top1_agreement": parity.top1_agreement,
                "atol": parity.atol,
                "metadata": parity.extra.get("metadata"),
            },
        },
    }


def is_complete_model_dir(model_dir: Path) -> bool:
    """Whether ``model_dir`` is a finished fetch (``model.onnx`` and a ``spec.json`` for this model id).

    Args:
        model_dir: candidate directory.

    Returns:
        ``True`` if both files exist and the spec names :data:`MODEL_ID`.
    """
    spec_path = model_dir / "spec.json"
    if not (model_dir / "model.onnx").is_file() or not spec_path.is_file():
        return False
    try:
        spec = json.loads(spec_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(spec, dict) and spec.get("model_id") == MODEL_ID


def fetch_sklesion(
    cache_dir: Path,
    *,
    verify_images: Sequence[Path],
    verify_metadata: Sequence[NDArray[np.float32]] | None = None,
    atol: float = 1e-4,
    min_top1_agreement: float = 0.99,
    keep_keras: bool = True,
    force: bool = False,
    opset: int = DEFAULT_OPSET,
    progress: Callable[[str], None] | None = None,
    verify_description: str | None = None,
    parity_progress: Callable[[str, int], Callable[[int], None]] | None = None,
) -> Path:
    """Download, verify, convert and parity-check sklesion; install it as ``<cache_dir>/sklesion-0.2.2/``.

    Everything happens in a hidden temporary directory inside ``cache_dir`` which is renamed to the final
    name only after every check passed, so a crashed or failed fetch never leaves a directory that looks
    complete. An existing complete directory is returned as is unless ``force`` is set.

    Args:
        cache_dir: parent directory of the model directory (created if missing).
        verify_images: real images for the parity check (at least one; 20 or more recommended).
        verify_metadata: one metadata vector per verification image; ``None`` uses "unknown" metadata.
        atol: maximum allowed |Δp| between Keras and ONNX.
        min_top1_agreement: minimum fraction of images with the same argmax.
        keep_keras: also keep the verified ``model.keras`` in the model directory (86 MB), so the parity can be
            re-checked later without the network.
        force: rebuild even if a complete directory exists (it is replaced only once the new one is ready).
        opset: ONNX opset to target.
        progress: called with one line per stage as it starts (and with what the previous stage took).
        verify_description: what the verification images are, recorded in ``spec.json`` beside the parity
            figures (real dermoscopy or the generated fallback set).
        parity_progress: ``parity_progress(task, total)`` returns a counter of images compared (a
            :class:`derm_cloud.progress.Progress`: a bar with an ETA in a terminal, plain lines elsewhere).

    Returns:
        The model directory containing ``model.onnx``, ``spec.json`` and (if kept) ``model.keras``.

    Raises:
        ChecksumMismatchError: the wheel or the model file does not have its pinned digest.
        ConversionError: download or export failed, or parity is below the thresholds.
        ConfigError: no verification images.
    """
    cache_dir = Path(cache_dir)
    final = cache_dir / MODEL_ID
    if not force and is_complete_model_dir(final):
        return final
    if not verify_images:
        raise ConfigError("fetch_sklesion needs verify_images: real images for the Keras/ONNX parity check")
    # Checked before the minute of download and conversion, not after it.
    missing = [str(p) for p in verify_images if not Path(p).is_file()]
    if missing:
        raise ConfigError(f"{len(missing)} verification image(s) not found, e.g. {missing[0]}")
    cache_dir.mkdir(parents=True, exist_ok=True)
    # Same parent as the final directory, so the closing rename is atomic (same file system).
    work = Path(tempfile.mkdtemp(prefix=f".{MODEL_ID}.", suffix=".partial", dir=cache_dir))
    step = _StageReporter(progress)
    try:
        stage = work / MODEL_ID
        step("1/3 download the sklesion 0.2.2 wheel from PyPI and check its SHA-256")
        wheel = download_wheel(work / "download")
        keras_path = extract_keras_model(wheel, work / "keras")
        step("2/3 convert Keras -> ONNX with a dynamic batch")
        conversion = convert_to_onnx(keras_path, stage / "model.onnx", opset=opset)
        step(f"3/3 parity check Keras vs onnxruntime on {len(verify_images)} images")
        tick = parity_progress("parity", len(verify_images)) if parity_progress is not None else None
        parity = parity_check(
            keras_path, stage / "model.onnx", list(verify_images), atol, metadata=verify_metadata, progress=tick
        )
        if not parity.passed or parity.top1_agreement < min_top1_agreement:
            raise ConversionError(
                f"parity check failed on {parity.n_images} images: max |dp| = {parity.max_abs_diff:.3g} "
                f"(allowed {atol}), top-1 agreement {parity.top1_agreement:.3f} "
                f"(required {min_top1_agreement})"
            )
        step(None)
        spec = build_spec_dict(conversion, parity)
        if verify_description:
            spec["facts"]["parity"]["images"] = verify_description
        (stage / "spec.json").write_text(json.dumps(spec, indent=2) + "\n", encoding="utf-8")
        if keep_keras:
            keras_path.replace(stage / "model.keras")
        if final.exists():
            # Replaced only now (force, or an incomplete leftover); moved aside first so the rename below
            # never meets a non-empty target.
            old = work / "previous"
            final.rename(old)
        try:
            stage.rename(final)
        except OSError:
            # Another process finished first; its directory is as good as ours.
            if is_complete_model_dir(final):
                return final
            raise
        return final
    finally:
        shutil.rmtree(work, ignore_errors=True)


class _StageReporter:
    """Reports each stage as it starts, with the time the previous one took (silent without a callback)."""

    def __init__(self, callback: Callable[[str], None] | None) -> None:
        self._callback = callback
        self._started: float | None = None

    def __call__(self, line: str | None) -> None:
        now = time.perf_counter()
        if self._callback is not None and self._started is not None:
            self._callback(f"   done in {now - self._started:.1f} s")
        self._started = now
        if self._callback is not None and line is not None:
            self._callback(line)
