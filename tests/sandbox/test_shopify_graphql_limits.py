"""Calculated query cost and throttling on the sandbox's GraphQL Admin API (shopify.dev
"GraphQL Admin API rate limits"), through the real ShopifyAPI library."""

from __future__ import annotations

import math
from collections.abc import Iterator
from urllib.error import HTTPError

import httpx
import pytest

from sandbox.catalog import demo_variants
from sandbox.options import DEFAULT_SHOPIFY_ACCESS_TOKEN
from tests.processes import Process
from tests.sandbox.shopify_graphql import Shop, open_shop


@pytest.fixture
def shop(sandbox: Process) -> Iterator[Shop]:
    yield from open_shop(sandbox)


VARIANTS = len(demo_variants())
# Four full pages of every variant with one nested object: 4 * (2 + n * 2) points, all of
# them actually spent (each page returns exactly n nodes).
HEAVY = (
    "{ "
    + " ".join(
        f"p{i}: productVariants(first: {VARIANTS}) {{ nodes {{ id product {{ id }} }} }}"
        for i in range(4)
    )
    + " }"
)
HEAVY_COST = 4 * (2 + VARIANTS * 2)


def cost(answer: dict) -> dict:
    return answer["extensions"]["cost"]


def test_every_answer_carries_cost_and_the_standard_plan_throttle_status(shop: Shop):
    """extensions.cost: requestedQueryCost, actualQueryCost and throttleStatus with
    maximumAvailable 2000 and restoreRate 100 (standard plan: 100 points/second)."""
    answer = shop.graphql("{ products(first: 10) { edges { node { id title } } } }")
    spent = cost(answer)
    assert (spent["requestedQueryCost"], spent["actualQueryCost"]) == (12, 12)
    status = spent["throttleStatus"]
    assert (status["maximumAvailable"], status["restoreRate"]) == (2000.0, 100.0)
    assert 1988 <= status["currentlyAvailable"] <= 2000


def test_connections_cost_their_page_size_and_the_unused_part_is_given_back(shop: Shop):
    """Cost calculation: a connection costs 2 + first x its node; the actual cost counts the
    nodes returned, and the difference is refunded to the bucket."""
    answer = shop.graphql("{ productVariants(first: 250) { nodes { id sku } } }")
    spent = cost(answer)
    assert spent["requestedQueryCost"] == 252
    assert spent["actualQueryCost"] == 2 + VARIANTS
    assert spent["throttleStatus"]["currentlyAvailable"] >= 2000 - (2 + VARIANTS) - 1


def test_a_mutation_costs_ten_points(shop: Shop):
    """Cost calculation: mutations cost 10."""
    answer = shop.graphql(
        """mutation { webhookSubscriptionCreate(
             topic: ORDERS_CREATE, webhookSubscription: {uri: "http://127.0.0.1:9/x"}
           ) { userErrors { message } } }"""
    )
    assert (cost(answer)["requestedQueryCost"], cost(answer)["actualQueryCost"]) == (10, 10)


def test_a_query_above_1000_points_is_refused_unexecuted(shop: Shop):
    """Single query limit: a requested cost above 1,000 is MAX_COST_EXCEEDED, nothing runs and
    nothing is taken from the bucket."""
    answer = shop.graphql(
        "{ products(first: 250) { nodes { variants(first: 250) { nodes { id } } } } }"
    )
    assert "data" not in answer
    [error] = answer["errors"]
    assert error["extensions"]["code"] == "MAX_COST_EXCEEDED"
    assert error["message"].startswith("Query cost is ")
    assert cost(answer)["actualQueryCost"] is None
    assert cost(answer)["throttleStatus"]["currentlyAvailable"] == 2000


def test_an_empty_bucket_answers_throttled_and_restores_at_the_restore_rate(shop: Shop):
    """Leaky bucket: a request whose requested cost exceeds currentlyAvailable is THROTTLED
    (nothing executed, actualQueryCost null); after (requested - available) / restoreRate
    seconds it succeeds."""
    assert HEAVY_COST <= 1000
    for _ in range(2):
        assert cost(shop.graphql(HEAVY))["actualQueryCost"] == HEAVY_COST
    throttled = shop.graphql(HEAVY)
    assert "data" not in throttled
    assert throttled["errors"] == [{
        "message": "Throttled",
        "extensions": {"code": "THROTTLED", "documentation": "https://shopify.dev/api/usage/rate-limits"},
    }]  # fmt: skip
    status = cost(throttled)["throttleStatus"]
    assert cost(throttled)["actualQueryCost"] is None
    assert status["currentlyAvailable"] < HEAVY_COST
    wait = math.ceil((HEAVY_COST - status["currentlyAvailable"]) / status["restoreRate"]) + 1
    shop.control("clock/advance", {"seconds": wait})
    assert "errors" not in shop.graphql(HEAVY)


def test_graphql_points_and_the_rest_bucket_are_separate(shop: Shop):
    """GraphQL is limited by cost points, REST by calls: an empty GraphQL bucket leaves REST
    answering."""
    for _ in range(3):
        shop.graphql(HEAVY)
    rest = httpx.get(
        f"{shop.base}/admin/api/2025-01/shop.json",
        headers={"X-Shopify-Access-Token": DEFAULT_SHOPIFY_ACCESS_TOKEN},
        timeout=10,
    )
    assert rest.status_code == 200
    assert rest.headers["X-Shopify-Shop-Api-Call-Limit"] == "1/40"


def test_request_fault_knobs_apply_to_the_graphql_endpoint(shop: Shop):
    """The shared fault middleware: an injected 503 reaches the library as an HTTP error."""
    shop.control("faults", {"error_rate": 1.0, "error_status": 503, "path_prefix": "/admin/api/"})
    with pytest.raises(HTTPError) as raised:
        shop.graphql("{ shop { name } }")
    assert raised.value.code == 503
