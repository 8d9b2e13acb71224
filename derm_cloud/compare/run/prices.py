"""The price catalogue: what each priced cloud service costs, with its source and as-of date.

The catalogue (`prices.json` beside this module) holds one entry per priced service with its billing basis,
unit, currency, region, source URL, as-of date and status (vendor, 3rd-party, unverified). Users extend or
override it with their own JSON or TOML file of the same shape (`[cost] prices = ["my-prices.toml"]`); an
entry with the same `id` replaces the shipped one. The run stage loads it (it reads files); the analysis
prices each backend with it (`derm_cloud.compare.analysis.cost`).

A backend names its price through `describe().billing["sku"]` (or the config's `billing` table). A sku
without a catalogue entry is **unknown**: its cost stays blank, never 0.

Every entry carries a **price class** (`PRICE_CLASSES`: real-time instance, node-hour, serverless, per-call,
per-token, batch instance-hour, batch node-hour, data), a region and the provider's SKU (`sku`: the name the
provider sells it under; `sku_id`: the price API's SKU id, when the price came from one), and says where the
figure came from (`source_kind`: "api" or "web page"). `derm-cloud prices refresh` writes a **user catalogue**
(`user_catalogue_path`) from the providers' price APIs; `PriceCatalogue.load` reads it over the shipped
snapshot, and user files named in the config over both.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from derm_cloud.errors import ConfigError

__all__ = [
    "BASES",
    "PRICE_CLASSES",
    "PriceCatalogue",
    "PriceEntry",
    "default_price_class",
    "entry_age_days",
    "layer_age_days",
    "user_catalogue_path",
]

BASES = ("per_request", "instance_hour", "node_hour", "serverless_gb_second", "per_token", "per_1000_units", "per_gb")
_REQUIRED = {
    "per_request": ("price",),
    "instance_hour": ("price",),
    "node_hour": ("price",),
    "serverless_gb_second": ("price",),
    "per_gb": ("price",),
    "per_token": ("input_per_million", "output_per_million"),
    "per_1000_units": ("tiers",),
}
#: What a price buys, so that unlike prices are never compared silently (see `derm_cloud.compare.analysis.cost`).
PRICE_CLASSES = (
    "real-time instance",
    "node-hour",
    "serverless",
    "per-call",
    "per-token",
    "batch instance-hour",
    "batch node-hour",
    "data",
)
SOURCE_KINDS = ("api", "web page")
_DATE = re.compile(r"\b(\d{4})(?:-(0[1-9]|1[0-2])(?:-(0[1-9]|[12]\d|3[01]))?)?")


def default_price_class(basis: str, always_on: bool) -> str:
    """The class an entry has when it names none: hourly prices are real-time (always on) or batch."""
    if basis == "instance_hour":
        return "real-time instance" if always_on else "batch instance-hour"
    if basis == "node_hour":
        return "node-hour" if always_on else "batch node-hour"
    return {
        "serverless_gb_second": "serverless",
        "per_request": "per-call",
        "per_1000_units": "per-call",
        "per_token": "per-token",
    }.get(basis, "data")


def user_catalogue_path() -> Path:
    """Where `derm-cloud prices refresh` writes by default: `$DERM_CLOUD_PRICES`, else `<cache>/prices.json`."""
    env = os.environ.get("DERM_CLOUD_PRICES")
    if env:
        return Path(env).expanduser()
    from derm_cloud.models.cache import cache_dir

    return cache_dir() / "prices.json"


@dataclass(frozen=True)
class PriceEntry:
    """One catalogue entry; see the module docstring for the billing bases."""

    id: str
    basis: str
    unit: str
    currency: str
    region: str
    as_of: str
    source: str
    status: str
    service: str = ""
    always_on: bool = False
    price: float | None = None
    per_request: float | None = None
    input_per_million: float | None = None
    output_per_million: float | None = None
    cached_input_per_million: float | None = None
    tiers: tuple[tuple[float | None, float], ...] = ()
    alternatives: tuple[float, ...] = ()
    notes: str = ""
    price_class: str = ""
    sku: str = ""
    sku_id: str = ""
    effective_date: str = ""
    source_kind: str = "web page"
    query: str = ""
    retrieved: str = ""
    origin: str = "shipped"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], origin: str) -> PriceEntry:
        where = f"{origin}: entry {data.get('id', '?')!r}"
        known = set(cls.__dataclass_fields__) - {"origin"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(known)}")
        missing = [
            k for k in ("id", "basis", "unit", "currency", "region", "as_of", "source", "status") if k not in data
        ]
        if missing:
            raise ConfigError(f"{where}: missing {missing}; every price needs its unit, currency, source and date")
        basis = data["basis"]
        if basis not in BASES:
            raise ConfigError(f"{where}: basis {basis!r} is not one of {', '.join(BASES)}")
        absent = [k for k in _REQUIRED[basis] if data.get(k) is None]
        if absent:
            raise ConfigError(f"{where}: basis {basis} needs {absent}")
        values = dict(data)
        values["tiers"] = tuple(
            (None if t.get("up_to") is None else float(t["up_to"]), float(t["price"])) for t in data.get("tiers", ())
        )
        values["alternatives"] = tuple(float(x) for x in data.get("alternatives", ()))
        values["always_on"] = bool(data.get("always_on", basis in ("instance_hour", "node_hour")))
        values["price_class"] = data.get("price_class") or default_price_class(basis, values["always_on"])
        if values["price_class"] not in PRICE_CLASSES:
            raise ConfigError(
                f"{where}: price_class {values['price_class']!r} is not one of {', '.join(PRICE_CLASSES)}"
            )
        if values.get("source_kind", "web page") not in SOURCE_KINDS:
            raise ConfigError(
                f"{where}: source_kind {values['source_kind']!r} is not one of {' or '.join(SOURCE_KINDS)}"
            )
        return cls(**values, origin=origin)

    def dated(self) -> dt.date | None:
        """The price's date (`effective_date`, else the first date in `as_of`); `None` when it states none.

        A year alone ("~2025") counts as 1 January of that year, a month as its first day: an age computed
        from it is never younger than the truth.
        """
        for text in (self.effective_date, self.as_of):
            m = _DATE.search(text or "")
            if m:
                return dt.date(int(m[1]), int(m[2] or 1), int(m[3] or 1))
        return None

    def age_days(self, today: dt.date | None = None) -> int | None:
        """Days since the price's date (`None`: undated, which callers treat as stale)."""
        when = self.dated()
        return None if when is None else ((today or dt.date.today()) - when).days


