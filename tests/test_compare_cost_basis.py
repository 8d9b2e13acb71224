"""Cost on like bases: class and region warnings, the like-for-like alternative, assumptions, prices' age.

The issue's case: Vertex priced as AutoML node-hours ($1,003.75/month) against SageMaker ml.m5.large
("~2025", us-east-1, $83.95) with no warning that the SKU class and region differ.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
from price_api_documents import AWS_PRODUCTS, AZURE_ITEMS, GOOGLE_SKUS
from tests_helpers import DEV_CSV

from derm_cloud.compare.analysis.cost import Measured, cost_section
from derm_cloud.compare.analysis.cost_basis import geography
from derm_cloud.compare.report.cells import md_table
from derm_cloud.compare.report.cost_section import cost_section as render_cost
from derm_cloud.compare.run.price_sources.refresh import endpoints_for, refresh_prices
from derm_cloud.compare.run.prices import PriceCatalogue
from derm_cloud.testing.emulators.price_apis import PriceApisEmulator

VERTEX = "gcp.vertex.automl.image_classification.online"
SAGEMAKER = "aws.sagemaker.realtime.ml.m5.large"
N1 = "gcp.vertex.custom.n1-standard-2"


@pytest.fixture(scope="module")
def refreshed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A user catalogue refreshed from the three emulated price APIs (it adds the Vertex n1-standard-2 entry)."""
    out = tmp_path_factory.mktemp("prices") / "prices.json"
    with PriceApisEmulator(azure_items=AZURE_ITEMS, aws_products=AWS_PRODUCTS, google_skus=GOOGLE_SKUS) as emu:
        refresh_prices(out, endpoints=endpoints_for(emu.url, {}))
    return out


def section(catalogue: PriceCatalogue, *backends: tuple[str, str], **kw: Any) -> dict[str, Any]:
    return cost_section(
        [(name, {"sku": sku}, None, Measured(throughput_qps=50, emulated=True)) for name, sku in backends],
        catalogue=catalogue,
        volume=100_000,
        melanoma_prevalence=None,
        **kw,
    )


def test_the_issues_case_warns_that_class_and_region_differ() -> None:
    s = section(PriceCatalogue.load(user_catalogue=False), ("vertex", VERTEX), ("sagemaker", SAGEMAKER))
    assert s["backends"]["vertex"]["monthly"] == pytest.approx(1003.75)
    assert s["backends"]["sagemaker"]["monthly"] == pytest.approx(83.95)
    (unlike,) = [w for w in s["warnings"] if w.startswith("prices on unlike bases")]
    assert f"vertex: node-hour ({VERTEX})" in unlike and f"sagemaker: real-time instance ({SAGEMAKER})" in unlike
    (regions,) = [w for w in s["warnings"] if w.startswith("prices from different regions")]
    assert "vertex: not stated" in regions and "sagemaker: us-east-1" in regions
    # The shipped snapshot holds no Vertex custom-model price: said, not invented.
    assert "vertex: the catalogue has no gcp entry in class real-time instance" in s["warnings"]
    assert "sagemaker: the catalogue has no aws entry in class node-hour" in s["warnings"]


def test_the_like_for_like_alternative_is_named_when_the_catalogue_has_it(refreshed: Path) -> None:
    s = section(PriceCatalogue.load(user_catalogue=refreshed), ("vertex", VERTEX), ("sagemaker", SAGEMAKER))
    # (with the Vertex embedding-endpoint nodes, refreshed from the same API and in the same class)
    (alternative,) = [a for a in s["backends"]["vertex"]["like_for_like"] if a.startswith(N1)]
    assert alternative.startswith(f"{N1} (real-time instance, us-central1, 0.1125 USD per node-hour")
    assert any(w.startswith("vertex: like-for-like alternative in the catalogue: ") and N1 in w for w in s["warnings"])
    # Both refreshed from APIs, now with regions: us-central1 against us-east-1 still differ, and say so.
    assert any("vertex: us-central1" in w and "sagemaker: us-east-1" in w for w in s["warnings"])


def test_like_bases_give_no_warning() -> None:
    catalogue = PriceCatalogue.load(user_catalogue=False)
    s = section(catalogue, ("small", SAGEMAKER), ("large", "aws.sagemaker.realtime.ml.m5.xlarge"))
    assert not [w for w in s["warnings"] if "unlike bases" in w or "different regions" in w]
    assert geography("us-east-1") == geography("eastus") == geography("East US") == "US East"
    assert geography("not stated") is None and geography("us-central1") == "US Central"


