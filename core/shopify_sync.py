"""Shopify <-> our projection.

Inbound: the catalog (products, variants, per-currency prices) and stock levels, loaded in full
by `load_catalog` and kept fresh by Shopify's webhooks (`apply_webhook`). Shopify's updated_at
decides: an older payload never overwrites a newer one.
Outbound: a paid order is pushed to Shopify by the outbox handler `push_order`; Shopify then
decrements its inventory, and our committed units become acknowledged.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Engine, func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from core import catalog, inbox, inventory, orders
from core.db import transaction
from core.logs import get_logger
from core.models import InventoryLevel, Order, OrderEvent, OrderLine, Variant
from core.outbox import Handlers, Message
from core.payments import PUSH_ORDER_TO_SHOPIFY
from core.shopify_gateway import ShopifyGateway, money_to_minor

log = get_logger("core.shopify_sync")


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def product_data(p: dict[str, Any]) -> catalog.ProductData:
    """Shopify's product JSON (REST or webhook) as our projection's input."""
    variants = []
    for v in p.get("variants") or []:
        if not v.get("sku"):
            continue  # we sell by SKU; a variant without one is not for us
        prices = {
            pp["price"]["currency_code"].lower(): money_to_minor(pp["price"]["amount"])
            for pp in v.get("presentment_prices") or []
        }
        prices.setdefault("usd", money_to_minor(v["price"]))
        variants.append(
            catalog.VariantData(
                sku=v["sku"],
                title=v.get("title") or v["sku"],
                shopify_variant_id=int(v["id"]),
                shopify_inventory_item_id=int(v["inventory_item_id"]),
                prices=prices,
                position=int(v.get("position") or 1),
            )
        )
    image = p.get("image") or {}
    return catalog.ProductData(
        shopify_product_id=int(p["id"]),
        handle=p["handle"],
        title=p["title"],
        updated_at=parse_time(p["updated_at"]),
        variants=variants,
        category=p.get("product_type") or None,
        description=p.get("body_html") or None,
        image_url=image.get("src"),
        status=p.get("status") or "active",
    )


def record_level(session: Session, level: dict[str, Any]) -> bool:
    """Store one Shopify inventory level (per item and location); False when it is stale."""
    item_id, location_id = int(level["inventory_item_id"]), int(level["location_id"])
    updated_at = parse_time(level["updated_at"])
    available = int(level.get("available") or 0)
    row = session.execute(
        insert(InventoryLevel)
        .values(
            shopify_inventory_item_id=item_id,
            shopify_location_id=location_id,
            available=available,
            shopify_updated_at=updated_at,
        )
        .on_conflict_do_update(
            index_elements=[
                InventoryLevel.shopify_inventory_item_id,
                InventoryLevel.shopify_location_id,
            ],
            set_={
                "available": available,
                "shopify_updated_at": updated_at,
                "synced_at": func.now(),
            },
            where=InventoryLevel.shopify_updated_at <= updated_at,
        )
        .returning(InventoryLevel.shopify_inventory_item_id)
    ).scalar_one_or_none()
    return row is not None


def totals_by_sku(session: Session, skus: list[str]) -> dict[str, tuple[int, datetime]]:
    """Shopify's available units per SKU over all locations, with the newest updated_at."""
    rows = session.execute(
        select(
            Variant.sku,
            func.sum(InventoryLevel.available),
            func.max(InventoryLevel.shopify_updated_at),
        )
        .join(
            InventoryLevel,
            InventoryLevel.shopify_inventory_item_id == Variant.shopify_inventory_item_id,
        )
        .where(Variant.sku.in_(skus))
        .group_by(Variant.sku)
    ).all()
    return {sku: (int(total), at) for sku, total, at in rows}


def apply_level(session: Session, level: dict[str, Any]) -> bool:
    """One Shopify inventory level into the projection; False when stale or not ours."""
    if not record_level(session, level):
        return False
    sku = session.scalar(
        select(Variant.sku).where(
            Variant.shopify_inventory_item_id == int(level["inventory_item_id"])
        )
    )
    if sku is None:
        return False
    available, updated_at = totals_by_sku(session, [sku])[sku]
    return inventory.apply_shopify_level(session, sku, available, updated_at)


