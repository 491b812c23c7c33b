"""The REST leaky bucket and the request fault knobs, over raw HTTP (headers and statuses are
the point) plus the ShopifyAPI library's view of them."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
import shopify
from pyactiveresource.connection import ClientError, ServerError

from sandbox.options import DEFAULT_SHOPIFY_ACCESS_TOKEN, DEFAULT_SHOPIFY_SHOP
from tests.processes import Process

VERSION = "2025-01"
TOKEN = {"X-Shopify-Access-Token": DEFAULT_SHOPIFY_ACCESS_TOKEN}
THROTTLED = (
    "Exceeded 2 calls per second for api client. Reduce request rates to resume uninterrupted"
    " service."
)


@pytest.fixture
def base(sandbox: Process) -> Iterator[str]:
    url = sandbox.urls["shopify"]
    httpx.post(f"{url}/_sandbox/reset", json={"seed": 11}).raise_for_status()
    yield url
    httpx.post(f"{url}/_sandbox/reset", json={"seed": 11})


@pytest.fixture
def client(base: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"{base}/admin/api/{VERSION}", headers=TOKEN, timeout=10) as c:
        yield c


def fill_bucket(client: httpx.Client) -> list[httpx.Response]:
    return [client.get("/locations.json") for _ in range(40)]


def test_call_limit_header_in_shopify_case(client):
    first = client.get("/shop.json")
    assert first.status_code == 200
    assert first.headers["X-Shopify-API-Version"] == VERSION
    raw_names = [name for name, _ in first.headers.raw]
    # The library's Limits looks the header up case-sensitively.
    assert b"X-Shopify-Shop-Api-Call-Limit" in raw_names
    assert first.headers["X-Shopify-Shop-Api-Call-Limit"] == "1/40"


def test_full_bucket_answers_429_with_retry_after(client):
    answers = fill_bucket(client)
    assert all(a.status_code == 200 for a in answers)
    assert answers[-1].headers["X-Shopify-Shop-Api-Call-Limit"] in ("39/40", "40/40")
    throttled = client.get("/products.json")
    assert throttled.status_code == 429
    assert throttled.headers["Retry-After"] == "2.0"
    assert throttled.headers["X-Shopify-Shop-Api-Call-Limit"] == "40/40"
    assert throttled.json() == {"errors": THROTTLED}


def test_bucket_leaks_two_calls_per_second(base, client):
    fill_bucket(client)
    assert client.get("/shop.json").status_code == 429
    # Advance the sandbox's bucket clock by one second instead of sleeping: two calls leak.
    httpx.post(f"{base}/_sandbox/clock/advance", json={"seconds": 1.0}).raise_for_status()
    assert [client.get("/shop.json").status_code for _ in range(3)] == [200, 200, 429]
    # And real time leaks too: half a second frees one call.
    time.sleep(0.6)
    assert client.get("/shop.json").status_code == 200


def test_library_sees_limits_and_429(base):
    session = shopify.Session(DEFAULT_SHOPIFY_SHOP, VERSION, DEFAULT_SHOPIFY_ACCESS_TOKEN)
    shopify.ShopifyResource.activate_session(session)
    shopify.ShopifyResource.set_site(f"{base}/admin/api/{VERSION}")
    try:
        shopify.Location.find()
        assert shopify.Limits.credit_limit() == 40
        assert shopify.Limits.credit_used() == 1
        with httpx.Client(base_url=f"{base}/admin/api/{VERSION}", headers=TOKEN) as raw:
            fill_bucket(raw)
        with pytest.raises(ClientError) as err:
            shopify.Product.find()
        assert err.value.response.code == 429
        assert err.value.response.headers["Retry-After"] == "2.0"
    finally:
        shopify.ShopifyResource.clear_session()


def test_bad_token_is_not_counted(client):
    bad = client.get("/shop.json", headers={"X-Shopify-Access-Token": "nope"})
    assert bad.status_code == 401
    assert client.get("/shop.json").headers["X-Shopify-Shop-Api-Call-Limit"] == "1/40"


def faults(base: str, **config) -> dict:
    answer = httpx.post(f"{base}/_sandbox/faults", json=config)
    answer.raise_for_status()
    return answer.json()


def test_error_faults_are_shopify_shaped_and_spare_the_control_api(base, client):
    faults(base, error_rate=1.0, error_status=503)
    failed = client.get("/products.json")
    assert failed.status_code == 503 and "errors" in failed.json()
    assert httpx.get(f"{base}/_sandbox/health").status_code == 200
    faults(base, error_status=429)
    throttled = client.get("/products.json")
    assert throttled.status_code == 429
    assert throttled.headers["Retry-After"] == "2.0"
    assert throttled.json() == {"errors": THROTTLED}
    faults(base, error_status=500)
    shopify.ShopifyResource.activate_session(
        shopify.Session(DEFAULT_SHOPIFY_SHOP, VERSION, DEFAULT_SHOPIFY_ACCESS_TOKEN)
    )
    shopify.ShopifyResource.set_site(f"{base}/admin/api/{VERSION}")
    try:
        with pytest.raises(ServerError):
            shopify.Product.find()
    finally:
        shopify.ShopifyResource.clear_session()
    assert httpx.get(f"{base}/_sandbox/faults").json()["error_status"] == 500


def test_error_after_processing_applies_the_change(base, client):
    variant = client.get("/products.json", params={"limit": 1}).json()["products"][0]["variants"][0]
    faults(base, error_rate=1.0, error_phase="after", path_prefix=f"/admin/api/{VERSION}/orders")
    lost = client.post(
        "/orders.json", json={"order": {"line_items": [{"variant_id": variant["id"]}]}}
    )
    assert lost.status_code == 500
    # The order exists although its response was lost; other paths are not faulted.
    assert client.get("/products/count.json").status_code == 200
    assert len(httpx.get(f"{base}/_sandbox/state").json()["orders"]) == 1


def test_method_fault_spares_reads_of_the_same_path(base, client):
    """A fault limited to POST loses a create's response while lookups on that path (the
    retry's search for what it created) still answer."""
    variant = client.get("/products.json", params={"limit": 1}).json()["products"][0]["variants"][0]
    faults(
        base,
        error_rate=1.0,
        error_phase="after",
        path_prefix=f"/admin/api/{VERSION}/orders",
        method="POST",
    )
    lost = client.post(
        "/orders.json", json={"order": {"line_items": [{"variant_id": variant["id"]}]}}
    )
    assert lost.status_code == 500
    listed = client.get("/orders.json", params={"status": "any"})
    assert listed.status_code == 200 and len(listed.json()["orders"]) == 1


def test_latency_and_timeout_faults(base, client):
    faults(base, latency_ms=300)
    started = time.monotonic()
    assert client.get("/shop.json").status_code == 200
    assert time.monotonic() - started >= 0.3
    faults(base, latency_ms=0, timeout_rate=1.0, timeout_seconds=0.3)
    started = time.monotonic()
    assert client.get("/shop.json").status_code == 504
    assert time.monotonic() - started >= 0.3


def test_faults_are_deterministic_by_seed(base, client):
    def pattern() -> list[int]:
        faults(base, error_rate=0.5)
        return [client.get("/shop.json").status_code for _ in range(16)]

    first = pattern()
    assert {200, 500} == set(first)
    httpx.post(f"{base}/_sandbox/reset", json={"seed": 11}).raise_for_status()
    assert pattern() == first
    httpx.post(f"{base}/_sandbox/reset", json={"seed": 12}).raise_for_status()
    assert pattern() != first


def test_invalid_fault_settings_are_rejected(base):
    assert httpx.post(f"{base}/_sandbox/faults", json={"error_rate": 2}).status_code == 400
    assert httpx.post(f"{base}/_sandbox/faults", json={"nonsense": 1}).status_code == 400
