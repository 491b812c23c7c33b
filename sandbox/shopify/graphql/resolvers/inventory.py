"""inventoryAdjustQuantities, inventoryMoveQuantities, inventorySetQuantities (2026-04 rules:
`@idempotent(key:)` and an explicit `changeFromQuantity` on every change; a stale one is the
CHANGE_FROM_QUANTITY_STALE user error and nothing of the batch is applied)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from graphql import GraphQLError, GraphQLResolveInfo

from sandbox.shopify.graphql import quantities
from sandbox.shopify.graphql.context import Context
from sandbox.shopify.graphql.gids import PREFIX, datetime_z, gid, parse_gid
from sandbox.shopify.graphql.idempotency import MISMATCH, run_once
from sandbox.shopify.graphql.resolvers.catalog import item_view, location_view
from sandbox.shopify.graphql.versions import strict_inventory

# Shopify's documented adjustment reasons (InventoryAdjustQuantitiesInput.reason).
REASONS = frozenset({
    "correction", "cycle_count_available", "damaged", "movement_created", "movement_updated",
    "movement_received", "movement_canceled", "other", "promotion", "quality_control",
    "received", "reservation_created", "reservation_deleted", "reservation_updated",
    "restock", "safety_stock", "shrinkage",
})  # fmt: skip
# The states a change may name in the sandbox (committed and on_hand follow from the others).
MUTABLE = ("available", "reserved")
SETTABLE = ("available", "on_hand")


# Shopify's user error messages, by code.
MESSAGES = {
    "IDEMPOTENCY_KEY_PARAMETER_MISMATCH": MISMATCH,
    "INVALID_INVENTORY_ITEM": "The specified inventory item could not be found.",
    "INVALID_LOCATION": "The specified location could not be found.",
    "ITEM_NOT_STOCKED_AT_LOCATION": "The specified inventory item is not stocked at the location.",
    "INVALID_AVAILABLE_DOCUMENT": "A ledger document URI is not allowed when adjusting available.",
    "INVALID_QUANTITY_DOCUMENT": (
        "A ledger document URI is required except when adjusting available."
    ),
    "INTERNAL_LEDGER_DOCUMENT": (
        "Internal (gid://shopify/) ledger documents are not allowed to be adjusted via API."
    ),
    "CHANGE_FROM_QUANTITY_STALE": (
        "The changeFromQuantity argument no longer matches the persisted quantity."
    ),
    "INVALID_REASON": "The specified reason is invalid.",
    "INVALID_REFERENCE_DOCUMENT": "The specified reference document is invalid.",
    "INVALID_QUANTITY_NEGATIVE": "The quantity can't be negative.",
    "DIFFERENT_LOCATIONS": "The quantities can't be moved between different locations.",
    "SAME_QUANTITY_NAME": "The quantity names for each change can't be the same.",
    "INVALID_QUANTITY_NAME": "The specified quantity name is invalid.",
    "INVALID_NAME": "The quantity name must be either 'available' or 'on_hand'.",
    "NO_DUPLICATE_INVENTORY_ITEM_ID_GROUP_ID_PAIR": (
        "The combination of inventoryItemId and locationId must be unique."
    ),
    "INVALID_QUANTITY_TOO_HIGH": "The quantity can't be higher than 1,000,000,000.",
}


class Rejected(Exception):
    """One user error: the whole mutation changes nothing."""

    def __init__(self, code: str, field: list[str]) -> None:
        super().__init__(MESSAGES[code])
        self.code, self.field, self.message = code, field, MESSAGES[code]


def _payload(group: dict[str, Any] | None, errors: list[Rejected]) -> dict[str, Any]:
    return {
        "inventoryAdjustmentGroup": group,
        "userErrors": [{"code": e.code, "field": e.field, "message": e.message} for e in errors],
    }


def _mismatch(message: str) -> dict[str, Any]:
    return _payload(None, [Rejected("IDEMPOTENCY_KEY_PARAMETER_MISMATCH", ["idempotencyKey"])])


def _require_change_from(ctx: Context, type_name: str, entries: list[dict[str, Any]]) -> None:
    """From 2026-04 the key must be present (null opts out of the check); the schema keeps the
    field nullable, so Shopify refuses the field at run time."""
    if strict_inventory(ctx.version) and any("changeFromQuantity" not in e for e in entries):
        raise GraphQLError(
            f"{type_name} must include the following argument: changeFromQuantity.",
            extensions={"code": "INVALID_FIELD_ARGUMENTS"},
        )


def _pair(ctx: Context, field: list[str], item_gid: str, location_gid: str) -> tuple[int, int]:
    item_id = parse_gid("InventoryItem", item_gid)
    location_id = parse_gid("Location", location_gid)
    if item_id not in ctx.store.inventory_items:
        raise Rejected("INVALID_INVENTORY_ITEM", [*field, "inventoryItemId"])
    if location_id not in ctx.store.locations:
        raise Rejected("INVALID_LOCATION", [*field, "locationId"])
    if (item_id, location_id) not in ctx.store.levels:
        raise Rejected("ITEM_NOT_STOCKED_AT_LOCATION", [*field, "inventoryItemId"])
    return item_id, location_id


def _ledger(field: list[str], name: str, uri: str | None) -> None:
    if name == "available" and uri:
        raise Rejected("INVALID_AVAILABLE_DOCUMENT", [*field, "ledgerDocumentUri"])
    if name != "available" and not uri:
        raise Rejected("INVALID_QUANTITY_DOCUMENT", [*field, "ledgerDocumentUri"])
    if uri and uri.startswith(PREFIX):
        raise Rejected("INTERNAL_LEDGER_DOCUMENT", [*field, "ledgerDocumentUri"])


def _compare(ctx: Context, field: list[str], entry: dict[str, Any], current: int) -> None:
    expected = entry.get("changeFromQuantity")
    if expected is not None and expected != current:
        raise Rejected("CHANGE_FROM_QUANTITY_STALE", [*field, "changeFromQuantity"])


def _common(input_: dict[str, Any]) -> None:
    if input_["reason"] not in REASONS:
        raise Rejected("INVALID_REASON", ["input", "reason"])
    reference = input_.get("referenceDocumentUri")
    if reference and reference.startswith(PREFIX):
        raise Rejected("INVALID_REFERENCE_DOCUMENT", ["input", "referenceDocumentUri"])


Step = tuple[int, int, str, int, str | None]  # item, location, name, delta, ledger document


def _commit(ctx: Context, input_: dict[str, Any], steps: list[Step]) -> dict[str, Any]:
    """Apply validated steps, announce changed `available`s, and describe the group."""
    store = ctx.store
    changes = []
    for item_id, location_id, name, delta, ledger in steps:
        after = quantities.apply(store, item_id, location_id, name, delta)
        changes.append((item_id, location_id, name, delta, after, ledger))
        # Units that arrive or leave (sellable or set aside) are on-hand units too.
        on_hand = quantities.quantity(store, item_id, location_id, "on_hand")
        changes.append((item_id, location_id, "on_hand", delta, on_hand, None))
    for item_id, location_id in dict.fromkeys((s[0], s[1]) for s in steps if s[2] != "reserved"):
        quantities.announce(store, item_id, location_id)
    return _group(ctx, input_, changes)


def _group(ctx: Context, input_: dict[str, Any], changes: list[tuple[Any, ...]]) -> dict[str, Any]:
    group_id = ctx.store.next_id("adjustment_group")
    created_at = datetime_z(ctx.store.timestamp())
    views = [
        {
            "name": name,
            "delta": delta,
            "quantityAfterChange": after,
            "ledgerDocumentUri": ledger,
            "item": lambda info, i=item_id: item_view(ctx, i),
            "location": lambda info, loc=location_id: location_view(ctx, loc),
            "_keys": (gid("InventoryItem", item_id), gid("Location", location_id)),
        }
        for item_id, location_id, name, delta, after, ledger in changes
    ]

    def listed(
        info: GraphQLResolveInfo,
        inventoryItemIds: list[str] | None = None,
        locationIds: list[str] | None = None,
        quantityNames: list[str] | None = None,
    ) -> list[dict[str, Any]]:
        return [
            v for v in views
            if (inventoryItemIds is None or v["_keys"][0] in inventoryItemIds)
            and (locationIds is None or v["_keys"][1] in locationIds)
            and (quantityNames is None or v["name"] in quantityNames)
        ]  # fmt: skip

    return {
        "id": gid("InventoryAdjustmentGroup", group_id),
        "createdAt": created_at,
        "reason": input_["reason"],
        "referenceDocumentUri": input_.get("referenceDocumentUri"),
        "changes": listed,
    }


def _guarded(
    plan: Callable[[], list[Step]], ctx: Context, input_: dict[str, Any]
) -> dict[str, Any]:
    try:
        _common(input_)
        steps = plan()
    except Rejected as error:
        return _payload(None, [error])
    return _payload(_commit(ctx, input_, steps), [])


def _never_negative(ctx: Context, field: list[str], step: Step) -> None:
    item_id, location_id, name, delta, _ = step
    # Units that are set aside must exist; `available` may go below zero as in the admin.
    if (
        name != "available"
        and quantities.quantity(ctx.store, item_id, location_id, name) + delta < 0
    ):
        raise Rejected("INVALID_QUANTITY_NEGATIVE", field)


def inventory_adjust_quantities(
    _: Any, info: GraphQLResolveInfo, input: dict[str, Any]
) -> dict[str, Any]:
    ctx: Context = info.context
    _require_change_from(ctx, "InventoryChangeInput", input["changes"])
    name = input["name"]

    def plan() -> list[Step]:
        if name not in MUTABLE:
            raise Rejected("INVALID_QUANTITY_NAME", ["input", "name"])
        steps = []
        for i, change in enumerate(input["changes"]):
            field = ["input", "changes", str(i)]
            item_id, location_id = _pair(
                ctx, field, change["inventoryItemId"], change["locationId"]
            )
            _ledger(field, name, change.get("ledgerDocumentUri"))
            _compare(ctx, field, change, quantities.quantity(ctx.store, item_id, location_id, name))
            step = (item_id, location_id, name, change["delta"], change.get("ledgerDocumentUri"))
            _never_negative(ctx, [*field, "delta"], step)
            steps.append(step)
        return steps

    return run_once(info, {"input": input}, lambda: _guarded(plan, ctx, input), _mismatch)


def inventory_move_quantities(
    _: Any, info: GraphQLResolveInfo, input: dict[str, Any]
) -> dict[str, Any]:
    ctx: Context = info.context
    _require_change_from(
        ctx, "InventoryMoveQuantityTerminalInput",
        [t for c in input["changes"] for t in (c["from"], c["to"])],
    )  # fmt: skip

    def plan() -> list[Step]:
        steps = []
        for i, change in enumerate(input["changes"]):
            field = ["input", "changes", str(i)]
            source, target = change["from"], change["to"]
            if change["quantity"] < 0:
                raise Rejected("INVALID_QUANTITY_NEGATIVE", [*field, "quantity"])
            if parse_gid("Location", source["locationId"]) != parse_gid(
                "Location", target["locationId"]
            ):
                raise Rejected("DIFFERENT_LOCATIONS", [*field, "to", "locationId"])
            if source["name"] == target["name"]:
                raise Rejected("SAME_QUANTITY_NAME", [*field, "to", "name"])
            for end, terminal in (("from", source), ("to", target)):
                if terminal["name"] not in MUTABLE:
                    raise Rejected("INVALID_QUANTITY_NAME", [*field, end, "name"])
                _ledger([*field, end], terminal["name"], terminal.get("ledgerDocumentUri"))
            item_id, location_id = _pair(
                ctx, field, change["inventoryItemId"], source["locationId"]
            )
            for end, terminal, delta in (
                ("from", source, -change["quantity"]),
                ("to", target, change["quantity"]),
            ):
                name = terminal["name"]
                current = quantities.quantity(ctx.store, item_id, location_id, name)
                _compare(ctx, [*field, end], terminal, current)
                step = (item_id, location_id, name, delta, terminal.get("ledgerDocumentUri"))
                _never_negative(ctx, [*field, "quantity"], step)
                steps.append(step)
        return steps

    return run_once(info, {"input": input}, lambda: _move(plan, ctx, input), _mismatch)


def _move(plan: Callable[[], list[Step]], ctx: Context, input_: dict[str, Any]) -> dict[str, Any]:
    """A move keeps on_hand: it reports the two named states only."""
    try:
        _common(input_)
        steps = plan()
    except Rejected as error:
        return _payload(None, [error])
    store = ctx.store
    changes = [
        (item, loc, name, delta, quantities.apply(store, item, loc, name, delta), ledger)
        for item, loc, name, delta, ledger in steps
    ]
    for item, loc in dict.fromkeys((s[0], s[1]) for s in steps if s[2] == "available"):
        quantities.announce(store, item, loc)
    return _payload(_group(ctx, input_, changes), [])


def inventory_set_quantities(
    _: Any, info: GraphQLResolveInfo, input: dict[str, Any]
) -> dict[str, Any]:
    ctx: Context = info.context
    _require_change_from(ctx, "InventoryQuantityInput", input["quantities"])
    name = input["name"]

    def plan() -> list[Step]:
        if name not in SETTABLE:
            raise Rejected("INVALID_NAME", ["input", "name"])
        steps, seen = [], set()
        for i, entry in enumerate(input["quantities"]):
            field = ["input", "quantities", str(i)]
            item_id, location_id = _pair(ctx, field, entry["inventoryItemId"], entry["locationId"])
            if (item_id, location_id) in seen:
                raise Rejected("NO_DUPLICATE_INVENTORY_ITEM_ID_GROUP_ID_PAIR", field)
            seen.add((item_id, location_id))
            if entry["quantity"] < 0:
                raise Rejected("INVALID_QUANTITY_NEGATIVE", [*field, "quantity"])
            if entry["quantity"] > quantities.MAX_QUANTITY:
                raise Rejected("INVALID_QUANTITY_TOO_HIGH", [*field, "quantity"])
            current = quantities.quantity(ctx.store, item_id, location_id, name)
            _compare(ctx, field, entry, current)
            if entry["quantity"] != current:
                steps.append((item_id, location_id, "available", entry["quantity"] - current, None))
        return steps

    return run_once(info, {"input": input}, lambda: _guarded(plan, ctx, input), _mismatch)
