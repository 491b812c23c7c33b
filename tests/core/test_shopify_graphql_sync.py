"""Our sync on Shopify's GraphQL Admin API, against a real sandbox Shopify and a real
PostgreSQL: the call budget from `extensions.cost.throttleStatus` (shopify.dev "GraphQL Admin
API rate limits"), user errors as typed errors, the full repair as a bulk operation applied in
SKU order (shopify.dev "Perform bulk operations with the GraphQL Admin API"), the incremental
repair from its `updated_at` cursor, webhooks that arrive twice, out of order or never, and the
sync lag per direction."""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY
from sqlalchemy import Engine, text

from core import relay, revalidate, shopify_sync, sync_lag
from core.db import transaction
from core.errors import ShopifyRejected
from core.outbox import Handlers
from core.settings import Settings, get_settings
from core.shopify_gateway import BULK_CURRENT, ShopifyGateway
from sandbox.catalog import demo_variants
from sandbox.options import DEFAULT_SHOPIFY_ACCESS_TOKEN
from tests.core.shopify_support import (
    Shop,
    assert_projection_equals_shopify,
    item_of,
    paid_order,
    push_message,
    stock,
    timeline,
)
from tests.processes import Process

SKU = "FSH-CASHCREW-CAMEL-M"
VARIANTS = len(demo_variants())
# Four full pages of every variant: 4 * (2 + n * 2) points, just under the 1,000 query cap.
HEAVY = (
    "query Heavy { "
    + " ".join(
        f"p{i}: productVariants(first: {VARIANTS}) {{ nodes {{ id product {{ id }} }} }}"
        for i in range(4)
    )
    + " }"
)


@pytest.fixture
def shop(sandbox: Process, clean_engine: Engine) -> Iterator[Shop]:
    shop = Shop(sandbox.urls["shopify"])
    shop.reset()
    yield shop
    shop.reset()


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def drain_bucket(gateway: ShopifyGateway) -> dict[str, Any]:
    """Spend the shop's GraphQL points until Shopify answers THROTTLED; returns that answer."""
    for _ in range(10):
        answer = gateway._send(HEAVY, None)
        if any(e["extensions"]["code"] == "THROTTLED" for e in answer.get("errors", [])):
            return answer
    raise AssertionError("the bucket never emptied")


def test_throttled_waits_as_long_as_the_restore_rate_says_then_retries(shop: Shop) -> None:
    """THROTTLED: nothing ran; retry after (requested - currentlyAvailable) / restoreRate
    seconds, both read from extensions.cost.throttleStatus, never a hard-coded rate."""
    sleeps: list[float] = []
    gateway = shop.gateway()
    gateway.sleep = lambda seconds: (sleeps.append(seconds), time.sleep(seconds))[0]
    throttled = drain_bucket(gateway)["extensions"]["cost"]
    before = sample("dotshop_shopify_throttled_total")

    data = gateway.execute(HEAVY)

    assert len(data["p0"]["nodes"]) == VARIANTS
    assert sample("dotshop_shopify_throttled_total") >= before + 1
    status = throttled["throttleStatus"]
    expected = (throttled["requestedQueryCost"] - status["currentlyAvailable"]) / status[
        "restoreRate"
    ]
    assert sleeps and sleeps[0] == pytest.approx(expected, abs=1.0)


def test_user_errors_become_typed_errors(shop: Shop, clean_engine: Engine) -> None:
    """refundCreate above the order's total answers userErrors: ShopifyRejected (a DotshopError
    with a stable code), not a silent success."""
    shopify_sync.load_catalog(clean_engine, shop.gateway(), [1])
    order_id = paid_order(clean_engine, {SKU: 1})
    shopify_sync.OrderPusher(clean_engine, shop.gateway(), [1])(push_message(order_id))
    shopify_id = int(shop.orders_for(order_id)[0]["legacyResourceId"])
    with pytest.raises(ShopifyRejected) as raised:
        shop.gateway().refund(shopify_id, key=str(uuid.uuid4()), amount_minor=10**6, currency="usd")
    assert raised.value.code == "shopify_rejected"


