"""Shopify <-> our projection.

Inbound: the catalog (products, variants, per-currency prices) and stock levels, loaded in full
by `load_catalog` and kept fresh by Shopify's webhooks (`apply_webhook`). Every level is
recorded per item and location, stale-checked on Shopify's updated_at (`inventory.stale_level`);
a SKU's Shopify stock is the sum over the locations that sell online
(`settings.selling_locations`), and only those are read, summed and acknowledged.
Outbound: the outbox handler `OrderPusher` makes Shopify reflect our order: a paid order is
created there (Shopify decrements its inventory and our committed units become acknowledged),
and a pushed order that we refund in full or cancel is cancelled there with a restock.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import BigInteger, Engine, cast, func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from core import catalog, cursors, inbox, inventory, orders
from core.db import transaction
from core.logs import get_logger
from core.models import InventoryLevel, Order, OrderEvent, OrderLine, Variant
from core.outbox import Handlers, Message
from core.payments import PUSH_ORDER_TO_SHOPIFY
from core.settings import get_settings
from core.shopify_gateway import ShopifyGateway, money_to_minor

log = get_logger("core.shopify_sync")

# Levels applied per transaction by the full sync: short transactions, so it never holds hot
# stock rows for long against checkouts.
SYNC_BATCH_SKUS = 10
# A level read this long after its updated_at second ended (by our clock) is the last value of
# that second: far more than two NTP-kept clocks drift apart, well under the sync interval.
SETTLE_AFTER_SECONDS = 30
# The sync_cursor row a finished full load stamps: how far behind Shopify we may be (sync_lag).
FULL_SYNC_CURSOR = "shopify_full_sync"


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _now() -> datetime:
    return datetime.now(UTC)


def settled(level: dict[str, Any], read_started: datetime) -> dict[str, Any]:
    """The level as read by a full sync, stamped at the last instant of its updated_at second
    once that second is long over. Ties of one second keep the lower level (a restock can lose
    to a late webhook of the same second); a level that has not changed since is that second's
    final value, so it now beats every webhook of that second and still loses to any later
    change. This is how the periodic sync repairs a restock that lost a tie."""
    at = parse_time(level["updated_at"])
    if at.microsecond or at + timedelta(seconds=1 + SETTLE_AFTER_SECONDS) > read_started:
        return level
    return {**level, "updated_at": (at + timedelta(seconds=1, microseconds=-1)).isoformat()}


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


def _selling(locations: int | Sequence[int] | None) -> list[int]:
    """The locations that sell online: as given, else from the settings."""
    if locations is None:
        return get_settings().selling_locations
    if isinstance(locations, int):
        return [locations]
    return sorted(set(locations))


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
            where=~inventory.stale_level(
                InventoryLevel.shopify_updated_at, InventoryLevel.available, updated_at, available
            ),
        )
        .returning(InventoryLevel.shopify_inventory_item_id)
    ).scalar_one_or_none()
    return row is not None


def totals_by_sku(
    session: Session, skus: Sequence[str], locations: Sequence[int]
) -> dict[str, tuple[int, datetime]]:
    """Shopify's available units per SKU over the selling locations, with the newest
    updated_at (SKUs with no level at those locations are left out)."""
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
        .where(Variant.sku.in_(list(skus)), InventoryLevel.shopify_location_id.in_(locations))
        .group_by(Variant.sku)
    ).all()
    return {sku: (int(total), at) for sku, total, at in rows}


def apply_levels(
    session: Session, levels: Sequence[dict[str, Any]], locations: Sequence[int]
) -> int:
    """Record Shopify levels (any location) and bring the stock of their SKUs up to date with
    the sum over the selling locations. Returns how many levels were new (not stale).

    The SKUs' stock rows are locked first, in SKU order like every stock write, so that two
    transactions recording levels of one SKU at different locations cannot sum without each
    other's level."""
    items = sorted({int(level["inventory_item_id"]) for level in levels})
    sku_of = dict(
        session.execute(
            select(Variant.shopify_inventory_item_id, Variant.sku).where(
                Variant.shopify_inventory_item_id.in_(items)
            )
        ).all()
    )
    inventory.lock_stock(session, sku_of.values())

    def key(level: dict[str, Any]) -> tuple[str, int, int]:
        item = int(level["inventory_item_id"])
        return sku_of.get(item, ""), item, int(level["location_id"])

    new = sum(record_level(session, level) for level in sorted(levels, key=key))
    # Summed again even when no level was new: a level recorded while its location did not
    # sell online counts once it does.
    selling = {
        sku_of[int(level["inventory_item_id"])]
        for level in levels
        if int(level["location_id"]) in locations and int(level["inventory_item_id"]) in sku_of
    }
    for sku, (available, updated_at) in sorted(totals_by_sku(session, selling, locations).items()):
        inventory.apply_shopify_total(session, sku, available, updated_at)
    return new


def apply_level(
    session: Session, level: dict[str, Any], locations: int | Sequence[int] | None = None
) -> bool:
    """One Shopify inventory level into the projection; False when it is stale."""
    return apply_levels(session, [level], _selling(locations)) > 0


