"""Cost on like bases: what each cost figure assumes, whether compared prices buy the same thing, and their age.

`derm_cloud.compare.analysis.cost` computes the figures; this module says what they stand on:

* **assumptions**: per backend, in words: instances x hours and minimum replicas for always-on prices, memory x
  latency for serverless, tokens per call, units per call, and the monthly volume;
* **like bases**: a warning when the compared backends' prices differ in class (an AutoML node-hour against a
  real-time instance-hour) or in region, and for each backend the catalogue entries of its own provider in the
  other backends' class (the like-for-like alternative), or a note that the catalogue has none;
* **age**: each price's age from its date, flagged past `MAX_PRICE_AGE_DAYS` (undated prices are flagged too),
  and the catalogue layers (shipped snapshot, refreshed user catalogue, config files) with their dates.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from derm_cloud.compare.run.prices import PriceCatalogue, PriceEntry

__all__ = ["MAX_PRICE_AGE_DAYS", "assumptions", "catalogue_age", "geography", "like_bases"]

MAX_PRICE_AGE_DAYS = 90

# Provider region codes and names -> one geography, so that us-east-1, eastus and "East US" compare equal.
_GEOGRAPHIES = (
    (re.compile(r"(?i)^(us-east-?\d|us-?east-?\d*|east ?us ?\d*)$"), "US East"),
    (re.compile(r"(?i)^(us-central\d|central ?us|us-?central)$"), "US Central"),
    (re.compile(r"(?i)^(us-west-?\d|us-?west-?\d*|west ?us ?\d*)$"), "US West"),
    (re.compile(r"(?i)^(eu-west-?\d|europe-west\d|west ?europe|westeurope|north ?europe|northeurope)$"), "Europe"),
    (re.compile(r"(?i)^(ap-south-?\d|asia-south\d|central ?india|centralindia)$"), "India"),
)


def geography(region: str) -> str | None:
    """The geography of a provider's region code or name; `None` when unstated or global."""
    for pattern, name in _GEOGRAPHIES:
        if pattern.match(region.strip()):
            return name
    return None


def assumptions(entry: PriceEntry, billing: Mapping[str, Any], out: Mapping[str, Any], volume: int) -> str:
    """What the backend's per-month and per-1,000 figures assume, in one sentence.

    A backend made of an endpoint and a local part (a probe: embedding endpoint + head) says what the local part
    adds (`billing["head"]`), so a reader sees the price is the endpoint's alone on purpose.
    """
    basis = _endpoint_basis(entry, billing, out, volume)
    head = billing.get("head")
    return f"embedding endpoint: {basis}; + {head}" if head else basis


def _endpoint_basis(entry: PriceEntry, billing: Mapping[str, Any], out: Mapping[str, Any], volume: int) -> str:
    per_month = f"{volume:,} predictions/month"
    if entry.always_on:
        configured = int(billing.get("instances", 1))
        n = out.get("instances") or configured
        return (
            f"{n} x {entry.sku or entry.id} x 730 h/month at {entry.price:g} {entry.currency} per {entry.unit}, always "
            f"on (minimum replicas {configured}, billed with or without traffic); {per_month}"
        )
    if entry.basis == "instance_hour" or entry.basis == "node_hour":
        return f"billed per {entry.unit} while a job runs; {per_month}"
    if entry.basis == "serverless_gb_second":
        return (
            f"{billing.get('memory_gb', '?')} GB x the measured mean latency per prediction at {entry.price:g} "
            f"{entry.currency}/GB-s, scales to zero (no idle cost); {per_month}"
        )
    if entry.basis == "per_token":
        return (
            f"the measured (or configured) input and output tokens per prediction at list per-token prices; {per_month}"
        )
    if entry.basis == "per_1000_units":
        units = billing.get("units_per_prediction", billing.get("units_per_call", 1))
        return f"{units} unit(s) per prediction, tiered per 1,000 units with the free tier applied; {per_month}"
    return f"{entry.price} {entry.currency} per {entry.unit}; {per_month}"


def like_bases(
    per: Mapping[str, Mapping[str, Any]], catalogue: PriceCatalogue
) -> tuple[list[str], dict[str, list[str]]]:
    """Warnings when priced backends differ in class or region, and each backend's like-for-like alternatives."""
    priced = {name: c["entry"] for name, c in per.items() if c.get("entry")}
    warnings: list[str] = []
    alternatives: dict[str, list[str]] = {}
    classes = {e["price_class"] for e in priced.values()}
    if len(classes) > 1:
        listed = "; ".join(f"{n}: {e['price_class']} ({e['id']})" for n, e in priced.items())
        warnings.append(
            f"prices on unlike bases: the compared backends are priced in different classes ({listed}); their "
            "monthly figures buy different things. Compare like-for-like entries where named below."
        )
        for name, e in priced.items():
            provider = e["id"].split(".")[0]
            others = sorted({o["price_class"] for n, o in priced.items() if n != name} - {e["price_class"]})
            found = [
                f"{alt.id} ({alt.price_class}, {alt.region}, {alt.price:g} {alt.currency} per {alt.unit})"
                for alt in catalogue.entries.values()
                if alt.id.split(".")[0] == provider and alt.price_class in others and alt.price is not None
            ]
            alternatives[name] = found
            if found:
                warnings.append(f"{name}: like-for-like alternative in the catalogue: {'; '.join(found)}")
            else:
                warnings.append(f"{name}: the catalogue has no {provider} entry in class {' or '.join(others)}")
    regions = {n: (e.get("region", ""), geography(e.get("region", ""))) for n, e in priced.items()}
    if len({g for _, g in regions.values()}) > 1:
        listed = "; ".join(f"{n}: {r or 'not stated'}" for n, (r, _) in regions.items())
        warnings.append(
            f"prices from different regions ({listed}): list prices differ by region; price every backend in "
            "the region you would deploy to (`derm-cloud prices refresh`, or a [cost] prices file)"
        )
    return warnings, alternatives


def catalogue_age(
    catalogue: PriceCatalogue,
    used: Mapping[str, PriceEntry],
    max_age_days: int = MAX_PRICE_AGE_DAYS,
    today: dt.date | None = None,
) -> dict[str, Any]:
    """The catalogue's layers with their dates, each used price's age, and the stale ones (with warnings)."""
    ages = {k: e.age_days(today) for k, e in used.items()}
    stale = sorted(k for k, age in ages.items() if age is None or age > max_age_days)
    warnings = [
        f"price {k} is {'undated' if ages[k] is None else f'{ages[k]} days old'} (as of {used[k].as_of}, "
        f"{used[k].source_kind}), older than {max_age_days} days: `derm-cloud prices refresh` reads current list "
        "prices"
        for k in stale
    ]
    return {
        "layers": catalogue.layers_with_age(today),
        "max_age_days": max_age_days,
        "ages": ages,
        "stale": stale,
        "warnings": warnings,
    }
