"""The price-API emulator's AWS answers against the botocore model of `pricing` GetProducts (the contract)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from price_api_documents import AWS_PRODUCTS
from spec_aws import check_answer

from derm_cloud.testing.emulators.price_apis import PriceApisEmulator


@pytest.fixture(scope="module")
def emu() -> Iterator[PriceApisEmulator]:
    with PriceApisEmulator(aws_products=AWS_PRODUCTS, page_size=1) as e:
        yield e  # type: ignore[misc]


def _post(url: str, request: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(
        url + "/",
        data=json.dumps(request).encode(),
        headers={"X-Amz-Target": "AWSPriceListService.GetProducts", "Content-Type": "application/x-amz-json-1.1"},
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


_QUERY = {
    "ServiceCode": "AmazonSageMaker",
    "Filters": [{"Type": "TERM_MATCH", "Field": "instanceName", "Value": "ml.m5.large"}],
    "FormatVersion": "aws_v1",
}


def test_get_products_pages_conform_to_the_botocore_model(emu: PriceApisEmulator) -> None:
    status, headers, body = _post(emu.url, _QUERY)
    assert json.loads(body)["NextToken"] == "page-1"
    assert check_answer("pricing", "GetProducts", status, headers, body) == []
    status, headers, body = _post(emu.url, {**_QUERY, "NextToken": "page-2"})
    assert "NextToken" not in json.loads(body)
    assert check_answer("pricing", "GetProducts", status, headers, body) == []


def test_a_bad_token_is_the_modelled_error(emu: PriceApisEmulator) -> None:
    status, headers, body = _post(emu.url, {**_QUERY, "NextToken": "not-a-token"})
    assert status == 400 and json.loads(body)["__type"] == "InvalidNextTokenException"
    assert check_answer("pricing", "GetProducts", status, headers, body) == []


def test_the_validator_catches_a_changed_field(emu: PriceApisEmulator) -> None:
    status, headers, body = _post(emu.url, _QUERY)
    answer = json.loads(body)
    as_objects = {**answer, "PriceList": [json.loads(p) for p in answer["PriceList"]]}  # strings in the model
    assert check_answer("pricing", "GetProducts", status, headers, json.dumps(as_objects).encode())
    renamed = {**answer, "Products": answer.pop("PriceList")}
    assert check_answer("pricing", "GetProducts", status, headers, json.dumps(renamed).encode())


def test_google_sku_documents_parse_into_the_clients_own_proto_with_no_unknown_field() -> None:
    from google.cloud.billing_v1.types import Sku
    from price_api_documents import GOOGLE_SKUS

    for doc in next(iter(GOOGLE_SKUS.values())):
        sku = Sku.from_json(json.dumps(doc), ignore_unknown_fields=False)  # raises on a field the proto lacks
        assert sku.sku_id == doc["skuId"] and sku.pricing_info[0].pricing_expression.tiered_rates
    with pytest.raises(Exception, match="unitPrices|no field"):
        Sku.from_json(json.dumps({**doc, "unitPrices": []}), ignore_unknown_fields=False)
