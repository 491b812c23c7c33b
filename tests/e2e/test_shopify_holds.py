"""Our holds, visible to Shopify's other channels (issue 11, "Outbound"), end to end: the
checkout API, the relay's handlers, the sweeper and Shopify's webhooks back to the API, against
the sandbox Shopify through the real ShopifyAPI library. A checkout's units are `reserved` in
Shopify once the relay has run, a POS sale cannot take them (422) but can take an unheld unit,
they are `available` again after a cancel or expiry, a paid order's units leave `reserved`
once when it is pushed, a move retried after Shopify moved changes Shopify once, and the
projection still equals Shopify after a repair."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from core import inventory, relay, shopify_sync
from core.db import transaction
from core.outbox import Message
from core.shopify_gateway import ShopifyGateway, gid
from tests.core.shopify_support import QUANTITIES, assert_projection_equals_shopify
from tests.e2e.conftest import FAST_RETRY, SHOP, SHOPIFY_TOKEN, Stack, wait_for
from tests.e2e.helpers import checkout, skus_with_stock, stock


def quantities(stack: Stack, sku: str) -> dict[str, int]:
    item = stack.scalar("SELECT shopify_inventory_item_id FROM variant WHERE sku = :s", s=sku)
    answer = stack.shopify_gateway().execute(
        QUANTITIES, {"item": gid("InventoryItem", item), "location": gid("Location", 1)}
    )
    pairs = answer["inventoryItem"]["inventoryLevel"]["quantities"]
    return {q["name"]: q["quantity"] for q in pairs}


def pos_sale(stack: Stack, sku: str, quantity: int) -> httpx.Response:
    return httpx.post(
        f"{stack.shopify_base}/_sandbox/inventory/pos_sale",
        json={"sku": sku, "quantity": quantity},
        timeout=10,
    )


def next_second(stack: Stack) -> None:
    """Shopify's updatedAt has whole seconds and a tie keeps the lower level
    (core.inventory.stale_level): units come back in a later second than they left."""
    httpx.post(
        f"{stack.shopify_base}/_sandbox/clock/advance", json={"seconds": 1}, timeout=10
    ).raise_for_status()


def hold_events(stack: Stack, order_id: str) -> list[str]:
    rows = stack.sql(
        "SELECT kind FROM order_event WHERE order_id = :o AND kind LIKE 'shopify_hold%' "
        "ORDER BY id",
        o=order_id,
    )
    return [r[0] for r in rows]


def repaired_equals_shopify(stack: Stack) -> None:
    stack.settle()
    shopify_sync.repair(stack.engine, stack.shopify_gateway(), [1], full=True)
    assert_projection_equals_shopify(stack.engine, stack.shopify_gateway())


def test_held_units_are_reserved_and_a_pos_sale_cannot_take_them_until_cancelled(
    stack: Stack,
) -> None:
    sku = skus_with_stock(stack, minimum=6)[0]
    before = quantities(stack, sku)
    held = before["available"] - 2
    body = checkout(stack, [{"sku": sku, "quantity": held}]).json()
    stack.settle()  # the relay moves the units; Shopify's webhook comes back to the API
    assert quantities(stack, sku) == {
        **before,
        "available": 2,
        "reserved": before["reserved"] + held,
    }
    # The projection counts the held units once (Shopify left them out of `available`).
    assert stock(stack, sku) == (before["available"], held, 0)
    refused = pos_sale(stack, sku, 3)
    assert refused.status_code == 422, refused.text
    sold = pos_sale(stack, sku, 2)
    assert sold.status_code == 200, sold.text
    stack.settle()
    assert stock(stack, sku) == (before["available"] - 2, held, 0)

    next_second(stack)
    cancelled = httpx.post(
        f"{stack.api['us']}/v1/checkouts/{body['id']}/cancel",
        headers={"Idempotency-Key": str(uuid.uuid4())},
        timeout=30,
    )
    assert cancelled.status_code == 200, cancelled.text
    stack.settle()
    assert quantities(stack, sku) == {**before, "available": held, "on_hand": held}
    assert hold_events(stack, body["order_id"]) == ["shopify_hold_placed", "shopify_hold_lifted"]
    assert stock(stack, sku) == (held, 0, 0)
    repaired_equals_shopify(stack)


def test_an_expired_hold_is_available_again_in_shopify(stack: Stack) -> None:
    sku = skus_with_stock(stack, minimum=3)[0]
    before = quantities(stack, sku)
    body = checkout(stack, [{"sku": sku, "quantity": 2}]).json()
    stack.settle()
    assert quantities(stack, sku)["reserved"] == before["reserved"] + 2
    next_second(stack)
    assert stack.sweep(datetime.now(UTC) + timedelta(hours=1)).expired_orders >= 1
    stack.settle()
    assert quantities(stack, sku) == before
    assert hold_events(stack, body["order_id"]) == ["shopify_hold_placed", "shopify_hold_lifted"]
    assert stock(stack, sku)[0] == before["available"]
    repaired_equals_shopify(stack)


def test_a_paid_orders_units_leave_reserved_once_when_pushed(stack: Stack) -> None:
    """orderCreate claims the units from `available` into `committed`; the hold's units then
    leave `reserved`, once."""
    sku = skus_with_stock(stack, minimum=3)[0]
    before = quantities(stack, sku)
    body = checkout(stack, [{"sku": sku, "quantity": 2}]).json()
    stack.settle()
    assert quantities(stack, sku)["reserved"] == before["reserved"] + 2
    stack.stripe_client().v1.payment_intents.confirm(
        body["payment"]["payment_intent_id"], {"payment_method": "pm_card_visa"}
    )
    stack.wait_webhooks()
    # The units leave `reserved` in a later second than the order claimed them (see
    # next_second), so the projection need not wait for a repair to settle the tie.
    handlers = stack.handlers()
    push = handlers["shopify.push_order"]

    def push_then_tick(message: Message) -> None:
        push(message)
        next_second(stack)

    handlers["shopify.push_order"] = push_then_tick
    while relay.run_once(stack.engine, handlers, policy=FAST_RETRY):
        pass
    stack.settle()
    assert stack.scalar("SELECT shopify_order_id FROM orders WHERE id = :o", o=body["order_id"])
    assert quantities(stack, sku) == {
        **before,
        "available": before["available"] - 2,
        "committed": before["committed"] + 2,
    }
    assert hold_events(stack, body["order_id"]) == ["shopify_hold_placed", "shopify_hold_lifted"]
    unholds = stack.scalar(
        "SELECT count(*) FROM outbox WHERE topic = 'shopify.unhold' AND payload->>'order_id' = :o",
        o=body["order_id"],
    )
    assert unholds == 1
    repaired_equals_shopify(stack)


class DiesAfterMove(ShopifyGateway):
    """Shopify moved the units; the relay's process dies before recording it."""

    def move_quantities(self, **kwargs: Any) -> None:
        super().move_quantities(**kwargs)
        raise RuntimeError("killed after Shopify moved the units")


