"""What a price API answered for one query: the figure with its SKU, region, unit and effective date."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Quote"]


@dataclass(frozen=True)
class Quote:
    """One list price read from a provider's price API.

    Attributes:
        price: the list price per `unit`, in `currency`.
        unit: the provider's unit of measure ("1 Hour", "Hrs", "h").
        currency: ISO currency code.
        region: the provider's region code the price is for.
        sku_id: the API's SKU id (Azure `skuId`, AWS `product.sku`, Google `skuId`; several joined by "+").
        effective_date: when the price took effect, ISO 8601 as the API gave it.
        description: the API's own description of what is billed.
        source: the API and the query that answered, for the catalogue's `source` field.
    """

    price: float
    unit: str
    currency: str
    region: str
    sku_id: str
    effective_date: str
    description: str
    source: str
