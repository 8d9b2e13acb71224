"""The comparison config file: TOML or YAML, validated with errors that name the bad key and its line.

A config says which backends to compare (with their options), on which dataset, with which latency scenarios,
at which monthly volume and prevalence, and where to write the report:

```toml
title = "sklesion: local vs SageMaker"
output = "reports/sklesion"        # relative paths are relative to the config file
seed = 0

[dataset]
source = "ham10000:dev"            # the HAM10000 dev split on this machine, or a path (folder, CSV, parquet)
limit = 200                        # a seeded subset; omit for every image

[population]
monthly_volume = 100000
melanoma_prevalence = 0.02

[scenarios.single_stream]
queries = 200

[[backends]]
name = "local"
type = "local-onnx"
options = { model_dir = "sklesion" }

[[backends]]
name = "sagemaker"
type = "sagemaker"
emulate = true                     # start the SageMaker emulator hosting model_dir and point at it
model_dir = "sklesion"
rate_limit = 20                    # requests per second (token bucket)
```

Every key is checked: a typo fails before anything runs, e.g.
`config.toml:23: backends[1].rate_limt: unknown key (did you mean 'rate_limit'?)`.
The schema lives in `derm_cloud.compare.run.config_schema` (the comparator guide and `examples/compare.toml`
show the keys); the values it gives are the dataclasses of `derm_cloud.compare.run.config`.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from derm_cloud.compare.run.config import (
    BackendConfig,
    ComparisonConfig,
    ConfigFileError,
    DatasetConfig,
    ScenarioConfig,
)
from derm_cloud.compare.run.config_lines import Locate, parse_toml, parse_yaml
from derm_cloud.compare.run.config_schema import (
    DATASET_SHORT_NAMES,
    EMULATORS_WITHOUT_MODEL,
    SCENARIOS,
    SCHEMA,
    TOP_TABLES,
    BadValueError,
)
from derm_cloud.errors import ConfigError

__all__ = ["load_config", "parse_config", "with_decision"]


def load_config(path: str | os.PathLike[str]) -> ComparisonConfig:
    """Read and validate a `.toml`, `.yaml` or `.yml` config file.

    Raises:
        ConfigFileError: a key is unknown or a value is wrong; the message names the key and its line.

    Example:
        >>> cfg = load_config("compare.toml")  # doctest: +SKIP
        >>> [b.name for b in cfg.backends]  # doctest: +SKIP
        ['local', 'sagemaker']
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise ConfigError(f"config file {str(p)!r} does not exist; pass the path of a .toml or .yaml file")
    text = p.read_text(encoding="utf-8")
    fmt = "yaml" if p.suffix.lower() in (".yaml", ".yml") else "toml"
    return parse_config(text, fmt=fmt, file=str(p), base_dir=p.parent)


def parse_config(
    text_or_dict: str | Mapping[str, Any],
    *,
    fmt: str = "toml",
    file: str | None = None,
    base_dir: str | os.PathLike[str] | None = None,
) -> ComparisonConfig:
    """Validate a config given as TOML/YAML text or as an already parsed dict.

    Relative paths (`output`, `dataset.source`, `cost.prices`) resolve against `base_dir`
    (default: the current directory).
    """
    locate: Locate
    if isinstance(text_or_dict, Mapping):
        data: Any = dict(text_or_dict)
        locate = lambda _path: None  # noqa: E731
    elif fmt == "yaml":
        data, locate = parse_yaml(text_or_dict, file)
    else:
        data, locate = parse_toml(text_or_dict, file)
    return _Validator(locate, file, Path(base_dir) if base_dir is not None else Path.cwd()).config(data)


