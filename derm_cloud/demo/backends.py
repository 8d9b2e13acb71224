"""The backends a demo offers: the model on this machine plus the same model behind each cloud's emulator.

Emulated backends run the cloud's real SDK against a derm-cloud emulator started in this process on 127.0.0.1,
hosting the same model directory, so the demo needs no credentials and no network and every column of the
results is the same model reached through a different provider's API. Real endpoints come from the
`[[backends]]` tables of a comparison config (`derm-cloud demo --config compare.toml`).

Example:
    >>> with open_backends(["local-onnx", "vertex"], model_dir="sklesion") as backends:  # doctest: +SKIP
    ...     for backend in backends:
    ...         print(backend.name, backend.classifier.predict("lesion.jpg").label)
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from derm_cloud.errors import ConfigError

if TYPE_CHECKING:
    from derm_cloud.base import BackendInfo, Classifier
    from derm_cloud.retry import RetryPolicy

__all__ = [
    "DEFAULT_BACKENDS",
    "EMULATED_BACKENDS",
    "DemoBackend",
    "DemoBackends",
    "backends_from_config",
    "open_backends",
]

#: What ``derm-cloud demo`` offers with no arguments: the model locally and behind four cloud emulators.
DEFAULT_BACKENDS: tuple[str, ...] = ("local-onnx", "sagemaker", "azure-ml", "vertex", "azure-custom-vision")
#: Backends the demo can emulate in-process (each hosts the demo's model directory).
EMULATED_BACKENDS: tuple[str, ...] = ("sagemaker", "azure-ml", "vertex", "azure-custom-vision")


@dataclass
class DemoBackend:
    """One column of the demo's results.

    Attributes:
        name: the label shown (`"sagemaker (emulated)"`).
        classifier: the live backend.
        info: its `describe()`, taken once (provider, data handling, billing keys).
        emulator: the in-process emulator behind it, if any (to inject faults or inspect what it received).
    """

    name: str
    classifier: Classifier
    info: BackendInfo
    emulator: Any | None = None


@dataclass
class DemoBackends:
    """The demo's backends and what must be stopped with them (emulators, comparison runtimes)."""

    backends: list[DemoBackend] = field(default_factory=list)
    _closers: list[Callable[[], None]] = field(default_factory=list, repr=False)

    def __iter__(self) -> Iterator[DemoBackend]:
        return iter(self.backends)

    def __len__(self) -> int:
        return len(self.backends)

    @property
    def names(self) -> list[str]:
        return [b.name for b in self.backends]

    def get(self, name: str) -> DemoBackend:
        for backend in self.backends:
            if backend.name == name:
                return backend
        raise ConfigError(f"no demo backend named {name!r}; choose from {', '.join(self.names)}")

    def close(self) -> None:
        """Close every classifier and stop every emulator (in reverse order of start)."""
        while self._closers:
            closer = self._closers.pop()
            with contextlib.suppress(Exception):  # closing must reach every backend even if one fails
                closer()

    def __enter__(self) -> DemoBackends:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _demo_retry() -> RetryPolicy:
    from derm_cloud.retry import RetryPolicy

    # A person is waiting: one retry, and a deadline well under a browser's patience.
    return RetryPolicy(max_attempts=2, base_delay=0.2, max_delay=2.0, deadline=20.0)


