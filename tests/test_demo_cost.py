"""The demo's cost line: an always-on endpoint's call costs its month shared over the stated volume."""

from __future__ import annotations

import pytest

from derm_cloud.base import BackendInfo
from derm_cloud.compare.run.prices import PriceCatalogue
from derm_cloud.demo.render import call_cost


@pytest.fixture(scope="module")
def catalogue() -> PriceCatalogue:
    return PriceCatalogue.load(user_catalogue=False)


def test_always_on_call_costs_the_month_shared_over_the_stated_volume(catalogue: PriceCatalogue) -> None:
    info = BackendInfo("sagemaker", "aws", "SageMaker", "m", billing={"sku": "aws.sagemaker.realtime.ml.m5.large"})
    text = call_cost(info, None, catalogue, monthly_volume=100_000)
    assert text.startswith("$0.00084 per call at 100,000 calls/month (1 x ml.m5.large x 730 h at $0.115 per ")
    assert "always on whatever the traffic; real-time instance, us-east-1; price as of ~2025" in text
    two = BackendInfo(
        "sagemaker", "aws", "SageMaker", "m", billing={"sku": "aws.sagemaker.realtime.ml.m5.large", "instances": 2}
    )
    assert call_cost(two, None, catalogue, monthly_volume=1_000).startswith(
        "$0.1679 per call at 1,000 calls/month (2 x"
    )
    vertex = BackendInfo(
        "vertex", "gcp", "Vertex", "m", billing={"sku": "vertex.automl.image_classification.online", "nodes": 1}
    )
    assert call_cost(vertex, None, catalogue).startswith("$0.01 per call at 100,000 calls/month (1 x ")
