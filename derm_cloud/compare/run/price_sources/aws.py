"""The AWS Price List Query API through boto3's `pricing` client: `GetProducts`, paged by `NextToken`.

The contract is the botocore service model (`pricing` 2017-10-15): `GetProducts(ServiceCode, Filters=[{Type:
TERM_MATCH, Field, Value}], NextToken)` answers `{FormatVersion, PriceList: [JSON string], NextToken}`. Each
PriceList string is one product (docs.aws.amazon.com/awsaccountbilling/latest/aboutv2/price-changes.html):
`{"product": {"sku", "attributes"}, "terms": {"OnDemand": {offer: {"effectiveDate", "priceDimensions":
{rate: {"unit", "pricePerUnit": {"USD": "0.1150000000"}, "description"}}}}}}`. The API is served from
us-east-1 and ap-south-1 only and needs AWS credentials (any account may read list prices).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from derm_cloud.compare.run.price_sources.queries import PriceQuery
from derm_cloud.compare.run.price_sources.quotes import Quote
from derm_cloud.errors import PriceSourceError

__all__ = ["AWS_REGIONS", "aws_client", "aws_quote"]

AWS_REGIONS = ("us-east-1", "ap-south-1")


def aws_client(endpoint: str | None = None, region: str = "us-east-1") -> Any:
    """A boto3 `pricing` client; pointed at `endpoint` (a mirror) it signs with throwaway credentials."""
    if region not in AWS_REGIONS:
        raise PriceSourceError(f"the AWS Price List API is served from {AWS_REGIONS}, not {region!r}")
    import boto3
    from botocore.config import Config

    config = Config(retries={"max_attempts": 2, "mode": "standard"}, connect_timeout=10, read_timeout=30)
    if endpoint:
        return boto3.client(
            "pricing",
            region_name=region,
            endpoint_url=endpoint,
            aws_access_key_id="mirror",
            aws_secret_access_key="mirror",
            config=config,
        )
    return boto3.client("pricing", region_name=region, config=config)


def _on_demand(product: Mapping[str, Any]) -> tuple[float, str, str, str] | None:
    """(price, unit, currency, effective date) of the product's first priced on-demand dimension."""
    for offer in (product.get("terms", {}).get("OnDemand") or {}).values():
        for dim in (offer.get("priceDimensions") or {}).values():
            for currency, value in (dim.get("pricePerUnit") or {}).items():
                try:
                    price = float(value)
                except (TypeError, ValueError):
                    continue
                if price > 0:
                    return price, str(dim.get("unit", "")), currency, str(offer.get("effectiveDate", ""))
    return None


def aws_quote(query: PriceQuery, client: Any) -> Quote | None:
    """The query's on-demand list price, or `None` when no product matches."""
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    filters = [{"Type": "TERM_MATCH", "Field": f, "Value": v} for f, v in query.filters]
    described = " and ".join(f"{f}={v}" for f, v in query.filters)
    source = f"AWS Price List Query API GetProducts ServiceCode={query.service_code} {described}"
    try:
        pages = client.get_paginator("get_products").paginate(
            ServiceCode=query.service_code, Filters=filters, FormatVersion="aws_v1"
        )
        for page in pages:
            for text in page.get("PriceList", []):
                product = json.loads(text)
                found = _on_demand(product)
                if found is None:
                    continue
                price, unit, currency, effective = found
                attrs = product.get("product", {}).get("attributes", {})
                return Quote(
                    price=price,
                    unit=unit,
                    currency=currency,
                    region=str(attrs.get("regionCode", query.region)),
                    sku_id=str(product.get("product", {}).get("sku", "")),
                    effective_date=effective,
                    description=str(attrs.get("usagetype", "")),
                    source=source,
                )
    except NoCredentialsError as exc:
        raise PriceSourceError(
            "the AWS Price List API needs AWS credentials (any account may read list prices); configure them "
            "as for the AWS CLI, or use --mirror URL / --aws-endpoint URL"
        ) from exc
    except ClientError as exc:
        error = exc.response.get("Error", {})
        raise PriceSourceError(
            f"AWS Price List API refused GetProducts: {error.get('Code')}: {error.get('Message')}; "
            "retry later, or use --mirror URL / --aws-endpoint URL"
        ) from exc
    except BotoCoreError as exc:
        raise PriceSourceError(
            f"AWS Price List API unreachable at {client.meta.endpoint_url} ({type(exc).__name__}); check the "
            "network (or that the mirror runs), or use --mirror URL / --aws-endpoint URL"
        ) from exc
    except json.JSONDecodeError as exc:
        raise PriceSourceError("AWS Price List API answered a PriceList entry that is not JSON") from exc
    return None
