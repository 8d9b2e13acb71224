"""Backends by name, imported lazily.

`available_backends()` imports nothing: it asks `importlib.metadata` whether each backend's distributions
are installed. `create(name, **options)` imports the one backend asked for, and when its extra is missing
raises `MissingDependencyError` naming the `pip install` that fixes it.

Third-party packages add backends through the entry-point group `derm_cloud.backends`:

```toml
[project.entry-points."derm_cloud.backends"]
my-cloud = "my_package.backend:MyCloudClassifier"
```
"""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from derm_cloud.errors import BackendNotFoundError, ConfigError, MissingDependencyError

if TYPE_CHECKING:
    from derm_cloud.base import Classifier

__all__ = [
    "BackendEntry",
    "EntryPointRegistry",
    "available_backends",
    "create",
    "get_backend_class",
    "refresh_backends",
    "register_backend",
]

ENTRY_POINT_GROUP = "derm_cloud.backends"

T = TypeVar("T")


@dataclass(frozen=True)
class BackendEntry:
    """A registered backend: where its class lives and what it needs installed."""

    name: str
    target: str  # "module:Class"
    extra: str | None
    distributions: tuple[str, ...]
    summary: str
    third_party: bool = False

    @property
    def missing(self) -> tuple[str, ...]:
        """Distributions of this backend that are not installed."""
        out = []
        for dist in self.distributions:
            try:
                importlib.metadata.distribution(dist)
            except importlib.metadata.PackageNotFoundError:
                out.append(dist)
        return tuple(out)

    @property
    def installed(self) -> bool:
        return not self.missing

    @property
    def install_hint(self) -> str:
        if self.extra:
            return f"pip install 'derm-cloud[{self.extra}]'"
        return "pip install " + " ".join(self.distributions)


_BUILTIN: tuple[BackendEntry, ...] = (
    BackendEntry(
        "local-onnx",
        "derm_cloud.backends.local_onnx:LocalOnnxClassifier",
        "onnx",
        ("onnxruntime",),
        "ONNX model directory on this machine (onnxruntime); sklesion, AutoML exports, exported HF models",
    ),
    BackendEntry(
        "local-tflite",
        "derm_cloud.backends.local_tflite:LocalTfliteClassifier",
        "tflite",
        ("ai-edge-litert",),
        "TFLite model directory on this machine (LiteRT, no TensorFlow); Custom Vision / Vertex AI Edge exports",
    ),
    BackendEntry(
        "local-hf",
        "derm_cloud.backends.local_hf:LocalHfClassifier",
        "hf",
        ("transformers", "torch"),
        "Hugging Face image-classification model from the hub or a folder (transformers pipeline)",
    ),
    BackendEntry(
        "sagemaker",
        "derm_cloud.backends.aws_sagemaker:AwsSagemakerClassifier",
        "sagemaker",
        ("boto3",),
        "Amazon SageMaker real-time or serverless endpoint (JumpStart, Hugging Face DLC, built-in, adapter)",
    ),
    BackendEntry(
        "azure-custom-vision",
        "derm_cloud.backends.azure_custom_vision:AzureCustomVisionClassifier",
        "azure",
        ("azure-cognitiveservices-vision-customvision",),
        "Azure AI Custom Vision published iteration (retiring 2028-09-25)",
    ),
    BackendEntry(
        "azure-ml",
        "derm_cloud.backends.azure_ml:AzureMlClassifier",
        "azure",
        ("requests",),
        "Azure Machine Learning managed online endpoint (AutoML for Images or the derm-cloud adapter)",
    ),
    BackendEntry(
        "vertex",
        "derm_cloud.backends.gcp_vertex:GcpVertexClassifier",
        "vertex",
        ("google-cloud-aiplatform",),
        "Google Vertex AI endpoint (AutoML image classification or custom container), REST or gRPC",
    ),
    BackendEntry(
        "google-vision",
        "derm_cloud.backends.gcp_vision:GcpVisionClassifier",
        "vertex",
        ("google-cloud-vision",),
        "Google Cloud Vision label detection (generic labels: latency/cost baseline only)",
    ),
    BackendEntry(
        "azure-openai",
        "derm_cloud.backends.azure_openai:AzureOpenaiClassifier",
        "openai",
        ("openai",),
        "Azure OpenAI GPT-4o image input, zero-shot with a JSON schema (self-reported scores)",
    ),
    BackendEntry(
        "vertex-gemini",
        "derm_cloud.backends.gcp_gemini:GcpGeminiClassifier",
        "vertex",
        ("google-genai",),
        "Vertex AI Gemini image input, zero-shot with a JSON schema (self-reported scores)",
    ),
    BackendEntry(
        "rekognition-custom-labels",
        "derm_cloud.backends.aws_rekognition:AwsRekognitionClassifier",
        "sagemaker",
        ("boto3",),
        "Amazon Rekognition Custom Labels image-classification model (billed per inference-unit hour while running)",
    ),
    BackendEntry(
        "probe",
        "derm_cloud.backends.probe:ProbeClassifier",
        None,
        ("numpy",),
        "an embedder (local encoder or foundation-model endpoint) + a linear head trained by `derm-cloud probe fit`",
    ),
    BackendEntry(
        "zero-shot",
        "derm_cloud.backends.zero_shot:ZeroShotClassifier",
        None,
        ("numpy",),
        "an embedder that embeds text (MedSigLIP, MedImageInsight) + text prompts per class: no labels, uncalibrated",
    ),
)


