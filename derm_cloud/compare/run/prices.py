"""The price catalogue: what each priced cloud service costs, with its source and as-of date.

The catalogue (`prices.json` beside this module) holds one entry per priced service with its billing basis,
unit, currency, region, source URL, as-of date and status (vendor, 3rd-party, unverified). Users extend or
override it with their own JSON or TOML file of the same shape (`[cost] prices = ["my-prices.toml"]`); an
entry with the same `id` replaces the shipped one. The run stage loads it (it reads files); the analysis
prices each backend with it (`derm_cloud.compare.analysis.cost`).

A backend names its price through `describe().billing["sku"]` (or the config's `billing` table). A sku
without a catalogue entry is **unknown**: its cost stays blank, never 0.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from derm_cloud.errors import ConfigError

__all__ = ["BASES", "PriceCatalogue", "PriceEntry"]

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
        return cls(**values, origin=origin)


class PriceCatalogue:
    """The shipped prices plus user files (later files override earlier ones by `id`).

    Example:
        >>> cat = PriceCatalogue.load()
        >>> cat.lookup("sagemaker.realtime.ml.m5.large", provider="aws").price
        0.115
    """

    def __init__(self, entries: Mapping[str, PriceEntry]) -> None:
        self.entries = dict(entries)

    @classmethod
    def load(cls, extra_files: Sequence[str | os.PathLike[str]] = ()) -> PriceCatalogue:
        text = resources.files("derm_cloud.compare.run").joinpath("prices.json").read_text(encoding="utf-8")
        entries = {e.id: e for e in _parse(json.loads(text), "prices.json (shipped)")}
        for path in extra_files:
            p = Path(path)
            if not p.is_file():
                raise ConfigError(f"price file {str(p)!r} does not exist; fix [cost] prices in the config")
            if p.suffix.lower() == ".toml":
                import tomllib

                data = tomllib.loads(p.read_text(encoding="utf-8"))
            else:
                data = json.loads(p.read_text(encoding="utf-8"))
            for e in _parse(data, str(p)):
                entries[e.id] = e
        return cls(entries)

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
