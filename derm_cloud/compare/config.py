"""The comparison config file: TOML or YAML, validated with errors that name the bad key and its line.

A config says which backends to compare (with their options), on which dataset, with which latency scenarios,
at which monthly volume and prevalence, and where to write the report::

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

Every key is checked: a typo fails before anything runs, e.g.
``config.toml:23: backends[1].rate_limt: unknown key (did you mean 'rate_limit'?)``.
The schema lives in :data:`SCHEMA` below; ``docs/readme/compare.md`` lists every key.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from derm_cloud.compare.shared import redact_config
from derm_cloud.errors import ConfigError

__all__ = [
    "BackendConfig",
    "ComparisonConfig",
    "ConfigFileError",
    "DatasetConfig",
    "ScenarioConfig",
    "load_config",
    "parse_config",
]


class ConfigFileError(ConfigError):
    """A config value is wrong; ``key`` is the dotted path and ``line`` the 1-based line (when known)."""

    def __init__(self, message: str, *, key: str, line: int | None = None, file: str | None = None) -> None:
        where = f"{file or '<config>'}" + (f":{line}" if line else "")
        super().__init__(f"{where}: {key}: {message}")
        self.key = key
        self.line = line
        self.file = file


# --- schema ------------------------------------------------------------------------------------------------------
# Each key maps to (checker, default). A checker returns the normalised value or raises _BadValueError(message).


class _BadValueError(Exception):
    pass


Checker = Callable[[Any], Any]


def _num(lo: float | None = None, hi: float | None = None, *, integer: bool = False) -> Checker:
    def check(v: Any) -> Any:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or (integer and not isinstance(v, int)):
            raise _BadValueError(f"must be {'an integer' if integer else 'a number'}, got {v!r}")
        if lo is not None and v < lo:
            raise _BadValueError(f"must be >= {lo}, got {v!r}")
        if hi is not None and v > hi:
            raise _BadValueError(f"must be <= {hi}, got {v!r}")
        return int(v) if integer else float(v)

    return check


def _opt(check: Checker) -> Checker:
    return lambda v: None if v is None else check(v)


def _str(v: Any) -> str:
    if not isinstance(v, str) or not v.strip():
        raise _BadValueError(f"must be a non-empty string, got {v!r}")
    return v


def _bool(v: Any) -> bool:
    if not isinstance(v, bool):
        raise _BadValueError(f"must be true or false, got {v!r}")
    return v


def _table(v: Any) -> dict[str, Any]:
    if not isinstance(v, Mapping):
        raise _BadValueError(f"must be a table of key = value pairs, got {v!r}")
    return {str(k): val for k, val in v.items()}


def _choice(*options: str) -> Checker:
    def check(v: Any) -> str:
        if v not in options:
            raise _BadValueError(f"must be one of {', '.join(repr(o) for o in options)}, got {v!r}")
        return str(v)

    return check


def _int_list(v: Any) -> tuple[int, ...]:
    if not isinstance(v, list) or not v or not all(isinstance(x, int) and not isinstance(x, bool) for x in v):
        raise _BadValueError(f"must be a non-empty list of integers, got {v!r}")
    if any(x < 1 for x in v):
        raise _BadValueError(f"concurrency levels must be >= 1, got {v!r}")
    return tuple(sorted(set(v)))


def _prevalence(v: Any) -> Any:
    if isinstance(v, Mapping):
        from derm_cloud.taxonomy import CLASS_CODES

        bad = sorted(set(v) - set(CLASS_CODES))
        if bad:
            raise _BadValueError(f"unknown class code(s) {bad}; use {', '.join(CLASS_CODES)}")
        out = {str(k): _num(0.0, 1.0)(x) for k, x in v.items()}
        if sum(out.values()) > 1.0 + 1e-9:
            raise _BadValueError(f"class prevalences sum to {sum(out.values()):.3f}, more than 1")
        return out
    return _num(0.0, 1.0)(v)


def _paths(v: Any) -> tuple[str, ...]:
    if isinstance(v, str):
        v = [v]
    if not isinstance(v, list) or not all(isinstance(x, str) and x for x in v):
        raise _BadValueError(f"must be a file path or a list of file paths, got {v!r}")
    return tuple(v)


#: Melanoma share of HAM10000 (1,113 of 10,015 images; Tschandl et al. 2018): the default stated prevalence.
HAM10000_MELANOMA_SHARE = round(1113 / 10015, 4)

_SCENARIO_COMMON: dict[str, tuple[Checker, Any]] = {"enabled": (_bool, True)}

SCHEMA: dict[str, dict[str, tuple[Checker, Any]]] = {
    "": {
        "title": (_str, "derm-cloud comparison"),
        "output": (_str, "derm-cloud-report"),
        "seed": (_num(0, integer=True), 0),
        "executor": (_choice("local", "ray"), "local"),
        "backends_in_parallel": (_bool, True),
        "ray": (_table, {}),
    },
    "dataset": {
        "source": (_opt(_str), None),
        "limit": (_opt(_num(1, integer=True)), None),
        "options": (_table, {}),
    },
    "population": {
        "monthly_volume": (_num(1, integer=True), 100_000),
        # Default: the melanoma share of HAM10000 (1,113 / 10,015 images), a referral-centre mix; reports say so.
        "melanoma_prevalence": (_prevalence, HAM10000_MELANOMA_SHARE),
    },
    "fairness": {
        "skin_tone": (_choice("auto", "fitzpatrick", "ita", "none"), "auto"),
        "min_group_size": (_num(1, integer=True), 30),
    },
    "metadata": {
        # auto: every backend gets patient metadata only if all can use it; blind: none; each: each that can.
        "mode": (_choice("auto", "blind", "each"), "auto"),
        "variants": (_bool, False),
    },
    "cost": {
        "prices": (_paths, ()),
        "utilisation": (_num(0.01, 1.0), 0.5),
    },
    "scenarios": {
        "warmup": (_num(0, integer=True), 5),
        "min_samples": (_num(1, integer=True), 100),
        "percentile_method": (_choice("linear", "inverted_cdf"), "linear"),
        "bootstrap": (_num(0, integer=True), 1000),
        "request_timeout_s": (_num(0.001), 60.0),
    },
    "scenarios.quality": {**_SCENARIO_COMMON, "concurrency": (_num(1, integer=True), 4)},
    "scenarios.single_stream": {**_SCENARIO_COMMON, "queries": (_num(1, integer=True), 200)},
    "scenarios.server": {
        **_SCENARIO_COMMON,
        "queries": (_num(1, integer=True), 200),
        "target_qps": (_num(0.001), 10.0),
        "latency_bound_ms": (_num(0.001), 500.0),
        "max_inflight": (_num(1, integer=True), 64),
    },
    "scenarios.offline": {
        **_SCENARIO_COMMON,
        "queries": (_num(1, integer=True), 100),
        "concurrency": (_int_list, (1, 2, 4, 8)),
    },
    "scenarios.cold_start": {
        **_SCENARIO_COMMON,
        "trials": (_num(1, integer=True), 3),
        "warm_queries": (_num(1, integer=True), 3),
        "not_ready_calls": (_num(0, integer=True), 1),
    },
    "backends": {
        "name": (_str, None),
        "type": (_str, None),
        "options": (_table, {}),
        "emulate": (_bool, False),
        "model_dir": (_opt(_str), None),
        "emulator": (_table, {}),
        "rate_limit": (_opt(_num(0.001)), None),
        "burst": (_num(1, integer=True), 1),
        "max_concurrency": (_num(1, integer=True), 8),
        "timeout_s": (_opt(_num(0.001)), None),
        "billing": (_table, {}),
        "export_of": (_opt(_str), None),
    },
    "backends.emulator": {
        "delay_ms": (_num(0.0), 0.0),
        "transport": (_opt(_str), None),
    },
}
_TOP_TABLES = ("dataset", "population", "fairness", "metadata", "cost", "scenarios", "backends")
_SCENARIOS = ("quality", "single_stream", "server", "offline", "cold_start")


@dataclass(frozen=True)
class ScenarioConfig:
    """Settings of one scenario (``enabled`` plus the scenario's own keys)."""

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
        type: registry name (``local-onnx``, ``sagemaker`` ...) or ``package.module:Class``.
        options: keyword arguments for the backend's constructor.
        emulate: start the matching derm-cloud emulator hosting ``model_dir`` and point the backend at it.
        model_dir: the model an emulator hosts (``"sklesion"`` or a directory).
        emulator: emulator settings: ``delay_ms`` (fixed extra service time) and ``transport``.
        rate_limit: requests per second allowed to this backend (token bucket), ``None`` for no limit.
        burst: token-bucket capacity.
        max_concurrency: requests in flight during the quality pass.
        timeout_s: client-side timeout per request (defaults to ``scenarios.request_timeout_s``).
        billing: price-catalogue keys that override ``describe().billing`` (``sku``, ``instances`` ...).
        export_of: the name of the cloud backend this one runs the export of (``derm-cloud models import``):
            the report shows the pair's agreement (see :mod:`derm_cloud.compare.export_parity`).
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
    """Where the images come from: ``source=None`` means the embedded default image set, ``"ham10000:dev"`` the
    labelled HAM10000 dev split this machine has (``$DERM_CLOUD_DATA``, a fetched copy, ``../shared/data``)."""

    source: str | None = None
    limit: int | None = None
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ComparisonConfig:
    """A validated comparison config; build it with :func:`load_config` or :func:`parse_config`."""

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
    #: ``mode`` (auto, blind, each) and ``variants``: see :mod:`derm_cloud.compare.metadata_modes`.
    metadata: dict[str, Any] = field(default_factory=lambda: {"mode": "auto", "variants": False})

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
        for key in ("output", "title", "executor", "ray", "source_file", "backends_in_parallel"):
            d.pop(key, None)
        blob = json.dumps({"config": d, "dataset": dataset_fingerprint}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()

    def with_overrides(self, **changes: Any) -> ComparisonConfig:
        from dataclasses import replace

        return replace(self, **changes)


# --- loading -----------------------------------------------------------------------------------------------------


def load_config(path: str | os.PathLike[str]) -> ComparisonConfig:
    """Read and validate a ``.toml``, ``.yaml`` or ``.yml`` config file.

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

    Relative paths (``output``, ``dataset.source``, ``cost.prices``) resolve against ``base_dir``
    (default: the current directory).
    """
    locate: Callable[[tuple[str | int, ...]], int | None]
    if isinstance(text_or_dict, Mapping):
        data: Any = dict(text_or_dict)
        locate = lambda _path: None  # noqa: E731
    elif fmt == "yaml":
        data, locate = _parse_yaml(text_or_dict, file)
    else:
        data, locate = _parse_toml(text_or_dict, file)
    return _Validator(locate, file, Path(base_dir) if base_dir is not None else Path.cwd()).config(data)


def _parse_toml(text: str, file: str | None) -> tuple[Any, Callable[[tuple[str | int, ...]], int | None]]:
    import tomllib

    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"line (\d+)", str(exc))
        line = int(m[1]) if m else None
        raise ConfigFileError(f"not valid TOML: {exc}", key="<syntax>", line=line, file=file) from None
    return data, lambda path: toml_line(text, path)


def _parse_yaml(text: str, file: str | None) -> tuple[Any, Callable[[tuple[str | int, ...]], int | None]]:
    try:
        import yaml
    except ImportError as exc:
        raise ConfigError("YAML configs need PyYAML; run: pip install 'derm-cloud[compare]' or use TOML") from exc
    try:
        data = yaml.safe_load(text)
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise ConfigFileError(
            f"not valid YAML: {exc}", key="<syntax>", line=mark.line + 1 if mark else None, file=file
        ) from None

    def locate(path: tuple[str | int, ...]) -> int | None:
        current, line = node, None
        for part in path:
            if current is None:
                break
            if isinstance(current, yaml.MappingNode):
                nxt = None
                for k, v in current.value:
                    if k.value == part:
                        line, nxt = k.start_mark.line + 1, v
                        break
                current = nxt
            elif isinstance(current, yaml.SequenceNode) and isinstance(part, int) and part < len(current.value):
                current = current.value[part]
                line = current.start_mark.line + 1
            else:
                break
        return line

    return data if data is not None else {}, locate


def toml_line(text: str, path: tuple[str | int, ...]) -> int | None:
    """Best-effort 1-based line of a key in TOML source (tomllib keeps no positions).

    Splits the source into table blocks, gives each block its full key path (``[[backends]]`` blocks get their
    array index; ``[backends.emulator]`` belongs to the latest ``[[backends]]``), picks the block that is the
    longest prefix of ``path`` and scans it for ``key =`` (also inside inline tables and dotted keys).
    """
    lines = text.splitlines()
    header_re = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
    blocks: list[tuple[tuple[str | int, ...], int, int]] = []  # (full path, header line index, first line)
    arrays: dict[str, int] = {}
    for i, ln in enumerate(lines):
        m = header_re.match(ln)
        if not m:
            continue
        parts = [p.strip().strip('"') for p in m[2].split(".")]
        full: list[str | int] = []
        for j, part in enumerate(parts):
            full.append(part)
            prefix = ".".join(parts[: j + 1])
            is_last = j == len(parts) - 1
            if m[1] == "[[" and is_last:
                arrays[prefix] = arrays.get(prefix, -1) + 1
                full.append(arrays[prefix])
            elif prefix in arrays:
                full.append(arrays[prefix])
        blocks.append((tuple(full), i, i + 1))
    bounds = [b[1] for b in blocks] + [len(lines)]
    spans: list[tuple[tuple[str | int, ...], int | None, int, int]] = [((), None, 0, bounds[0])]
    spans += [(full, hdr, first, bounds[k + 1]) for k, (full, hdr, first) in enumerate(blocks)]
    best = max(
        (s for s in spans if tuple(path[: len(s[0])]) == s[0]),
        key=lambda s: len(s[0]),
        default=None,
    )
    if best is None:
        return None
    block_path, hdr, start, end = best
    keys = [str(p) for p in path[len(block_path) :] if not isinstance(p, int)]
    header_line = hdr + 1 if hdr is not None else None
    for key in reversed(keys):
        pattern = re.compile(rf"(^|[\s{{,.])[\"']?{re.escape(key)}[\"']?\s*=")
        for i in range(start, end):
            if pattern.search(lines[i].split("#", 1)[0]):
                return i + 1
    return header_line


class _Validator:
    def __init__(self, locate: Callable[[tuple[str | int, ...]], int | None], file: str | None, base: Path) -> None:
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
            except _BadValueError as exc:
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
        top = {k: v for k, v in data.items() if k not in _TOP_TABLES}
        root = self.section(top, "", ())
        dataset = self.section(data.get("dataset", {}), "dataset", ("dataset",))
        population = self.section(data.get("population", {}), "population", ("population",))
        cost = self.section(data.get("cost", {}), "cost", ("cost",))
        fairness = self.section(data.get("fairness", {}), "fairness", ("fairness",))
        metadata = self.section(data.get("metadata", {}), "metadata", ("metadata",))
        raw_scen = data.get("scenarios", {})
        if not isinstance(raw_scen, Mapping):
            raise self.fail(("scenarios",), "must be a table")
        common = self.section({k: v for k, v in raw_scen.items() if k not in _SCENARIOS}, "scenarios", ("scenarios",))
        scenarios = {
            name: self.section(raw_scen.get(name, {}), f"scenarios.{name}", ("scenarios", name)) for name in _SCENARIOS
        }
        backends = self.backends(data.get("backends"))
        src = dataset["source"]
        if src is not None and "://" not in src and src not in _DATASET_SHORT_NAMES:
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
            if b["emulate"] and not b["model_dir"] and b["type"] not in _EMULATORS_WITHOUT_MODEL:
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

    def check_type(self, name: str, path: tuple[str | int, ...]) -> None:
        if ":" in name:
            return  # "package.module:Class", imported when the run starts
        from derm_cloud.registry import available_backends

        known = [e.name for e in available_backends()]
        if name not in known:
            hint = difflib.get_close_matches(name, known, n=1)
            did = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise self.fail(path, f"no backend named {name!r}{did}; known: {', '.join(known)}")


# Emulators that host no model (generic label services).
_EMULATORS_WITHOUT_MODEL = frozenset({"google-vision"})
# Dataset sources that are names, not paths ("ham10000:dev": the labelled HAM10000 dev split this machine has).
_DATASET_SHORT_NAMES = frozenset({"default", "dermapred-example", "ham10000:dev"})
