"""Catalog reads through the sandbox's GraphQL Admin API via the real ShopifyAPI library:
cursor connections, `query:` filters on updated_at, locations, inventory items, and how the
endpoint answers API versions."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from sandbox.catalog import demo_catalog, demo_variants
from sandbox.options import DEFAULT_SHOPIFY_ACCESS_TOKEN
from tests.processes import Process
from tests.sandbox.shopify_graphql import LOCATION, Shop, key, open_shop


@pytest.fixture
def shop(sandbox: Process) -> Iterator[Shop]:
    yield from open_shop(sandbox)


PRODUCTS = """
query Products($first: Int!, $after: String, $query: String) {
  products(first: $first, after: $after, query: $query) {
    edges { cursor node { id handle updatedAt } }
    pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
  }
}"""
VARIANTS = """
query Variants($first: Int!, $after: String, $query: String) {
  productVariants(first: $first, after: $after, query: $query) {
    nodes { id sku price updatedAt product { id } inventoryItem { id } }
    pageInfo { hasNextPage endCursor }
  }
}"""


def test_products_page_with_first_and_after_cursors(shop: Shop):
    """shopify.dev 'Paginating results with GraphQL': first/after, pageInfo.endCursor and
    hasNextPage walk the whole list once, in order."""
    handles, after, pages = [], None, 0
    while True:
        page = shop.data(PRODUCTS, {"first": 7, "after": after})["products"]
        pages += 1
        handles += [edge["node"]["handle"] for edge in page["edges"]]
        assert page["pageInfo"]["hasPreviousPage"] is (after is not None)
        assert page["pageInfo"]["endCursor"] == page["edges"][-1]["cursor"]
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    catalog = demo_catalog()
    assert handles == [c.handle for c in catalog]
    assert pages == -(-len(catalog) // 7)


def test_connection_requires_first_or_last(shop: Shop):
    """Connections need a page size: 'you must provide one of first or last'."""
    answer = shop.graphql("{ products { edges { node { id } } } }")
    assert answer["errors"][0]["message"] == "you must provide one of first or last"


def test_variants_updated_at_filter_returns_only_newer_changes(shop: Shop):
    """Search syntax `updated_at:>'...'`: only variants changed after the timestamp."""
    everything = shop.data(VARIANTS, {"first": 250})["productVariants"]["nodes"]
    assert len(everything) == len(demo_variants())
    since = max(v["updatedAt"] for v in everything)
    assert (
        shop.data(VARIANTS, {"first": 250, "query": f"updated_at:>'{since}'"})["productVariants"][
            "nodes"
        ]
        == []
    )
    shop.control("clock/advance", {"seconds": 2})
    variant = everything[5]
    rest = httpx.put(
        f"{shop.base}/admin/api/2025-01/variants/{variant['id'].rsplit('/', 1)[1]}.json",
        json={"variant": {"price": "99.00"}},
        headers={"X-Shopify-Access-Token": DEFAULT_SHOPIFY_ACCESS_TOKEN},
        timeout=10,
    )
    assert rest.status_code == 200
    changed = shop.data(VARIANTS, {"first": 250, "query": f"updated_at:>'{since}'"})
    assert [(v["id"], v["price"]) for v in changed["productVariants"]["nodes"]] == [
        (variant["id"], "99.00")
    ]


def test_variant_sku_filter_and_ids_as_gids(shop: Shop):
    """Search by `sku:`; ids are global ids, legacyResourceId the REST id as a string."""
    found = shop.data(
        """query { productVariants(first: 5, query: "sku:FSH-TRENCH-BEIGE-M") {
             nodes { id legacyResourceId sku inventoryPolicy inventoryQuantity } } }"""
    )["productVariants"]["nodes"]
    assert len(found) == 1
    variant = found[0]
    assert variant["id"].startswith("gid://shopify/ProductVariant/")
    assert variant["legacyResourceId"] == variant["id"].rsplit("/", 1)[1]
    assert (variant["sku"], variant["inventoryPolicy"], variant["inventoryQuantity"]) == (
        "FSH-TRENCH-BEIGE-M", "DENY", 36,
    )  # fmt: skip


def test_locations_and_inventory_items_with_their_levels(shop: Shop):
    """locations, inventoryItems and InventoryLevel.quantities(names:) as documented."""
    data = shop.data(
        """query {
          locations(first: 10) { nodes { id name isActive address { countryCode } } }
          inventoryItems(first: 3) {
            nodes { id sku tracked variant { sku }
              inventoryLevels(first: 5) { nodes { id location { id }
                quantities(names: ["available", "on_hand"]) { name quantity } } } }
          }
        }"""
    )
    assert [(loc["name"], loc["address"]["countryCode"]) for loc in data["locations"]["nodes"]] == [
        ("Warehouse", "US"), ("Paris Boutique", "FR"),
    ]  # fmt: skip
    first = data["inventoryItems"]["nodes"][0]
    assert first["sku"] == first["variant"]["sku"] == "FSH-TRENCH-BEIGE-S"
    [level] = first["inventoryLevels"]["nodes"]
    assert level["location"]["id"] == LOCATION
    assert level["id"].startswith("gid://shopify/InventoryLevel/1?inventory_item_id=")
    assert level["quantities"] == [
        {"name": "available", "quantity": 38},
        {"name": "on_hand", "quantity": 38},
    ]


def test_location_inventory_levels_updated_at_filter(shop: Shop):
    """Location.inventoryLevels(query: "updated_at:>..."): the levels changed since a moment,
    the periodic repair's cheap way to find stock changes."""
    levels = shop.data(
        "{ location { inventoryLevels(first: 250) { nodes { updatedAt item { sku } } } } }"
    )["location"]["inventoryLevels"]["nodes"]
    since = max(level["updatedAt"] for level in levels)
    shop.control("clock/advance", {"seconds": 2})
    assert (
        shop.control("inventory/sell", {"sku": "FSH-TRENCH-BLACK-M", "quantity": 1}).status_code
        == 200
    )
    changed = shop.data(
        """query L($q: String!) {
             location { inventoryLevels(first: 250, query: $q) { nodes { item { sku } } } } }""",
        {"q": f"updated_at:>'{since}'"},
    )["location"]["inventoryLevels"]["nodes"]
    assert [level["item"]["sku"] for level in changed] == ["FSH-TRENCH-BLACK-M"]


