"""`derm-cloud prices refresh` against emulators of the three price APIs, and `prices show` with its age flags.

One emulator serves the Azure Retail Prices, AWS Price List Query and Cloud Billing Catalog documents of
`price_api_documents` (written from each API's published examples), one item per page so every reader pages.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from price_api_documents import AWS_PRODUCTS, AZURE_ITEMS, GOOGLE_SKUS

from derm_cloud.cli import main
from derm_cloud.compare.run.price_sources.refresh import endpoints_for, refresh_prices
from derm_cloud.compare.run.prices import PriceCatalogue, PriceEntry, entry_age_days
from derm_cloud.errors import ConfigError, PriceSourceError
from derm_cloud.testing.emulators.base import Fault
from derm_cloud.testing.emulators.price_apis import PriceApisEmulator


@pytest.fixture(scope="module")
def apis() -> Iterator[PriceApisEmulator]:
    with PriceApisEmulator(
        azure_items=AZURE_ITEMS, aws_products=AWS_PRODUCTS, google_skus=GOOGLE_SKUS, page_size=1
    ) as emu:
        yield emu  # type: ignore[misc]


@pytest.fixture
def clean(apis: PriceApisEmulator) -> PriceApisEmulator:
    apis.reset()
    return apis


def test_refresh_through_the_mirror_updates_entries_from_all_three_apis(
    clean: PriceApisEmulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "prices.json"
    assert main(["prices", "refresh", "--mirror", clean.url, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    catalogue = PriceCatalogue.load(user_catalogue=out)
    azure = catalogue.entries["azure.ml.online.Standard_DS3_v2"]
    assert (azure.price, azure.sku_id, azure.region) == (0.229, "DZH318Z0BQ4L/00A4", "eastus")
    assert azure.as_of == "2026-10-01"
    aws = catalogue.entries["aws.sagemaker.realtime.ml.m5.large"]
    assert (aws.price, aws.sku_id, aws.region, aws.as_of) == (0.115, "BBBB2222BBBB2222", "us-east-1", "2026-11-01")
    automl = catalogue.entries["gcp.vertex.automl.image_classification.online"]
    assert (automl.price, automl.sku_id, automl.region) == (1.375, "1A2B-0000-0005", "us-central1")
    # n1-standard-2 = 2 vCPU-hours + 7.5 GiB-hours; the europe-west4 core SKU is not taken.
    n1 = catalogue.entries["gcp.vertex.custom.n1-standard-2"]
    assert n1.price == pytest.approx(2 * 0.0375 + 7.5 * 0.005)
    assert n1.sku_id == "1A2B-0000-0003+1A2B-0000-0004" and n1.price_class == "real-time instance"
    # The Vertex classifier's own sku (provider prefix left off, as describe() gives it) finds the refreshed node.
    assert catalogue.lookup("vertex.custom.n1-standard-2", "gcp") is n1
    for entry in (azure, aws, automl, n1):
        assert entry.source_kind == "api" and entry.origin == str(out) and entry.query and entry.retrieved
    # Absent from the API answers: kept as they were, and said so.
    kept = catalogue.entries["azure.ml.online.Standard_F4s_v2"]
    assert kept.origin == "prices.json (shipped)" and kept.source_kind == "web page"
    assert "KEPT azure.ml.online.Standard_F4s_v2: the azure price API lists no matching SKU" in printed
    assert "KEPT aws.sagemaker.realtime.ml.c5.xlarge" in printed
    assert f"wrote {out}" in printed


def test_refresh_prices_the_embedding_endpoints_machines(clean: PriceApisEmulator, tmp_path: Path) -> None:
    """The probe rows' endpoints: MedImageInsight's Azure instance, MedSigLIP's and Derm Foundation's Vertex nodes."""
    out = tmp_path / "prices.json"
    result = refresh_prices(out, endpoints=endpoints_for(clean.url, {}))
    catalogue = PriceCatalogue.load(user_catalogue=out)
    azure = catalogue.entries["azure.ml.online.Standard_NC4as_T4_v3"]
    assert (azure.price, azure.sku_id, azure.price_class) == (0.6, "DZH318Z0CSHF/00B2", "real-time instance")
    node = 8 * 0.0375 + 30 * 0.005  # n1-standard-8: 8 vCPU-hours + 30 GiB-hours
    cpu = catalogue.entries["gcp.vertex.custom.n1-standard-8"]
    gpu = catalogue.entries["gcp.vertex.custom.n1-standard-8+NVIDIA_TESLA_T4"]
    assert cpu.price == pytest.approx(node) and gpu.price == pytest.approx(node + 0.4)
    assert gpu.sku_id == "1A2B-0000-0003+1A2B-0000-0004+1A2B-0000-0006" and gpu.always_on
    assert {"gcp.vertex.custom.n1-standard-8", "azure.ml.online.Standard_NC4as_T4_v3"} <= set(result.added)
    # The embedder's sku finds them: what a probe row over that endpoint is priced with.
    from derm_cloud.embedders.vertex_endpoint import VertexMedSiglipEmbedder

    with VertexMedSiglipEmbedder(
        "1", project="p", credentials=_anonymous(), machine_type="n1-standard-8", accelerator="NVIDIA_TESLA_T4"
    ) as emb:
        assert catalogue.lookup(emb.describe().billing["sku"], "gcp") is gpu


def _anonymous() -> object:
    from google.auth.credentials import AnonymousCredentials

    return AnonymousCredentials()  # type: ignore[no-untyped-call]


def test_each_api_is_read_page_by_page(clean: PriceApisEmulator, tmp_path: Path) -> None:
    refresh_prices(tmp_path / "p.json", endpoints=endpoints_for(clean.url, {}))
    azure = [r.path for r in clean.requests_to("/api/retail/prices")]
    # Four Standard_DS3_v2 meters, one per page: the first request, then three NextPageLinks followed.
    assert [("$skip=" in p) for p in azure[:4]] == [False, True, True, True]
    aws_tokens = [json.loads(r.body).get("NextToken") for r in clean.requests if r.method == "POST"]
    assert "page-1" in aws_tokens  # ml.m5.large: the priced product is on the second page
    google = [r.path for r in clean.requests_to("/skus")]
    assert len(google) == 6 and sum("pageToken=" in p for p in google) == 5  # one listing, six pages


def test_an_api_error_writes_nothing_and_names_the_mirror(clean: PriceApisEmulator, tmp_path: Path) -> None:
    out = tmp_path / "prices.json"
    refresh_prices(out, endpoints=endpoints_for(clean.url, {}))
    before = out.read_bytes()
    clean.inject(Fault("error", status=503, path_contains="/skus", times=10))
    with pytest.raises(PriceSourceError, match="--mirror URL"):
        refresh_prices(out, endpoints=endpoints_for(clean.url, {}), now=dt.datetime(2030, 1, 1, tzinfo=dt.UTC))
    assert out.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["prices.json"]  # no temporary file left behind


def test_unreachable_api_is_a_typed_error_through_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "prices.json"
    dead = "http://127.0.0.1:9"
    status = main(["prices", "refresh", "--provider", "azure", "--azure-endpoint", dead, "--out", str(out)])
    assert status != 0 and not out.exists()
    err = capsys.readouterr().err
    assert "PriceSourceError" in err and "unreachable at http://127.0.0.1:9" in err and "--mirror URL" in err


def test_unknown_provider_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown price provider"):
        refresh_prices(tmp_path / "p.json", endpoints={}, providers=("oracle",))


def test_age_counts_from_the_price_date_and_undated_or_old_prices_are_flagged(
    clean: PriceApisEmulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    today = dt.date(2026, 12, 7)
    shipped = PriceCatalogue.load(user_catalogue=False).entries
    assert entry_age_days(shipped["aws.sagemaker.realtime.ml.m5.large"], today) == 705  # "~2025" -> 2025-01-01
    assert entry_age_days(shipped["gcp.vertex.automl.image_classification.online"], today) == 12
    undated = PriceEntry.from_dict(
        {"id": "x", "basis": "per_request", "price": 1, "unit": "call", "currency": "USD", "region": "r",
         "as_of": "unknown", "source": "s", "status": "s"}, "test"
    )  # fmt: skip
    assert entry_age_days(undated, today) is None
    out = tmp_path / "prices.json"
    refresh_prices(out, endpoints=endpoints_for(clean.url, {}))
    assert main(["prices", "show", "--catalogue", str(out), "--max-age-days", "90", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    rows = {r["id"]: r for r in shown["entries"]}
    assert rows["aws.sagemaker.realtime.ml.c5.xlarge"]["stale"] is True  # shipped "~2025", web page
    assert rows["aws.sagemaker.realtime.ml.c5.xlarge"]["source_kind"] == "web page"
    fresh = rows["azure.ml.online.Standard_DS3_v2"]
    assert fresh["source_kind"] == "api" and fresh["age_days"] == (dt.date.today() - dt.date(2026, 10, 1)).days
    assert fresh["stale"] is (fresh["age_days"] > 90)
    assert [layer["origin"] for layer in shown["layers"]] == ["prices.json (shipped)", str(out)]
    assert shown["layers"][0]["age_days"] == (dt.date.today() - dt.date(2026, 11, 25)).days
    assert main(["prices", "show", "--catalogue", str(out), "--max-age-days", "90"]) == 0
    text = capsys.readouterr().out
    assert "STALE aws.sagemaker.realtime.ml.c5.xlarge" in text
    shipped = json.loads((Path(__file__).parents[1] / "derm_cloud/compare/run/prices.json").read_text())["entries"]
    assert f"catalogue: prices.json (shipped): {len(shipped)} entries, dated 2026-11-25 (" in text


def test_every_shipped_entry_says_where_its_figure_came_from() -> None:
    for entry in PriceCatalogue.load(user_catalogue=False).entries.values():
        assert entry.source_kind == "web page", entry.id  # nothing shipped was read from an API here
        assert entry.price_class and entry.region and entry.sku, entry.id