def with_decision(config: ComparisonConfig, overrides: Mapping[str, Any]) -> ComparisonConfig:
    """The config with `[decision]` keys replaced (the command line's flags), each checked as the file's are.

    Raises:
        ConfigError: an unknown key or a bad value, named as `decision.<key>` with the rule it breaks.
    """
    table = dict(config.decision) or {k: default for k, (_check, default) in SCHEMA["decision"].items()}
    for key, value in overrides.items():
        if key not in SCHEMA["decision"]:
            raise ConfigError(f"decision.{key}: unknown key; allowed keys: {', '.join(sorted(SCHEMA['decision']))}")
        try:
            table[key] = SCHEMA["decision"][key][0](value)
        except BadValueError as exc:
            raise ConfigError(f"decision.{key} (command line): {exc}") from None
    limits = [k for k in ("max_p95_ms", "max_p99_ms") if table[k] is not None]
    scenario = table["latency_scenario"]
    if limits and not config.scenarios[scenario].enabled:
        raise ConfigError(
            f"decision.{limits[0]}: judged on the {scenario} scenario, which this config disables; enable "
            f"[scenarios.{scenario}] or drop the latency limit"
        )
    return config.with_overrides(decision=table)


class _Validator:
    def __init__(self, locate: Locate, file: str | None, base: Path) -> None:
        self.locate = locate
        self.file = file
        self.base = base

    def fail(self, path: tuple[str | int, ...], message: str) -> ConfigFileError:
        key = ""
        for part in path:
            key += f"[{part}]" if isinstance(part, int) else (f".{part}" if key else str(part))
        return ConfigFileError(message, key=key or "<root>", line=self.locate(path), file=self.file)

    def section(self, data: Any, schema_name: str, path: tuple[str | int, ...]) -> dict[str, Any]:
        schema = SCHEMA[schema_name]
        if not isinstance(data, Mapping):
            raise self.fail(path, f"must be a table, got {type(data).__name__}")
        out: dict[str, Any] = {}
        for key, value in data.items():
            if key not in schema:
                hint = difflib.get_close_matches(str(key), list(schema), n=1)
                did = f" (did you mean {hint[0]!r}?)" if hint else ""
                raise self.fail((*path, str(key)), f"unknown key{did}; allowed keys: {', '.join(sorted(schema))}")
            try:
                out[key] = schema[key][0](value)
            except BadValueError as exc:
                raise self.fail((*path, str(key)), str(exc)) from None
        for key, (_check, default) in schema.items():
            if key not in out:
                if default is None and schema_name == "backends" and key in ("name", "type"):
                    continue
                out[key] = default
        return out

    def path(self, value: str) -> Path:
        p = Path(os.path.expandvars(value)).expanduser()
        return p if p.is_absolute() else (self.base / p)

    def config(self, data: Any) -> ComparisonConfig:
        if not isinstance(data, Mapping):
            raise self.fail((), "the config must be a table of settings")
        top = {k: v for k, v in data.items() if k not in TOP_TABLES}
        root = self.section(top, "", ())
        dataset = self.section(data.get("dataset", {}), "dataset", ("dataset",))
        population = self.section(data.get("population", {}), "population", ("population",))
        cost = self.section(data.get("cost", {}), "cost", ("cost",))
        fairness = self.section(data.get("fairness", {}), "fairness", ("fairness",))
        metadata = self.section(data.get("metadata", {}), "metadata", ("metadata",))
        decision = self.section(data.get("decision", {}), "decision", ("decision",))
        raw_scen = data.get("scenarios", {})
        if not isinstance(raw_scen, Mapping):
            raise self.fail(("scenarios",), "must be a table")
        common = self.section({k: v for k, v in raw_scen.items() if k not in SCENARIOS}, "scenarios", ("scenarios",))
        scenarios = {
            name: self.section(raw_scen.get(name, {}), f"scenarios.{name}", ("scenarios", name)) for name in SCENARIOS
        }
        backends = self.backends(data.get("backends"))
        self.check_decision(decision, scenarios)
        src = dataset["source"]
        if src is not None and "://" not in src and src not in DATASET_SHORT_NAMES:
            src = str(self.path(src))
        return ComparisonConfig(
            title=root["title"],
            output=self.path(root["output"]),
            seed=root["seed"],
            executor=root["executor"],
            backends_in_parallel=root["backends_in_parallel"],
            ray=root["ray"],
            dataset=DatasetConfig(source=src, limit=dataset["limit"], options=dataset["options"]),
            monthly_volume=population["monthly_volume"],
            melanoma_prevalence=population["melanoma_prevalence"],
            price_files=tuple(self.path(p) for p in cost["prices"]),
            utilisation=cost["utilisation"],
            fairness=fairness,
            scenario_defaults=common,
            scenarios={
                n: ScenarioConfig(n, s.pop("enabled"), s) for n, s in ((n, dict(s)) for n, s in scenarios.items())
            },
            backends=backends,
            source_file=Path(self.file) if self.file else None,
            metadata=metadata,
            decision=decision,
        )

    def backends(self, raw: Any) -> tuple[BackendConfig, ...]:
        if raw is None:
            raise self.fail(("backends",), "at least one [[backends]] entry is needed (name, type, options)")
        if isinstance(raw, Mapping):
            raise self.fail(("backends",), "write [[backends]] (an array of tables), not [backends]")
        if not isinstance(raw, list) or not raw:
            raise self.fail(("backends",), "must be a non-empty list of backend tables")
        out: list[BackendConfig] = []
        names: set[str] = set()
        for i, entry in enumerate(raw):
            b = self.section(entry, "backends", ("backends", i))
            if "type" not in b:
                raise self.fail(("backends", i), "missing key 'type' (a backend name such as local-onnx or sagemaker)")
            self.check_type(b["type"], ("backends", i, "type"))
            b.setdefault("name", b["type"])
            if b["name"] in names:
                raise self.fail(("backends", i, "name"), f"duplicate backend name {b['name']!r}; names must be unique")
            names.add(b["name"])
            b["emulator"] = self.section(b["emulator"], "backends.emulator", ("backends", i, "emulator"))
            if b["emulate"] and not b["model_dir"] and b["type"] not in EMULATORS_WITHOUT_MODEL:
                raise self.fail(("backends", i, "model_dir"), "emulate = true needs model_dir (the model it hosts)")
            if not b["emulate"] and b["model_dir"]:
                raise self.fail(
                    ("backends", i, "model_dir"), "model_dir is only for emulate = true; put it in options instead"
                )
            out.append(BackendConfig(**b))
        for i, backend in enumerate(out):
            target = backend.export_of
            if target is not None and (target not in names or target == backend.name):
                raise self.fail(
                    ("backends", i, "export_of"),
                    f"export_of must name another backend of this config (the cloud endpoint this one runs the "
                    f"export of), got {target!r}",
                )
        return tuple(out)

    def check_decision(self, decision: Mapping[str, Any], scenarios: Mapping[str, Mapping[str, Any]]) -> None:
        """A latency limit needs the scenario it is judged on to be measured."""
        scenario = decision["latency_scenario"]
        limits = [k for k in ("max_p95_ms", "max_p99_ms") if decision[k] is not None]
        if limits and not scenarios[scenario]["enabled"]:
            raise self.fail(
                ("decision", "latency_scenario"),
                f"{', '.join(limits)} is judged on the {scenario} scenario, which is disabled: enable "
                f"[scenarios.{scenario}] or set latency_scenario to a measured one",
            )

    def check_type(self, name: str, path: tuple[str | int, ...]) -> None:
        if ":" in name:
            return  # "package.module:Class", imported when the run starts
        from derm_cloud.registry import available_backends

        known = [e.name for e in available_backends()]
        if name not in known:
            hint = difflib.get_close_matches(name, known, n=1)
            did = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise self.fail(path, f"no backend named {name!r}{did}; known: {', '.join(known)}")
