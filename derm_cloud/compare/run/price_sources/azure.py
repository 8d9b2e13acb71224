"""The Azure Retail Prices REST API: `GET /api/retail/prices?$filter=...`, paged by `NextPageLink`.

Documented at https://learn.microsoft.com/rest/api/cost-management/retail-prices/azure-retail-prices: no
credentials; each page is `{"BillingCurrency", "CustomerEntityId", "CustomerEntityType", "Items": [...],
"NextPageLink": url | null, "Count"}`; an item carries `retailPrice`, `unitOfMeasure`, `armRegionName`,
`armSkuName`, `skuId`, `meterName`, `productName`, `skuName`, `effectiveStartDate`, `type`, `currencyCode`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import quote

from derm_cloud.compare.run.price_sources.queries import PriceQuery
from derm_cloud.compare.run.price_sources.quotes import Quote
from derm_cloud.errors import PriceSourceError

__all__ = ["AZURE_ENDPOINT", "azure_quote", "odata_filter"]

AZURE_ENDPOINT = "https://prices.azure.com"
_PATH = "/api/retail/prices"
_MAX_PAGES = 50  # a filtered query answers a handful of items; a runaway NextPageLink chain is an error


def odata_filter(query: PriceQuery) -> str:
    """The `$filter` expression: the query's `eq` clauses joined by `and` (quotes doubled, as OData escapes)."""
    return " and ".join(f"{field} eq '{value.replace(chr(39), chr(39) * 2)}'" for field, value in query.filters)


def _pages(first_url: str, timeout: float) -> Iterator[Mapping[str, Any]]:
    import requests

    url: str | None = first_url
    for _ in range(_MAX_PAGES):
        if not url:
            return
        try:
            response = requests.get(url, timeout=timeout)
        except requests.RequestException as exc:
            raise PriceSourceError(
                f"Azure Retail Prices API unreachable at {url.split('?')[0]} ({type(exc).__name__}); "
                "check the network (or that the mirror runs), or use --mirror URL / --azure-endpoint URL"
            ) from exc
        if response.status_code != 200:
            raise PriceSourceError(
                f"Azure Retail Prices API answered HTTP {response.status_code}: {response.text[:200]!r}; "
                "retry later, or use --mirror URL / --azure-endpoint URL"
            )
        try:
            page = response.json()
        except ValueError as exc:
            raise PriceSourceError("Azure Retail Prices API answered a body that is not JSON") from exc
        if not isinstance(page, Mapping) or not isinstance(page.get("Items"), list):
            raise PriceSourceError("Azure Retail Prices API answer has no 'Items' list: not the documented format")
        yield page
        url = page.get("NextPageLink")
    raise PriceSourceError(f"Azure Retail Prices API kept paging past {_MAX_PAGES} pages; refusing to go on")


def azure_quote(query: PriceQuery, endpoint: str = AZURE_ENDPOINT, timeout: float = 30.0) -> Quote | None:
    """The query's list price (the cheapest matching meter), or `None` when the API lists no such item."""
    expr = odata_filter(query)
    url = f"{endpoint.rstrip('/')}{_PATH}?$filter={quote(expr)}"
    exclude = re.compile(query.exclude) if query.exclude else None
    best: Mapping[str, Any] | None = None
    for page in _pages(url, timeout):
        for item in page["Items"]:
            names = " ".join(str(item.get(k, "")) for k in ("productName", "skuName", "meterName"))
            if exclude is not None and exclude.search(names):
                continue
            if item.get("type", "Consumption") != "Consumption" or not isinstance(item.get("retailPrice"), int | float):
                continue
            if best is None or item["retailPrice"] < best["retailPrice"]:
                best = item
    if best is None:
        return None
    return Quote(
        price=float(best["retailPrice"]),
        unit=str(best.get("unitOfMeasure", "")),
        currency=str(best.get("currencyCode", "USD")),
        region=str(best.get("armRegionName", query.region)),
        sku_id=str(best.get("skuId", "")),
        effective_date=str(best.get("effectiveStartDate", "")),
        description=f"{best.get('productName', '')} / {best.get('meterName', '')}",
        source=f"Azure Retail Prices API {_PATH}?$filter={expr}",
    )
