"""Which catalogue entry each price-API query fills, and how to find its SKU in the API's answer.

The filters follow each API's documented attributes: Azure Retail Prices' OData fields (`serviceName`,
`armRegionName`, `armSkuName`, `priceType`; learn.microsoft.com/rest/api/cost-management/retail-prices/
azure-retail-prices), the AWS Price List's product attributes (`regionCode`, `instanceName`, `component`;
docs.aws.amazon.com/awsaccountbilling/latest/aboutv2/using-price-list-query-api.html) and the Cloud Billing
Catalog's SKU descriptions and `serviceRegions` (cloud.google.com/billing/v1/how-tos/catalog-api). SKU names
and descriptions change: an entry whose query finds nothing keeps its old price and the refresh says so.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["PROVIDERS", "QUERIES", "PriceQuery"]

PROVIDERS = ("azure", "aws", "google")


@dataclass(frozen=True)
class PriceQuery:
    """One catalogue entry to fill from one provider's price API.

    Attributes:
        entry_id: the catalogue id it fills (an existing entry is updated, a missing one added).
        provider: "azure", "aws" or "google".
        service: what is billed, in words (the entry's `service`).
        basis: the entry's billing basis (`derm_cloud.compare.run.prices.BASES`).
        price_class: the entry's price class (`PRICE_CLASSES`).
        sku: the provider's name for what is sold (instance type, machine type).
        region: the provider's region code.
        unit: the catalogue's unit text.
        filters: Azure OData `eq` clauses, or AWS `TERM_MATCH` field/value pairs.
        service_code: AWS `ServiceCode` or the Google Billing service id.
        exclude: Azure only: a regex on productName / skuName / meterName that rules an item out
            (Windows, Spot and Low Priority meters share a Linux VM's armSkuName).
        components: Google only: (description regex, quantity) pairs summed into one price, for a
            machine billed per vCPU-hour and per GiB-hour of memory.
    """

    entry_id: str
    provider: str
    service: str
    basis: str
    price_class: str
    sku: str
    region: str
    unit: str
    filters: tuple[tuple[str, str], ...] = ()
    service_code: str = ""
    exclude: str = ""
    components: tuple[tuple[str, float], ...] = ()


def _sagemaker(instance: str) -> PriceQuery:
    return PriceQuery(
        entry_id=f"aws.sagemaker.realtime.{instance}",
        provider="aws",
        service=f"Amazon SageMaker real-time endpoint, {instance}",
        basis="instance_hour",
        price_class="real-time instance",
        sku=instance,
        region="us-east-1",
        unit="instance-hour",
        filters=(("regionCode", "us-east-1"), ("instanceName", instance), ("component", "Hosting")),
        service_code="AmazonSageMaker",
    )


def _azure_vm(size: str) -> PriceQuery:
    return PriceQuery(
        entry_id=f"azure.ml.online.{size}",
        provider="azure",
        service=f"Azure Machine Learning managed online endpoint, {size} (Linux VM, pay as you go)",
        basis="instance_hour",
        price_class="real-time instance",
        sku=size,
        region="eastus",
        unit="VM-hour per instance",
        filters=(
            ("serviceName", "Virtual Machines"),
            ("armRegionName", "eastus"),
            ("armSkuName", size),
            ("priceType", "Consumption"),
        ),
        exclude=r"(?i)windows|spot|low priority",
    )


# Vertex AI's service id in the Cloud Billing catalogue (services.list: displayName "Vertex AI").
VERTEX_SERVICE = "C7E2-9256-1C43"


def _vertex_node(machine: str, vcpus: float, ram_gib: float, accelerator: str = "") -> PriceQuery:
    """A Vertex AI prediction node: a custom-container classifier's or a Model Garden embedding endpoint's.

    The id is `gcp.vertex.custom.<machine>[+<accelerator>]`: the sku the Vertex classifier and embedders report
    in `describe().billing` (with the provider prefix), so a refreshed price is the one their rows use. Billed
    per vCPU-hour and per GiB-hour of memory on SKUs named after the machine family ("N1"), plus the GPU-hour.
    """
    family = machine.split("-")[0].upper()
    gpu = ((r"(?i)prediction.*tesla t4", 1.0),) if accelerator == "NVIDIA_TESLA_T4" else ()
    return PriceQuery(
        entry_id=f"gcp.vertex.custom.{machine}" + (f"+{accelerator}" if accelerator else ""),
        provider="google",
        service=f"Vertex AI prediction node, {machine} ({vcpus:g} vCPU, {ram_gib:g} GiB)"
        + (f" + 1 {accelerator}" if accelerator else ""),
        basis="node_hour",
        price_class="real-time instance",
        sku=machine + (f" + {accelerator}" if accelerator else ""),
        region="us-central1",
        unit=f"node-hour ({vcpus:g} vCPU-hours + {ram_gib:g} GiB-hours"
        + (" + 1 GPU-hour" if gpu else "")
        + "), 24/7 while deployed",
        service_code=VERTEX_SERVICE,
        components=(
            (rf"(?i)prediction.*{family} Predefined Instance Core", float(vcpus)),
            (rf"(?i)prediction.*{family} Predefined Instance Ram", float(ram_gib)),
            *gpu,
        ),
    )


# The SKUs priced, one row each: a new machine type is a new row. Each provider's builder above turns
# a row into its query (the price API's filters and the catalogue entry's wording).
SAGEMAKER_INSTANCES = ("ml.m5.large", "ml.m5.xlarge", "ml.c5.xlarge", "ml.g4dn.xlarge")
# Standard_NC4as_T4_v3 (1 T4 GPU): the MedImageInsight deployment's instance type in Microsoft's examples.
AZURE_VM_SIZES = ("Standard_DS3_v2", "Standard_F4s_v2", "Standard_NC4as_T4_v3")
# (machine type, vCPUs, GiB of memory[, accelerator]): n1-standard-2 is the Vertex classifier's default node;
# n1-standard-8 (Derm Foundation's CPU container) and n1-standard-8 with one NVIDIA T4 (MedSigLIP) are the
# machines Google's Model Garden notebooks use for the HAI-DEF embedders (github.com/Google-Health/medsiglip
# and derm-foundation, notebooks/quick_start_with_model_garden.ipynb).
VERTEX_NODES: tuple[tuple[str, float, float] | tuple[str, float, float, str], ...] = (
    ("n1-standard-2", 2, 7.5),
    ("n1-standard-8", 8, 30),
    ("n1-standard-8", 8, 30, "NVIDIA_TESLA_T4"),
)

QUERIES: tuple[PriceQuery, ...] = (
    *(_sagemaker(i) for i in SAGEMAKER_INSTANCES),
    *(_azure_vm(s) for s in AZURE_VM_SIZES),
    # AutoML is priced per node-hour of the product, not per machine type: a query of its own.
    PriceQuery(
        entry_id="gcp.vertex.automl.image_classification.online",
        provider="google",
        service="Vertex AI AutoML image classification: deployment and online prediction",
        basis="node_hour",
        price_class="node-hour",
        sku="AutoML image classification online prediction",
        region="us-central1",
        unit="node-hour, 24/7 while deployed",
        service_code=VERTEX_SERVICE,
        components=((r"(?i)automl image classification.*(online|deployment)", 1.0),),
    ),
    *(_vertex_node(*n) for n in VERTEX_NODES),
)
