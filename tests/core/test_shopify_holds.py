"""Our holds, visible to Shopify's other channels (issue 11, "Outbound"), against a real sandbox
Shopify (GraphQL Admin API through the ShopifyAPI library), a real sandbox Stripe and a real
PostgreSQL: a checkout's units move from `available` to `reserved` (inventoryMoveQuantities,
@idempotent per reservation and direction) through the outbox, back when the hold is cancelled
or expires, and out of `reserved` once the paid order is in Shopify; a POS sale cannot take a
held unit; a move retried after Shopify moved changes Shopify once; a move Shopify refuses is
given up, not dead-lettered, and the repair reconciles."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, select

from core import inventory, orders, relay, shopify_sync, sweeper
from core.checkout import CheckoutRequest, cancel_checkout, create_checkout
from core.db import transaction
from core.models import OutboxMessage
from core.outbox import Handlers, Message, RetryPolicy
from core.settings import Settings
from core.shopify_gateway import ShopifyGateway, gid
from core.stripe_gateway import StripeGateway
from sandbox.options import (
    DEFAULT_SHOPIFY_ACCESS_TOKEN,
    DEFAULT_SHOPIFY_SHOP,
    DEFAULT_STRIPE_API_KEY,
)
from tests.checks.support import run
from tests.core.shopify_support import (
    QUANTITIES,
    DiesAfterOrderCreate,
    Shop,
    assert_projection_equals_shopify,
    item_of,
    push_message,
    stock,
    timeline,
)
from tests.processes import Process

SKU = "FSH-TRENCH-BEIGE-M"  # 36 available in the demo catalog
EMAIL = "ada@example.com"
ADDRESS = {"line1": "1 Main St", "city": "Springfield", "country": "US"}
FAST_RETRY = RetryPolicy(max_attempts=5, base_seconds=0.0, cap_seconds=0.0)
MOVE = """
mutation Move($input: InventoryMoveQuantitiesInput!, $key: String!) {
  inventoryMoveQuantities(input: $input) @idempotent(key: $key) {
    userErrors { code message }
  }
}"""


@pytest.fixture
def shop(sandbox: Process, clean_engine: Engine) -> Iterator[Shop]:
    """A freshly reset sandbox Shopify, its catalog loaded into an empty database."""
    shop = Shop(sandbox.urls["shopify"])
    shop.reset()
    shopify_sync.load_catalog(clean_engine, shop.gateway(), [1])
    yield shop
    shop.reset()


def quantities(shop: Shop, engine: Engine, sku: str = SKU) -> dict[str, int]:
    """Shopify's named quantities of the SKU at location 1."""
    answer = shop.gateway().execute(
        QUANTITIES,
        {"item": gid("InventoryItem", item_of(engine, sku)), "location": gid("Location", 1)},
    )
    pairs = answer["inventoryItem"]["inventoryLevel"]["quantities"]
    return {q["name"]: q["quantity"] for q in pairs}


def pos_sale(shop: Shop, quantity: int, sku: str = SKU) -> httpx.Response:
    return httpx.post(
        f"{shop.base}/_sandbox/inventory/pos_sale",
        json={"sku": sku, "quantity": quantity},
        timeout=10,
    )


def mirror(engine: Engine, gateway: ShopifyGateway) -> shopify_sync.HoldMirror:
    return shopify_sync.HoldMirror(engine, gateway, [1])


def relay_holds(engine: Engine, shop: Shop) -> None:
    """Deliver the due hold messages, as `dotshop relay` does (other topics are not ours)."""
    handlers = Handlers()
    mirror(engine, shop.gateway()).register(handlers)
    handlers.register("shopify.push_order", shopify_sync.OrderPusher(engine, shop.gateway(), 1))
    for _ in range(10):
        with transaction(engine) as session:
            due = session.scalar(
                select(OutboxMessage.id)
                .where(
                    OutboxMessage.topic.in_(list(handlers)),
                    OutboxMessage.status == "pending",
                )
                .limit(1)
            )
        if due is None:
            return
        relay.run_once(engine, handlers, policy=FAST_RETRY)
    raise AssertionError("hold messages still pending")


def outbox(engine: Engine, topic: str) -> list[tuple[str, str, dict[str, Any]]]:
    with transaction(engine) as session:
        rows = session.execute(
            select(OutboxMessage.ordering_key, OutboxMessage.status, OutboxMessage.payload)
            .where(OutboxMessage.topic == topic)
            .order_by(OutboxMessage.id)
        ).all()
    return [tuple(row) for row in rows]


