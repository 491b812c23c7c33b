"""Inventory through the sandbox's GraphQL Admin API, pinned to 2026-04, through the real
ShopifyAPI library: quantities by name, the three inventory mutations with `@idempotent(key:)`
and `changeFromQuantity`, one store shared with REST and webhooks, and a POS sale that cannot
take reserved units."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.processes import Process
from tests.sandbox.shopify_graphql import LOCATION, Receiver, Shop, key, open_receiver, open_shop


@pytest.fixture
def shop(sandbox: Process) -> Iterator[Shop]:
    yield from open_shop(sandbox)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    yield from open_receiver()


SKU = "FSH-TRENCH-BEIGE-M"  # 36 available in the demo catalog

ADJUST = """
mutation Adjust($input: InventoryAdjustQuantitiesInput!, $key: String!) {
  inventoryAdjustQuantities(input: $input) @idempotent(key: $key) {
    inventoryAdjustmentGroup { id reason changes { name delta quantityAfterChange } }
    userErrors { code field message }
  }
}"""
MOVE = """
mutation Move($input: InventoryMoveQuantitiesInput!, $key: String!) {
  inventoryMoveQuantities(input: $input) @idempotent(key: $key) {
    inventoryAdjustmentGroup { id changes { name delta quantityAfterChange ledgerDocumentUri } }
    userErrors { code field message }
  }
}"""
SET = """
mutation Set($input: InventorySetQuantitiesInput!, $key: String!) {
  inventorySetQuantities(input: $input) @idempotent(key: $key) {
    inventoryAdjustmentGroup { id changes { name delta quantityAfterChange } }
    userErrors { code field message }
  }
}"""


def adjust_input(item: str, delta: int, change_from: int | None = None) -> dict:
    return {
        "reason": "correction",
        "name": "available",
        "changes": [
            {"inventoryItemId": item, "locationId": LOCATION, "delta": delta,
             "changeFromQuantity": change_from}
        ],
    }  # fmt: skip


def hold_input(
    item: str, quantity: int, source: str = "available", target: str = "reserved"
) -> dict:
    def end(name: str) -> dict:
        terminal = {"locationId": LOCATION, "name": name, "changeFromQuantity": None}
        if name != "available":
            terminal["ledgerDocumentUri"] = "dotshop://reservation/rsv_test"
        return terminal

    return {
        "reason": "reservation_created",
        "referenceDocumentUri": "dotshop://reservation/rsv_test",
        "changes": [
            {"inventoryItemId": item, "quantity": quantity, "from": end(source), "to": end(target)}
        ],
    }


def test_quantities_by_name_where_on_hand_is_available_plus_committed_plus_reserved(shop: Shop):
    """shopify.dev inventory states: on_hand = available + committed + unavailable (reserved)."""
    item = shop.item(SKU)
    assert shop.levels(item) == {"available": 36, "committed": 0, "reserved": 0, "on_hand": 36}
    shop.data(MOVE, {"input": hold_input(item, 3), "key": key()})
    assert shop.levels(item) == {"available": 33, "committed": 0, "reserved": 3, "on_hand": 36}


def test_adjust_with_the_same_idempotent_key_returns_the_original_result_and_changes_once(
    shop: Shop,
):
    """Changelog 'Adding idempotency for inventory adjustments': a retry with the same key
    returns the original operation's result instead of adjusting again."""
    item, same = shop.item(SKU), key()
    first = shop.data(ADJUST, {"input": adjust_input(item, -5), "key": same})
    again = shop.data(ADJUST, {"input": adjust_input(item, -5), "key": same})
    assert first == again
    group = first["inventoryAdjustQuantities"]["inventoryAdjustmentGroup"]
    assert {c["name"]: (c["delta"], c["quantityAfterChange"]) for c in group["changes"]} == {
        "available": (-5, 31),
        "on_hand": (-5, 31),
    }
    assert shop.levels(item)["available"] == 31
    # A different key is a different adjustment.
    shop.data(ADJUST, {"input": adjust_input(item, -5), "key": key()})
    assert shop.levels(item)["available"] == 26


def test_same_key_with_other_arguments_is_idempotency_key_parameter_mismatch(shop: Shop):
    """InventoryAdjustQuantitiesUserErrorCode.IDEMPOTENCY_KEY_PARAMETER_MISMATCH."""
    item, same = shop.item(SKU), key()
    shop.data(ADJUST, {"input": adjust_input(item, -1), "key": same})
    other = shop.data(ADJUST, {"input": adjust_input(item, -2), "key": same})
    errors = other["inventoryAdjustQuantities"]["userErrors"]
    assert [e["code"] for e in errors] == ["IDEMPOTENCY_KEY_PARAMETER_MISMATCH"]
    assert shop.levels(item)["available"] == 35


