"""The Cloud Billing Catalog API through google-cloud-billing: `services/{id}/skus`, paged by `nextPageToken`.

Documented at https://cloud.google.com/billing/v1/how-tos/catalog-api: a SKU has `skuId`, `description`,
`serviceRegions` and `pricingInfo[].pricingExpression` with `usageUnit` and `tieredRates[]` whose
`unitPrice` is a Money (`currencyCode`, `units`, `nanos`). Public prices need an API key (`GOOGLE_API_KEY`);
a mirror is reached over the client's REST transport with anonymous credentials.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from typing import Any

from derm_cloud.compare.run.price_sources.queries import PriceQuery
from derm_cloud.compare.run.price_sources.quotes import Quote
from derm_cloud.errors import MissingDependencyError, PriceSourceError

__all__ = ["GOOGLE_ENDPOINT", "google_client", "google_quote"]

GOOGLE_ENDPOINT = "cloudbilling.googleapis.com"


def google_client(endpoint: str | None = None) -> Any:
    """A `CloudCatalogClient` over REST: at `endpoint` (a mirror URL) anonymously, else with `GOOGLE_API_KEY`."""
    try:
        from google.api_core.client_options import ClientOptions
        from google.auth.credentials import AnonymousCredentials
        from google.cloud.billing_v1 import CloudCatalogClient
    except ImportError as exc:
        raise MissingDependencyError("google-cloud-billing is not installed; pip install 'derm-cloud[prices]'") from exc
    if endpoint:
        return CloudCatalogClient(
            credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
            transport="rest",
            client_options=ClientOptions(api_endpoint=endpoint),
        )
    key = os.environ.get("GOOGLE_API_KEY")
    if not key:
        raise PriceSourceError(
            "the Cloud Billing Catalog API needs an API key: set GOOGLE_API_KEY (a key of a project with the "
            "Cloud Billing API enabled), or use --mirror URL / --google-endpoint URL"
        )
    return CloudCatalogClient(transport="rest", client_options=ClientOptions(api_key=key))


def _unit_price(sku: Any) -> tuple[float, str, str, str] | None:
    """(price, usage unit, currency, effective time) of the SKU's first tier with a price."""
    for info in sku.pricing_info:
        expression = info.pricing_expression
        for rate in expression.tiered_rates:
            money = rate.unit_price
            price = float(money.units) + float(money.nanos) / 1e9
            if price > 0:
                when = info.effective_time.isoformat() if info.effective_time else ""
                return price, expression.usage_unit, money.currency_code, when
    return None


def _match(skus: Iterable[Any], pattern: str, region: str) -> Any | None:
    rx = re.compile(pattern)
    for sku in skus:
        if rx.search(sku.description) and region in sku.service_regions:
            return sku
    return None


def google_quote(query: PriceQuery, client: Any, listed: dict[str, list[Any]] | None = None) -> Quote | None:
    """The query's price (its components summed), or `None` when a component's SKU is not listed.

    `listed` caches each service's SKU list across queries (one listing per service and refresh).
    """
    from google.api_core import exceptions as gexc

    parent = f"services/{query.service_code}"
    listed = {} if listed is None else listed
    try:
        if parent not in listed:
            listed[parent] = list(client.list_skus(parent=parent))  # the pager follows nextPageToken
        skus = listed[parent]
    except gexc.GoogleAPICallError as exc:
        raise PriceSourceError(
            f"Cloud Billing Catalog API refused {parent}/skus: {exc.message}; check GOOGLE_API_KEY, retry later, "
            "or use --mirror URL / --google-endpoint URL"
        ) from exc
    except Exception as exc:  # requests' connection errors surface unwrapped from the REST transport
        raise PriceSourceError(
            f"Cloud Billing Catalog API unreachable at {getattr(client, 'api_endpoint', '?')} "
            f"({type(exc).__name__}); check the network (or that the mirror runs), or use --mirror URL / "
            "--google-endpoint URL"
        ) from exc
    total, ids, dates, units, currency = 0.0, [], [], [], "USD"
    for pattern, quantity in query.components:
        sku = _match(skus, pattern, query.region)
        found = None if sku is None else _unit_price(sku)
        if sku is None or found is None:
            return None
        price, unit, currency, when = found
        total += price * quantity
        ids.append(sku.sku_id)
        dates.append(when)
        units.append(f"{quantity:g} x {unit}")
    return Quote(
        price=round(total, 6),
        unit=" + ".join(units),
        currency=currency,
        region=query.region,
        sku_id="+".join(ids),
        effective_date=max(dates),
        description=query.service,
        source=f"Cloud Billing Catalog API {parent}/skus (description ~ {[p for p, _ in query.components]})",
    )
