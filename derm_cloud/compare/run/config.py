"""The comparison config as typed values: what the run stage (and the analysis after it) reads.

`load_config` and `parse_config` (in `derm_cloud.compare.run.config_file`) build a `ComparisonConfig` from a
TOML or YAML file; this module holds the values themselves, their fingerprint, and `redact_config`, which takes
the secrets out of a config before it is stored or shown.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from derm_cloud.errors import ConfigError

__all__ = [
    "BackendConfig",
    "ComparisonConfig",
    "ConfigFileError",
    "DatasetConfig",
    "ScenarioConfig",
    "redact_config",
]

_SECRET_KEY = re.compile(r"(?i)(key|secret|token|password|credential|sas|connection_string)")


class ConfigFileError(ConfigError):
    """A config value is wrong; `key` is the dotted path and `line` the 1-based line (when known)."""

    def __init__(self, message: str, *, key: str, line: int | None = None, file: str | None = None) -> None:
        where = f"{file or '<config>'}" + (f":{line}" if line else "")
        super().__init__(f"{where}: {key}: {message}")
        self.key = key
        self.line = line
        self.file = file


@dataclass(frozen=True)
class ScenarioConfig:
    """Settings of one scenario (`enabled` plus the scenario's own keys)."""

    name: str
    enabled: bool
    settings: dict[str, Any]

    def __getitem__(self, key: str) -> Any:
        return self.settings[key]


@dataclass(frozen=True)
class BackendConfig:
    """One backend to compare.

    Attributes:
        name: unique label in the report.
        type: registry name (`local-onnx`, `sagemaker` ...) or `package.module:Class`.
        options: keyword arguments for the backend's constructor.
        emulate: start the matching derm-cloud emulator hosting `model_dir` and point the backend at it.
        model_dir: the model an emulator hosts (`"sklesion"` or a directory).
        emulator: emulator settings: `delay_ms` (fixed extra service time) and `transport`.
        rate_limit: requests per second allowed to this backend (token bucket), `None` for no limit.
        burst: token-bucket capacity.
        max_concurrency: requests in flight during the quality pass.
        timeout_s: client-side timeout per request (defaults to `scenarios.request_timeout_s`).
        billing: price-catalogue keys that override `describe().billing` (`sku`, `instances` ...).
        export_of: the name of the cloud backend this one runs the export of (`derm-cloud models import`):
            the report shows the pair's agreement (see `derm_cloud.compare.analysis.export_parity`).
    """

    name: str
    type: str
    options: dict[str, Any] = field(default_factory=dict)
    emulate: bool = False
    model_dir: str | None = None
    emulator: dict[str, Any] = field(default_factory=dict)
    rate_limit: float | None = None
    burst: int = 1
    max_concurrency: int = 8
    timeout_s: float | None = None
    billing: dict[str, Any] = field(default_factory=dict)
    export_of: str | None = None


@dataclass(frozen=True)
class DatasetConfig:
    """Where the images come from: `source=None` means the embedded default image set, `"ham10000:dev"` the
    labelled HAM10000 dev split this machine has (`$DERM_CLOUD_DATA`, a fetched copy, `../shared/data`)."""

    source: str | None = None
    limit: int | None = None
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ComparisonConfig:
    """A validated comparison config; build it with `load_config` or `parse_config`."""

    title: str
    output: Path
    seed: int
    executor: str
    backends_in_parallel: bool
    ray: dict[str, Any]
    dataset: DatasetConfig
    monthly_volume: int
    melanoma_prevalence: float | dict[str, float]
    price_files: tuple[Path, ...]
    utilisation: float
    fairness: dict[str, Any]
    scenario_defaults: dict[str, Any]
    scenarios: dict[str, ScenarioConfig]
    backends: tuple[BackendConfig, ...]
    source_file: Path | None = None
    #: ``mode`` (auto, blind, each) and ``variants``: see `derm_cloud.compare.run.metadata_modes`.
    metadata: dict[str, Any] = field(default_factory=lambda: {"mode": "auto", "variants": "auto"})
    #: ``[decision]`` constraints the verdict judges (`derm_cloud.compare.analysis.verdict`); empty: none.
    decision: dict[str, Any] = field(default_factory=dict)

    def scenario(self, name: str) -> ScenarioConfig:
        return self.scenarios[name]

    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible form (paths as strings); what reports record."""
        d = asdict(self)
        d["output"] = str(self.output)
        d["price_files"] = [str(p) for p in self.price_files]
        d["source_file"] = str(self.source_file) if self.source_file else None
        return json.loads(json.dumps(d, default=str))  # type: ignore[no-any-return]

    def fingerprint(self, dataset_fingerprint: str) -> str:
        """Hash of what determines the results: everything but the output folder, title and executor."""
        # Redacted so no raw secret (api_key, ...) is hashed into an id stored and shown in reports; rotating a
        # key does not change what the results depend on.
        d = redact_config(self.to_dict())
        # The decision constraints judge the results; they do not change them (a new threshold reuses the run).
        for key in ("output", "title", "executor", "ray", "source_file", "backends_in_parallel", "decision"):
            d.pop(key, None)
        blob = json.dumps({"config": d, "dataset": dataset_fingerprint}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()

    def with_overrides(self, **changes: Any) -> ComparisonConfig:
        from dataclasses import replace

        return replace(self, **changes)


def redact_config(value: Any) -> Any:
    """The config with values of secret-looking keys (`api_key`, `prediction_key`, ...) replaced.

    Other strings lose the secrets they carry inside them (a `scoring_uri` with `?code=...`, a URL with a
    password) by `derm_cloud.redaction.redact`.
    """
    if isinstance(value, str):
        from derm_cloud.redaction import redact

        return redact(value, limit=None)
    if isinstance(value, Mapping):
        return {
            k: ("<redacted>" if _SECRET_KEY.search(str(k)) and v is not None else redact_config(v))
            for k, v in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [redact_config(v) for v in value]
    return value