def test_per_1000_and_per_month_state_their_assumptions() -> None:
    catalogue = PriceCatalogue.load(user_catalogue=False)
    s = cost_section(
        [
            ("always-on", {"sku": SAGEMAKER, "instances": 2}, "aws", Measured(throughput_qps=100)),
            ("serverless", {"sku": "aws.sagemaker.serverless", "memory_gb": 2}, "aws", Measured(mean_latency_s=0.2)),
        ],
        catalogue=catalogue,
        volume=100_000,
        melanoma_prevalence=None,
    )
    on = s["backends"]["always-on"]
    assert on["monthly"] == pytest.approx(0.115 * 2 * 730) and on["per_1k_at_volume"] == pytest.approx(1.679)
    assert on["assumptions"] == (
        "2 x ml.m5.large x 730 h/month at 0.115 USD per instance-hour, always on (minimum replicas 2, billed with "
        "or without traffic); 100,000 predictions/month"
    )
    sl = s["backends"]["serverless"]
    assert sl["monthly"] == pytest.approx(2 * 0.2 * 0.00002 * 100_000)
    assert "2 GB x the measured mean latency" in sl["assumptions"] and "scales to zero" in sl["assumptions"]
    text = "\n".join(render_cost({"cost": s, "methods": {"cost": ""}}, md_table)[2])
    assert "| always-on | 2 x ml.m5.large x 730 h/month" in text


def test_stale_and_undated_prices_are_flagged_with_the_catalogue_layers(refreshed: Path) -> None:
    s = section(
        PriceCatalogue.load(user_catalogue=refreshed), ("sm", SAGEMAKER), ("c5", "aws.sagemaker.realtime.ml.c5.xlarge")
    )
    used = s["prices_used"]
    assert used["aws.sagemaker.realtime.ml.c5.xlarge"]["stale"] is True  # shipped "~2025", kept by the refresh
    assert used["aws.sagemaker.realtime.ml.c5.xlarge"]["source_kind"] == "web page"
    assert used[SAGEMAKER]["source_kind"] == "api" and used[SAGEMAKER]["sku_id"] == "BBBB2222BBBB2222"
    assert used[SAGEMAKER]["age_days"] == (dt.date.today() - dt.date(2026, 11, 1)).days
    assert s["catalogue"]["max_age_days"] == 90 and [x["origin"] for x in s["catalogue"]["layers"]] == [
        "prices.json (shipped)",
        str(refreshed),
    ]
    assert any(
        w.startswith("price aws.sagemaker.realtime.ml.c5.xlarge is ") and "older than 90 days" in w
        for w in s["warnings"]
    )
    strict = section(PriceCatalogue.load(user_catalogue=refreshed), ("sm", SAGEMAKER), max_price_age_days=0)
    assert strict["prices_used"][SAGEMAKER]["stale"] is True


def test_a_small_comparison_reports_sku_region_and_as_of_from_the_refreshed_catalogue(
    refreshed: Path, tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from derm_cloud.compare import run_comparison

    monkeypatch.setenv("DERM_CLOUD_PRICES", str(refreshed))  # the user catalogue the comparator reads by default
    tiny = {"model_dir": str(tiny_model_dir)}
    backends = [
        {"name": "vertex-priced", "type": "local-onnx", "options": tiny, "billing": {"sku": VERTEX}},
        {"name": "sagemaker-priced", "type": "local-onnx", "options": tiny, "billing": {"sku": SAGEMAKER}},
    ]
    scenarios = {
        "warmup": 0,
        "min_samples": 2,
        "bootstrap": 20,
        "single_stream": {"queries": 2},
        "server": {"queries": 2, "target_qps": 40.0, "latency_bound_ms": 5000},
        "offline": {"queries": 2, "concurrency": [1]},
        "cold_start": {"trials": 1, "warm_queries": 1},
    }
    cfg = {
        "title": "cost rows",
        "output": str(tmp_path / "out"),
        "seed": 1,
        "dataset": {"source": str(DEV_CSV), "limit": 4},
        "scenarios": scenarios,
        "fairness": {"skin_tone": "none"},
        "backends": backends,
    }
    result = run_comparison(cfg)
    md = result.markdown.read_text()
    row = next(line for line in md.splitlines() if line.startswith("| sagemaker-priced | aws.sagemaker"))
    assert "| real-time instance | us-east-1 | ml.m5.large / BBBB2222BBBB2222 | 2026-11-01 |" in row
    row = next(line for line in md.splitlines() if line.startswith(f"| vertex-priced | {VERTEX}"))
    assert "| node-hour | us-central1 | AutoML image classification online prediction / 1A2B-0000-0005 |" in row
    assert any(w.startswith("prices on unlike bases") for w in result.warnings)
    report = json.loads(result.json.read_text())
    assert report["cost"]["prices_used"][SAGEMAKER]["source_kind"] == "api"
