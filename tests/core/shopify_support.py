"""Shared by the Shopify sync tests in tests/core: a real sandbox Shopify (reset per test), the
real ShopifyAPI library through our gateway, and orders driven to `paid` through core's own
functions on a real PostgreSQL."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import shopify
from sqlalchemy import Engine, text

from core import inventory, orders
from core.db import transaction
from core.ids import new_id
from core.outbox import Message
from core.shopify_gateway import API_VERSION, ShopifyGateway
from sandbox.options import DEFAULT_SHOPIFY_ACCESS_TOKEN, DEFAULT_SHOPIFY_SHOP


class Shop:
    """The sandbox Shopify seen from a test: its control API and the real library."""

    def __init__(self, base: str) -> None:
        self.base = base

    def reset(self) -> None:
        httpx.post(f"{self.base}/_sandbox/reset", json={"seed": 0}, timeout=10).raise_for_status()

    def gateway(self) -> ShopifyGateway:
        return ShopifyGateway(
            shop=DEFAULT_SHOPIFY_SHOP,
            site=f"{self.base}/admin/api/{API_VERSION}",
            access_token=DEFAULT_SHOPIFY_ACCESS_TOKEN,
        )

    def faults(self, **config: Any) -> None:
        response = httpx.post(f"{self.base}/_sandbox/faults", json=config, timeout=10)
        assert response.status_code == 200, response.text

    def advance_clock(self, seconds: float) -> None:
        """Shopify's updated_at has whole seconds: move the shop's clock to the next one."""
        httpx.post(
            f"{self.base}/_sandbox/clock/advance", json={"seconds": seconds}, timeout=10
        ).raise_for_status()

    def orders_for(self, order_id: str) -> list[Any]:
        """Shopify's orders (any status) that carry our order id, through the library."""
        found = self.gateway().call(lambda: shopify.Order.find(status="any", limit=250))
        return [
            o
            for o in found
            if {"name": "dotshop_order_id", "value": order_id}
            in [a.to_dict() for a in o.note_attributes]
        ]

    def level(self, item_id: int, locations: Sequence[int] = (1,)) -> int:
        levels = self.gateway().call(
            lambda: shopify.InventoryLevel.find(
                inventory_item_ids=item_id, location_ids=",".join(map(str, locations))
            )
        )
        return sum(lv.available for lv in levels)

    def set_level(self, item_id: int, available: int, location_id: int = 1) -> dict[str, Any]:
        return (
            self.gateway()
            .call(
                lambda: shopify.InventoryLevel.set(
                    location_id=location_id, inventory_item_id=item_id, available=available
                )
            )
            .to_dict()
        )


def item_of(engine: Engine, sku: str) -> int:
    with engine.connect() as conn:
        return conn.execute(
            text("SELECT shopify_inventory_item_id FROM variant WHERE sku = :s"), {"s": sku}
        ).scalar_one()


def stock(engine: Engine, sku: str) -> tuple[int, int, int]:
    with engine.connect() as conn:
        row = conn.execute(
            text("SELECT shopify_available, reserved, committed FROM stock WHERE sku = :s"),
            {"s": sku},
        ).one()
    return tuple(row)


def paid_order(engine: Engine, lines: dict[str, int]) -> str:
    """An order that took its stock and was paid: its units are `committed`."""
    order_id = new_id("ord")
    with transaction(engine) as session:
        order = orders.create(
            session,
            order_id=order_id,
            checkout_id=new_id("chk"),
            region="us",
            currency="usd",
            email="ada@example.com",
            shipping_address={},
            lines=[orders.PricedLine(sku, qty, 1000) for sku, qty in lines.items()],
            expires_at=datetime.now(UTC) + timedelta(minutes=15),
        )
        inventory.reserve(
            session,
            order_id,
            [inventory.Line(sku, qty) for sku, qty in lines.items()],
            order.expires_at,
        )
        inventory.commit(session, order_id)
        orders.transition(session, order, orders.PAID, "paid", {"amount": order.amount_minor})
    return order_id


def refund_in_full(engine: Engine, order_id: str) -> None:
    """What the payments side does when a refund succeeds: the order becomes `refunded`
    (units not yet in Shopify go back to sale) and the push handler is told."""
    with transaction(engine) as session:
        order = orders.lock(session, order_id)
        inventory.release_committed(session, order_id)
        order.refunded_minor = order.amount_minor
        orders.transition(session, order, orders.REFUNDED, "refunded", {})


def refund_part(engine: Engine, order_id: str, amount: int) -> None:
    with transaction(engine) as session:
        order = orders.lock(session, order_id)
        order.refunded_minor = amount
        orders.transition(session, order, orders.PARTIALLY_REFUNDED, "partially_refunded", {})


def push_message(order_id: str, attempts: int = 0) -> Message:
    """The relay's delivery of `shopify.push_order` for an order (`attempts` earlier ones)."""
    return Message(
        attempts + 1,
        new_id("obx"),
        "shopify.push_order",
        f"order:{order_id}",
        {"order_id": order_id},
        attempts,
    )


def timeline(engine: Engine, order_id: str) -> list[tuple[str, dict[str, Any]]]:
    with transaction(engine) as session:
        return [(kind, data) for _, kind, data in orders.view(session, order_id).timeline]
