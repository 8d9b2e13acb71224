"""One loopback server answering the three public price APIs from documents you give it, page by page.

`derm-cloud prices refresh --mirror URL` points all three readers at it:

* **Azure Retail Prices** `GET /api/retail/prices?$filter=...&$skip=N`: the items whose fields equal every
  `field eq 'value'` clause, in pages of `page_size` with `NextPageLink` (null on the last page), in the
  documented envelope (`BillingCurrency`, `CustomerEntityId`, `CustomerEntityType`, `Items`, `NextPageLink`,
  `Count`; learn.microsoft.com/rest/api/cost-management/retail-prices/azure-retail-prices).
* **AWS Price List Query** `POST /` with `X-Amz-Target: AWSPriceListService.GetProducts` (JSON 1.1): the
  products whose `product.attributes` match every `TERM_MATCH` filter, as JSON strings in `PriceList`, paged
  by `NextToken`; an unknown token is `InvalidNextTokenException` (the botocore model's error, HTTP 400).
* **Cloud Billing Catalog** `GET /v1/services/{id}/skus?pageSize=&pageToken=`: the service's SKUs paged by
  `nextPageToken` (empty on the last page); an unknown service is a 404 in Google's error envelope.

The documents are the caller's (tests keep them as fixtures written from each API's published examples); the
server adds only the paging and the envelopes. Only the standard library is imported.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

from derm_cloud.testing.emulators.base import EmulatorServer, Response

__all__ = ["PriceApisEmulator"]

_CLAUSE = re.compile(r"\s*(\w+)\s+eq\s+'((?:[^']|'')*)'\s*", re.IGNORECASE)
_GOOGLE_SKUS = re.compile(r"/v1/services/([^/]+)/skus")
# Filter fields whose item field has another name: the API filters on `priceType` but lists it as `type`.
_AZURE_FIELD = {"priceType": "type"}


class PriceApisEmulator(EmulatorServer):
    """Replays Azure items, AWS products and Google SKUs through each API's paging and envelope.

    Args:
        azure_items: Azure Retail Prices items (dicts as the API lists them).
        aws_products: AWS Price List products (dicts; served as the JSON strings the API sends), each with
            `serviceCode` and `product.attributes`.
        google_skus: Cloud Billing SKUs (dicts in the REST JSON form) per service id.
        page_size: items per page (small, so that every test pages).
    """

    def __init__(
        self,
        *,
        azure_items: Sequence[Mapping[str, Any]] = (),
        aws_products: Sequence[Mapping[str, Any]] = (),
        google_skus: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
        page_size: int = 2,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        super().__init__(host=host, port=port)
        self.azure_items = [dict(i) for i in azure_items]
        self.aws_products = [dict(p) for p in aws_products]
        self.google_skus = {k: [dict(s) for s in v] for k, v in (google_skus or {}).items()}
        self.page_size = page_size

    def handle(self, method: str, path: str, headers: Mapping[str, str], body: bytes) -> Response:
        parts = urlsplit(path)
        query = parse_qs(parts.query)
        target = next((v for k, v in headers.items() if k.lower() == "x-amz-target"), "")
        if method == "GET" and parts.path == "/api/retail/prices":
            return self._azure(query)
        if method == "POST" and target.startswith("AWSPriceListService."):
            return self._aws(target.split(".", 1)[1], body)
        match = _GOOGLE_SKUS.fullmatch(parts.path)
        if method == "GET" and match:
            return self._google(match[1], query)
        return Response.json({"error": {"code": 404, "message": f"no route {method} {parts.path}"}}, 404)

    # --- Azure Retail Prices ------------------------------------------------------------------------------------

    def _azure(self, query: Mapping[str, list[str]]) -> Response:
        expr = query.get("$filter", [""])[0]
        clauses: list[tuple[str, str]] = []
        for part in re.split(r"\s+and\s+", expr, flags=re.IGNORECASE) if expr else []:
            m = _CLAUSE.fullmatch(part)
            if m is None:
                return Response.json({"Error": {"Code": "BadRequest", "Message": f"Invalid OData filter: {expr}"}}, 400)
            clauses.append((_AZURE_FIELD.get(m[1], m[1]), m[2].replace("''", "'")))
        items = [i for i in self.azure_items if all(str(i.get(f)) == v for f, v in clauses)]
        skip = int(query.get("$skip", ["0"])[0])
        page = items[skip : skip + self.page_size]
        following = skip + self.page_size
        next_link = (
            f"{self.url}/api/retail/prices?$filter={quote(expr)}&$skip={following}" if following < len(items) else None
        )
        return Response.json(
            {
                "BillingCurrency": "USD",
                "CustomerEntityId": "Default",
                "CustomerEntityType": "Retail",
                "Items": page,
                "NextPageLink": next_link,
                "Count": len(page),
            }
        )

    # --- AWS Price List Query -----------------------------------------------------------------------------------

    def _aws(self, operation: str, body: bytes) -> Response:
        if operation != "GetProducts":
            return _aws_error("InvalidParameterException", f"{operation} is not emulated", 400)
        request = json.loads(body or b"{}")
        service = request.get("ServiceCode")
        filters = [(f["Field"], f["Value"]) for f in request.get("Filters", [])]
        matches = [
            p
            for p in self.aws_products
            if p.get("serviceCode") == service
            and all(p.get("product", {}).get("attributes", {}).get(k) == v for k, v in filters)
        ]
        token = request.get("NextToken")
        start = 0
        if token is not None:
            if not re.fullmatch(r"page-\d+", token):
                return _aws_error("InvalidNextTokenException", "The pagination token is invalid.", 400)
            start = int(token.split("-")[1])
        size = min(self.page_size, int(request.get("MaxResults", self.page_size)))
        page = matches[start : start + size]
        out: dict[str, Any] = {"FormatVersion": request.get("FormatVersion", "aws_v1"), "PriceList": []}
        out["PriceList"] = [json.dumps(p) for p in page]
        if start + size < len(matches):
            out["NextToken"] = f"page-{start + size}"
        return Response(200, json.dumps(out).encode(), {"Content-Type": "application/x-amz-json-1.1", **_rid()})

    # --- Cloud Billing Catalog ----------------------------------------------------------------------------------

    def _google(self, service: str, query: Mapping[str, list[str]]) -> Response:
        if service not in self.google_skus:
            error = {"code": 404, "message": f"Service services/{service} not found.", "status": "NOT_FOUND"}
            return Response.json({"error": error}, 404)
        skus = self.google_skus[service]
        start = int(query.get("pageToken", ["0"])[0] or 0)
        size = min(self.page_size, int(query.get("pageSize", [self.page_size])[0]) or self.page_size)
        following = start + size
        return Response.json(
            {"skus": skus[start:following], "nextPageToken": str(following) if following < len(skus) else ""}
        )


def _rid() -> dict[str, str]:
    return {"x-amzn-RequestId": str(uuid.uuid4())}


def _aws_error(code: str, message: str, status: int) -> Response:
    body = json.dumps({"__type": code, "Message": message}).encode()
    return Response(status, body, {"Content-Type": "application/x-amz-json-1.1", **_rid()})