def test_a_throttled_storm_slows_pushes_but_every_one_lands(
    shop: Shop, clean_engine: Engine
) -> None:
    """Another app keeps the shop's GraphQL bucket empty: every push is THROTTLED, waits as the
    restore rate says and lands; each order reaches Shopify exactly once."""
    shopify_sync.load_catalog(clean_engine, shop.gateway(), [1])
    order_ids = [paid_order(clean_engine, {SKU: 1}) for _ in range(4)]
    stop = threading.Event()
    storm = shop.gateway()

    def hammer() -> None:
        while not stop.is_set():
            storm._send(HEAVY, None)
            time.sleep(0.2)

    drain_bucket(storm)
    thread = threading.Thread(target=hammer)
    thread.start()
    before = sample("dotshop_shopify_throttled_total")
    started = time.monotonic()
    try:
        pusher = shopify_sync.OrderPusher(clean_engine, shop.gateway(), [1])
        for order_id in order_ids:
            pusher(push_message(order_id))
    finally:
        stop.set()
        thread.join()
    assert time.monotonic() - started > 2  # slower: it waited for points
    assert sample("dotshop_shopify_throttled_total") > before
    for order_id in order_ids:
        assert len(shop.orders_for(order_id)) == 1
        assert [k for k, _ in timeline(clean_engine, order_id)].count("pushed_to_shopify") == 1
    assert stock(clean_engine, SKU) == (shop.level(item_of(clean_engine, SKU)), 0, 0)


