"""The backends of a run: built from their config, with the emulator each one talks to, ready for requests.

A backend is described by a picklable `BackendRecipe` (type + options, or the view of an emulator) and built
where it is used, so a Ray worker creates its own backend and no open session or socket is ever pickled.
`emulate = true` starts the matching derm-cloud emulator in this process (`derm_cloud.testing.launch`), hosting
the configured model, and points the backend at it through the real SDK. `open_runtimes` opens every backend
of a config (and the metadata variant rows, see `derm_cloud.compare.run.metadata_modes`).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from derm_cloud.compare.run.metadata_modes import plan_metadata
from derm_cloud.compare.run.plans import TokenBucket
from derm_cloud.compare.run.probe_emulation import EMBEDDING_BACKENDS, start_embedding_emulator
from derm_cloud.errors import ConfigError, DermCloudError

if TYPE_CHECKING:
    from derm_cloud.base import Classifier
    from derm_cloud.compare.run.config import BackendConfig, ComparisonConfig

__all__ = [
    "BackendRecipe",
    "BackendRuntime",
    "apply_metadata_plan",
    "can_use_metadata",
    "inject_delay",
    "open_runtimes",
    "prepare",
]


@dataclass(frozen=True)
class BackendRecipe:
    """How to build one backend anywhere (this process or a Ray worker); holds no open client.

    Attributes:
        name: the backend's label in the report.
        type: registry name or `package.module:Class`.
        options: constructor keyword arguments.
        emulated: for `emulate = true`: a picklable view of the running emulator the backend talks to
            (see `derm_cloud.compare.run.emulation.capture`).
        use_metadata: send each image's patient metadata (the comparison's metadata mode, see
            `derm_cloud.compare.run.metadata_modes`); `False` sends none.
    """

    name: str
    type: str
    options: dict[str, Any] = field(default_factory=dict)
    emulated: dict[str, Any] | None = None
    use_metadata: bool = True

    def create(self, emulator: Any | None = None) -> Classifier:
        """Build the backend: against the live `emulator` when given (this process), else from the view."""
        if self.emulated is not None:
            if emulator is not None and self.type not in EMBEDDING_BACKENDS:
                from derm_cloud.testing.launch import build_local

                return build_local(self.type, emulator, self.options)
            from derm_cloud.compare.run.emulation import build_remote

            return build_remote(self.emulated, self.options)
        if ":" in self.type:
            module, _, cls = self.type.partition(":")
            try:
                klass = getattr(importlib.import_module(module), cls)
            except (ImportError, AttributeError) as exc:
                raise ConfigError(f"backend type {self.type!r} cannot be imported: {exc}") from exc
            return klass(**self.options)  # type: ignore[no-any-return]
        from derm_cloud.registry import create

        return create(self.type, **self.options)


def _resolve_model(model_dir: str) -> Path:
    """The model directory an emulator hosts (`"sklesion"` resolves to the cache)."""
    from derm_cloud.models.cache import resolve_model_dir

    path = resolve_model_dir(model_dir)
    if not (path / "spec.json").is_file() and not (path / "labels.json").is_file():
        raise ConfigError(f"model_dir {model_dir!r} ({path}) is not a model directory (no spec.json)")
    return path


@dataclass
class BackendRuntime:
    """A backend during a run: its config, recipe, live classifier, emulator and rate limiter."""

    cfg: BackendConfig
    recipe: BackendRecipe
    classifier: Classifier
    emulator: Any | None
    bucket: TokenBucket | None
    timeout_s: float
    variant_of: str | None = None

    @property
    def name(self) -> str:
        return self.cfg.name

    def close(self) -> None:
        self.classifier.close()
        if self.emulator is not None:
            self.emulator.stop()


def prepare(cfg: BackendConfig, default_timeout: float) -> BackendRuntime:
    """Start the backend's emulator when asked and create its classifier (in this process)."""
    from derm_cloud.compare.run.emulation import capture
    from derm_cloud.testing.launch import start

    emulator = None
    view = None
    if cfg.emulate and cfg.type in EMBEDDING_BACKENDS:  # the probe's embedding endpoint, hosting a stand-in
        emulator = start_embedding_emulator(cfg)
    elif cfg.emulate:
        model = _resolve_model(cfg.model_dir) if cfg.model_dir else None
        emulator = start(cfg.type, model, options=cfg.options, transport=cfg.emulator.get("transport"))
    try:
        if emulator is not None:
            delay = float(cfg.emulator.get("delay_ms", 0.0)) / 1000
            if delay:
                inject_delay(emulator, delay)
            view = capture(cfg.type, emulator)
        recipe = BackendRecipe(cfg.name, cfg.type, dict(cfg.options), view)
        classifier = recipe.create(emulator)
    except BaseException:
        if emulator is not None:
            emulator.stop()
        raise
    bucket = TokenBucket(cfg.rate_limit, cfg.burst) if cfg.rate_limit else None
    return BackendRuntime(cfg, recipe, classifier, emulator, bucket, cfg.timeout_s or default_timeout)


