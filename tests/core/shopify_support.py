"""Shared by the Shopify sync tests in tests/core: a real sandbox Shopify (reset per test), the
real ShopifyAPI library through our gateway, and orders driven to `paid` through core's own
functions on a real PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from core import inventory, orders, shopify_sync
from core.db import transaction
from core.ids import new_id
from core.models import Order, Refund
from core.outbox import Message
from core.shopify_gateway import API_VERSION, ShopifyGateway, gid, money_to_minor
from sandbox.options import DEFAULT_SHOPIFY_ACCESS_TOKEN, DEFAULT_SHOPIFY_SHOP

ORDER_FIELDS = """
  legacyResourceId cancelledAt cancelReason currencyCode displayFinancialStatus sourceIdentifier
  taxesIncluded customAttributes { key value }
  totalPriceSet { shopMoney { amount currencyCode } }
  totalRefundedSet { shopMoney { amount } }
  lineItems(first: 10) {
    nodes { sku quantity originalUnitPriceSet { shopMoney { amount currencyCode } } }
  }"""
ORDERS = f"""
query Ours($query: String!) {{
  orders(first: 5, query: $query) {{ nodes {{ {ORDER_FIELDS} }} }}
}}"""
# Every quantity of one item at one location (the holds tests read `reserved`).
QUANTITIES = """
query Level($item: ID!, $location: ID!) {
  inventoryItem(id: $item) {
    inventoryLevel(locationId: $location) {
      quantities(names: ["available", "reserved", "committed", "on_hand"]) { name quantity }
    }
  }
}"""
ADJUST = """
mutation Adjust($input: InventoryAdjustQuantitiesInput!, $key: String!) {
  inventoryAdjustQuantities(input: $input) @idempotent(key: $key) {
    userErrors { code message }
  }
}"""


class DiesAfterOrderCreate(ShopifyGateway):
    """Shopify created the order; our process dies before recording it."""

    def create_order(self, **kwargs: Any) -> int:
        super().create_order(**kwargs)
        raise RuntimeError("killed after Shopify created the order")


class Shop:
    """The sandbox Shopify seen from a test: its control API, and its GraphQL Admin API through
    the real library (our gateway's `execute`)."""

    def __init__(self, base: str, token: str = DEFAULT_SHOPIFY_ACCESS_TOKEN) -> None:
        self.base = base
        self.token = token

    def reset(self) -> None:
        httpx.post(f"{self.base}/_sandbox/reset", json={"seed": 0}, timeout=10).raise_for_status()

    def gateway(self, cls: type[ShopifyGateway] = ShopifyGateway) -> ShopifyGateway:
        """Our gateway to this shop (or a subclass of it that injects a crash)."""
        return cls(
            shop=DEFAULT_SHOPIFY_SHOP,
            site=f"{self.base}/admin/api/{API_VERSION}",
            access_token=self.token,
        )

    def faults(self, **config: Any) -> None:
        response = httpx.post(f"{self.base}/_sandbox/faults", json=config, timeout=10)
        assert response.status_code == 200, response.text

    def advance_clock(self, seconds: float) -> None:
        """Shopify's updated_at has whole seconds: move the shop's clock to the next one."""
        httpx.post(
            f"{self.base}/_sandbox/clock/advance", json={"seconds": seconds}, timeout=10
        ).raise_for_status()

    def orders_for(self, order_id: str) -> list[dict[str, Any]]:
        """Shopify's orders (any status) that carry our order id as their sourceIdentifier."""
        query = f"source_identifier:{order_id}"
        return self.gateway().execute(ORDERS, {"query": query})["orders"]["nodes"]

    def level(self, item_id: int, locations: Sequence[int] = (1,)) -> int:
        return sum(lv["available"] for lv in self.gateway().inventory_levels([item_id], locations))

    def set_level(self, item_id: int, available: int, location_id: int = 1) -> dict[str, Any]:
        """Another app sets a level: a compare-and-set adjustment where the item is stocked
        (`available` may go negative, as after an oversell); where it is not, stocking it
        takes REST's connect-and-set."""
        gateway = self.gateway()
        [current] = gateway.inventory_levels([item_id], [location_id]) or [None]
        if current is None:
            response = httpx.post(
                f"{self.base}/admin/api/{API_VERSION}/inventory_levels/set.json",
                json={
                    "location_id": location_id,
                    "inventory_item_id": item_id,
                    "available": available,
                },
                headers={"X-Shopify-Access-Token": self.token},
                timeout=10,
            )
            assert response.status_code == 200, response.text
        else:
            answer = gateway.execute(
                ADJUST,
                {
                    "key": str(uuid.uuid4()),
                    "input": {
                        "reason": "correction",
                        "name": "available",
                        "changes": [
                            {
                                "inventoryItemId": gid("InventoryItem", item_id),
                                "locationId": gid("Location", location_id),
                                "delta": available - current["available"],
                                "changeFromQuantity": current["available"],
                            }
                        ],
                    },
                },
            )["inventoryAdjustQuantities"]
            assert answer["userErrors"] == [], answer
        [level] = gateway.inventory_levels([item_id], [location_id])
        return level


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


def paid_order(
    engine: Engine, lines: dict[str, int], currency: str = "usd", unit_price: int = 1000
) -> str:
    """An order that took its stock and was paid: its units are `committed`."""
    order_id = new_id("ord")
    with transaction(engine) as session:
        order = orders.create(
            session,
            order_id=order_id,
            checkout_id=new_id("chk"),
            region="us" if currency == "usd" else "eu",
            currency=currency,
            email="ada@example.com",
            shipping_address={},
            lines=[orders.PricedLine(sku, qty, unit_price) for sku, qty in lines.items()],
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


def _succeeded_refund(session: Session, order: Order, amount: int) -> str:
    refund_id = new_id("rfd")
    session.add(
        Refund(
            id=refund_id,
            order_id=order.id,
            amount_minor=amount,
            currency=order.currency,
            status="succeeded",
        )
    )
    order.refunded_minor += amount
    return refund_id


def refund_in_full(engine: Engine, order_id: str) -> str:
    """What the payments side does when a refund succeeds: a succeeded refund row, the order
    becomes `refunded` (units not yet in Shopify go back to sale) and the push handler is told."""
    with transaction(engine) as session:
        order = orders.lock(session, order_id)
        inventory.release_committed(session, order_id)
        refund_id = _succeeded_refund(session, order, order.amount_minor - order.refunded_minor)
        orders.transition(session, order, orders.REFUNDED, "refunded", {})
    return refund_id


def refund_part(engine: Engine, order_id: str, amount: int) -> str:
    with transaction(engine) as session:
        order = orders.lock(session, order_id)
        refund_id = _succeeded_refund(session, order, amount)
        orders.transition(session, order, orders.PARTIALLY_REFUNDED, "partially_refunded", {})
    return refund_id


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


PROJECTION_SQL = text(
    """
SELECT v.sku, p.shopify_product_id, p.handle, p.title, p.status, p.category, p.description,
       p.image_url, v.title AS variant_title, v.shopify_variant_id, v.shopify_inventory_item_id,
       v.position, s.shopify_available,
       (SELECT jsonb_object_agg(vp.currency, vp.amount_minor)
          FROM variant_price vp WHERE vp.sku = v.sku) AS prices
  FROM variant v
  JOIN product p ON p.id = v.product_id
  LEFT JOIN stock s ON s.sku = v.sku
 ORDER BY v.sku
"""
)


def projection(engine: Engine) -> dict[str, dict[str, Any]]:
    """Our projection per SKU, every field the storefront serves or the sync compares."""
    with engine.connect() as conn:
        rows = conn.execute(PROJECTION_SQL).mappings().all()
    return {row["sku"]: {k: v for k, v in row.items() if k != "sku"} for row in rows}


def shopify_truth(gateway: ShopifyGateway, locations: Sequence[int] = (1,)) -> dict[str, Any]:
    """The same fields read live from Shopify's GraphQL Admin API."""
    variants = list(gateway.variants())
    items = sorted(int(v["inventoryItem"]["legacyResourceId"]) for v in variants)
    stock_of: dict[int, int] = {}
    for level in gateway.inventory_levels(items, locations):
        item = level["inventory_item_id"]
        stock_of[item] = stock_of.get(item, 0) + level["available"]
    out: dict[str, Any] = {}
    for v in variants:
        if not v["sku"]:
            continue
        p, item = v["product"], int(v["inventoryItem"]["legacyResourceId"])
        prices = {
            cur: money_to_minor(v[cur]["price"]["amount"])
            for cur in ("usd", "eur")
            if v[cur]["price"]["currencyCode"].lower() == cur
        }
        out[v["sku"]] = {
            "shopify_product_id": int(p["legacyResourceId"]),
            "handle": p["handle"],
            "title": p["title"],
            "status": p["status"].lower(),
            "category": p["productType"] or None,
            "description": p["descriptionHtml"] or None,
            "image_url": (p["featuredImage"] or {}).get("url"),
            "variant_title": v["title"],
            "shopify_variant_id": int(v["legacyResourceId"]),
            "shopify_inventory_item_id": item,
            "position": v["position"],
            "shopify_available": stock_of.get(item, 0),
            "prices": prices,
        }
    return out


def assert_projection_equals_shopify(
    engine: Engine, gateway: ShopifyGateway, locations: Sequence[int] = (1,)
) -> None:
    """Field by field, SKU by SKU (a mismatch names the SKU and the field). Products Shopify
    deleted stay in ours, archived (orders keep their lines)."""
    ours, theirs = projection(engine), shopify_truth(gateway, locations)
    # Our projection counts our live holds that Shopify keeps in `reserved`.
    with engine.connect() as conn:
        for sku, units in shopify_sync.mirrored_holds(conn, sorted(theirs)).items():
            theirs[sku]["shopify_available"] += units
    gone = {sku: row["status"] for sku, row in ours.items() if sku not in theirs}
    assert set(gone.values()) <= {"archived"}, gone
    assert sorted(set(ours) - set(gone)) == sorted(theirs)
    mismatches = [
        (sku, name, ours[sku][name], value)
        for sku, fields in theirs.items()
        for name, value in fields.items()
        if ours[sku][name] != value
    ]
    assert mismatches == []