def test_the_full_repair_is_a_bulk_operation_applied_in_sku_order_ten_per_transaction(
    shop: Shop, clean_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """First start (no cursor): bulkOperationRunQuery, its JSONL applied SKU by SKU in order,
    SYNC_BATCH_SKUS per transaction (the checkouts' lock order); the projection then equals
    Shopify field by field, and the cursor holds Shopify's newest updatedAt."""
    batches: list[list[str]] = []
    real = shopify_sync.apply_levels

    def observed(session: Any, levels: Any, locations: Any) -> Any:
        with clean_engine.connect() as conn:
            skus = conn.execute(
                text(
                    "SELECT sku FROM variant WHERE shopify_inventory_item_id = ANY(:i) ORDER BY sku"
                ),
                {"i": sorted({int(lv["inventory_item_id"]) for lv in levels})},
            ).scalars()
            batches.append(list(skus))
        return real(session, levels, locations)

    monkeypatch.setattr(shopify_sync, "apply_levels", observed)
    progress: list[tuple[str, int, int]] = []
    result = shopify_sync.repair(
        clean_engine, shop.gateway(), [1], progress=lambda *p: progress.append(p)
    )

    assert result.mode == "full"
    bulk = shop.gateway().execute(BULK_CURRENT)["currentBulkOperation"]
    assert bulk["status"] == "COMPLETED"
    flat = [sku for batch in batches for sku in batch]
    assert flat == sorted(flat) and len(flat) == len(set(flat)) == VARIANTS
    assert all(len(batch) <= shopify_sync.SYNC_BATCH_SKUS for batch in batches)
    assert progress[-1] == ("levels", VARIANTS, VARIANTS)
    monkeypatch.undo()
    assert_projection_equals_shopify(clean_engine, shop.gateway())
    with transaction(clean_engine) as session:
        assert shopify_sync.cursors.load(session, shopify_sync.FULL_SYNC_CURSOR)["since"]


def test_the_periodic_repair_reads_only_what_changed_since_its_cursor(
    shop: Shop, clean_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After the first (bulk) repair, the next ones query `updated_at:>=` the cursor: a product
    renamed and a level changed with no webhook are repaired, without another bulk operation,
    and what was final at the last read is not read again."""
    gateway = shop.gateway()
    later = datetime.now(UTC) + timedelta(minutes=2)  # the seeded catalog's second is final
    monkeypatch.setattr(shopify_sync, "_now", lambda: later)
    shopify_sync.repair(clean_engine, gateway, [1])
    first_bulk = gateway.execute(BULK_CURRENT)["currentBulkOperation"]["id"]
    shop.advance_clock(150)
    item = item_of(clean_engine, SKU)
    shop.set_level(item, 3)
    with clean_engine.connect() as conn:
        product_id = conn.execute(
            text(
                "SELECT p.shopify_product_id FROM product p JOIN variant v ON v.product_id = p.id"
                " WHERE v.sku = :s"
            ),
            {"s": SKU},
        ).scalar_one()
    renamed = httpx.put(
        f"{shop.base}/admin/api/2026-10/products/{product_id}.json",
        json={"product": {"id": product_id, "title": "Renamed in the Shopify admin"}},
        headers={"X-Shopify-Access-Token": DEFAULT_SHOPIFY_ACCESS_TOKEN},
        timeout=10,
    )
    assert renamed.status_code == 200, renamed.text

    result = shopify_sync.repair(clean_engine, gateway, [1])

    assert (result.mode, result.products, result.levels) == ("incremental", 1, 1)
    assert gateway.execute(BULK_CURRENT)["currentBulkOperation"]["id"] == first_bulk
    assert stock(clean_engine, SKU)[0] == 3
    assert_projection_equals_shopify(clean_engine, gateway)


def test_duplicate_reordered_and_dropped_level_webhooks_then_repair_equal_shopify(
    shop: Shop, clean_engine: Engine
) -> None:
    """Webhooks are at-least-once and unordered: the projection never goes back to an older
    level, and the periodic repair brings what was dropped; after it, every field equals
    Shopify's."""
    gateway = shop.gateway()
    shopify_sync.repair(clean_engine, gateway, [1])
    with clean_engine.connect() as conn:
        skus = conn.execute(
            text("SELECT sku FROM stock WHERE shopify_available >= 5 ORDER BY sku LIMIT 6")
        ).scalars()
        items = [item_of(clean_engine, sku) for sku in skus]
    deliveries = []
    for step in range(3):
        shop.advance_clock(1)
        for item in items:
            level = shop.set_level(item, 4 - step)
            deliveries.append({"event": str(uuid.uuid4()), "level": level})
    rng = random.Random(7)
    sent = [d for d in deliveries if rng.random() > 0.3]  # dropped
    sent += rng.sample(sent, len(sent) // 2)  # duplicated
    rng.shuffle(sent)  # reordered
    for delivery in sent:
        with transaction(clean_engine) as session:
            shopify_sync.accept_webhook(
                session,
                event_id=delivery["event"],
                topic="inventory_levels/update",
                payload=delivery["level"],
                locations=[1],
            )

    shopify_sync.repair(clean_engine, gateway, [1])

    assert_projection_equals_shopify(clean_engine, gateway)


def test_lag_is_measured_per_direction_and_per_sku(shop: Shop, clean_engine: Engine) -> None:
    """Inbound lag = our apply time - X-Shopify-Triggered-At; outbound = Shopify's
    acknowledgement - the payment; the oldest unacknowledged order's age is a gauge; per SKU,
    the last sync and recent percentiles are stored for the console."""
    gateway = shop.gateway()
    shopify_sync.repair(clean_engine, gateway, [1])
    sync_lag.export_metrics(clean_engine)
    inbound = sample("dotshop_sync_lag_seconds_count", direction="inbound")
    outbound = sample("dotshop_sync_lag_seconds_count", direction="outbound")

    order_id = paid_order(clean_engine, {SKU: 1})
    with clean_engine.begin() as conn:
        conn.execute(
            text("UPDATE orders SET paid_at = now() - interval '3 seconds' WHERE id = :o"),
            {"o": order_id},
        )
    sync_lag.export_metrics(clean_engine)
    assert sample("dotshop_sync_outbound_oldest_unacknowledged_seconds") >= 3
    shopify_sync.OrderPusher(clean_engine, gateway, [1])(push_message(order_id))
    shop.advance_clock(1)
    level = shop.set_level(item_of(clean_engine, SKU), 2)
    triggered = (datetime.now(UTC) - timedelta(seconds=5)).isoformat()
    with transaction(clean_engine) as session:
        result = shopify_sync.accept_webhook(
            session,
            event_id=str(uuid.uuid4()),
            topic="inventory_levels/update",
            payload=level,
            locations=[1],
            triggered_at=triggered,
        )
    assert result == "applied"
    sync_lag.export_metrics(clean_engine)

    assert sample("dotshop_sync_lag_seconds_count", direction="outbound") == outbound + 1
    assert sample("dotshop_sync_lag_seconds_count", direction="inbound") == inbound + 1
    assert sample("dotshop_sync_lag_seconds_sum", direction="outbound") >= 3
    assert sample("dotshop_sync_outbound_oldest_unacknowledged_seconds") == 0
    with transaction(clean_engine) as session:
        rows = {(s.sku, s.direction): s for s in sync_lag.status(session)}
    assert rows[(SKU, "outbound")].p50_seconds >= 3
    assert rows[(SKU, "inbound")].samples >= 1
    assert rows[(SKU, "inbound")].p99_seconds >= 4.5  # interpolated over its samples


@pytest.fixture
def revalidating(shop: Shop, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """Revalidation pointed at the sandbox's recording storefront endpoint."""
    monkeypatch.setenv("DOTSHOP_REVALIDATE_URL", f"{shop.base}/_sandbox/storefront/revalidate")
    monkeypatch.setenv("DOTSHOP_REVALIDATE_SECRET", "rv-secret-for-tests")
    get_settings.cache_clear()
    yield get_settings()
    monkeypatch.undo()
    get_settings.cache_clear()


PRODUCT_OF_SKU = """
query Of($query: String!) {
  productVariants(first: 1, query: $query) {
    nodes { product { legacyResourceId handle productType } }
  }
}"""


def revalidation_calls(shop: Shop) -> list[dict[str, str]]:
    response = httpx.get(f"{shop.base}/_sandbox/storefront/revalidations", timeout=10)
    return response.json()["calls"]


def deliver_revalidations(engine: Engine, settings: Settings) -> None:
    handlers = Handlers()
    handlers.register(revalidate.TOPIC, revalidate.Revalidator(settings))
    later = datetime.now(UTC) + timedelta(seconds=revalidate.COALESCE_SECONDS + 1)
    while relay.run_once(engine, handlers, now=later):
        pass


def test_a_price_change_and_stock_crossing_zero_revalidate_the_storefront_pages_once(
    shop: Shop, clean_engine: Engine, revalidating: Settings
) -> None:
    """Next.js on-demand revalidation: a catalog change a page shows (price; stock reaching 0)
    queues revalidatePath calls for the product and collection pages with the shared secret,
    through the outbox; changes to one page within the window make one call."""
    shopify_sync.load_catalog(clean_engine, shop.gateway(), [1])
    deliver_revalidations(clean_engine, revalidating)  # the first load shows every page
    httpx.post(f"{shop.base}/_sandbox/reset", json={"seed": 0}, timeout=10)  # forget the calls
    product = shop.gateway().execute(PRODUCT_OF_SKU, {"query": f"sku:{SKU}"})["productVariants"][
        "nodes"
    ][0]["product"]
    handle, category = product["handle"], product["productType"]
    payload = rest_product(shop, int(product["legacyResourceId"]))
    for cents in ("1.00", "2.00"):  # two price changes within the window
        payload["updated_at"] = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
        payload["variants"][0]["price"] = cents
        payload["variants"][0]["presentment_prices"] = []
        with transaction(clean_engine) as session:
            shopify_sync.accept_webhook(
                session, event_id=str(uuid.uuid4()), topic="products/update", payload=payload
            )
    deliver_revalidations(clean_engine, revalidating)
    calls = revalidation_calls(shop)
    assert sorted(c["path"] for c in calls) == [f"/collections/{category}", f"/products/{handle}"]
    assert {c["secret"] for c in calls} == {"rv-secret-for-tests"}
    assert {c["tags"] for c in calls} == {f"product:{handle}", f"collection:{category}"}

    item = item_of(clean_engine, SKU)
    with transaction(clean_engine) as session:
        shopify_sync.accept_webhook(
            session,
            event_id=str(uuid.uuid4()),
            topic="inventory_levels/update",
            payload={
                "inventory_item_id": item,
                "location_id": 1,
                "available": 0,
                "updated_at": (datetime.now(UTC) + timedelta(hours=2)).isoformat(),
            },
            locations=[1],
        )
    deliver_revalidations(clean_engine, revalidating)
    assert len(revalidation_calls(shop)) == 4  # sold out: both pages again


def rest_product(shop: Shop, product_id: int) -> dict[str, Any]:
    """The product as Shopify's products/update webhook carries it (REST JSON)."""
    response = httpx.get(
        f"{shop.base}/admin/api/2026-10/products/{product_id}.json",
        headers={"X-Shopify-Access-Token": DEFAULT_SHOPIFY_ACCESS_TOKEN},
        timeout=10,
    )
    return response.json()["product"]


def test_a_full_repair_archives_a_product_whose_delete_webhook_was_lost(
    shop: Shop, clean_engine: Engine
) -> None:
    """products/delete may never arrive; `dotshop sync --full` sees the product gone from the
    bulk result and archives it (orders keep their lines), like the webhook would have."""
    gateway = shop.gateway()
    shopify_sync.repair(clean_engine, gateway, [1])
    with clean_engine.connect() as conn:
        product_id, handle = conn.execute(
            text("SELECT shopify_product_id, handle FROM product ORDER BY handle LIMIT 1")
        ).one()
    deleted = httpx.delete(
        f"{shop.base}/admin/api/2026-10/products/{product_id}.json",
        headers={"X-Shopify-Access-Token": DEFAULT_SHOPIFY_ACCESS_TOKEN},
        timeout=10,
    )
    assert deleted.status_code == 200, deleted.text

    assert shopify_sync.repair(clean_engine, gateway, [1], full=True).mode == "full"

    with clean_engine.connect() as conn:
        status = conn.execute(
            text("SELECT status FROM product WHERE handle = :h"), {"h": handle}
        ).scalar_one()
    assert status == "archived"
    assert_projection_equals_shopify(clean_engine, gateway)