def load_catalog(
    engine: Engine, gateway: ShopifyGateway, locations: int | Sequence[int] | None = None
) -> int:
    """Full load: every product, then every stock level at the selling locations (`locations`:
    one id, several, or None for `settings.selling_locations`). Returns products.

    Levels are applied in SKU order, a few SKUs per transaction: the lock order of checkouts,
    so the two cannot deadlock, and no lock is held for the whole sync."""
    selling = _selling(locations)
    count = 0
    sku_of: dict[int, str] = {}
    for product in gateway.products():
        data = product_data(product)
        with transaction(engine) as session:
            catalog.upsert_product(session, data)
        sku_of.update((v.shopify_inventory_item_id, v.sku) for v in data.variants)
        count += 1
    read_started = _now()
    levels = [settled(lv, read_started) for lv in gateway.inventory_levels(sorted(sku_of), selling)]
    by_sku: dict[str, list[dict[str, Any]]] = {}
    for level in levels:
        by_sku.setdefault(sku_of[int(level["inventory_item_id"])], []).append(level)
    skus = sorted(by_sku)
    for start in range(0, len(skus), SYNC_BATCH_SKUS):
        with transaction(engine) as session:
            batch = skus[start : start + SYNC_BATCH_SKUS]
            apply_levels(session, [level for sku in batch for level in by_sku[sku]], selling)
    with transaction(engine) as session:
        cursors.save(session, FULL_SYNC_CURSOR, {"products": count, "levels": len(levels)})
    log.info("catalog_loaded", products=count, levels=len(levels))
    return count


def apply_webhook(
    session: Session, topic: str, payload: dict[str, Any], locations: Sequence[int]
) -> str:
    """Apply one Shopify webhook inside the caller's transaction; returns what happened."""
    if topic in ("products/create", "products/update"):
        return "applied" if catalog.upsert_product(session, product_data(payload)) else "stale"
    if topic == "products/delete":
        catalog.delete_product(session, int(payload["id"]))
        return "applied"
    if topic == "inventory_levels/update":
        if not apply_levels(session, [payload], locations):
            return "stale"
        # Recorded either way; only a selling location's level moves our stock.
        return "applied" if int(payload["location_id"]) in locations else "not_selling"
    return "ignored"


def accept_webhook(
    session: Session,
    *,
    event_id: str,
    topic: str,
    payload: dict[str, Any],
    locations: int | Sequence[int] | None = None,
) -> str:
    event = inbox.accept(
        session, provider="shopify", event_id=event_id, event_type=topic, payload=payload
    )
    if event is None:
        return "duplicate"
    result = apply_webhook(session, topic, payload, _selling(locations))
    inbox.mark(session, event.id, inbox.PROCESSED, None if result == "applied" else result)
    return result


# Orders Shopify should have: paid ones (a partial refund still ships the rest).
PUSHABLE = (orders.PAID, orders.PARTIALLY_REFUNDED)
# Timeline events that record what Shopify was told about an undone order.
CANCELLED_IN_SHOPIFY = "shopify_order_cancelled"
REFUND_NOT_MIRRORED = "shopify_refund_not_mirrored"
# Shopify's cancel reason for each of our statuses that undo a pushed order.
CANCEL_REASONS = {orders.REFUNDED: "customer", orders.CANCELLED: "other"}


@dataclass(frozen=True)
class _Line:
    sku: str
    inventory_item_id: int
    variant_id: int
    quantity: int