def checkout(
    engine: Engine, gateway: StripeGateway, settings: Settings, lines: dict[str, int]
) -> dict[str, Any]:
    body = {
        "email": EMAIL,
        "lines": [{"sku": sku, "quantity": qty} for sku, qty in lines.items()],
        "shipping_address": ADDRESS,
    }
    request = CheckoutRequest(
        EMAIL, [inventory.Line(sku, qty) for sku, qty in lines.items()], ADDRESS
    )
    answer = create_checkout(
        engine,
        gateway,
        settings,
        idempotency_key=str(uuid.uuid4()),
        body=json.dumps(body).encode(),
        request=request,
    )
    assert answer.status == 201, answer.body
    return json.loads(answer.body)


def pay(engine: Engine, order_id: str) -> None:
    """What the payment webhook does when the hold is live: held -> committed, order paid."""
    with transaction(engine) as session:
        order = orders.lock(session, order_id)
        inventory.commit(session, order_id)
        orders.transition(session, order, orders.PAID, "paid", {"amount": order.amount_minor})


def kinds(engine: Engine, order_id: str) -> list[str]:
    return [kind for kind, _ in timeline(engine, order_id) if kind.startswith("shopify_hold")]


def test_a_checkouts_hold_is_queued_in_its_own_transaction_per_sku(
    shop: Shop, clean_engine: Engine, gateway: StripeGateway, settings: Settings
) -> None:
    """Issue 11: through the outbox, per-SKU ordered, so the checkout never waits on Shopify.
    Phase 1 (dotshop_checkout_phase1, migrations 0007 and 0011) writes one message per SKU."""
    other = "BTY-SERUM-30ML"
    created = checkout(clean_engine, gateway, settings, {SKU: 2, other: 1})
    messages = outbox(clean_engine, inventory.SHOPIFY_HOLD)
    assert [(key, status) for key, status, _ in messages] == [
        (f"sku:{other}", "pending"),
        (f"sku:{SKU}", "pending"),
    ]
    assert {p["sku"]: (p["order_id"], p["quantity"]) for _, _, p in messages} == {
        other: (created["order_id"], 1),
        SKU: (created["order_id"], 2),
    }
    with transaction(clean_engine) as session:
        rids = {h.sku: h.id for h in inventory.holds(session, created["order_id"])}
    assert {p["sku"]: p["reservation_id"] for _, _, p in messages} == rids
    # Nothing reached Shopify yet: the checkout answered without calling it.
    assert quantities(shop, clean_engine)["reserved"] == 0


def test_held_units_are_reserved_in_shopify_and_a_pos_sale_cannot_take_them_until_expiry(
    shop: Shop, clean_engine: Engine, gateway: StripeGateway, settings: Settings
) -> None:
    """shopify.dev inventory states: units in `reserved` are not `available`, which is all any
    channel sells; after the hold expires (sweeper) they are available again."""
    created = checkout(clean_engine, gateway, settings, {SKU: 30})
    relay_holds(clean_engine, shop)
    assert quantities(shop, clean_engine) == {
        "available": 6,
        "reserved": 30,
        "committed": 0,
        "on_hand": 36,
    }
    # Our projection counts the held units once: Shopify left them out of `available`.
    assert stock(clean_engine, SKU) == (36, 30, 0)
    assert pos_sale(shop, 7).status_code == 422
    assert pos_sale(shop, 6).status_code == 200
    assert quantities(shop, clean_engine)["reserved"] == 30

    # Shopify's updatedAt has whole seconds and a tie keeps the lower level (inventory.stale_level):
    # the units come back a second after they left, as they would in a live shop.
    shop.advance_clock(1)
    sweeper.expire_holds(clean_engine, datetime.now(UTC) + timedelta(hours=1))
    relay_holds(clean_engine, shop)
    assert quantities(shop, clean_engine) == {
        "available": 30,
        "reserved": 0,
        "committed": 0,
        "on_hand": 30,
    }
    assert kinds(clean_engine, created["order_id"]) == [
        "shopify_hold_placed",
        "shopify_hold_lifted",
    ]
    shopify_sync.repair(clean_engine, shop.gateway(), [1], full=True)
    assert_projection_equals_shopify(clean_engine, shop.gateway())
    assert stock(clean_engine, SKU) == (30, 0, 0)


