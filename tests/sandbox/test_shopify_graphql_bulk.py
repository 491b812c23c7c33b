"""Bulk query operations on the sandbox's GraphQL Admin API (shopify.dev "Perform bulk
operations with the GraphQL Admin API"), through the real ShopifyAPI library."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import pytest

from sandbox.catalog import demo_catalog, demo_variants
from tests.processes import Process
from tests.sandbox.shopify_graphql import Shop, open_shop


@pytest.fixture
def shop(sandbox: Process) -> Iterator[Shop]:
    yield from open_shop(sandbox)


RUN = """
mutation Run($query: String!) {
  bulkOperationRunQuery(query: $query) {
    bulkOperation { id status }
    userErrors { code field message }
  }
}"""
CURRENT = """
{ currentBulkOperation { id status errorCode objectCount rootObjectCount fileSize url query } }"""
CATALOG = """
{
  products {
    edges { node { id handle
      variants { edges { node { id sku
        inventoryItem { id inventoryLevels { edges { node {
          location { id }
          quantities(names: ["available", "reserved"]) { name quantity } } } } } } } } } }
  }
}"""


def finished(shop: Shop, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        operation = shop.data(CURRENT)["currentBulkOperation"]
        if operation["status"] not in ("CREATED", "RUNNING") or time.monotonic() > deadline:
            return operation
        time.sleep(0.05)


def run(shop: Shop, query: str) -> dict:
    started = shop.data(RUN, {"query": query})["bulkOperationRunQuery"]
    assert started["userErrors"] == []
    assert started["bulkOperation"]["status"] in ("CREATED", "RUNNING")
    operation = finished(shop)
    assert operation["id"] == started["bulkOperation"]["id"]
    return operation


def test_bulk_query_writes_jsonl_with_children_on_their_own_lines_under_parent_id(shop: Shop):
    """Bulk query JSONL: every node is a line; nodes of nested connections are separate lines
    whose __parentId is the enclosing node's id, after their parent; objects stay inline."""
    operation = run(shop, CATALOG)
    assert operation["status"] == "COMPLETED"
    products, variants = len(demo_catalog()), len(demo_variants())
    assert operation["rootObjectCount"] == str(products)
    assert operation["objectCount"] == str(products + 2 * variants)  # + one level per variant
    download = httpx.get(operation["url"], timeout=10)
    assert download.status_code == 200
    assert int(operation["fileSize"]) == len(download.content)
    lines = [json.loads(line) for line in download.text.splitlines()]
    seen: set[str] = set()
    for line in lines:
        parent = line.get("__parentId")
        assert parent is None or parent in seen  # a child never comes before its parent
        seen.add(line.get("id", ""))
    product_lines = [
        line for line in lines if line.get("id", "").startswith("gid://shopify/Product/")
    ]
    assert [p["handle"] for p in product_lines] == [c.handle for c in demo_catalog()]
    assert all("__parentId" not in p and "variants" not in p for p in product_lines)
    variant = next(line for line in lines if line.get("sku") == "FSH-TRENCH-BEIGE-M")
    assert variant["__parentId"] == product_lines[0]["id"]
    assert set(variant["inventoryItem"]) == {"id"}  # its levels were split out
    level = next(line for line in lines if line.get("__parentId") == variant["id"])
    assert level["quantities"] == [
        {"name": "available", "quantity": 36},
        {"name": "reserved", "quantity": 0},
    ]


def test_bulk_query_with_no_results_completes_without_a_url(shop: Shop):
    """BulkOperation.url is null when the query matched nothing."""
    operation = run(shop, '{ products(query: "sku:NO-SUCH-SKU") { edges { node { id } } } }')
    assert (operation["status"], operation["objectCount"], operation["url"]) == (
        "COMPLETED",
        "0",
        None,
    )


def test_an_invalid_bulk_query_is_a_user_error(shop: Shop):
    """bulkOperationRunQuery validates the query first: userErrors on `query`, no operation."""
    answer = shop.data(RUN, {"query": "{ products { edges { node { nope } } } }"})[
        "bulkOperationRunQuery"
    ]
    assert answer["bulkOperation"] is None
    assert answer["userErrors"][0]["field"] == ["query"]