class OrderPusher:
    """The outbox handler for `shopify.push_order`: make Shopify reflect our order.

    Every delivery looks at the order as it is now (under its lock), so the same message serves
    the payment, a refund and a cancellation, and any retry converges:
    - not in Shopify yet: a paid order with committed units is created there (or found, if an
      earlier attempt created it and died) and acknowledged; anything else is `push_skipped`;
    - in Shopify and refunded in full or cancelled here: cancelled there, restocking, once;
    - in Shopify and partially refunded: noted on our timeline only (the goods still ship;
      the money moves through Stripe, and a Shopify refund could only record it again).
    Shopify is never called while the order row is locked; the lock is taken again to record
    what Shopify did, and that record is what later deliveries decide on."""

    def __init__(
        self, engine: Engine, gateway: ShopifyGateway, locations: int | Sequence[int]
    ) -> None:
        self.engine, self.gateway, self.locations = engine, gateway, _selling(locations)

    def __call__(self, message: Message) -> None:
        order_id = message.payload["order_id"]
        self._reach_shopify(order_id)
        self._mirror_undo(order_id)

    # ------------------------------------------------------------------ creating the order

    def _reach_shopify(self, order_id: str) -> None:
        with transaction(self.engine) as session:
            order = orders.lock(session, order_id)
            if order.shopify_order_id is not None:
                return
            committed = any(
                h.status == inventory.COMMITTED for h in inventory.holds(session, order_id)
            )
            pushable = order.status in PUSHABLE and committed
            since_id = self._push_marker(session, order_id)
            if since_id is None:
                if not pushable:
                    self._skip(session, order_id, order.status)
                    return
                since_id = self._start_push(session, order_id)
            lines = self._lines(session, order_id)
            email, currency, status = order.email, order.currency, order.status
        # An earlier attempt may have created the order and died before recording it: Shopify
        # ids grow, so it is among the orders newer than the marker that attempt committed.
        shopify_id = self.gateway.find_order_by_reference(order_id, since_id)
        if shopify_id is None:
            if not pushable:  # refunded or cancelled since an attempt that never got through
                with transaction(self.engine) as session:
                    orders.lock(session, order_id)
                    self._skip(session, order_id, status)
                return
            shopify_id = self.gateway.create_order(
                reference=order_id,
                email=email,
                currency=currency,
                lines=[(line.variant_id, line.quantity) for line in lines],
            )
        # Shopify's levels now include this order; they land with the acknowledgement.
        levels = self.gateway.inventory_levels(
            sorted({line.inventory_item_id for line in lines}), self.locations
        )
        with transaction(self.engine) as session:
            order = orders.lock(session, order_id)
            if order.shopify_order_id is not None:
                return
            order.shopify_order_id = shopify_id
            skus = sorted({line.sku for line in lines})
            apply_levels(session, levels, self.locations)
            inventory.acknowledge(session, order_id, totals_by_sku(session, skus, self.locations))
            orders.add_event(
                session, order_id, "pushed_to_shopify", {"shopify_order_id": shopify_id}
            )

    @staticmethod
    def _skip(session: Session, order_id: str, status: str) -> None:
        """Shopify gets only orders that are still paid with committed units."""
        reason = "nothing_committed" if status in PUSHABLE else "not_paid"
        orders.add_event(session, order_id, "push_skipped", {"reason": reason, "status": status})

    @staticmethod
    def _lines(session: Session, order_id: str) -> list[_Line]:
        rows = session.execute(
            select(
                Variant.sku,
                Variant.shopify_inventory_item_id,
                Variant.shopify_variant_id,
                OrderLine.quantity,
            )
            .join(Variant, Variant.sku == OrderLine.sku)
            .where(OrderLine.order_id == order_id)
            .order_by(Variant.sku)
        ).all()
        return [_Line(*row) for row in rows]

    @staticmethod
    def _push_marker(session: Session, order_id: str) -> int | None:
        """The newest Shopify order id we knew when the first push attempt began, or None when
        no attempt began. Shopify ids (~5.6e12) exceed PostgreSQL's integer: read as bigint."""
        return session.scalar(
            select(cast(OrderEvent.data["since_id"].astext, BigInteger))
            .where(OrderEvent.order_id == order_id, OrderEvent.kind == "shopify_push_started")
            .order_by(OrderEvent.id)
            .limit(1)
        )

    @staticmethod
    def _start_push(session: Session, order_id: str) -> int:
        """Record the marker in the order's timeline before anything is sent to Shopify."""
        marker = int(session.scalar(select(func.coalesce(func.max(Order.shopify_order_id), 0))))
        orders.add_event(session, order_id, "shopify_push_started", {"since_id": marker})
        return marker

    # ------------------------------------------------------------------- undoing the order

    def _mirror_undo(self, order_id: str) -> None:
        with transaction(self.engine) as session:
            order = orders.lock(session, order_id)
            shopify_id = order.shopify_order_id
            if shopify_id is None or orders.has_event(session, order_id, (CANCELLED_IN_SHOPIFY,)):
                return
            if order.status == orders.PARTIALLY_REFUNDED:
                noted = {"shopify_order_id": shopify_id, "refunded": order.refunded_minor}
                if not orders.has_event(session, order_id, (REFUND_NOT_MIRRORED,), **noted):
                    orders.add_event(session, order_id, REFUND_NOT_MIRRORED, noted)
                return
            reason = CANCEL_REASONS.get(order.status)
            if reason is None:
                return
            items = sorted({line.inventory_item_id for line in self._lines(session, order_id)})
        self.gateway.cancel_order(shopify_id, reason=reason)
        # The restock raised Shopify's levels: read them fresh rather than wait for webhooks.
        levels = self.gateway.inventory_levels(items, self.locations)
        with transaction(self.engine) as session:
            orders.lock(session, order_id)
            if orders.has_event(session, order_id, (CANCELLED_IN_SHOPIFY,)):
                return
            apply_levels(session, levels, self.locations)
            orders.add_event(
                session,
                order_id,
                CANCELLED_IN_SHOPIFY,
                {"shopify_order_id": shopify_id, "reason": reason, "restock": True},
            )


def register_handlers(handlers: Handlers) -> None:
    from core.db import database_url, engine_for

    settings = get_settings()
    pusher = OrderPusher(
        engine_for(database_url(settings)),
        ShopifyGateway.from_settings(settings),
        settings.selling_locations,
    )
    handlers.register(PUSH_ORDER_TO_SHOPIFY, pusher)
