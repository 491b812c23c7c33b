"""Shopify -> projection through the real webhooks: another channel's sale, a price change,
a product deletion, and webhooks that arrive twice, out of order, late or never; the periodic
repair (GraphQL `updated_at` since its cursor) then makes the projection equal Shopify field by
field. Us -> Shopify: a push retried after its first attempt died makes one Shopify order."""

from __future__ import annotations

import os
import subprocess
import sys
from urllib.parse import urlparse

import httpx
import pytest

from core import shopify_sync
from core.errors import ProviderUnavailable
from tests.core.shopify_support import assert_projection_equals_shopify
from tests.e2e.conftest import SHOPIFY_TOKEN, Stack, wait_for
from tests.e2e.helpers import checkout, order, paid_order, skus_with_stock, stock


def admin_rest(stack: Stack, method: str, path: str, **kwargs: object) -> httpx.Response:
    """Staff editing the shop in Shopify's admin (its own REST calls, not ours)."""
    return httpx.request(
        method,
        f"{stack.shopify_site}/{path}",
        headers={"X-Shopify-Access-Token": SHOPIFY_TOKEN},
        timeout=10,
        **kwargs,  # type: ignore[arg-type]
    )


def sell_elsewhere(stack: Stack, sku: str, quantity: int) -> dict:
    response = httpx.post(
        f"{stack.shopify_base}/_sandbox/inventory/sell",
        json={"sku": sku, "quantity": quantity},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    return response.json()["inventory_level"]


def test_another_channels_sale_reaches_our_stock_and_a_shortfall_is_flagged(stack: Stack) -> None:
    sku = skus_with_stock(stack, minimum=4)[0]
    available, _, _ = stock(stack, sku)
    sell_elsewhere(stack, sku, 1)
    wait_for(lambda: stock(stack, sku)[0] == available - 1)

    # Hold everything that is left, then the other channel sells one more: we promised more
    # than Shopify has. The projection records Shopify's truth and flags the shortfall.
    left = available - 1
    assert checkout(stack, [{"sku": sku, "quantity": left}]).status_code == 201
    sell_elsewhere(stack, sku, 1)
    wait_for(lambda: stock(stack, sku)[0] == left - 1)
    assert stack.scalar("SELECT shortfall_since IS NOT NULL FROM stock WHERE sku = :s", s=sku)
    blocked = checkout(stack, [{"sku": sku, "quantity": 1}])
    assert blocked.status_code == 409 and blocked.json()["error"]["code"] == "insufficient_stock"
    products = httpx.get(f"{stack.api['us']}/v1/products?limit=100", timeout=10).json()["data"]
    shown = next(v for p in products for v in p["variants"] if v["sku"] == sku)
    assert shown["available"] == 0  # never advertised as negative


def test_price_change_and_deletion_reach_the_storefront(stack: Stack) -> None:
    product = admin_rest(stack, "GET", "products.json?limit=1").json()["products"][0]
    handle = product["handle"]
    variant = product["variants"][0]
    changed = admin_rest(
        stack,
        "PUT",
        f"variants/{variant['id']}.json",
        json={"variant": {"id": variant["id"], "price": "123.45"}},
    )
    assert changed.status_code == 200, changed.text
    wait_for(
        lambda: (
            httpx.get(f"{stack.api['us']}/v1/products/{handle}", timeout=10).json()["variants"][0][
                "price"
            ]
            == 12345
        )
    )
    assert admin_rest(stack, "DELETE", f"products/{product['id']}.json").status_code == 200
    wait_for(
        lambda: httpx.get(f"{stack.api['us']}/v1/products/{handle}", timeout=10).status_code == 404
    )


def test_duplicate_and_reordered_inventory_webhooks_keep_the_newest_level(stack: Stack) -> None:
    sku = skus_with_stock(stack, minimum=6)[-1]
    start = stock(stack, sku)[0]
    stack.faults("shopify", webhook_duplicate_rate=1.0, webhook_reorder=True, webhook_delay_ms=30)
    try:
        for _ in range(4):
            sell_elsewhere(stack, sku, 1)
        stack.wait_webhooks()
    finally:
        stack.clear_faults()
    # Whatever order the four updates arrived in, the newest (start - 4) is what we hold.
    assert stock(stack, sku)[0] == start - 4
    assert stack.scalar("SELECT count(*) FROM webhook_inbox WHERE provider = 'shopify'") > 0


def test_the_periodic_repair_brings_a_dropped_webhook(stack: Stack) -> None:
    sku = skus_with_stock(stack, minimum=3)[1]
    start = stock(stack, sku)[0]
    stack.faults("shopify", webhook_drop_rate=1.0)
    try:
        sell_elsewhere(stack, sku, 2)
        stack.wait_webhooks()
    finally:
        stack.clear_faults()
    assert stock(stack, sku)[0] == start  # the webhook never came
    result = shopify_sync.repair(stack.engine, stack.shopify_gateway(), 1)
    assert result.mode == "incremental"
    assert stock(stack, sku)[0] == start - 2


def test_faulty_webhooks_then_repair_leave_the_projection_equal_to_shopify(stack: Stack) -> None:
    """Shopify's webhooks are at-least-once, unordered and may be lost: duplicated, reordered,
    delayed and dropped deliveries of many changes, then one periodic repair, and every field
    of every SKU equals Shopify's."""
    skus = skus_with_stock(stack, minimum=4)[:8]
    stack.faults(
        "shopify",
        webhook_duplicate_rate=0.5,
        webhook_drop_rate=0.3,
        webhook_reorder=True,
        webhook_delay_ms=20,
    )
    try:
        for _ in range(2):
            for sku in skus:
                sell_elsewhere(stack, sku, 1)
        stack.wait_webhooks()
    finally:
        stack.clear_faults()

    shopify_sync.repair(stack.engine, stack.shopify_gateway(), 1)

    assert_projection_equals_shopify(stack.engine, stack.shopify_gateway())


class CrashAfterCreate:
    """The real gateway, except that the process 'dies' right after Shopify created the order."""

    def __init__(self, real: object) -> None:
        self.real = real

    def __getattr__(self, name: str) -> object:
        return getattr(self.real, name)

    def create_order(self, **kwargs: object) -> int:
        self.real.create_order(**kwargs)  # type: ignore[attr-defined]
        raise RuntimeError("killed before recording the Shopify order")


@pytest.mark.parametrize("how", ["response_lost", "killed_after_create"])
def test_a_retried_push_makes_one_shopify_order_and_acknowledges_it(stack: Stack, how: str) -> None:
    """A retry after the first attempt died converges (DESIGN.md: a retry resumes where the last
    committed phase left off), with real Shopify order ids (> 2**31) in the resume marker."""
    from core.outbox import Message

    skus = skus_with_stock(stack, minimum=3)
    paid_order(stack, skus[0])  # pushed by the relay: the next marker is a real Shopify id
    assert stack.scalar("SELECT max(shopify_order_id) FROM orders") > 2**31
    sku = skus[2]
    body = checkout(stack, [{"sku": sku, "quantity": 1}]).json()
    stack.stripe_client().v1.payment_intents.confirm(
        body["payment"]["payment_intent_id"], {"payment_method": "pm_card_visa"}
    )
    wait_for(
        lambda: (
            stack.scalar("SELECT status FROM orders WHERE id = :o", o=body["order_id"]) == "paid"
        )
    )
    message = Message(
        0,
        "obx_test",
        "shopify.push_order",
        f"order:{body['order_id']}",
        {"order_id": body["order_id"]},
        0,
    )

    if how == "response_lost":  # Shopify created it; the answer never reached us
        stack.faults(
            "shopify",
            error_rate=1.0,
            error_phase="after",
            path_prefix=f"{urlparse(stack.shopify_site).path}/graphql.json",
            method="POST",
        )
        try:
            with pytest.raises(ProviderUnavailable):
                shopify_sync.OrderPusher(stack.engine, stack.shopify_gateway(), 1)(message)
        finally:
            stack.clear_faults()
    else:
        crashing = shopify_sync.OrderPusher(
            stack.engine, CrashAfterCreate(stack.shopify_gateway()), 1
        )
        with pytest.raises(RuntimeError):
            crashing(message)
    assert (
        stack.scalar("SELECT shopify_order_id FROM orders WHERE id = :o", o=body["order_id"])
        is None
    )

    shopify_sync.OrderPusher(stack.engine, stack.shopify_gateway(), 1)(message)  # the retry
    stack.settle()  # the relay's own copy of the message finds it done
    state = httpx.get(f"{stack.shopify_base}/_sandbox/state", timeout=10).json()
    ours = [
        o
        for o in state["orders"]
        if {"name": "dotshop_order_id", "value": body["order_id"]}
        in (o.get("note_attributes") or [])
    ]
    assert len(ours) == 1
    assert (
        stack.scalar("SELECT shopify_order_id FROM orders WHERE id = :o", o=body["order_id"])
        == ours[0]["id"]
    )
    timeline = [e["kind"] for e in order(stack, body["order_id"])["timeline"]]
    assert timeline.count("pushed_to_shopify") == 1
    item = stack.scalar("SELECT shopify_inventory_item_id FROM variant WHERE sku = :s", s=sku)
    shopify_level = next(
        lv["available"]
        for lv in state["inventory_levels"]
        if lv["inventory_item_id"] == item and lv["location_id"] == 1
    )
    assert stock(stack, sku) == (shopify_level, 0, 0)  # acknowledged once, nothing committed


LAG_PERCENTILES_SQL = """
SELECT direction, count(*) AS samples,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY lag_ms) / 1000.0 AS p50,
       percentile_cont(0.99) WITHIN GROUP (ORDER BY lag_ms) / 1000.0 AS p99
  FROM sync_lag_sample WHERE id > :after GROUP BY direction ORDER BY direction
"""


def test_sync_lag_is_measured_in_both_directions_end_to_end(stack: Stack) -> None:
    """Inbound: other channels' sales reach us through the real webhook receiver; outbound:
    paid orders reach Shopify through the relay. Each applied change leaves a per-SKU lag
    sample (the console's data and /metrics' histogram); the percentiles are printed."""
    after = stack.scalar("SELECT coalesce(max(id), 0) FROM sync_lag_sample")
    skus = skus_with_stock(stack, minimum=3)
    for sku in skus[:10]:
        sell_elsewhere(stack, sku, 1)
    stack.wait_webhooks()
    for sku in skus[:5]:
        paid_order(stack, sku)

    lags = {row.direction: row for row in stack.sql(LAG_PERCENTILES_SQL, after=after)}
    for direction, row in lags.items():
        print(f"sync lag {direction}: n={row.samples} p50={row.p50:.3f}s p99={row.p99:.3f}s")
    assert lags["inbound"].samples >= 10
    assert lags["outbound"].samples >= 5
    assert lags["inbound"].p99 < 30 and lags["outbound"].p99 < 30
    # The API's /metrics exports the samples into the histogram, per direction.
    metrics = httpx.get(f"{stack.api['us']}/metrics", timeout=10).text
    for direction in ("inbound", "outbound"):
        count = next(
            float(line.rsplit(" ", 1)[1])
            for line in metrics.splitlines()
            if line.startswith(f'dotshop_sync_lag_seconds_count{{direction="{direction}"}}')
        )
        assert count >= 1, direction
    assert "dotshop_sync_outbound_oldest_unacknowledged_seconds " in metrics


def test_dotshop_sync_full_repairs_everything_on_demand(stack: Stack) -> None:
    """`dotshop sync --once --full`: one bulk-operation repair, then exit 0; the cursor records
    a full repair and the projection equals Shopify."""
    env = {**os.environ, **stack.api_env["us"]}
    done = subprocess.run(
        [sys.executable, "-m", "dotshop", "sync", "--once", "--full"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    mode = stack.scalar("SELECT value->>'mode' FROM sync_cursor WHERE name = 'shopify_full_sync'")
    assert mode == "full"
    assert_projection_equals_shopify(stack.engine, stack.shopify_gateway())