def layer_age_days(layer: Mapping[str, Any], today: dt.date | None = None) -> int | None:
    """Days since a catalogue layer was compiled or refreshed (`None`: it states no date)."""
    m = _DATE.search(str(layer.get("date") or ""))
    if m is None:
        return None
    return ((today or dt.date.today()) - dt.date(int(m[1]), int(m[2] or 1), int(m[3] or 1))).days


def entry_age_days(entry: PriceEntry, today: dt.date | None = None) -> int | None:
    """Days since the entry's price date (`None`: undated, which callers treat as stale)."""
    return entry.age_days(today)


class PriceCatalogue:
    """The shipped prices plus user files (later files override earlier ones by `id`).

    Example:
        >>> cat = PriceCatalogue.load()
        >>> cat.lookup("sagemaker.realtime.ml.m5.large", provider="aws").price
        0.115
    """

    def __init__(self, entries: Mapping[str, PriceEntry], layers: Sequence[Mapping[str, Any]] = ()) -> None:
        self.entries = dict(entries)
        #: Where the entries came from, in load order: {"origin", "date" (compiled or refreshed), "entries"}.
        self.layers = [dict(layer) for layer in layers]

    def layers_with_age(self, today: dt.date | None = None) -> list[dict[str, Any]]:
        """The layers, each with `age_days` since it was compiled or refreshed (`None`: it states no date)."""
        return [{**layer, "age_days": layer_age_days(layer, today)} for layer in self.layers]

    @classmethod
    def load(
        cls, extra_files: Sequence[str | os.PathLike[str]] = (), *, user_catalogue: bool | Path = True
    ) -> PriceCatalogue:
        """The shipped snapshot, then the refreshed user catalogue (when one exists), then `extra_files`.

        Args:
            extra_files: the config's `[cost] prices` files (JSON or TOML).
            user_catalogue: `True` reads `user_catalogue_path()` if it exists, a path reads that file, `False`
                skips it (the shipped snapshot alone).
        """
        text = resources.files("derm_cloud.compare.run").joinpath("prices.json").read_text(encoding="utf-8")
        shipped = json.loads(text)
        entries = {e.id: e for e in _parse(shipped, "prices.json (shipped)")}
        layers = [{"origin": "prices.json (shipped)", "date": shipped.get("compiled", ""), "entries": len(entries)}]
        files: list[Path] = []
        if user_catalogue is not False:
            user = user_catalogue_path() if user_catalogue is True else Path(user_catalogue)
            if user.is_file() or user_catalogue is not True:
                files.append(user)
        for path in [*files, *(Path(p) for p in extra_files)]:
            if not path.is_file():
                raise ConfigError(f"price file {str(path)!r} does not exist; fix [cost] prices in the config")
            if path.suffix.lower() == ".toml":
                import tomllib

                data = tomllib.loads(path.read_text(encoding="utf-8"))
            else:
                data = json.loads(path.read_text(encoding="utf-8"))
            parsed = _parse(data, str(path))
            entries.update((e.id, e) for e in parsed)
            layers.append({"origin": str(path), "date": data.get("refreshed", ""), "entries": len(parsed)})
        return cls(entries, layers)

    def lookup(self, sku: str | None, provider: str | None = None) -> PriceEntry | None:
        """The entry for `sku`, also trying `<provider>.<sku>` (backends may omit the provider prefix)."""
        if not sku:
            return None
        for key in (sku, f"{provider}.{sku}" if provider else None):
            if key and key in self.entries:
                return self.entries[key]
        return None


def _parse(data: Any, origin: str) -> list[PriceEntry]:
    if not isinstance(data, Mapping) or not isinstance(data.get("entries"), list):
        raise ConfigError(f"{origin}: a price file needs a list 'entries' (JSON) or [[entries]] tables (TOML)")
    return [PriceEntry.from_dict(e, origin) for e in data["entries"]]
