"""Shopify's stock levels into our projection, against a real sandbox Shopify and a real
PostgreSQL: same-second levels (Shopify's updated_at has whole seconds), the locations that
sell online (`settings.selling_locations`), and a full sync running beside checkouts."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any

import pytest
from sqlalchemy import Engine, text

from core import inventory, orders, shopify_sync
from core.db import transaction
from core.ids import new_id
from tests.core.shopify_support import (
    Shop,
    item_of,
    paid_order,
    push_message,
    stock,
)
from tests.processes import Process

SKU = "FSH-CASHCREW-CAMEL-M"


@pytest.fixture
def shop(sandbox: Process, clean_engine: Engine) -> Iterator[Shop]:
    shop = Shop(sandbox.urls["shopify"])
    shop.reset()
    yield shop
    shop.reset()


def webhook(engine: Engine, payload: dict[str, Any], **kwargs: Any) -> str:
    """One `inventory_levels/update` delivery, as the webhook receiver applies it."""
    with transaction(engine) as session:
        return shopify_sync.accept_webhook(
            session,
            event_id=str(uuid.uuid4()),
            topic="inventory_levels/update",
            payload=payload,
            **kwargs,
        )


def level_payload(item: int, available: int, at: str, location_id: int = 1) -> dict[str, Any]:
    return {
        "inventory_item_id": item,
        "location_id": location_id,
        "available": available,
        "updated_at": at,
    }


def test_a_late_level_of_the_same_second_does_not_raise_stock(
    shop: Shop, clean_engine: Engine
) -> None:
    """9@T1 then a late 10@T1 (reordered webhooks of one second) leaves 9, the level recorded
    per location included."""
    shopify_sync.load_catalog(clean_engine, shop.gateway(), [1])
    item = item_of(clean_engine, SKU)
    t1 = (datetime.now(UTC) + timedelta(hours=1)).replace(microsecond=0).isoformat()
    assert webhook(clean_engine, level_payload(item, 9, t1), locations=[1]) == "applied"
    assert webhook(clean_engine, level_payload(item, 10, t1), locations=[1]) == "stale"
    assert stock(clean_engine, SKU)[0] == 9
    with clean_engine.connect() as conn:
        recorded = conn.execute(
            text("SELECT available FROM inventory_level WHERE shopify_inventory_item_id = :i"),
            {"i": item},
        ).scalar_one()
    assert recorded == 9


def test_a_level_webhook_that_brings_nothing_new_takes_no_stock_lock(
    shop: Shop, clean_engine: Engine
) -> None:
    """Shopify sends a level webhook for every move, our own holds' included, and the relay
    has usually recorded that level first: a webhook whose level we hold (or that loses to
    ours) is answered from one read. It must not queue behind the checkouts holding the SKU's
    stock row: with the row locked elsewhere, the old path's lock fails on `lock_timeout`."""
    shopify_sync.load_catalog(clean_engine, shop.gateway(), [1])
    item = item_of(clean_engine, SKU)
    t1 = (datetime.now(UTC) + timedelta(hours=1)).replace(microsecond=0)
    assert webhook(clean_engine, level_payload(item, 9, t1.isoformat()), locations=[1]) == (
        "applied"
    )
    with clean_engine.connect() as checkout:
        checkout.execute(text("SELECT FROM stock WHERE sku = :sku FOR UPDATE"), {"sku": SKU})
        for available, at in ((9, t1), (10, t1), (20, t1 - timedelta(seconds=1))):
            payload = level_payload(item, available, at.isoformat())
            assert webhook(clean_engine, payload, locations=[1]) == "stale"
        checkout.rollback()
    assert stock(clean_engine, SKU)[0] == 9
    # A newer level still takes the lock and moves the stock.
    newer = level_payload(item, 7, (t1 + timedelta(seconds=1)).isoformat())
    assert webhook(clean_engine, newer, locations=[1]) == "applied"
    assert stock(clean_engine, SKU)[0] == 7


def test_only_the_selling_locations_make_our_stock(shop: Shop, clean_engine: Engine) -> None:
    """A level at a location that does not sell online is recorded but moves no stock; with
    both locations selling, the full sync, webhooks and the push acknowledgement all use the
    sum over both."""
    gateway = shop.gateway()
    shopify_sync.load_catalog(clean_engine, gateway, [1])
    item = item_of(clean_engine, SKU)
    warehouse = shop.level(item, [1])
    shop.advance_clock(1)
    boutique = shop.set_level(item, 4, location_id=2)  # Paris Boutique stocks it too

    # The default selling locations: the configured SHOPIFY_LOCATION_ID (1) only.
    assert webhook(clean_engine, boutique) == "not_selling"
    assert stock(clean_engine, SKU)[0] == warehouse
    shopify_sync.load_catalog(clean_engine, gateway, [1])
    assert stock(clean_engine, SKU)[0] == warehouse

    shopify_sync.load_catalog(clean_engine, gateway, [1, 2])
    assert stock(clean_engine, SKU)[0] == warehouse + 4
    shop.advance_clock(1)
    assert webhook(clean_engine, shop.set_level(item, 3, location_id=2), locations=[1, 2]) == (
        "applied"
    )
    assert stock(clean_engine, SKU)[0] == warehouse + 3

    order_id = paid_order(clean_engine, {SKU: 2})
    shopify_sync.OrderPusher(clean_engine, gateway, [1, 2])(push_message(order_id))
    available, _, committed = stock(clean_engine, SKU)
    assert committed == 0
    assert available == shop.level(item, [1, 2]) == warehouse + 3 - 2