def load_catalog(engine: Engine, gateway: ShopifyGateway, location_id: int) -> int:
    """Full load: every product, then every stock level at the location. Returns products."""
    count = 0
    item_ids: list[int] = []
    for product in gateway.products():
        data = product_data(product)
        with transaction(engine) as session:
            catalog.upsert_product(session, data)
        item_ids.extend(v.shopify_inventory_item_id for v in data.variants)
        count += 1
    levels = gateway.inventory_levels(item_ids, location_id)
    with transaction(engine) as session:
        for level in levels:
            apply_level(session, level)
    log.info("catalog_loaded", products=count, levels=len(levels))
    return count


def apply_webhook(session: Session, topic: str, payload: dict[str, Any]) -> str:
    """Apply one Shopify webhook inside the caller's transaction; returns what happened."""
    if topic in ("products/create", "products/update"):
        return "applied" if catalog.upsert_product(session, product_data(payload)) else "stale"
    if topic == "products/delete":
        catalog.delete_product(session, int(payload["id"]))
        return "applied"
    if topic == "inventory_levels/update":
        return "applied" if apply_level(session, payload) else "stale"
    return "ignored"


def accept_webhook(session: Session, *, event_id: str, topic: str, payload: dict[str, Any]) -> str:
    event = inbox.accept(
        session, provider="shopify", event_id=event_id, event_type=topic, payload=payload
    )
    if event is None:
        return "duplicate"
    result = apply_webhook(session, topic, payload)
    inbox.mark(session, event.id, inbox.PROCESSED, None if result == "applied" else result)
    return result


class OrderPusher:
    """The outbox handler for `shopify.push_order`."""

    def __init__(self, engine: Engine, gateway: ShopifyGateway, location_id: int) -> None:
        self.engine, self.gateway, self.location_id = engine, gateway, location_id

    def __call__(self, message: Message) -> None:
        order_id = message.payload["order_id"]
        with transaction(self.engine) as session:
            order = orders.lock(session, order_id)
            if order.shopify_order_id is not None:
                return
            lines = session.execute(
                select(Variant.sku, Variant.shopify_inventory_item_id, Variant.shopify_variant_id)
                .add_columns(OrderLine.quantity)
                .join(Variant, Variant.sku == OrderLine.sku)
                .where(OrderLine.order_id == order_id)
            ).all()
            since_id = self._push_marker(session, order_id)
            email, currency = order.email, order.currency
        # An earlier attempt may have created the order and died before recording it: Shopify
        # ids grow, so it is among the orders newer than the marker that attempt committed.
        shopify_id = self.gateway.find_order_by_reference(order_id, since_id)
        if shopify_id is None:
            shopify_id = self.gateway.create_order(
                reference=order_id,
                email=email,
                currency=currency,
                lines=[(variant, qty) for _, _, variant, qty in lines],
            )
        # Shopify's levels now include this order; they land with the acknowledgement.
        items = {item: sku for sku, item, _, _ in lines}
        levels = self.gateway.inventory_levels(list(items), self.location_id)
        with transaction(self.engine) as session:
            order = orders.lock(session, order_id)
            if order.shopify_order_id is not None:
                return
            order.shopify_order_id = shopify_id
            for level in levels:  # the full row (per location) for the projection's history
                record_level(session, level)
            inventory.acknowledge(session, order_id, totals_by_sku(session, list(items.values())))
            orders.add_event(
                session, order_id, "pushed_to_shopify", {"shopify_order_id": shopify_id}
            )

    @staticmethod
    def _push_marker(session: Session, order_id: str) -> int:
        """The newest Shopify order id we knew when the first push attempt began (recorded
        once, in the order's timeline, before anything is sent to Shopify)."""
        marker = session.scalar(
            select(OrderEvent.data["since_id"].as_integer())
            .where(OrderEvent.order_id == order_id, OrderEvent.kind == "shopify_push_started")
            .order_by(OrderEvent.id)
            .limit(1)
        )
        if marker is None:
            marker = int(session.scalar(select(func.coalesce(func.max(Order.shopify_order_id), 0))))
            orders.add_event(session, order_id, "shopify_push_started", {"since_id": marker})
        return marker


def register_handlers(handlers: Handlers) -> None:
    from core.db import database_url, engine_for
    from core.settings import get_settings

    settings = get_settings()
    pusher = OrderPusher(
        engine_for(database_url(settings)),
        ShopifyGateway.from_settings(settings),
        settings.shopify_location_id,
    )
    handlers.register(PUSH_ORDER_TO_SHOPIFY, pusher)