class EntryPointRegistry(Generic[T]):
    """Named classes of one kind (backends, embedders): built-ins, an entry-point group, run-time registrations.

    Nothing is imported until a class is asked for; the group's entry points are scanned once per process
    (`importlib.metadata` reads each distribution's metadata files on every call, which cost milliseconds per
    lookup) until `refresh()`. Run-time registrations are read on every lookup.

    Args:
        kind: what the entries are, in messages ("backend", "embedder").
        group: the entry-point group third-party packages add entries through.
        builtin: the entries shipped with derm-cloud, in listing order.
        base: returns the class every entry must subclass (imported when first needed: base modules are heavier).
        register_hint: the run-time registration function, named in the message for a wrong target.
        known_hint: appended to the list of known names when a name is unknown.
    """

    def __init__(
        self,
        *,
        kind: str,
        group: str,
        builtin: tuple[BackendEntry, ...],
        base: Callable[[], type[T]],
        register_hint: str,
        known_hint: str = "",
    ) -> None:
        self.kind = kind
        self.group = group
        self.builtin = builtin
        self.base = base
        self.register_hint = register_hint
        self.known_hint = known_hint
        #: run-time registrations, by name.
        self.extra: dict[str, BackendEntry] = {}
        self._scanned: dict[str, BackendEntry] | None = None

    def register(self, name: str, target: str, *, extra: str | None = None, summary: str = "") -> None:
        """Register a class at run time (the entry-point group is the usual way for packages)."""
        if ":" not in target:
            raise ConfigError(f"{self.kind} target must look like 'package.module:ClassName', got {target!r}")
        self.extra[name] = BackendEntry(name, target, extra, (), summary or target, third_party=True)

    def refresh(self) -> None:
        """Forget the cached entry-point scan, so a package installed after the first lookup is seen."""
        self._scanned = None

    def entries(self) -> dict[str, BackendEntry]:
        """Every known entry by name: built-in, then the entry-point group's, then run-time registrations."""
        if self._scanned is None:
            self._scanned = self._scan_entry_points()
        return self._scanned | self.extra

    def _scan_entry_points(self) -> dict[str, BackendEntry]:
        entries = {e.name: e for e in self.builtin}
        for ep in importlib.metadata.entry_points(group=self.group):
            if ep.name not in entries:
                dist = ep.dist.name if ep.dist is not None else ""
                entries[ep.name] = BackendEntry(
                    ep.name,
                    ep.value,
                    None,
                    (dist,) if dist else (),
                    f"third-party {self.kind} from {dist or ep.value}",
                    third_party=True,
                )
        return entries

    def get_class(self, name: str) -> type[T]:
        """Import and return the class registered as `name`.

        Raises:
            BackendNotFoundError: no entry has that name, or its target names no subclass of the base.
            MissingDependencyError: its optional dependencies are not installed.
        """
        kind = self.kind
        entries = self.entries()
        if name not in entries:
            known = ", ".join(sorted(entries))
            raise BackendNotFoundError(f"no {kind} named {name!r}; known {kind}s: {known}{self.known_hint}")
        entry = entries[name]
        missing = entry.missing
        if missing:
            raise MissingDependencyError(
                f"{kind} {name!r} needs {', '.join(missing)}, which is not installed; run: {entry.install_hint}"
            )
        module_name, _, attr = entry.target.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise MissingDependencyError(
                f"{kind} {name!r} could not import {exc.name or module_name}; run: {entry.install_hint}"
            ) from exc
        base = self.base()
        cls = getattr(module, attr, None)
        if not (isinstance(cls, type) and issubclass(cls, base)):
            # A wrong entry point (a typo in a plugin's pyproject, a renamed class) names the target to fix.
            article = "an" if base.__name__[0] in "AEIOU" else "a"
            problem = (
                f"{module_name} has no attribute {attr!r}"
                if cls is None
                else f"{module_name}.{attr} is {cls!r}, not {article} {base.__name__} subclass"
            )
            raise BackendNotFoundError(
                f"{kind} {name!r} points at {entry.target!r}, but {problem}; fix the entry point (or "
                f"{self.register_hint}) target to 'package.module:ClassName'"
            )
        return cls

    def create(self, name: str, **options: Any) -> T:
        """Create an instance of the class registered as `name`, its options checked against its signature."""
        cls = self.get_class(name)
        try:
            # Check option names first: a typo otherwise surfaces as a bare TypeError from deep in __init__.
            inspect.signature(cls).bind(**options)
        except TypeError as exc:
            raise ConfigError(f"{self.kind} {name!r}: {exc}; see help({cls.__module__}.{cls.__name__})") from None
        from derm_cloud.options import check_option_types

        check_option_types(name, cls, options)
        return cls(**options)


