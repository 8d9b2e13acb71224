"""The price catalogue and cost formulas, checked against the worked figures in docs/reference/cloud-apis.md section
11.2."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from derm_cloud.compare.analysis.cost import HOURS_PER_MONTH, Measured, backend_cost, break_even_volumes, cost_section
from derm_cloud.compare.run.prices import BASES, PriceCatalogue
from derm_cloud.errors import ConfigError


@pytest.fixture(scope="module")
def catalogue() -> PriceCatalogue:
    return PriceCatalogue.load()


def cost(catalogue: PriceCatalogue, billing: dict, measured: Measured | None = None, volume: int = 100_000, **kw):  # type: ignore[no-untyped-def]
    return backend_cost(
        "b",
        billing=billing,
        provider=kw.pop("provider", None),
        catalogue=catalogue,
        measured=measured or Measured(),
        volume=volume,
        melanoma_prevalence=kw.pop("prevalence", None),
        **kw,
    )


def test_every_shipped_entry_carries_provenance(catalogue: PriceCatalogue) -> None:
    assert len(catalogue.entries) >= 10
    for entry in catalogue.entries.values():
        assert entry.basis in BASES
        assert entry.currency == "USD" and entry.source and entry.as_of and entry.status and entry.unit
        assert entry.source.startswith("https://") or "3rd-party" in entry.source
    # Prices that section 11 did not find must be absent, never invented.
    assert not any("custom_vision" in k for k in catalogue.entries)
    assert not any(k.startswith("gcp.vertex.custom") for k in catalogue.entries)
    assert catalogue.entries["aws.sagemaker.realtime.ml.m5.large"].price == 0.115
    assert catalogue.entries["gcp.vertex.automl.image_classification.online"].price == 1.375


def test_unknown_price_is_unknown_with_a_warning_never_zero(catalogue: PriceCatalogue) -> None:
    c = cost(catalogue, {"sku": "azure.custom_vision.s0.prediction"}, Measured(throughput_qps=10))
    assert c["known"] is False
    for key in ("monthly", "per_1k_at_volume", "per_1k_at_throughput", "idle_monthly", "per_correct_mel"):
        assert c[key] is None
    assert "price unknown" in c["warnings"][0] and "azure.custom_vision.s0.prediction" in c["warnings"][0]
    no_sku = cost(catalogue, {})
    assert no_sku["known"] is False and "reports no sku" in no_sku["warnings"][0]


def test_always_on_instance_cost_matches_reference(catalogue: PriceCatalogue) -> None:
    # docs/reference/cloud-apis.md 11.2: ml.m5.large $83.95/month -> $0.84 per 1k at 100,000 predictions.
    c = cost(catalogue, {"sku": "sagemaker.realtime.ml.m5.large", "instances": 1}, provider="aws")
    assert c["monthly"] == pytest.approx(0.115 * HOURS_PER_MONTH) == pytest.approx(83.95)
    assert round(c["per_1k_at_volume"], 2) == 0.84
    assert c["idle_monthly"] == pytest.approx(83.95)
    assert any("no throughput measured" in w for w in c["warnings"])
    # Vertex AutoML node: $1,003.75/month -> $10.04 per 1k.
    v = cost(catalogue, {"sku": "gcp.vertex.automl.image_classification.online"})
    assert v["monthly"] == pytest.approx(1003.75) and round(v["per_1k_at_volume"], 2) == 10.04


def test_always_on_scales_instances_with_measured_throughput(catalogue: PriceCatalogue) -> None:
    # 1 request/s at 50% utilisation carries 1 x 0.5 x 3600 x 730 = 1,314,000 predictions per instance-month.
    billing = {"sku": "aws.sagemaker.realtime.ml.m5.large", "instances": 1}
    c = cost(catalogue, billing, Measured(throughput_qps=1.0), volume=3_000_000, utilisation=0.5)
    assert c["instances"] == 3
    assert c["monthly"] == pytest.approx(3 * 83.95)
    assert c["idle_monthly"] == pytest.approx(83.95)
    assert c["per_1k_at_throughput"] == pytest.approx(0.115 / 3600 * 1000)


def test_emulated_backend_is_not_sized_from_this_machines_throughput(catalogue: PriceCatalogue) -> None:
    # The same measurement that sized 3 instances above: for an emulated backend it is this machine's, so the
    # configured count (default 1) is priced and the per-1k-at-throughput figure is withheld, with a warning.
    billing = {"sku": "aws.sagemaker.realtime.ml.m5.large"}
    c = cost(catalogue, billing, Measured(throughput_qps=1.0, emulated=True), volume=3_000_000, utilisation=0.5)
    assert c["instances"] == 1
    assert c["monthly"] == pytest.approx(83.95)
    assert c["per_1k_at_throughput"] is None
    assert any("throughput-based sizing skipped because the backend was emulated" in w for w in c["warnings"])
    two = cost(catalogue, {**billing, "instances": 2}, Measured(throughput_qps=1.0, emulated=True), volume=3_000_000)
    assert two["instances"] == 2 and two["monthly"] == pytest.approx(2 * 83.95)


def test_serverless_and_per_token_formulas(catalogue: PriceCatalogue) -> None:
    # 11.2: 2 GB x 0.2 s = $0.000008 per inference -> $0.008 per 1k.
    s = cost(catalogue, {"sku": "sagemaker.serverless", "memory_gb": 2}, Measured(mean_latency_s=0.2), provider="aws")
    assert s["per_1k_at_throughput"] == pytest.approx(0.008)
    assert s["monthly"] == pytest.approx(0.8) and s["idle_monthly"] == 0.0
    missing = cost(catalogue, {"sku": "aws.sagemaker.serverless"}, Measured(mean_latency_s=0.2))
    assert missing["known"] is False and "memory_gb" in missing["warnings"][0]
    # GPT-4o: 200 + 85 image tokens in, 100 out -> (285 x 2.5 + 100 x 10) / 1e6 per call.
    t = cost(catalogue, {"sku": "azure.openai.gpt-4o"}, Measured(input_tokens=285, output_tokens=100))
    assert t["per_1k_at_volume"] == pytest.approx((285 * 2.5 + 100 * 10) / 1e6 * 1000)
    assert round(t["per_1k_at_volume"], 2) == 1.71  # 11.2's low-detail figure


def test_tiered_units_with_free_tier(catalogue: PriceCatalogue) -> None:
    # 11.2: Cloud Vision at 100,000 units -> (100,000 - 1,000) x 1.50 / 1,000 = $148.50.
    c = cost(catalogue, {"sku": "gcp.vision.label_detection", "units_per_call": 1})
    assert c["monthly"] == pytest.approx(148.5)
    big = cost(catalogue, {"sku": "gcp.vision.label_detection"}, volume=6_000_000)
    assert big["monthly"] == pytest.approx(4_999_000 * 1.5 / 1000 + 1_000_000 * 1.0 / 1000)
    assert cost(catalogue, {"sku": "gcp.vision.label_detection"}, volume=800)["monthly"] == 0.0


def test_cost_per_correctly_triaged_melanoma(catalogue: PriceCatalogue) -> None:
    c = cost(
        catalogue,
        {"sku": "aws.sagemaker.realtime.ml.m5.large"},
        Measured(melanoma_referral_sensitivity=0.8),
        volume=100_000,
        prevalence=0.02,
    )
    assert c["per_correct_mel"] == pytest.approx(83.95 / (100_000 * 0.02 * 0.8))


def test_user_price_file_overrides_and_extends(tmp_path: Path) -> None:
    path = tmp_path / "prices.toml"
    path.write_text(
        """