def test_a_cancelled_checkout_gives_its_units_back_to_available(
    shop: Shop, clean_engine: Engine, gateway: StripeGateway, settings: Settings
) -> None:
    """Issue 11: back when the hold is released; a second release queues nothing more."""
    created = checkout(clean_engine, gateway, settings, {SKU: 3})
    relay_holds(clean_engine, shop)
    assert quantities(shop, clean_engine)["reserved"] == 3
    shop.advance_clock(1)  # a later second than the hold's (see above)
    answer = cancel_checkout(
        clean_engine,
        settings,
        checkout_id=created["id"],
        idempotency_key=str(uuid.uuid4()),
        body=b"{}",
    )
    assert answer.status == 200, answer.body
    with transaction(clean_engine) as session:
        assert inventory.release(session, created["order_id"]) == 0
    assert len(outbox(clean_engine, inventory.SHOPIFY_UNHOLD)) == 1
    relay_holds(clean_engine, shop)
    assert quantities(shop, clean_engine) == {
        "available": 36,
        "reserved": 0,
        "committed": 0,
        "on_hand": 36,
    }
    assert stock(clean_engine, SKU) == (36, 0, 0)
    assert_projection_equals_shopify(clean_engine, shop.gateway())


class DiesAfterMove(ShopifyGateway):
    """Shopify moved the units; our process dies before recording it."""

    def move_quantities(self, **kwargs: Any) -> None:
        super().move_quantities(**kwargs)
        raise RuntimeError("killed after Shopify moved the units")


def delivery(engine: Engine, topic: str, attempts: int) -> Message:
    [(key, _, payload)] = outbox(engine, topic)
    return Message(1, "obx_test", topic, key, payload, attempts)


def test_a_move_retried_after_shopify_moved_changes_shopify_once(
    shop: Shop, clean_engine: Engine, gateway: StripeGateway, settings: Settings
) -> None:
    """Changelog 'Making idempotency mandatory ... 2026-04': a retry with the same key gets the
    original result. Killed between Shopify's success and our record, the retried hold and
    the retried unhold each move the units once."""
    created = checkout(clean_engine, gateway, settings, {SKU: 4})
    with pytest.raises(RuntimeError):
        mirror(clean_engine, shop.gateway(DiesAfterMove)).hold(
            delivery(clean_engine, inventory.SHOPIFY_HOLD, 0)
        )
    assert kinds(clean_engine, created["order_id"]) == []
    mirror(clean_engine, shop.gateway()).hold(delivery(clean_engine, inventory.SHOPIFY_HOLD, 1))
    assert quantities(shop, clean_engine)["reserved"] == 4
    assert stock(clean_engine, SKU) == (36, 4, 0)

    shop.advance_clock(1)  # a later second than the hold's (see above)
    with transaction(clean_engine) as session:
        inventory.release(session, created["order_id"])
    with pytest.raises(RuntimeError):
        mirror(clean_engine, shop.gateway(DiesAfterMove)).unhold(
            delivery(clean_engine, inventory.SHOPIFY_UNHOLD, 0)
        )
    for attempt in (1, 2):
        mirror(clean_engine, shop.gateway()).unhold(
            delivery(clean_engine, inventory.SHOPIFY_UNHOLD, attempt)
        )
    assert quantities(shop, clean_engine) == {
        "available": 36,
        "reserved": 0,
        "committed": 0,
        "on_hand": 36,
    }
    assert kinds(clean_engine, created["order_id"]) == [
        "shopify_hold_placed",
        "shopify_hold_lifted",
    ]
    assert stock(clean_engine, SKU) == (36, 0, 0)


@pytest.mark.parametrize("dies", [False, True])
def test_a_paid_orders_units_leave_reserved_once_when_pushed(
    shop: Shop, clean_engine: Engine, gateway: StripeGateway, settings: Settings, dies: bool
) -> None:
    """orderCreate claims the order's units from `available` into `committed`; only then do
    they leave `reserved` (through the unhold the acknowledgement queues), so a POS sale never
    finds them available in between. A push retried after Shopify created the order still
    lifts the hold once."""
    created = checkout(clean_engine, gateway, settings, {SKU: 5})
    order_id = created["order_id"]
    relay_holds(clean_engine, shop)
    pay(clean_engine, order_id)
    pusher = shopify_sync.OrderPusher(clean_engine, shop.gateway(), [1])
    if dies:
        with pytest.raises(RuntimeError):
            shopify_sync.OrderPusher(clean_engine, shop.gateway(DiesAfterOrderCreate), [1])(
                push_message(order_id)
            )
    else:
        pusher(push_message(order_id))
    # Between the two calls Shopify's available is short, never long: no channel can take them.
    assert quantities(shop, clean_engine) == {
        "available": 26,
        "reserved": 5,
        "committed": 5,
        "on_hand": 36,
    }
    assert pos_sale(shop, 27).status_code == 422
    pusher(push_message(order_id, attempts=1))
    pusher(push_message(order_id, attempts=2))
    assert len(shop.orders_for(order_id)) == 1
    shop.advance_clock(1)  # a later second than the order's (see above)
    relay_holds(clean_engine, shop)
    assert len(outbox(clean_engine, inventory.SHOPIFY_UNHOLD)) == 1
    assert quantities(shop, clean_engine) == {
        "available": 31,
        "reserved": 0,
        "committed": 5,
        "on_hand": 36,
    }
    assert kinds(clean_engine, order_id) == ["shopify_hold_placed", "shopify_hold_lifted"]
    assert stock(clean_engine, SKU) == (31, 0, 0)
    assert_projection_equals_shopify(clean_engine, shop.gateway())