@pytest.mark.parametrize(("mutation", "field"), [
    ("inventoryAdjustQuantities(input: $input)", "inventoryAdjustQuantities"),
    ("inventoryMoveQuantities(input: $input)", "inventoryMoveQuantities"),
])  # fmt: skip
def test_missing_idempotent_directive_from_2026_04_is_a_bad_request_error(
    shop: Shop, mutation, field
):
    """Changelog 'Making idempotency mandatory ... in version 2026-04': without the directive the
    call fails at run time ("The @idempotent directive is required ..."), nothing changes."""
    item = shop.item(SKU)
    kind = (
        "InventoryAdjustQuantitiesInput" if "Adjust" in mutation else "InventoryMoveQuantitiesInput"
    )
    query = f"mutation M($input: {kind}!) {{ {mutation} {{ userErrors {{ code message }} }} }}"
    payload = adjust_input(item, -1) if "Adjust" in mutation else hold_input(item, 1)
    answer = shop.graphql(query, {"input": payload})
    assert answer["data"] == {field: None}
    [error] = answer["errors"]
    assert error["message"] == (
        "The @idempotent directive is required for this mutation but was not provided."
    )
    assert error["extensions"]["code"] == "BAD_REQUEST"
    assert error["path"] == [field]
    assert shop.levels(item)["available"] == 36


def test_missing_change_from_quantity_from_2026_04_is_refused(shop: Shop):
    """InventoryChangeInput.changeFromQuantity: 'you must explicitly pass in a value (even if
    it's null), or else you will get an error'."""
    item = shop.item(SKU)
    payload = adjust_input(item, -1)
    del payload["changes"][0]["changeFromQuantity"]
    answer = shop.graphql(ADJUST, {"input": payload, "key": key()})
    assert answer["data"] == {"inventoryAdjustQuantities": None}
    assert answer["errors"][0]["message"] == (
        "InventoryChangeInput must include the following argument: changeFromQuantity."
    )
    assert shop.levels(item)["available"] == 36


def test_set_with_a_stale_change_from_quantity_is_change_from_quantity_stale(shop: Shop):
    """inventorySetQuantities compare-and-swap: a stale changeFromQuantity returns
    CHANGE_FROM_QUANTITY_STALE and the quantity is not updated; a current one sets it."""
    item = shop.item(SKU)
    quantities = [
        {"inventoryItemId": item, "locationId": LOCATION, "quantity": 20, "changeFromQuantity": 35}
    ]
    stale = {"reason": "correction", "name": "available", "quantities": quantities}
    answer = shop.data(SET, {"input": stale, "key": key()})["inventorySetQuantities"]
    assert answer["inventoryAdjustmentGroup"] is None
    assert answer["userErrors"] == [{
        "code": "CHANGE_FROM_QUANTITY_STALE",
        "field": ["input", "quantities", "0", "changeFromQuantity"],
        "message": "The changeFromQuantity argument no longer matches the persisted quantity.",
    }]  # fmt: skip
    assert shop.levels(item)["available"] == 36
    quantities[0]["changeFromQuantity"] = 36
    done = shop.data(SET, {"input": stale, "key": key()})["inventorySetQuantities"]
    assert done["userErrors"] == []
    assert shop.levels(item)["available"] == 20
    assert shop.rest_available(item) == 20


def test_stale_change_from_quantity_on_adjust_changes_nothing(shop: Shop):
    """InventoryChangeInput.changeFromQuantity: CAS against the named quantity."""
    item = shop.item(SKU)
    answer = shop.data(ADJUST, {"input": adjust_input(item, -1, change_from=99), "key": key()})
    assert (
        answer["inventoryAdjustQuantities"]["userErrors"][0]["code"] == "CHANGE_FROM_QUANTITY_STALE"
    )
    shop.data(ADJUST, {"input": adjust_input(item, -1, change_from=36), "key": key()})
    assert shop.levels(item)["available"] == 35


def test_move_available_to_reserved_and_back_is_seen_by_rest_and_keeps_on_hand(shop: Shop):
    """inventoryMoveQuantities between quantity names at one location: reserved units leave
    `available` (what REST reports and channels sell) but stay on hand."""
    item = shop.item(SKU)
    held = shop.data(MOVE, {"input": hold_input(item, 4), "key": key()})["inventoryMoveQuantities"]
    assert held["userErrors"] == []
    assert [(c["name"], c["delta"]) for c in held["inventoryAdjustmentGroup"]["changes"]] == [
        ("available", -4),
        ("reserved", 4),
    ]
    assert shop.rest_available(item) == 32
    shop.data(MOVE, {"input": hold_input(item, 4, "reserved", "available"), "key": key()})
    assert shop.levels(item) == {"available": 36, "committed": 0, "reserved": 0, "on_hand": 36}
    assert shop.rest_available(item) == 36