[[entries]]
id = "local.cpu"
basis = "instance_hour"
price = 0.05
unit = "machine-hour"
currency = "USD"
region = "on-premises"
as_of = "2026-11-01"
source = "our finance team"
status = "internal"

[[entries]]
id = "aws.sagemaker.realtime.ml.m5.large"
basis = "instance_hour"
price = 0.2
unit = "instance-hour"
currency = "USD"
region = "eu-west-1"
as_of = "2026-11-01"
source = "https://aws.amazon.com/sagemaker/pricing/"
status = "vendor"
""",
        encoding="utf-8",
    )
    cat = PriceCatalogue.load([path])
    assert cat.lookup("local.cpu").price == 0.05  # type: ignore[union-attr]
    assert cat.lookup("sagemaker.realtime.ml.m5.large", "aws").price == 0.2  # type: ignore[union-attr]
    assert cat.lookup("sagemaker.realtime.ml.m5.large", "aws").origin == str(path)  # type: ignore[union-attr]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"entries": [{"id": "x", "basis": "per_request", "price": 1}]}), encoding="utf-8")
    with pytest.raises(ConfigError, match="missing"):
        PriceCatalogue.load([bad])
    with pytest.raises(ConfigError, match="does not exist"):
        PriceCatalogue.load([tmp_path / "nope.json"])


def test_break_even_between_billing_bases(catalogue: PriceCatalogue) -> None:
    # Serverless at $0.000008 per prediction vs an always-on $83.95/month: equal at 83.95 / 0.000008.
    section = cost_section(
        [
            ("always-on", {"sku": "aws.sagemaker.realtime.ml.m5.large"}, "aws", Measured(throughput_qps=100)),
            ("serverless", {"sku": "aws.sagemaker.serverless", "memory_gb": 2}, "aws", Measured(mean_latency_s=0.2)),
            ("unknown", {"sku": "nope"}, None, Measured()),
        ],
        catalogue=catalogue,
        volume=100_000,
        melanoma_prevalence=None,
    )
    (be,) = section["break_even"]
    assert be["cheaper_below"] == "serverless" and be["cheaper_above"] == "always-on"
    assert math.isclose(be["volume"], 83.95 / 0.000008, rel_tol=1e-3)
    assert set(section["curves"]) == {"always-on", "serverless"}  # unknown prices draw no curve
    assert section["backends"]["unknown"]["known"] is False
    assert any("unknown" in w for w in section["warnings"])
    assert section["prices_used"]["aws.sagemaker.serverless"]["as_of"] == "~2025"
    # Same basis: not a break-even between billing bases.
    assert break_even_volumes({"a": lambda v: 1.0, "b": lambda v: v}, {"a": "node_hour", "b": "node_hour"}) == []