def test_a_lift_shopify_refuses_is_given_up_and_the_repair_reconciles(
    shop: Shop, clean_engine: Engine, gateway: StripeGateway, settings: Settings
) -> None:
    """InventoryMoveQuantitiesUserErrorCode INVALID_QUANTITY_NEGATIVE: someone emptied
    `reserved` in Shopify first. The same key would get the same refusal forever, so the
    message is acknowledged (not dead-lettered), the refusal recorded, and a repair brings
    our projection to Shopify."""
    created = checkout(clean_engine, gateway, settings, {SKU: 2})
    relay_holds(clean_engine, shop)
    item = gid("InventoryItem", item_of(clean_engine, SKU))
    document = "admin://staff/cleared-reservations"
    shop.advance_clock(1)  # a later second than the hold's (see above)
    emptied = shop.gateway().execute(
        MOVE,
        {
            "key": str(uuid.uuid4()),
            "input": {
                "reason": "reservation_deleted",
                "referenceDocumentUri": document,
                "changes": [
                    {
                        "inventoryItemId": item,
                        "quantity": 2,
                        "from": {
                            "locationId": gid("Location", 1),
                            "name": "reserved",
                            "ledgerDocumentUri": document,
                            "changeFromQuantity": None,
                        },
                        "to": {
                            "locationId": gid("Location", 1),
                            "name": "available",
                            "ledgerDocumentUri": None,
                            "changeFromQuantity": None,
                        },
                    }
                ],
            },
        },
    )["inventoryMoveQuantities"]
    assert emptied["userErrors"] == []
    with transaction(clean_engine) as session:
        inventory.release(session, created["order_id"])
    relay_holds(clean_engine, shop)
    assert [status for _, status, _ in outbox(clean_engine, inventory.SHOPIFY_UNHOLD)] == ["sent"]
    [refused] = [
        data
        for kind, data in timeline(clean_engine, created["order_id"])
        if kind.endswith("refused")
    ]
    assert refused["direction"] == "lift"
    assert refused["codes"] == ["INVALID_QUANTITY_NEGATIVE"]
    assert quantities(shop, clean_engine)["available"] == 36
    shopify_sync.repair(clean_engine, shop.gateway(), [1], full=True)
    assert_projection_equals_shopify(clean_engine, shop.gateway())
    assert stock(clean_engine, SKU) == (36, 0, 0)


def test_a_hold_in_shopifys_reserved_is_not_inventory_drift(
    shop: Shop, clean_engine: Engine, gateway: StripeGateway, settings: Settings
) -> None:
    """checks.inventory `inventory_drift` compares our projection with Shopify's live
    `available`, which leaves out the units of our holds in `reserved`; our projection counts
    them, so the check takes them back out instead of reporting them as drift."""
    checking = Settings(
        grace_seconds=0,
        stripe_api_key=DEFAULT_STRIPE_API_KEY,
        stripe_api_base=settings.stripe_api_base,
        shopify_shop=DEFAULT_SHOPIFY_SHOP,
        shopify_site=shop.gateway().site,
        shopify_access_token=DEFAULT_SHOPIFY_ACCESS_TOKEN,
        shopify_location_id=1,
    )
    checkout(clean_engine, gateway, settings, {SKU: 4})
    relay_holds(clean_engine, shop)
    assert quantities(shop, clean_engine)["available"] == 32
    assert stock(clean_engine, SKU)[0] == 36
    result = run(clean_engine, checking, "inventory_drift")
    assert (result.status, result.violations) == ("ok", [])


def test_units_back_in_available_within_the_holds_second_count_at_once(
    shop: Shop, clean_engine: Engine, gateway: StripeGateway, settings: Settings
) -> None:
    """Shopify's updatedAt has whole seconds and a tie keeps the lower level
    (inventory.stale_level). The unhold reads the level after its own move, and a level of
    that second we recorded before the move describes Shopify before it: the read wins, so
    the projection is exact at once rather than after a settling repair."""
    created = checkout(clean_engine, gateway, settings, {SKU: 3})
    relay_holds(clean_engine, shop)
    with transaction(clean_engine) as session:
        inventory.release(session, created["order_id"])
    relay_holds(clean_engine, shop)
    assert quantities(shop, clean_engine)["available"] == 36
    assert stock(clean_engine, SKU) == (36, 0, 0)
