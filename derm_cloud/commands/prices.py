"""`derm-cloud prices`: refresh list prices from the providers' price APIs, and show the catalogue with its age."""

from __future__ import annotations

import argparse
import datetime as dt
import json
from pathlib import Path
from typing import Any

from derm_cloud.errors import ConfigError

DEFAULT_MAX_AGE_DAYS = 90


def register(sub: Any) -> None:
    p = sub.add_parser(
        "prices",
        help="refresh list prices from the providers' price APIs; show the catalogue and its age",
        description=(
            "The price catalogue the comparator costs backends with: the shipped snapshot (from web pages), "
            "overridden by a user catalogue that `prices refresh` reads from the Azure Retail Prices API, the "
            "AWS Price List Query API and the Google Cloud Billing Catalog API."
        ),
    )
    commands = p.add_subparsers(dest="prices_command", metavar="ACTION", required=True)
    r = commands.add_parser(
        "refresh",
        help="read list prices from the providers' public price APIs into the user catalogue",
        description=(
            "Azure needs no credentials; AWS uses the usual AWS credentials (any account may read list prices); "
            "Google needs GOOGLE_API_KEY. Nothing is written unless every API answered; an entry the API does not "
            "list keeps its previous figure and is named."
        ),
    )
    r.add_argument("--mirror", metavar="URL", help="serve all three APIs from this base URL (a local emulator)")
    for provider in ("azure", "aws", "google"):
        r.add_argument(f"--{provider}-endpoint", metavar="URL", help=f"endpoint for the {provider} price API only")
    r.add_argument(
        "--provider", action="append", choices=("azure", "aws", "google"), help="refresh only these (repeatable)"
    )
    r.add_argument("--out", metavar="FILE", help="user catalogue to write (default: $DERM_CLOUD_PRICES or the cache)")
    r.set_defaults(handler=run_refresh)
    s = commands.add_parser("show", help="list the catalogue's entries with class, region, SKU, source and age")
    s.add_argument("--catalogue", metavar="FILE", help="user catalogue to read (default: the refreshed one, if any)")
    s.add_argument(
        "--max-age-days",
        type=int,
        default=DEFAULT_MAX_AGE_DAYS,
        help=f"flag prices older than this many days (default {DEFAULT_MAX_AGE_DAYS}); undated ones are flagged too",
    )
    s.add_argument("--json", action="store_true", help="print JSON instead of a table")
    s.set_defaults(handler=run_show)


def run_refresh(args: argparse.Namespace) -> int:
    from derm_cloud.compare.run.price_sources.refresh import endpoints_for, refresh_prices
    from derm_cloud.compare.run.prices import user_catalogue_path

    out = Path(args.out).expanduser() if args.out else user_catalogue_path()
    overrides = {p: getattr(args, f"{p}_endpoint") for p in ("azure", "aws", "google")}
    result = refresh_prices(
        out,
        endpoints=endpoints_for(args.mirror, overrides),
        providers=tuple(args.provider or ("azure", "aws", "google")),
    )
    for line in result.lines():
        print(line)
    print(f"wrote {out} ({len(result.updated)} updated, {len(result.added)} added, {len(result.kept)} kept)")
    return 0


def run_show(args: argparse.Namespace) -> int:
    from derm_cloud.compare.run.prices import PriceCatalogue, entry_age_days, layer_age_days

    if args.max_age_days < 0:
        raise ConfigError(f"--max-age-days must be 0 or more, got {args.max_age_days}")
    user: bool | Path = Path(args.catalogue).expanduser() if args.catalogue else True
    catalogue = PriceCatalogue.load(user_catalogue=user)
    today = dt.date.today()
    rows = []
    for e in sorted(catalogue.entries.values(), key=lambda e: e.id):
        age = entry_age_days(e, today)
        stale = age is None or age > args.max_age_days
        rows.append(
            {
                "id": e.id,
                "class": e.price_class,
                "region": e.region,
                "sku": e.sku + (f" [{e.sku_id}]" if e.sku_id else ""),
                "price": e.price,
                "price_text": _price_text(e),
                "unit": e.unit,
                "as_of": e.as_of,
                "age_days": age,
                "stale": stale,
                "source_kind": e.source_kind,
                "origin": e.origin,
                "source": e.source,
            }
        )
    if args.json:
        layers = [{**layer, "age_days": layer_age_days(layer, today)} for layer in catalogue.layers]
        print(json.dumps({"layers": layers, "max_age_days": args.max_age_days, "entries": rows}, indent=2))
        return 0
    for layer in catalogue.layers:
        age = layer_age_days(layer, today)
        dated = f"dated {layer['date']} ({age} days ago)" if age is not None else "undated"
        print(f"catalogue: {layer['origin']}: {layer['entries']} entries, {dated}")
    print(f"prices older than {args.max_age_days} days (or undated) are marked STALE")
    for row in rows:
        age_text = "undated" if row["age_days"] is None else f"{row['age_days']} d"
        flag = "STALE " if row["stale"] else ""
        price = row["price_text"]
        print(
            f"{flag}{row['id']}: {price} per {row['unit']}; {row['class']}; {row['region']}; SKU {row['sku']}; "
            f"as of {row['as_of']} ({age_text}); from {row['source_kind']} ({row['origin']})"
        )
    stale = sum(r["stale"] for r in rows)
    print(f"{stale} of {len(rows)} prices are stale; refresh with `derm-cloud prices refresh`")
    return 0


def _price_text(entry: Any) -> str:
    """The figure as the entry states it: one price, input/output token prices, or its tiers."""
    if entry.price is not None:
        return f"{entry.price:g}"
    if entry.input_per_million is not None:
        return f"{entry.input_per_million:g} in / {entry.output_per_million:g} out"
    if entry.tiers:
        return " then ".join(f"{price:g}" + (f" to {upto:,.0f}" if upto else " above") for upto, price in entry.tiers)
    return "-"