def test_a_hold_retried_after_shopify_moved_changes_shopify_once(stack: Stack) -> None:
    """@idempotent(key:): the retry sends the reservation's key again and gets the original
    result; Shopify moved the units once."""
    sku = skus_with_stock(stack, minimum=3)[0]
    before = quantities(stack, sku)
    body = checkout(stack, [{"sku": sku, "quantity": 3}]).json()
    dying = stack.handlers()
    del dying[inventory.SHOPIFY_HOLD], dying[inventory.SHOPIFY_UNHOLD]
    gateway = DiesAfterMove(shop=SHOP, site=stack.shopify_site, access_token=SHOPIFY_TOKEN)
    shopify_sync.HoldMirror(stack.engine, gateway, 1).register(dying)
    relay.run_once(stack.engine, dying, policy=FAST_RETRY)
    [(status, attempts)] = stack.sql(
        "SELECT status, attempts FROM outbox WHERE topic = 'shopify.hold' "
        "AND payload->>'order_id' = :o",
        o=body["order_id"],
    )
    assert (status, attempts) == ("pending", 1)
    assert quantities(stack, sku)["reserved"] == before["reserved"] + 3
    stack.settle()
    assert quantities(stack, sku)["reserved"] == before["reserved"] + 3
    assert hold_events(stack, body["order_id"]) == ["shopify_hold_placed"]
    wait_for(lambda: stock(stack, sku) == (before["available"], 3, 0))

    next_second(stack)
    with transaction(stack.engine) as session:
        inventory.release(session, body["order_id"])
    stack.settle()
    assert quantities(stack, sku) == before
    assert stock(stack, sku) == (before["available"], 0, 0)
    repaired_equals_shopify(stack)


def test_an_unheld_unit_is_still_sold_by_pos(stack: Stack) -> None:
    """Only held units are out of `available`: a POS sale of unheld ones goes through, and the
    projection follows it through the webhook."""
    sku = skus_with_stock(stack, minimum=3)[0]
    before = stock(stack, sku)
    sold = pos_sale(stack, sku, 1)
    assert sold.status_code == 200, sold.text
    wait_for(lambda: stock(stack, sku)[0] == before[0] - 1)
