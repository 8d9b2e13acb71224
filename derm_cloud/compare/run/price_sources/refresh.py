"""`derm-cloud prices refresh`: read every query's price from its provider's API into the user catalogue.

All answers are gathered before anything is written, and the file is replaced atomically (a temporary file in
the same folder, then `os.replace`): an API error or a crash half-way leaves the previous catalogue as it was.
An entry whose query finds no SKU keeps its previous figure, and the result says so.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from derm_cloud.compare.run.price_sources.queries import PROVIDERS, QUERIES, PriceQuery
from derm_cloud.compare.run.price_sources.quotes import Quote
from derm_cloud.compare.run.prices import PriceCatalogue, PriceEntry
from derm_cloud.errors import ConfigError

__all__ = ["RefreshResult", "endpoints_for", "fetch_quotes", "refresh_prices"]


@dataclass
class RefreshResult:
    """What a refresh changed: updated (id, old price, new price), added ids, kept (id, why)."""

    path: Path
    updated: list[tuple[str, float | None, float]] = field(default_factory=list)
    added: list[str] = field(default_factory=list)
    kept: list[tuple[str, str]] = field(default_factory=list)

    def lines(self) -> list[str]:
        """One line per entry, for the command's output."""
        out = [f"updated {i}: {old if old is not None else '?'} -> {new}" for i, old, new in self.updated]
        out += [f"added {i}" for i in self.added]
        out += [f"KEPT {i}: {why}" for i, why in self.kept]
        return out


def endpoints_for(mirror: str | None, overrides: Mapping[str, str | None]) -> dict[str, str | None]:
    """Per-provider endpoints: an explicit override, else the mirror, else `None` (the provider's own API)."""
    unknown = sorted(set(overrides) - set(PROVIDERS))
    if unknown:
        raise ConfigError(f"unknown price provider(s) {unknown}; known: {', '.join(PROVIDERS)}")
    return {p: overrides.get(p) or mirror for p in PROVIDERS}


def fetch_quotes(queries: Sequence[PriceQuery], endpoints: Mapping[str, str | None]) -> dict[str, Quote | None]:
    """Every query's quote (`None`: the API lists no such SKU); raises `PriceSourceError` on the first failure."""
    from derm_cloud.compare.run.price_sources.aws import aws_client, aws_quote
    from derm_cloud.compare.run.price_sources.azure import AZURE_ENDPOINT, azure_quote
    from derm_cloud.compare.run.price_sources.google import google_client, google_quote

    clients: dict[str, Any] = {}
    listed: dict[str, list[Any]] = {}
    out: dict[str, Quote | None] = {}
    for q in queries:
        endpoint = endpoints.get(q.provider)
        if q.provider == "azure":
            out[q.entry_id] = azure_quote(q, endpoint or AZURE_ENDPOINT)
        elif q.provider == "aws":
            client = clients.get("aws") or clients.setdefault("aws", aws_client(endpoint))
            out[q.entry_id] = aws_quote(q, client)
        else:
            client = clients.get("google") or clients.setdefault("google", google_client(endpoint))
            out[q.entry_id] = google_quote(q, client, listed)
    return out


def _entry(q: PriceQuery, quote: Quote, retrieved: str) -> dict[str, Any]:
    return {
        "id": q.entry_id,
        "service": q.service,
        "basis": q.basis,
        "always_on": q.price_class in ("real-time instance", "node-hour"),
        "price": quote.price,
        "unit": f"{q.unit} (API unit: {quote.unit})",
        "currency": quote.currency,
        "region": quote.region,
        "as_of": quote.effective_date[:10] or retrieved[:10],
        "effective_date": quote.effective_date,
        "source": quote.source,
        "status": "vendor list price (API)",
        "source_kind": "api",
        "price_class": q.price_class,
        "sku": q.sku,
        "sku_id": quote.sku_id,
        "query": quote.source,
        "retrieved": retrieved,
        "notes": f"API description: {quote.description}",
    }


def _write_atomically(path: Path, data: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def refresh_prices(
    out: Path,
    *,
    endpoints: Mapping[str, str | None],
    providers: Sequence[str] = PROVIDERS,
    queries: Sequence[PriceQuery] = QUERIES,
    now: dt.datetime | None = None,
) -> RefreshResult:
    """Refresh the user catalogue at `out` from the providers' price APIs (see the module docstring)."""
    bad = sorted(set(providers) - set(PROVIDERS))
    if bad:
        raise ConfigError(f"unknown price provider(s) {bad}; known: {', '.join(PROVIDERS)}")
    current = PriceCatalogue.load(user_catalogue=out if out.is_file() else False)
    previous: dict[str, dict[str, Any]] = {}
    if out.is_file():
        previous = {e["id"]: e for e in json.loads(out.read_text(encoding="utf-8")).get("entries", [])}
    chosen = [q for q in queries if q.provider in providers]
    quotes = fetch_quotes(chosen, endpoints)  # every answer first: an error here writes nothing
    retrieved = (now or dt.datetime.now(dt.UTC)).isoformat(timespec="seconds")
    result = RefreshResult(out)
    entries = dict(previous)
    for q in chosen:
        quote = quotes[q.entry_id]
        old = current.entries.get(q.entry_id)
        if quote is None:
            where = f"previous entry from {old.origin}, as of {old.as_of}" if old else "no previous entry either"
            result.kept.append((q.entry_id, f"the {q.provider} price API lists no matching SKU; {where}"))
            continue
        entries[q.entry_id] = _entry(q, quote, retrieved)
        PriceEntry.from_dict(entries[q.entry_id], str(out))  # refuse to write an entry the loader would refuse
        if old is None:
            result.added.append(q.entry_id)
        else:
            result.updated.append((q.entry_id, old.price, quote.price))
    _write_atomically(
        out,
        {
            "format": "derm-cloud-prices/1",
            "refreshed": retrieved,
            "description": "List prices read by `derm-cloud prices refresh` from the providers' price APIs; "
            "read over the shipped snapshot.",
            "entries": sorted(entries.values(), key=lambda e: e["id"]),
        },
    )
    return result
