"""derm-cloud: compare skin-lesion classifiers across local models and cloud services, like for like.

One `Classifier` interface with a backend per provider, returning the same `Prediction`
everywhere. It supports triage and research; it never makes a diagnosis, and a clinician reviews every result.

Example:
    >>> import derm_cloud
    >>> with derm_cloud.create("local-onnx", model_dir="sklesion") as clf:  # doctest: +SKIP
    ...     print(clf.predict("lesion.jpg", {"age": 45, "sex": "male", "site": "back"}).top(3))

`import derm_cloud` loads no cloud SDK, onnxruntime, torch or transformers; backends import theirs when created.
"""

from __future__ import annotations

import typing as _typing

from derm_cloud.base import BackendInfo, Classifier, RawResult
from derm_cloud.embedders.base import Embedder, Embedding, RawEmbedding
from derm_cloud.embedders.registry import available_embedders, create_embedder, get_embedder_class, register_embedder
from derm_cloud.errors import (
    AuthenticationError,
    BackendNotFoundError,
    CapabilityError,
    ChecksumMismatchError,
    CircuitOpenError,
    ConfigError,
    ConversionError,
    DeadlineExceededError,
    DeploymentCheckError,
    DermCloudDeprecationWarning,
    DermCloudError,
    InvalidImageError,
    InvalidResponseError,
    MissingDependencyError,
    ModelNotReadyError,
    ModelSpecError,
    NotFoundError,
    PayloadTooLargeError,
    RemoteError,
    RunStoreDamagedError,
    ServiceError,
    ThrottledError,
    UnmappableLabelsError,
)
from derm_cloud.images import ImageLimits, PreparedImage, load_image, prepare_payload
from derm_cloud.models.spec import ModelSpec, Preprocess
from derm_cloud.payload import Payload
from derm_cloud.registry import available_backends, create, get_backend_class, register_backend
from derm_cloud.retry import CircuitBreaker, RetryPolicy
from derm_cloud.taxonomy import CLASS_CODES, CLASSES, MALIGNANT_CODES, LabelMap, LesionClass
from derm_cloud.types import LabelScore, PatientMetadata, Prediction, Route, SkippedDeployment

if _typing.TYPE_CHECKING:
    from derm_cloud.router import Deployment, HedgePolicy, Router, RouterPolicy, ShadowComparison

__version__ = "0.1.0"

# The router pulls in thread pools; an app that never routes should not pay for them at import time.
_LAZY = {
    name: "derm_cloud.router" for name in ("Deployment", "HedgePolicy", "Router", "RouterPolicy", "ShadowComparison")
}


def __getattr__(name: str) -> _typing.Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'derm_cloud' has no attribute {name!r}")


__all__ = [
    "CLASSES",
    "CLASS_CODES",
    "MALIGNANT_CODES",
    "AuthenticationError",
    "BackendInfo",
    "BackendNotFoundError",
    "CapabilityError",
    "ChecksumMismatchError",
    "CircuitBreaker",
    "CircuitOpenError",
    "Classifier",
    "ConfigError",
    "ConversionError",
    "DeadlineExceededError",
    "Deployment",
    "DeploymentCheckError",
    "DermCloudDeprecationWarning",
    "DermCloudError",
    "Embedder",
    "Embedding",
    "HedgePolicy",
    "ImageLimits",
    "InvalidImageError",
    "InvalidResponseError",
    "LabelMap",
    "LabelScore",
    "LesionClass",
    "MissingDependencyError",
    "ModelNotReadyError",
    "ModelSpec",
    "ModelSpecError",
    "NotFoundError",
    "PatientMetadata",
    "Payload",
    "PayloadTooLargeError",
    "Prediction",
    "PreparedImage",
    "Preprocess",
    "RawEmbedding",
    "RawResult",
    "RemoteError",
    "RetryPolicy",
    "Route",
    "Router",
    "RouterPolicy",
    "RunStoreDamagedError",
    "ServiceError",
    "ShadowComparison",
    "SkippedDeployment",
    "ThrottledError",
    "UnmappableLabelsError",
    "__version__",
    "available_backends",
    "available_embedders",
    "create",
    "create_embedder",
    "get_backend_class",
    "get_embedder_class",
    "load_image",
    "prepare_payload",
    "register_backend",
    "register_embedder",
]