def test_move_rules_ledger_document_and_locations(shop: Shop):
    """InventoryMoveQuantityTerminalInput.ledgerDocumentUri is required except for available
    (INVALID_QUANTITY_DOCUMENT); moves between locations are DIFFERENT_LOCATIONS; reserved
    cannot go below zero."""
    item = shop.item(SKU)
    no_document = hold_input(item, 1)
    del no_document["changes"][0]["to"]["ledgerDocumentUri"]
    answer = shop.data(MOVE, {"input": no_document, "key": key()})["inventoryMoveQuantities"]
    assert [e["code"] for e in answer["userErrors"]] == ["INVALID_QUANTITY_DOCUMENT"]
    elsewhere = hold_input(item, 1)
    elsewhere["changes"][0]["to"]["locationId"] = "gid://shopify/Location/2"
    answer = shop.data(MOVE, {"input": elsewhere, "key": key()})["inventoryMoveQuantities"]
    assert [e["code"] for e in answer["userErrors"]] == ["DIFFERENT_LOCATIONS"]
    overdrawn = hold_input(item, 1, "reserved", "available")
    answer = shop.data(MOVE, {"input": overdrawn, "key": key()})["inventoryMoveQuantities"]
    assert [e["code"] for e in answer["userErrors"]] == ["INVALID_QUANTITY_NEGATIVE"]
    assert shop.levels(item)["reserved"] == 0


def test_a_move_retried_after_a_lost_response_changes_shopify_once(shop: Shop):
    """Idempotent requests: a request whose response was lost is retried with the same key and
    gets the original result; the move happened once (fault knob error_phase=after)."""
    item, same = shop.item(SKU), key()
    assert shop.control("faults", {
        "error_rate": 1.0, "error_status": 503, "error_phase": "after",
        "path_prefix": f"/admin/api/{shop.version}/graphql.json",
    }).status_code == 200  # fmt: skip
    with pytest.raises(Exception, match="503"):
        shop.graphql(MOVE, {"input": hold_input(item, 2), "key": same})
    shop.control("faults", {"error_rate": 0.0})
    retried = shop.data(MOVE, {"input": hold_input(item, 2), "key": same})[
        "inventoryMoveQuantities"
    ]
    assert retried["userErrors"] == []
    assert shop.levels(item) == {"available": 34, "committed": 0, "reserved": 2, "on_hand": 36}


def test_pos_sale_takes_available_units_never_reserved_ones(shop: Shop):
    """Held units moved to `reserved` cannot be sold by another channel: a POS sale of more
    than `available` is refused, one within it sells from available only."""
    item = shop.item(SKU)
    shop.data(MOVE, {"input": hold_input(item, 30), "key": key()})
    refused = shop.control("inventory/pos_sale", {"sku": SKU, "quantity": 7})
    assert refused.status_code == 422
    assert shop.levels(item) == {"available": 6, "committed": 0, "reserved": 30, "on_hand": 36}
    sold = shop.control("inventory/pos_sale", {"sku": SKU, "quantity": 6})
    assert sold.status_code == 200
    assert sold.json()["sale"]["reserved"] == 30
    assert shop.levels(item) == {"available": 0, "committed": 0, "reserved": 30, "on_hand": 30}


def test_graphql_changes_fire_the_same_webhooks_as_rest(shop: Shop, receiver: Receiver):
    """webhookSubscriptionCreate subscribes on the shared store: an available change made
    through GraphQL is announced as inventory_levels/update, as a REST change is."""
    created = shop.data(
        """mutation Sub($uri: String!) {
          webhookSubscriptionCreate(
            topic: INVENTORY_LEVELS_UPDATE, webhookSubscription: {uri: $uri, format: JSON}
          ) {
            webhookSubscription { id topic uri format } userErrors { field message }
          }
        }""",
        {"uri": receiver.url},
    )["webhookSubscriptionCreate"]
    assert created["userErrors"] == []
    assert created["webhookSubscription"]["topic"] == "INVENTORY_LEVELS_UPDATE"
    item = shop.item(SKU)
    shop.data(ADJUST, {"input": adjust_input(item, -3), "key": key()})
    answer = shop.control("webhooks/wait", {"timeout": 10})
    assert answer.json()["idle"] is True
    [body] = receiver.bodies("inventory_levels/update")
    assert body["available"] == 33
    assert body["inventory_item_id"] == int(item.rsplit("/", 1)[1])
    duplicate = shop.data(
        """mutation Sub($uri: String!) {
          webhookSubscriptionCreate(
            topic: INVENTORY_LEVELS_UPDATE, webhookSubscription: {uri: $uri}
          ) {
            webhookSubscription { id } userErrors { field message }
          }
        }""",
        {"uri": receiver.url},
    )["webhookSubscriptionCreate"]
    assert duplicate["webhookSubscription"] is None
    assert duplicate["userErrors"][0]["field"] == ["webhookSubscription", "uri"]