def test_a_full_sync_beside_multi_sku_checkouts_neither_deadlocks_nor_drifts(
    shop: Shop, clean_engine: Engine
) -> None:
    """Checkouts take stock rows in SKU order (inventory's lock order); the full sync must too,
    and in short transactions, or the two deadlock (PostgreSQL aborts one of them)."""
    gateway = shop.gateway()
    shopify_sync.load_catalog(clean_engine, gateway, [1])
    with clean_engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT v.sku, v.shopify_inventory_item_id FROM variant v JOIN stock s"
                " USING (sku) WHERE s.shopify_available >= 20 ORDER BY v.sku"
            )
        ).all()
    # Pairs whose SKU order is the reverse of Shopify's (inventory item id) order.
    pairs = [(a, b) for (a, ia), (b, ib) in pairwise(rows) if ib < ia]
    assert len(pairs) >= 2
    errors: list[BaseException] = []
    stop = threading.Event()

    def checkouts(a: str, b: str) -> None:
        expires = datetime.now(UTC) + timedelta(minutes=15)
        while not stop.is_set():
            order_id = new_id("ord")
            try:
                with transaction(clean_engine) as session:
                    orders.create(
                        session,
                        order_id=order_id,
                        checkout_id=new_id("chk"),
                        region="us",
                        currency="usd",
                        email="ada@example.com",
                        shipping_address={},
                        lines=[orders.PricedLine(a, 1, 1000), orders.PricedLine(b, 1, 1000)],
                        expires_at=expires,
                    )
                    # A slow multi-SKU checkout: it holds its first SKU while taking the next.
                    inventory.reserve(session, order_id, [inventory.Line(a, 1)], expires)
                    time.sleep(0.05)
                    inventory.reserve(session, order_id, [inventory.Line(b, 1)], expires)
                with transaction(clean_engine) as session:
                    inventory.release(session, order_id)
            except BaseException as exc:
                errors.append(exc)
                return

    threads = [threading.Thread(target=checkouts, args=pair) for pair in pairs[:4]]
    for thread in threads:
        thread.start()
    try:
        for _ in range(3):
            time.sleep(0.05)
            shopify_sync.load_catalog(clean_engine, gateway, [1])
    except BaseException as exc:
        errors.append(exc)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    assert errors == []

    with clean_engine.connect() as conn:
        drift = conn.execute(
            text(
                "SELECT s.sku FROM stock s LEFT JOIN reservation r ON r.sku = s.sku"
                " GROUP BY s.sku, s.reserved, s.committed"
                " HAVING s.reserved <> coalesce(sum(r.quantity) FILTER"
                " (WHERE r.status = 'held'), 0)"
                " OR s.committed <> coalesce(sum(r.quantity) FILTER"
                " (WHERE r.status = 'committed'), 0)"
            )
        ).all()
        ours = dict(conn.execute(text("SELECT sku, shopify_available FROM stock")).all())
        items = dict(conn.execute(text("SELECT shopify_inventory_item_id, sku FROM variant")).all())
    assert drift == []
    shopify_levels = {
        items[int(lv["inventory_item_id"])]: lv["available"]
        for lv in gateway.inventory_levels(sorted(items), [1])
    }
    assert ours == shopify_levels


def test_the_full_sync_repairs_a_restock_that_lost_a_same_second_tie(
    shop: Shop, clean_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Shopify sold one and restocked two within one second (9 then 10, both stamped S) and
    the webhooks came in reverse: the tie keeps 9. Once S is long over, the level the full sync
    reads is S's last value, and it wins; a late webhook of S changes nothing any more."""
    gateway = shop.gateway()
    shopify_sync.load_catalog(clean_engine, gateway, [1])
    item = item_of(clean_engine, SKU)
    shop.advance_clock(1)
    restocked = shop.set_level(item, 10)
    sold = {**restocked, "available": 9}
    assert webhook(clean_engine, restocked, locations=[1]) == "applied"
    assert webhook(clean_engine, sold, locations=[1]) == "applied"
    assert stock(clean_engine, SKU)[0] == 9

    shopify_sync.load_catalog(clean_engine, gateway, [1])  # S has only just ended
    assert stock(clean_engine, SKU)[0] == 9

    later = datetime.fromisoformat(restocked["updated_at"]) + timedelta(minutes=1)
    monkeypatch.setattr(shopify_sync, "_now", lambda: later)
    shopify_sync.load_catalog(clean_engine, gateway, [1])
    assert stock(clean_engine, SKU)[0] == 10
    assert webhook(clean_engine, sold, locations=[1]) == "stale"
    assert stock(clean_engine, SKU)[0] == 10
