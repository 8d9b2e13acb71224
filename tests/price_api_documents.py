"""Response documents for the three emulated price APIs, written here in each API's published format.

The figures are test values, not anybody's prices. The shapes follow:

* Azure Retail Prices items: https://learn.microsoft.com/rest/api/cost-management/retail-prices/azure-retail-prices
  ("API response examples": `currencyCode`, `retailPrice`, `unitPrice`, `armRegionName`, `location`,
  `effectiveStartDate`, `meterId`, `meterName`, `productId`, `skuId`, `productName`, `skuName`, `serviceName`,
  `serviceId`, `serviceFamily`, `unitOfMeasure`, `type`, `isPrimaryMeterRegion`, `armSkuName`).
* AWS Price List products: https://docs.aws.amazon.com/awsaccountbilling/latest/aboutv2/price-changes.html
  and .../using-price-list-query-api.html (`product.sku`, `product.attributes`, `serviceCode`,
  `terms.OnDemand.<offer>.priceDimensions.<rate>.pricePerUnit`, `effectiveDate`, `publicationDate`).
* Cloud Billing Catalog SKUs: https://cloud.google.com/billing/v1/how-tos/catalog-api (`skuId`, `description`,
  `category`, `serviceRegions`, `pricingInfo[].pricingExpression.tieredRates[].unitPrice` units + nanos).
"""

from __future__ import annotations

from typing import Any

VERTEX = "C7E2-9256-1C43"


def _azure(arm_sku: str, product: str, sku_name: str, price: float, sku_id: str) -> dict[str, Any]:
    return {
        "currencyCode": "USD",
        "tierMinimumUnits": 0.0,
        "retailPrice": price,
        "unitPrice": price,
        "armRegionName": "eastus",
        "location": "US East",
        "effectiveStartDate": "2026-10-01T00:00:00Z",
        "meterId": f"meter-{sku_id}",
        "meterName": sku_name,
        "productId": sku_id.split("/")[0],
        "skuId": sku_id,
        "productName": product,
        "skuName": sku_name,
        "serviceName": "Virtual Machines",
        "serviceId": "DZH313Z7MMC8",
        "serviceFamily": "Compute",
        "unitOfMeasure": "1 Hour",
        "type": "Consumption",
        "isPrimaryMeterRegion": True,
        "armSkuName": arm_sku,
    }


# Four meters share Standard_DS3_v2 in East US (two pages of two): only the Linux pay-as-you-go one counts.
# Standard_F4s_v2 is absent on purpose: its catalogue entry must be kept, and the refresh must say so.
AZURE_ITEMS = [
    _azure("Standard_DS3_v2", "Virtual Machines DSv2 Series Windows", "DS3 v2", 0.5, "DZH318Z0BQ4L/00A1"),
    _azure("Standard_DS3_v2", "Virtual Machines DSv2 Series", "DS3 v2 Spot", 0.04, "DZH318Z0BQ4L/00A2"),
    _azure("Standard_DS3_v2", "Virtual Machines DSv2 Series", "DS3 v2 Low Priority", 0.05, "DZH318Z0BQ4L/00A3"),
    _azure("Standard_DS3_v2", "Virtual Machines DSv2 Series", "DS3 v2", 0.229, "DZH318Z0BQ4L/00A4"),
    # The MedImageInsight instance type: a Spot meter beside the pay-as-you-go one.
    _azure("Standard_NC4as_T4_v3", "Virtual Machines NCasT4_v3 Series", "NC4as T4 v3 Spot", 0.2, "DZH318Z0CSHF/00B1"),
    _azure("Standard_NC4as_T4_v3", "Virtual Machines NCasT4_v3 Series", "NC4as T4 v3", 0.6, "DZH318Z0CSHF/00B2"),
]