def can_use_metadata(rt: BackendRuntime) -> bool:
    """Whether patient metadata sent to this backend reaches a model that takes it.

    The backend must send it (`Classifier.uses_metadata`) and, behind an emulator, the hosted model must have a
    metadata input: a SageMaker client sends age, sex and site whatever model the endpoint serves, and a
    with-metadata row of a model without that input would only repeat its image-only row.
    """
    if not rt.classifier.uses_metadata:
        return False
    if rt.emulator is None or not rt.cfg.model_dir:
        return True
    from derm_cloud.models.spec import ModelSpec

    return ModelSpec.load(_resolve_model(rt.cfg.model_dir)).metadata_encoding is not None


def inject_delay(emulator: Any, delay: float) -> None:
    from derm_cloud.testing.emulators.base import Fault

    emulator.inject(Fault("slow", times=10**9, delay=delay))


def open_runtimes(config: ComparisonConfig, skip_unavailable: bool, warnings: list[str]) -> list[BackendRuntime]:
    """Open every backend of `config` in its metadata mode, variant rows included.

    Args:
        config: the comparison config.
        skip_unavailable: leave out (with a warning) a backend that cannot start, instead of failing the run
            (the embedded default run does this: a cloud SDK may not be installed).
        warnings: where the skip warnings go.

    Raises:
        ConfigError: no backend could be started.
    """
    runtimes: list[BackendRuntime] = []
    timeout = config.scenario_defaults["request_timeout_s"]
    opened: list[BackendRuntime] = []  # every runtime opened, variants included: closed if a later one fails

    def open_variant(original: BackendRuntime, name: str) -> BackendRuntime:
        variant = prepare(replace(original.cfg, name=name), timeout)
        variant.variant_of = original.name
        opened.append(variant)
        return variant

    try:
        for b in config.backends:
            try:
                runtimes.append(prepare(b, timeout))
            except (DermCloudError, ImportError) as exc:
                if not skip_unavailable:
                    raise
                from derm_cloud.redaction import redact

                warnings.append(redact(f"backend {b.name!r} skipped: {type(exc).__name__}: {exc}", limit=None))
        opened.extend(runtimes)
        meta = config.metadata
        runtimes = apply_metadata_plan(runtimes, meta["mode"], meta["variants"], open_variant)
    except BaseException:
        for rt in {id(r): r for r in [*runtimes, *opened]}.values():
            rt.close()
        raise
    if not runtimes:
        raise ConfigError("no backend could be started; see the errors above")
    return runtimes


def apply_metadata_plan(
    runtimes: list[BackendRuntime],
    mode: str,
    variants: bool,
    open_variant: Callable[[BackendRuntime, str], BackendRuntime],
) -> list[BackendRuntime]:
    """Set each runtime's metadata mode and open the variant rows; returns every runtime (variants after theirs).

    Args:
        runtimes: the opened backends.
        mode: the config's `[metadata] mode`.
        variants: the config's `[metadata] variants`.
        open_variant: opens a second runtime of a backend under a new name (its own emulator and client).
    """
    capable = {rt.name: can_use_metadata(rt) for rt in runtimes}
    plan = plan_metadata(capable, mode, variants)
    for rt in runtimes:
        rt.recipe = replace(rt.recipe, use_metadata=plan.use[rt.name])
    out = list(runtimes)
    for name, base, send in plan.variants:
        original = next(rt for rt in runtimes if rt.name == base)
        variant = open_variant(original, name)
        variant.recipe = replace(variant.recipe, use_metadata=send)
        out.insert(out.index(original) + 1, variant)
    return out