def _classifier_base() -> type[Classifier]:
    from derm_cloud.base import Classifier  # at run time only here: base is heavier than the registry

    return Classifier


_BACKENDS: EntryPointRegistry[Classifier] = EntryPointRegistry(
    kind="backend",
    group=ENTRY_POINT_GROUP,
    builtin=_BUILTIN,
    base=_classifier_base,
    register_hint="register_backend",
    known_hint=" (see `derm-cloud backends`)",
)
_EXTRA = _BACKENDS.extra


def register_backend(name: str, target: str, *, extra: str | None = None, summary: str = "") -> None:
    """Register a backend at run time (the entry-point group is the usual way for packages)."""
    _BACKENDS.register(name, target, extra=extra, summary=summary)


def refresh_backends() -> None:
    """Forget the cached entry-point scan, so a package installed after the first lookup is seen.

    `register_backend` needs no refresh: run-time registrations are read on every lookup.
    """
    _BACKENDS.refresh()


def available_backends() -> list[BackendEntry]:
    """Every known backend, built-in then third-party, with whether it is installed. Imports nothing."""
    return list(_BACKENDS.entries().values())


def get_backend_class(name: str) -> type[Classifier]:
    """Import and return the class of backend `name`.

    Raises:
        BackendNotFoundError: no backend has that name, or its target names no Classifier subclass.
        MissingDependencyError: its optional dependencies are not installed.
    """
    return _BACKENDS.get_class(name)


def create(name: str, **options: Any) -> Classifier:
    """Create a backend by registry name.

    Example:
        >>> clf = create("local-onnx", model_dir="~/.cache/derm-cloud/models/sklesion-0.2.2")  # doctest: +SKIP
    """
    return _BACKENDS.create(name, **options)