def _aws(sku: str, instance: str, component: str, usd: str) -> dict[str, Any]:
    offer = f"{sku}.JRTCKXETXF"
    return {
        "product": {
            "productFamily": "ML Instance",
            "attributes": {
                "regionCode": "us-east-1",
                "location": "US East (N. Virginia)",
                "instanceName": instance,
                "component": component,
                "usagetype": f"USE1-{'Host' if component == 'Hosting' else 'Train'}:{instance}",
                "servicecode": "AmazonSageMaker",
            },
            "sku": sku,
        },
        "serviceCode": "AmazonSageMaker",
        "terms": {
            "OnDemand": {
                offer: {
                    "priceDimensions": {
                        f"{offer}.6YS6EN2CT7": {
                            "unit": "Hrs",
                            "endRange": "Inf",
                            "description": f"${usd} per {component} {instance} hour in US East (N. Virginia)",
                            "appliesTo": [],
                            "rateCode": f"{offer}.6YS6EN2CT7",
                            "beginRange": "0",
                            "pricePerUnit": {"USD": usd},
                        }
                    },
                    "sku": sku,
                    "effectiveDate": "2026-11-01T00:00:00Z",
                    "offerTermCode": "JRTCKXETXF",
                    "termAttributes": {},
                }
            }
        },
        "version": "20261101000000",
        "publicationDate": "2026-11-01T00:00:00Z",
    }


# ml.m5.large hosting matches twice; the first answer page (page size 1) holds a product with no on-demand
# price, so the reader must follow NextToken. ml.c5.xlarge and ml.g4dn.xlarge are absent (kept entries).
AWS_PRODUCTS = [
    _aws("AAAA1111AAAA1111", "ml.m5.large", "Hosting", "0.0000000000"),
    _aws("BBBB2222BBBB2222", "ml.m5.large", "Hosting", "0.1150000000"),
    _aws("CCCC3333CCCC3333", "ml.m5.large", "Training", "0.1150000000"),
    _aws("DDDD4444DDDD4444", "ml.m5.xlarge", "Hosting", "0.2300000000"),
]


def _google(sku_id: str, description: str, region: str, units: str, nanos: int, unit: str) -> dict[str, Any]:
    return {
        "name": f"services/{VERTEX}/skus/{sku_id}",
        "skuId": sku_id,
        "description": description,
        "category": {
            "serviceDisplayName": "Vertex AI",
            "resourceFamily": "ApplicationServices",
            "resourceGroup": "MachineLearning",
            "usageType": "OnDemand",
        },
        "serviceRegions": [region],
        "pricingInfo": [
            {
                "summary": "",
                "pricingExpression": {
                    "usageUnit": unit,
                    "displayQuantity": 1,
                    "tieredRates": [
                        {"startUsageAmount": 0, "unitPrice": {"currencyCode": "USD", "units": units, "nanos": nanos}}
                    ],
                    "usageUnitDescription": "hour" if unit == "h" else "gibibyte hour",
                    "baseUnit": "s" if unit == "h" else "By.s",
                    "baseUnitDescription": "second" if unit == "h" else "byte second",
                    "baseUnitConversionFactor": 3600,
                },
                "currencyConversionRate": 1,
                "effectiveTime": "2026-11-30T08:00:00Z",
            }
        ],
        "serviceProviderName": "Google",
        "geoTaxonomy": {"type": "REGIONAL", "regions": [region]},
    }


# Six SKUs (the refresh tests serve one a page); the europe-west4 core SKU must not be chosen.
_CORE = "Vertex AI: Online/Batch Prediction N1 Predefined Instance Core"
_RAM = "Vertex AI: Online/Batch Prediction N1 Predefined Instance Ram"
_T4 = "Vertex AI: Online/Batch Prediction Nvidia Tesla T4 GPU"
GOOGLE_SKUS = {
    VERTEX: [
        _google("1A2B-0000-0001", "Vertex AI: Training on N1 Instance Core", "us-central1", "0", 36_000_000, "h"),
        _google(
            "1A2B-0000-0002",
            _CORE,
            "europe-west4",
            "0",
            41_000_000,
            "h",
        ),
        _google(
            "1A2B-0000-0003",
            _CORE,
            "us-central1",
            "0",
            37_500_000,
            "h",
        ),
        _google(
            "1A2B-0000-0004",
            _RAM,
            "us-central1",
            "0",
            5_000_000,
            "GiBy.h",
        ),
        _google(
            "1A2B-0000-0005", "AutoML Image Classification Online Prediction", "us-central1", "1", 375_000_000, "h"
        ),
        # The GPU of a MedSigLIP node (n1-standard-8 + one T4).
        _google(
            "1A2B-0000-0006",
            "Vertex AI: Online/Batch Prediction Nvidia Tesla T4 GPU",
            "us-central1",
            "0",
            400_000_000,
            "h",
        ),
    ]
}