def test_location_inventory_levels_by_item_ids_ored(shop: Shop):
    """shopify.dev "Shopify API search syntax": `inventory_item_id:A OR inventory_item_id:B`
    finds exactly those items' levels, and a further ANDed term still filters them (the
    sandbox looks pinned ids up instead of scanning every level)."""
    levels = shop.data(
        "{ location { inventoryLevels(first: 250) { nodes { updatedAt item { id sku } } } } }"
    )["location"]["inventoryLevels"]["nodes"]
    ids = [level["item"]["id"].rsplit("/", 1)[1] for level in levels[:3]]
    query = """query L($q: String!) {
        location { inventoryLevels(first: 250, query: $q) { nodes { item { sku } } } } }"""

    def skus(search: str) -> list[str]:
        found = shop.data(query, {"q": search})["location"]["inventoryLevels"]["nodes"]
        return sorted(level["item"]["sku"] for level in found)

    assert skus(f"inventory_item_id:{ids[0]} OR inventory_item_id:{ids[2]}") == sorted(
        [levels[0]["item"]["sku"], levels[2]["item"]["sku"]]
    )
    assert skus(f"inventory_item_id:{ids[1]} updated_at:>'2999-01-01'") == []
    assert skus("inventory_item_id:999999999999") == []


def test_an_invalid_query_gets_the_same_errors_every_time(shop: Shop):
    """GraphQL validation errors come back with `data` absent, for a query text the endpoint has
    seen before just as the first time (the sandbox keeps parsed queries)."""
    first, second = (_errors(shop, "{ shop { noSuchField } }") for _ in range(2))
    assert first == second
    assert "noSuchField" in first[0]["message"]


def _errors(shop: Shop, query: str) -> list[dict]:
    answer = httpx.post(
        f"{shop.base}/admin/api/2026-04/graphql.json",
        json={"query": query},
        headers={"X-Shopify-Access-Token": DEFAULT_SHOPIFY_ACCESS_TOKEN},
        timeout=10,
    )
    assert answer.status_code == 200
    body = answer.json()
    assert "data" not in body
    return body["errors"]


def _post(shop: Shop, version: str) -> httpx.Response:
    return httpx.post(
        f"{shop.base}/admin/api/{version}/graphql.json",
        json={"query": "{ shop { name } }"},
        headers={"X-Shopify-Access-Token": DEFAULT_SHOPIFY_ACCESS_TOKEN},
        timeout=10,
    )


@pytest.mark.parametrize("version", ["2026-04", "2026-07", "unstable"])
def test_supported_versions_are_served_as_pinned(shop: Shop, version: str):
    """API versioning: a supported version answers with X-Shopify-API-Version equal to it."""
    answer = _post(shop, version)
    assert answer.status_code == 200
    assert answer.headers["X-Shopify-API-Version"] == version


@pytest.mark.parametrize("version", ["2026-05", "2099-01", "latest"])
def test_a_name_that_is_no_api_version_is_not_found(shop: Shop, version: str):
    """Versions are quarterly (YYYY-01/04/07/10) up to the release candidate: anything else is
    404 Not Found."""
    answer = _post(shop, version)
    assert (answer.status_code, answer.json()) == (404, {"errors": "Not Found"})


def test_an_unsupported_old_version_falls_forward(shop: Shop):
    """API versioning: a request for a version no longer supported is served by the oldest
    supported stable version, which X-Shopify-API-Version reports."""
    answer = _post(shop, "2024-01")
    assert answer.status_code == 200
    served = answer.headers["X-Shopify-API-Version"]
    assert served > "2024-01"


def test_wrong_access_token_is_401(shop: Shop):
    """Same authentication as REST: a bad X-Shopify-Access-Token is 401."""
    answer = httpx.post(
        f"{shop.base}/admin/api/2026-04/graphql.json",
        json={"query": "{ shop { name } }"},
        headers={"X-Shopify-Access-Token": key()},
        timeout=10,
    )
    assert answer.status_code == 401
