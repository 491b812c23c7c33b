"""Inventory states on the shared store (shopify.dev "Manage inventory quantities and states").

`available` and `reserved` are kept per level; `committed` is what open orders claimed and have
not shipped; `on_hand` = available + committed + reserved. Other channels (REST, POS, orders)
sell `available` only, so units moved to `reserved` cannot be sold anywhere. Callers hold the
store's lock across check and apply, so a batch is all-or-nothing.
"""

from __future__ import annotations

from typing import Any

from sandbox.shopify.store import DEFAULT_LOCATION_ID, Level, ShopStore

NAMES = ("available", "committed", "reserved", "on_hand")
# Valid Shopify quantity names the sandbox does not track: always 0.
UNTRACKED = ("damaged", "incoming", "quality_control", "safety_stock")
MAX_QUANTITY = 1_000_000_000  # INVALID_QUANTITY_TOO_HIGH beyond this


def committed(store: ShopStore, item_id: int, location_id: int) -> int:
    """Units claimed by orders that are neither cancelled nor fulfilled (the sandbox never
    fulfils, so: not cancelled)."""
    return sum(
        qty
        for record in store.orders.values()
        if not record.body["cancelled_at"]
        for item, loc, qty in record.claims
        if (item, loc) == (item_id, location_id)
    )


def quantity(store: ShopStore, item_id: int, location_id: int, name: str) -> int:
    level = store.levels[(item_id, location_id)]
    if name == "available":
        return level.available
    if name == "reserved":
        return level.reserved
    if name == "committed":
        return committed(store, item_id, location_id)
    if name == "on_hand":
        return level.available + level.reserved + committed(store, item_id, location_id)
    return 0


def apply(store: ShopStore, item_id: int, location_id: int, name: str, delta: int) -> int:
    """Change one state by `delta` (callers validated it); returns the quantity after."""
    level: Level = store.levels[(item_id, location_id)]
    if name == "available":
        level.available += delta
    elif name == "reserved":
        level.reserved += delta
    elif name == "on_hand":
        # On-hand units that arrive or leave without an order are sellable ones.
        level.available += delta
    else:
        raise ValueError(f"{name} cannot be changed directly")
    level.updated_at = store.timestamp()
    return quantity(store, item_id, location_id, name)


def announce(store: ShopStore, item_id: int, location_id: int) -> None:
    """inventory_levels/update, exactly as a REST change announces it."""
    store._level_changed(item_id, location_id)


def pos_sale(
    store: ShopStore, sku: str, quantity_sold: int, location_id: int | None
) -> dict[str, Any]:
    """A point-of-sale checkout: sold from `available` and handed over at once (never from
    `reserved`, never committed). Refuses rather than overselling."""
    with store._lock:
        item_id = store.variant_by_sku(sku)["inventory_item_id"]
        if location_id is None:
            stocked = [loc for item, loc in store.levels if item == item_id]
            location_id = min(stocked, default=DEFAULT_LOCATION_ID)
        level = store.levels.get((item_id, location_id))
        if level is None:
            raise LookupError(f"{sku} is not stocked at location {location_id}")
        if quantity_sold < 1 or level.available < quantity_sold:
            raise ValueError(f"{sku}: {level.available} available, {quantity_sold} wanted")
        apply(store, item_id, location_id, "available", -quantity_sold)
        announce(store, item_id, location_id)
        return {
            "inventory_item_id": item_id,
            "location_id": location_id,
            **{name: quantity(store, item_id, location_id, name) for name in NAMES},
        }