def _start_emulated(kind: str, model_dir: Path, retry: RetryPolicy) -> tuple[Classifier, Any]:
    """Start the emulator of `kind` hosting `model_dir` and build the backend wired to it."""
    if kind == "sagemaker":
        from derm_cloud.testing.emulators.sagemaker import SageMakerRuntimeEmulator, sagemaker_backend_for

        sm = SageMakerRuntimeEmulator()
        sm.add_endpoint("derm-cloud", model_dir, response_format="adapter")
        sm.start()
        return sagemaker_backend_for(sm, "derm-cloud", instance_type="ml.m5.large", retry=retry), sm
    if kind == "azure-ml":
        from derm_cloud.testing.emulators.azure_ml import AzureMLEmulator, azure_ml_backend_for

        ml = AzureMLEmulator(model_dir)
        ml.start()
        clf = azure_ml_backend_for(ml, instance_type="Standard_DS3_v2", send_metadata=True, retry=retry)
        return clf, ml
    if kind == "vertex":
        from derm_cloud.testing.emulators.vertex import VertexEmulator, vertex_backend_for

        vx = VertexEmulator(model_dir, schema="automl", grpc=False)
        vx.start()
        return vertex_backend_for(vx, transport="rest", retry=retry), vx
    if kind == "azure-custom-vision":
        from derm_cloud.testing.emulators.azure_custom_vision import CustomVisionEmulator, custom_vision_backend_for

        cv = CustomVisionEmulator(model_dir)
        cv.start()
        return custom_vision_backend_for(cv, retry=retry), cv
    raise ConfigError(
        f"the demo cannot emulate {kind!r}; emulated backends: {', '.join(EMULATED_BACKENDS)} "
        "(use --config with a comparison config for real endpoints)"
    )


def open_backends(
    names: Sequence[str] = DEFAULT_BACKENDS,
    *,
    model_dir: str | os.PathLike[str] = "sklesion",
    retry: RetryPolicy | None = None,
) -> DemoBackends:
    """Create the named backends, all serving `model_dir`; cloud names are emulated in this process.

    Args:
        names: `local-onnx` and any of `EMULATED_BACKENDS`, in display order.
        model_dir: a model directory or a cached model name (`sklesion`).
        retry: retry policy of the emulated backends (default: 2 attempts within 20 s).

    Raises:
        ConfigError: an unknown name, a duplicate, or a model directory that does not exist.
        MissingDependencyError: a backend's SDK is not installed (the message names the extra).
    """
    from derm_cloud.models.cache import resolve_model_dir

    if not names:
        raise ConfigError("the demo needs at least one backend; e.g. --backend local-onnx")
    duplicates = sorted({n for n in names if list(names).count(n) > 1})
    if duplicates:
        raise ConfigError(f"backend(s) named twice: {', '.join(duplicates)}")
    path = resolve_model_dir(os.fspath(model_dir))
    out = DemoBackends()
    try:
        for kind in names:
            emulator = None
            if kind == "local-onnx":
                from derm_cloud.registry import create

                clf = create("local-onnx", model_dir=str(path))
                label = "local-onnx"
            else:
                clf, emulator = _start_emulated(kind, path, retry or _demo_retry())
                out._closers.append(emulator.stop)
                label = f"{kind} (emulated)"
            out._closers.append(clf.close)
            out.backends.append(DemoBackend(label, clf, clf.describe(), emulator))
    except BaseException:
        out.close()
        raise
    return out


def backends_from_config(path: str | os.PathLike[str]) -> DemoBackends:
    """The `[[backends]]` of a comparison config (real endpoints, or `emulate = true` ones).

    Raises:
        ConfigError: the config is invalid or a backend cannot start; the message names which.
    """
    from dataclasses import asdict

    from derm_cloud.base import BackendInfo
    from derm_cloud.compare.run.backends import prepare
    from derm_cloud.compare.run.config_file import load_config

    config = load_config(path)
    timeout = float(config.scenario_defaults["request_timeout_s"])
    out = DemoBackends()
    try:
        for cfg in config.backends:
            runtime = prepare(cfg, timeout)
            out._closers.append(runtime.close)
            info = runtime.classifier.describe()
            if cfg.emulate or cfg.billing:
                # The config knows what the describe() of an emulated backend cannot: that it is emulated,
                # and billing keys the user set for the real deployment it stands for.
                facts = asdict(info)
                facts["emulated"] = bool(info.emulated or cfg.emulate)
                facts["billing"] = {**info.billing, **dict(cfg.billing)}
                info = BackendInfo(**facts)
            label = f"{cfg.name} (emulated)" if info.emulated else cfg.name
            out.backends.append(DemoBackend(label, runtime.classifier, info, runtime.emulator))
    except BaseException:
        out.close()
        raise
    return out
