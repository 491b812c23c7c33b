"""Stripe events applied to orders, stock and the ledger on a real PostgreSQL: any order, any
number of deliveries, the same end state; unknown PaymentIntents are kept, never dropped."""

from __future__ import annotations

import itertools
import secrets
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from core import audit, catalog, inbox, inventory, ledger, orders, payments, refunds
from core.catalog import ProductData, VariantData
from core.db import transaction
from core.ids import new_id
from core.models import (
    LedgerEntry,
    LedgerTransaction,
    Order,
    OrderFlag,
    OutboxMessage,
    Refund,
    WebhookInbox,
)

T0 = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
CREATED = int(T0.timestamp())
UNIT_PRICE = 1000
QUANTITY = 2
AMOUNT = UNIT_PRICE * QUANTITY
DISPUTE_AMOUNT = 500
DISPUTE_FEE = 1500  # what the sandbox (like Stripe) withdraws, and returns when the dispute is won
_numbers = itertools.count(1)


def stripe_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


@dataclass(frozen=True)
class Sale:
    """One order awaiting payment, and the Stripe ids its events talk about."""

    order_id: str
    sku: str
    payment_intent_id: str
    charge_id: str
    dispute_id: str


# --------------------------------------------------------------------------------- seeding


def seed_skus(engine: Engine, count: int, available: int) -> list[str]:
    """Products with one variant each, priced UNIT_PRICE usd, and Shopify's level for them."""
    skus = []
    with transaction(engine) as s:
        for _ in range(count):
            n = next(_numbers)
            sku = f"SKU-{n:05d}"
            catalog.upsert_product(
                s,
                ProductData(
                    shopify_product_id=n,
                    handle=f"product-{n}",
                    title=f"Product {n}",
                    updated_at=T0,
                    variants=[VariantData(sku, sku, n, n, {"usd": UNIT_PRICE})],
                ),
            )
            inventory.apply_shopify_level(s, sku, available, T0)
            skus.append(sku)
    return skus


def seed_sku(engine: Engine, available: int) -> str:
    (sku,) = seed_skus(engine, 1, available)
    return sku


def place_orders(
    engine: Engine, skus: list[str], *, record_payment_intent: bool = True
) -> list[Sale]:
    """What checkout's first phase does (order + hold), then what its second records (the PI)."""
    sales = []
    expires_at = datetime.now(UTC) + timedelta(minutes=15)
    with transaction(engine) as s:
        for sku in skus:
            sale = Sale(new_id("ord"), sku, stripe_id("pi"), stripe_id("ch"), stripe_id("dp"))
            order = orders.create(
                s,
                order_id=sale.order_id,
                checkout_id=new_id("chk"),
                region="us",
                currency="usd",
                email="buyer@example.com",
                shipping_address={"country": "US"},
                lines=[orders.PricedLine(sku, QUANTITY, UNIT_PRICE)],
                expires_at=expires_at,
            )
            inventory.reserve(s, sale.order_id, [inventory.Line(sku, QUANTITY)], expires_at)
            if record_payment_intent:
                order.payment_intent_id = sale.payment_intent_id
            sales.append(sale)
    return sales


def place_order(engine: Engine, sku: str, *, record_payment_intent: bool = True) -> Sale:
    (sale,) = place_orders(engine, [sku], record_payment_intent=record_payment_intent)
    return sale


def record_payment_intent(engine: Engine, sale: Sale) -> None:
    with transaction(engine) as s:
        orders.lock(s, sale.order_id).payment_intent_id = sale.payment_intent_id


# ------------------------------------------------------------------ Stripe-shaped payloads


def event(type_: str, obj: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": stripe_id("evt"),
        "object": "event",
        "api_version": "2024-06-20",
        "created": CREATED,
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": type_,
        "data": {"object": obj},
    }


def payment_intent(
    sale: Sale, status: str, *, metadata: dict[str, str] | None = None, **fields: Any
) -> dict[str, Any]:
    succeeded = status == "succeeded"
    return {
        "id": sale.payment_intent_id,
        "object": "payment_intent",
        "amount": AMOUNT,
        "amount_received": AMOUNT if succeeded else 0,
        "currency": "usd",
        "status": status,
        "created": CREATED,
        "latest_charge": sale.charge_id if succeeded else None,
        "last_payment_error": None,
        "cancellation_reason": None,
        "metadata": {"order_id": sale.order_id} if metadata is None else metadata,
        **fields,
    }


def charge(sale: Sale, amount_refunded: int) -> dict[str, Any]:
    return {
        "id": sale.charge_id,
        "object": "charge",
        "amount": AMOUNT,
        "amount_captured": AMOUNT,
        "amount_refunded": amount_refunded,
        "captured": True,
        "currency": "usd",
        "created": CREATED,
        "disputed": False,
        "paid": True,
        "payment_intent": sale.payment_intent_id,
        "refunded": amount_refunded >= AMOUNT,
        "status": "succeeded",
        "metadata": {},
    }


def refund(
    sale: Sale, refund_id: str, amount: int, status: str = "succeeded", **fields: Any
) -> dict[str, Any]:
    return {
        "id": refund_id,
        "object": "refund",
        "amount": amount,
        "currency": "usd",
        "charge": sale.charge_id,
        "payment_intent": sale.payment_intent_id,
        "status": status,
        "reason": None,
        "failure_reason": "expired_or_canceled_card" if status == "failed" else None,
        "metadata": {},
        "created": CREATED,
        **fields,
    }


def charge_listing_refunds(sale: Sale, refunds: list[dict[str, Any]]) -> dict[str, Any]:
    """A charge as older API versions (or `expand[]=refunds`) show it: with its refunds."""
    total = sum(r["amount"] for r in refunds if r["status"] == "succeeded")
    return {**charge(sale, total), "refunds": {"object": "list", "data": refunds}}


def balance_transaction(bt_id: str, amount: int, fee: int, category: str) -> dict[str, Any]:
    return {
        "id": bt_id,
        "object": "balance_transaction",
        "amount": amount,
        "fee": fee,
        "net": amount - fee,
        "currency": "usd",
        "created": CREATED,
        "available_on": CREATED,
        "type": "adjustment",
        "reporting_category": category,
    }


def dispute(sale: Sale, status: str, *bts: dict[str, Any]) -> dict[str, Any]:
    """A dispute object; `bts` are its balance transactions so far (none for an inquiry)."""
    return {
        "id": sale.dispute_id,
        "object": "dispute",
        "amount": DISPUTE_AMOUNT,
        "currency": "usd",
        "charge": sale.charge_id,
        "payment_intent": sale.payment_intent_id,
        "reason": "fraudulent",
        "status": status,
        "created": CREATED,
        "balance_transactions": list(bts),
        "metadata": {},
    }


def withdrawal(sale: Sale) -> dict[str, Any]:
    """Like Stripe (and the sandbox): the funds and the dispute fee leave when it opens ..."""
    return balance_transaction(
        f"txn_w{sale.dispute_id[3:]}", -DISPUTE_AMOUNT, DISPUTE_FEE, "dispute"
    )


def reinstatement(sale: Sale) -> dict[str, Any]:
    """... and a won dispute brings both back in a second balance transaction."""
    return balance_transaction(
        f"txn_r{sale.dispute_id[3:]}", DISPUTE_AMOUNT, -DISPUTE_FEE, "dispute_reversal"
    )


def lifecycle(sale: Sale) -> list[dict[str, Any]]:
    """Paid, refunded 500 (refund.created) then 1500 in total (a charge listing both refunds),
    disputed and won (no money moved in this stream: see `dispute_won_stream`)."""
    first = refund(sale, f"re_a{sale.charge_id[3:]}", 500)
    second = refund(sale, f"re_b{sale.charge_id[3:]}", 1000)
    return [
        event("payment_intent.succeeded", payment_intent(sale, "succeeded")),
        event("refund.created", first),
        event("charge.refunded", charge_listing_refunds(sale, [first, second])),
        event("charge.dispute.created", dispute(sale, "needs_response")),
        event("charge.dispute.closed", dispute(sale, "won")),
    ]


# ------------------------------------------------------------------------------- driving


def deliver(engine: Engine, payload: dict[str, Any]) -> str:
    """One webhook delivery: inbox + apply in its own transaction, as the receiver does."""
    with transaction(engine) as s:
        return payments.accept_and_apply(s, payload)


def sweep(engine: Engine) -> int:
    with transaction(engine) as s:
        return payments.retry_flagged(s)


def inbox_rows(engine: Engine, payloads: list[dict[str, Any]]) -> dict[str, tuple[str, Any]]:
    ids = [p["id"] for p in payloads]
    with Session(engine) as s:
        rows = s.execute(
            select(WebhookInbox.event_id, WebhookInbox.status, WebhookInbox.error).where(
                WebhookInbox.event_id.in_(ids)
            )
        ).all()
    return {event_id: (status, error) for event_id, status, error in rows}


def end_state(engine: Engine, sale: Sale, payloads: list[dict[str, Any]]) -> dict[str, Any]:
    """Everything an order's events may change, without ids or times that differ per order."""
    with Session(engine) as s:
        order = s.get(Order, sale.order_id)
        assert order is not None
        sums = s.execute(
            select(LedgerEntry.account, func.sum(LedgerEntry.amount_minor))
            .join(LedgerTransaction, LedgerTransaction.id == LedgerEntry.txn_id)
            .where(LedgerTransaction.order_id == sale.order_id)
            .group_by(LedgerEntry.account)
        ).all()
        stock = inventory.stock_snapshot(s, sale.sku)
        assert stock is not None
        outbox_topics = s.scalars(
            select(OutboxMessage.topic).where(
                OutboxMessage.ordering_key.in_(
                    [payments.order_key(sale.order_id), payments.balance_key(sale.order_id)]
                )
            )
        ).all()
        return {
            "status": order.status,
            "cancel_reason": order.cancel_reason,
            "refunded": order.refunded_minor,
            "paid": order.paid_at is not None,
            "payment_intent_id": order.payment_intent_id == sale.payment_intent_id,
            "ledger": {account: int(total) for account, total in sums},
            "stock": (stock.shopify_available, stock.reserved, stock.committed, stock.sellable),
            "holds": [(h.quantity, h.status) for h in inventory.holds(s, sale.order_id)],
            # Which messages, not how many: the Shopify push is state-driven, so how often a
            # change was pushed depends on how events were grouped, never the end state.
            "outbox": set(outbox_topics),
            "inbox": dict(Counter(status for status, _ in inbox_rows(engine, payloads).values())),
            "trial_balance_zero": all(v == 0 for v in ledger.trial_balance(s).values()),
        }


# Paid 2000, refunded 1500, a dispute opened and won (its money is in other tests).
SETTLED = {
    "status": orders.PARTIALLY_REFUNDED,
    "cancel_reason": None,
    "refunded": 1500,
    "paid": True,
    "payment_intent_id": True,
    "ledger": {
        ledger.STRIPE_BALANCE: AMOUNT - 1500,
        ledger.REVENUE: -AMOUNT,
        ledger.REFUNDS: 1500,
    },
    "stock": (QUANTITY, 0, QUANTITY, 0),
    "holds": [(QUANTITY, inventory.COMMITTED)],
    "outbox": {payments.BOOK_BALANCE, payments.PUSH_ORDER_TO_SHOPIFY},
    "inbox": {inbox.PROCESSED: 5},
    "trial_balance_zero": True,
}


# ------------------------------------------------------------------------------- (a) order


def test_every_order_of_one_orders_events_ends_in_the_same_state(clean_engine: Engine) -> None:
    orderings = list(itertools.permutations(range(5)))
    sales = place_orders(clean_engine, seed_skus(clean_engine, len(orderings), QUANTITY))
    ends: dict[tuple[int, ...], dict[str, Any]] = {}
    for order, sale in zip(orderings, sales, strict=True):
        payloads = lifecycle(sale)
        for i in order:
            deliver(clean_engine, payloads[i])
        sweep(clean_engine)
        ends[order] = end_state(clean_engine, sale, payloads)

    assert len(ends) == 120
    assert ends[(0, 1, 2, 3, 4)] == SETTLED
    differing = {order: end for order, end in ends.items() if end != SETTLED}
    assert differing == {}


def test_refunds_and_disputes_before_the_payment_wait_flagged_for_it(clean_engine: Engine) -> None:
    sale = place_order(clean_engine, seed_sku(clean_engine, QUANTITY))
    paid, *later = lifecycle(sale)

    assert [deliver(clean_engine, p) for p in later] == [inbox.FLAGGED] * 4
    assert {e for _, e in inbox_rows(clean_engine, later).values()} == {
        payments.WAITING_FOR_PAYMENT
    }
    assert end_state(clean_engine, sale, later)["ledger"] == {}

    assert deliver(clean_engine, paid) == inbox.PROCESSED
    assert end_state(clean_engine, sale, [paid, *later]) == SETTLED
    assert sweep(clean_engine) == 0


# -------------------------------------------------------------------------- (b) duplicates


def test_every_event_delivered_twice_changes_nothing(clean_engine: Engine) -> None:
    # Twice in a row, in reverse order (so the first copies wait flagged for the payment) ...
    sale = place_order(clean_engine, seed_sku(clean_engine, QUANTITY))
    payloads = lifecycle(sale)
    results = [deliver(clean_engine, p) for p in reversed(payloads) for _ in range(2)]
    assert results[1::2] == ["duplicate"] * 5
    sweep(clean_engine)
    assert end_state(clean_engine, sale, payloads) == SETTLED

    # ... and the whole stream redelivered after everything was applied.
    sale = place_order(clean_engine, seed_sku(clean_engine, QUANTITY))
    payloads = lifecycle(sale)
    assert [deliver(clean_engine, p) for p in payloads] == [inbox.PROCESSED] * 5
    assert [deliver(clean_engine, p) for p in payloads] == ["duplicate"] * 5
    assert sweep(clean_engine) == 0
    assert end_state(clean_engine, sale, payloads) == SETTLED


def test_the_same_facts_under_new_event_ids_post_nothing_more(clean_engine: Engine) -> None:
    sale = place_order(clean_engine, seed_sku(clean_engine, QUANTITY))
    payloads = lifecycle(sale)
    for p in payloads:
        deliver(clean_engine, p)
    again = [event(p["type"], p["data"]["object"]) for p in payloads]  # Stripe re-sent facts
    assert [deliver(clean_engine, p) for p in again] == [inbox.PROCESSED] * 5
    sweep(clean_engine)
    assert end_state(clean_engine, sale, payloads) == SETTLED
    with Session(clean_engine) as s:
        kinds = Counter(t.kind for t in ledger.transactions_for_order(s, sale.order_id))
    assert kinds == {"payment": 1, "refund": 2}


# ---------------------------------------------------------------- (c) unknown PaymentIntents


def test_an_unknown_payment_intent_is_kept_flagged_until_the_order_records_it(
    clean_engine: Engine,
) -> None:
    sale = place_order(clean_engine, seed_sku(clean_engine, QUANTITY), record_payment_intent=False)
    # No metadata: nothing in the event points at one of our orders.
    paid = event("payment_intent.succeeded", payment_intent(sale, "succeeded", metadata={}))
    refunded = event("refund.created", refund(sale, stripe_id("re"), 500))
    payloads = [refunded, paid]

    assert [deliver(clean_engine, p) for p in payloads] == [inbox.FLAGGED] * 2
    assert sweep(clean_engine) == 0  # still nobody's: kept, not dropped
    assert inbox_rows(clean_engine, payloads) == {
        refunded["id"]: (inbox.FLAGGED, payments.UNKNOWN_PAYMENT_INTENT),
        paid["id"]: (inbox.FLAGGED, payments.UNKNOWN_PAYMENT_INTENT),
    }
    before = end_state(clean_engine, sale, payloads)
    assert (before["status"], before["paid"], before["ledger"]) == (
        orders.AWAITING_PAYMENT,
        False,
        {},
    )
    assert before["holds"] == [(QUANTITY, inventory.HELD)]

    record_payment_intent(clean_engine, sale)
    assert sweep(clean_engine) == 2
    after = end_state(clean_engine, sale, payloads)
    assert after["inbox"] == {inbox.PROCESSED: 2}
    assert (after["status"], after["refunded"], after["paid"]) == (
        orders.PARTIALLY_REFUNDED,
        500,
        True,
    )
    assert after["ledger"] == {
        ledger.STRIPE_BALANCE: AMOUNT - 500,
        ledger.REVENUE: -AMOUNT,
        ledger.REFUNDS: 500,
    }
    assert after["holds"] == [(QUANTITY, inventory.COMMITTED)]
    assert sweep(clean_engine) == 0


def test_a_flagged_event_is_retried_even_behind_many_that_never_match(
    clean_engine: Engine,
) -> None:
    # Payments of another integration on the same Stripe account stay flagged forever; they
    # must not keep the sweeper from ever reaching events that can be applied now.
    strangers = [
        event(
            "payment_intent.succeeded",
            payment_intent(
                Sale("ord_x", "x", stripe_id("pi"), stripe_id("ch"), stripe_id("dp")),
                "succeeded",
                metadata={},
            ),
        )
        for _ in range(150)
    ]
    for p in strangers:
        assert deliver(clean_engine, p) == inbox.FLAGGED
    sale = place_order(clean_engine, seed_sku(clean_engine, QUANTITY), record_payment_intent=False)
    paid = event("payment_intent.succeeded", payment_intent(sale, "succeeded", metadata={}))
    assert deliver(clean_engine, paid) == inbox.FLAGGED
    record_payment_intent(clean_engine, sale)

    for _ in range(3):  # a few sweeps of the default batch size
        sweep(clean_engine)
    assert inbox_rows(clean_engine, [paid]) == {paid["id"]: (inbox.PROCESSED, None)}
    assert end_state(clean_engine, sale, [paid])["status"] == orders.PAID
    assert set(inbox_rows(clean_engine, strangers).values()) == {
        (inbox.FLAGGED, payments.UNKNOWN_PAYMENT_INTENT)
    }


def test_metadata_links_an_order_whose_payment_intent_was_never_recorded(
    clean_engine: Engine,
) -> None:
    # The checkout crashed after Stripe created the PaymentIntent, before recording its id.
    sale = place_order(clean_engine, seed_sku(clean_engine, QUANTITY), record_payment_intent=False)
    early_refund = event("refund.created", refund(sale, stripe_id("re"), 500))  # PI id only
    paid = event("payment_intent.succeeded", payment_intent(sale, "succeeded"))
    later_refund = event("refund.created", refund(sale, stripe_id("re"), 1000))
    payloads = [early_refund, paid, later_refund]

    assert deliver(clean_engine, early_refund) == inbox.FLAGGED
    assert deliver(clean_engine, paid) == inbox.PROCESSED
    with Session(clean_engine) as s:
        assert s.get(Order, sale.order_id).payment_intent_id == sale.payment_intent_id
    assert deliver(clean_engine, later_refund) == inbox.PROCESSED
    sweep(clean_engine)

    end = end_state(clean_engine, sale, payloads)
    assert end["inbox"] == {inbox.PROCESSED: 3}
    assert (end["status"], end["refunded"]) == (orders.PARTIALLY_REFUNDED, 1500)
    assert end["ledger"] == {
        ledger.STRIPE_BALANCE: AMOUNT - 1500,
        ledger.REVENUE: -AMOUNT,
        ledger.REFUNDS: 1500,
    }
    assert end["holds"] == [(QUANTITY, inventory.COMMITTED)]


def test_metadata_naming_an_unknown_order_is_an_unknown_payment_intent(
    clean_engine: Engine,
) -> None:
    sale = place_order(clean_engine, seed_sku(clean_engine, QUANTITY), record_payment_intent=False)
    stray = Sale("ord_doesnotexist", sale.sku, stripe_id("pi"), stripe_id("ch"), stripe_id("dp"))
    paid = event("payment_intent.succeeded", payment_intent(stray, "succeeded"))
    assert deliver(clean_engine, paid) == inbox.FLAGGED
    assert inbox_rows(clean_engine, [paid])[paid["id"]] == (
        inbox.FLAGGED,
        payments.UNKNOWN_PAYMENT_INTENT,
    )
    assert end_state(clean_engine, sale, [])["holds"] == [(QUANTITY, inventory.HELD)]


# ------------------------------------------------------------- (d) failed/canceled, then paid


def assert_stock_sound(engine: Engine, sku: str) -> None:
    with Session(engine) as s:
        stock = inventory.stock_snapshot(s, sku)
    assert stock is not None
    assert stock.reserved >= 0 and stock.committed >= 0 and stock.sellable >= 0, stock


ENDINGS = {
    "payment_failed": (
        "payment_intent.payment_failed",
        "requires_payment_method",
        {
            "last_payment_error": {
                "type": "card_error",
                "code": "card_declined",
                "decline_code": "insufficient_funds",
            },
        },
        "payment_failed",
    ),
    "canceled": (
        "payment_intent.canceled",
        "canceled",
        {"cancellation_reason": "abandoned", "canceled_at": CREATED},
        "abandoned",
    ),
}


def ending_event(sale: Sale, ending: str) -> tuple[dict[str, Any], str]:
    """The event that ends a payment attempt, and the cancel reason it should leave."""
    type_, status, fields, reason = ENDINGS[ending]
    return event(type_, payment_intent(sale, status, **fields)), reason


@pytest.mark.parametrize("ending", sorted(ENDINGS))
def test_a_failed_or_canceled_payment_releases_the_hold_and_cancels(
    clean_engine: Engine, ending: str
) -> None:
    sku = seed_sku(clean_engine, QUANTITY)
    sale = place_order(clean_engine, sku)
    ended, reason = ending_event(sale, ending)

    assert deliver(clean_engine, ended) == inbox.PROCESSED
    assert deliver(clean_engine, ended) == "duplicate"
    end = end_state(clean_engine, sale, [ended])
    assert (end["status"], end["cancel_reason"], end["paid"]) == (
        orders.CANCELLED,
        reason,
        False,
    )
    assert end["holds"] == [(QUANTITY, inventory.RELEASED)]
    assert end["stock"] == (QUANTITY, 0, 0, QUANTITY)
    assert end["ledger"] == {} and end["outbox"] == set()
    assert_stock_sound(clean_engine, sku)


@pytest.mark.parametrize("ending", sorted(ENDINGS))
def test_paid_after_the_hold_was_released_takes_the_stock_again(
    clean_engine: Engine, ending: str
) -> None:
    sku = seed_sku(clean_engine, QUANTITY)
    sale = place_order(clean_engine, sku)
    ended, _ = ending_event(sale, ending)
    paid = event("payment_intent.succeeded", payment_intent(sale, "succeeded"))

    assert deliver(clean_engine, ended) == inbox.PROCESSED
    assert deliver(clean_engine, paid) == inbox.PROCESSED
    assert deliver(clean_engine, paid) == "duplicate"
    end = end_state(clean_engine, sale, [ended, paid])
    assert (end["status"], end["cancel_reason"], end["paid"]) == (orders.PAID, None, True)
    assert end["holds"] == [(QUANTITY, inventory.COMMITTED)]
    assert end["stock"] == (QUANTITY, 0, QUANTITY, 0)
    assert end["ledger"] == {ledger.STRIPE_BALANCE: AMOUNT, ledger.REVENUE: -AMOUNT}
    assert end["outbox"] == {payments.BOOK_BALANCE, payments.PUSH_ORDER_TO_SHOPIFY}
    assert_stock_sound(clean_engine, sku)


@pytest.mark.parametrize("ending", sorted(ENDINGS))
def test_paid_after_the_stock_was_sold_to_another_is_cancelled_and_refunded(
    clean_engine: Engine, ending: str
) -> None:
    sku = seed_sku(clean_engine, QUANTITY)
    sale = place_order(clean_engine, sku)
    ended, _ = ending_event(sale, ending)
    paid = event("payment_intent.succeeded", payment_intent(sale, "succeeded"))

    assert deliver(clean_engine, ended) == inbox.PROCESSED
    other = place_order(clean_engine, sku)  # the released units go to another checkout
    assert deliver(clean_engine, paid) == inbox.PROCESSED
    assert deliver(clean_engine, paid) == "duplicate"
    assert_stock_sound(clean_engine, sku)

    end = end_state(clean_engine, sale, [ended, paid])
    assert (end["status"], end["cancel_reason"], end["paid"]) == (
        orders.CANCELLED,
        payments.OUT_OF_STOCK_AFTER_PAYMENT,
        True,
    )
    assert end["holds"] == [(QUANTITY, inventory.RELEASED)]
    assert end["stock"] == (QUANTITY, QUANTITY, 0, 0)  # still the other checkout's hold only
    assert end["ledger"] == {ledger.STRIPE_BALANCE: AMOUNT, ledger.REVENUE: -AMOUNT}
    assert end["outbox"] == {payments.BOOK_BALANCE, payments.REFUND}
    with Session(clean_engine) as s:
        message = s.scalar(select(OutboxMessage).where(OutboxMessage.topic == payments.REFUND))
        row = s.scalar(select(Refund).where(Refund.order_id == sale.order_id))
        # The automatic refund goes through the refund table like an admin's.
        assert message.payload == {"order_id": sale.order_id, "refund_id": row.id}
        assert (row.amount_minor, row.status, row.refund_key) == (
            AMOUNT,
            refunds.REQUESTED,
            f"{sale.order_id}-oos",
        )
    assert end_state(clean_engine, other, [])["holds"] == [(QUANTITY, inventory.HELD)]

    # The automatic refund comes back as a webhook: the money nets to zero, the order stays
    # cancelled, and no stock moves.
    refunded = event(
        "refund.created",
        refund(sale, stripe_id("re"), AMOUNT, metadata={"dotshop_refund": f"{sale.order_id}-oos"}),
    )
    assert deliver(clean_engine, refunded) == inbox.PROCESSED
    end = end_state(clean_engine, sale, [ended, paid, refunded])
    assert (end["status"], end["refunded"]) == (orders.CANCELLED, AMOUNT)
    assert end["ledger"] == {
        ledger.STRIPE_BALANCE: 0,
        ledger.REVENUE: -AMOUNT,
        ledger.REFUNDS: AMOUNT,
    }
    assert end["stock"] == (QUANTITY, QUANTITY, 0, 0)
    assert_stock_sound(clean_engine, sku)


# ------------------------------------------------- (e) disputes, inquiries, failed refunds


def assert_converges(engine: Engine, stream: Any, expected: dict[str, Any]) -> None:
    """Deliver the stream of events in every order, each to a fresh order: one end state."""
    size = len(stream(Sale("ord_probe", "x", "pi_probe", "ch_probe", "dp_probe")))
    orderings = list(itertools.permutations(range(size)))
    sales = place_orders(engine, seed_skus(engine, len(orderings), QUANTITY))
    differing = {}
    for order, sale in zip(orderings, sales, strict=True):
        payloads = stream(sale)
        for i in order:
            deliver(engine, payloads[i])
        sweep(engine)
        end = end_state(engine, sale, payloads)
        if end != expected:
            differing[order] = end
    assert differing == {}


def paid_only(**changes: Any) -> dict[str, Any]:
    """The end state of a paid order, no refund, with `changes`."""
    base = {
        **SETTLED,
        "status": orders.PAID,
        "refunded": 0,
        "ledger": {ledger.STRIPE_BALANCE: AMOUNT, ledger.REVENUE: -AMOUNT},
    }
    return {**base, **changes}


def dispute_won_stream(sale: Sale) -> list[dict[str, Any]]:
    w, r = withdrawal(sale), reinstatement(sale)
    return [
        event("payment_intent.succeeded", payment_intent(sale, "succeeded")),
        event("charge.dispute.created", dispute(sale, "needs_response", w)),
        event("charge.dispute.funds_withdrawn", dispute(sale, "needs_response", w)),
        event("charge.dispute.funds_reinstated", dispute(sale, "won", w, r)),
        event("charge.dispute.closed", dispute(sale, "won", w, r)),
    ]


def test_a_won_dispute_books_only_its_balance_transactions_in_any_order(
    clean_engine: Engine,
) -> None:
    """Stripe: a chargeback's money moves with `charge.dispute.funds_withdrawn` and
    `charge.dispute.funds_reinstated` (the dispute's balance transactions); `closed` as `won`
    returns the order to its settled status."""
    ledger_after = {
        ledger.STRIPE_BALANCE: AMOUNT,
        ledger.REVENUE: -AMOUNT,
        ledger.DISPUTES: 0,
        ledger.DISPUTE_FEES: 0,
    }
    expected = paid_only(ledger=ledger_after, inbox={inbox.PROCESSED: 5})
    assert_converges(clean_engine, dispute_won_stream, expected)


def test_a_lost_dispute_stays_disputed_with_its_money_withdrawn(clean_engine: Engine) -> None:
    def stream(sale: Sale) -> list[dict[str, Any]]:
        w = withdrawal(sale)
        return [
            event("payment_intent.succeeded", payment_intent(sale, "succeeded")),
            event("charge.dispute.created", dispute(sale, "needs_response", w)),
            event("charge.dispute.funds_withdrawn", dispute(sale, "needs_response", w)),
            event("charge.dispute.closed", dispute(sale, "lost", w)),
        ]

    expected = paid_only(
        status=orders.DISPUTED,
        ledger={
            ledger.STRIPE_BALANCE: AMOUNT - DISPUTE_AMOUNT - DISPUTE_FEE,
            ledger.REVENUE: -AMOUNT,
            ledger.DISPUTES: DISPUTE_AMOUNT,
            ledger.DISPUTE_FEES: DISPUTE_FEE,
        },
        inbox={inbox.PROCESSED: 4},
    )
    assert_converges(clean_engine, stream, expected)


def test_an_inquiry_moves_no_money_and_its_close_settles_the_order(clean_engine: Engine) -> None:
    """Stripe: an inquiry (`warning_needs_response` -> `warning_closed`) has no balance
    transactions. It used to post the disputed amount and leave the order disputed forever."""

    def stream(sale: Sale) -> list[dict[str, Any]]:
        return [
            event("payment_intent.succeeded", payment_intent(sale, "succeeded")),
            event("charge.dispute.created", dispute(sale, "warning_needs_response")),
            event("charge.dispute.updated", dispute(sale, "warning_under_review")),
            event("charge.dispute.closed", dispute(sale, "warning_closed")),
        ]

    assert_converges(clean_engine, stream, paid_only(inbox={inbox.PROCESSED: 4}))


def test_an_open_inquiry_holds_the_order_disputed(clean_engine: Engine) -> None:
    sale = place_order(clean_engine, seed_sku(clean_engine, QUANTITY))
    deliver(clean_engine, event("payment_intent.succeeded", payment_intent(sale, "succeeded")))
    opened = event("charge.dispute.created", dispute(sale, "warning_needs_response"))
    deliver(clean_engine, opened)
    assert end_state(clean_engine, sale, [])["status"] == orders.DISPUTED
    deliver(clean_engine, event("charge.dispute.closed", dispute(sale, "warning_closed")))
    end = end_state(clean_engine, sale, [])
    assert end["status"] == orders.PAID
    assert ledger.DISPUTES not in end["ledger"]
    # A push delivered while the order was disputed skipped it: settled again, it is queued
    # again (the handler reads the order's state, so an extra one is harmless).
    with Session(clean_engine) as s:
        pushes = s.scalar(
            select(func.count())
            .select_from(OutboxMessage)
            .where(
                OutboxMessage.topic == payments.PUSH_ORDER_TO_SHOPIFY,
                OutboxMessage.ordering_key == payments.order_key(sale.order_id),
            )
        )
    assert pushes == 2


def test_a_late_dispute_fee_is_booked_after_an_earlier_zero_one(clean_engine: Engine) -> None:
    """Each balance transaction is its own ledger transaction (`txn:txn_...`): a dispute seen
    first with no money does not block the withdrawal reported later."""
    sale = place_order(clean_engine, seed_sku(clean_engine, QUANTITY))
    deliver(clean_engine, event("payment_intent.succeeded", payment_intent(sale, "succeeded")))
    deliver(clean_engine, event("charge.dispute.funds_withdrawn", dispute(sale, "needs_response")))
    w = withdrawal(sale)
    deliver(
        clean_engine, event("charge.dispute.funds_withdrawn", dispute(sale, "needs_response", w))
    )
    with Session(clean_engine) as s:
        sources = [t.source for t in ledger.transactions_for_order(s, sale.order_id)]
    assert sources == [f"payment:{sale.payment_intent_id}", f"txn:{w['id']}"]


def refund_failed_stream(sale: Sale) -> list[dict[str, Any]]:
    re_id = f"re_f{sale.charge_id[3:]}"
    return [
        event("payment_intent.succeeded", payment_intent(sale, "succeeded")),
        event("refund.created", refund(sale, re_id, 500)),
        event("charge.refund.updated", refund(sale, re_id, 500, "failed")),
        event("refund.failed", refund(sale, re_id, 500, "failed")),
    ]


def test_a_failed_refund_counts_for_nothing_in_any_order(clean_engine: Engine) -> None:
    """Stripe: a refund can go `succeeded` -> `failed` (`refund.failed`); its money comes back
    (the failure balance transaction), so the ledger reverses it and the order is paid again."""
    expected = paid_only(
        ledger={ledger.STRIPE_BALANCE: AMOUNT, ledger.REVENUE: -AMOUNT, ledger.REFUNDS: 0},
        inbox={inbox.PROCESSED: 4},
    )
    assert_converges(clean_engine, refund_failed_stream, expected)


def test_a_failed_full_refund_takes_a_refunded_order_back_to_paid(clean_engine: Engine) -> None:
    sale = place_order(clean_engine, seed_sku(clean_engine, QUANTITY))
    deliver(clean_engine, event("payment_intent.succeeded", payment_intent(sale, "succeeded")))
    deliver(clean_engine, event("refund.created", refund(sale, "re_full", AMOUNT)))
    assert end_state(clean_engine, sale, [])["status"] == orders.REFUNDED
    assert end_state(clean_engine, sale, [])["holds"] == [(QUANTITY, inventory.RELEASED)]
    deliver(clean_engine, event("refund.failed", refund(sale, "re_full", AMOUNT, "failed")))
    end = end_state(clean_engine, sale, [])
    assert (end["status"], end["refunded"]) == (orders.PAID, 0)
    # Paid again, so its units are committed again (the push will ship them).
    assert end["holds"] == [(QUANTITY, inventory.COMMITTED)]
    assert end["stock"] == (QUANTITY, 0, QUANTITY, 0)
    with Session(clean_engine) as s:
        order = orders.lock(s, sale.order_id)
        assert refunds.remaining(s, order) == AMOUNT
        kinds = [t.kind for t in ledger.transactions_for_order(s, sale.order_id)]
    assert sorted(kinds) == ["payment", "refund", "refund_failed"]


def test_a_failed_full_refund_whose_units_were_sold_meanwhile_is_flagged(
    clean_engine: Engine,
) -> None:
    """Never confirm stock that is not there (DESIGN.md): the refund gave the units back, another
    checkout took them, then Stripe failed the refund. The order is paid again but flagged for a
    human; stock stays exact."""
    sku = seed_sku(clean_engine, QUANTITY)
    sale = place_order(clean_engine, sku)
    deliver(clean_engine, event("payment_intent.succeeded", payment_intent(sale, "succeeded")))
    deliver(clean_engine, event("refund.created", refund(sale, "re_full", AMOUNT)))
    place_order(clean_engine, sku)  # the freed units, held by someone else
    deliver(clean_engine, event("refund.failed", refund(sale, "re_full", AMOUNT, "failed")))
    end = end_state(clean_engine, sale, [])
    assert end["status"] == orders.PAID
    assert end["holds"] == [(QUANTITY, inventory.RELEASED)]
    assert end["stock"] == (QUANTITY, QUANTITY, 0, 0)
    with Session(clean_engine) as s:
        flags = s.scalars(select(OrderFlag.kind).where(OrderFlag.order_id == sale.order_id))
        assert list(flags) == [payments.STOCK_LOST_AFTER_FAILED_REFUND]


# ------------------------------------------------------------------- (f) payment mismatch


def test_an_overpaid_mismatched_payment_can_be_refunded_in_full(clean_engine: Engine) -> None:
    """Stripe took more than the order's amount: refunding all of it empties the suspense
    account; the order counts at most its own amount as refunded (its CHECK holds)."""
    sale = place_order(clean_engine, seed_sku(clean_engine, QUANTITY))
    received = AMOUNT + 500
    paid = payment_intent(sale, "succeeded", amount=received, amount_received=received)
    assert deliver(clean_engine, event("payment_intent.succeeded", paid)) == inbox.PROCESSED
    back = event("refund.created", refund(sale, "re_over", received))
    assert deliver(clean_engine, back) == inbox.PROCESSED
    end = end_state(clean_engine, sale, [])
    assert end["refunded"] == AMOUNT
    assert end["ledger"].get(ledger.UNMATCHED_PAYMENTS, 0) == 0
    assert end["ledger"].get(ledger.STRIPE_BALANCE, 0) == 0


@pytest.mark.parametrize(
    ("amount", "currency"), [(AMOUNT - 500, "usd"), (AMOUNT, "eur")], ids=["amount", "currency"]
)
def test_a_payment_that_differs_from_its_order_is_flagged_not_sold(
    clean_engine: Engine, amount: int, currency: str
) -> None:
    """DESIGN.md: an amount/currency mismatch is unreconciled money, not a sale: suspense
    account in the charge's currency, order cancelled and flagged, hold released, no push."""
    sku = seed_sku(clean_engine, QUANTITY)
    sale = place_order(clean_engine, sku)
    paid = event(
        "payment_intent.succeeded",
        payment_intent(sale, "succeeded", amount=amount, amount_received=amount, currency=currency),
    )
    assert deliver(clean_engine, paid) == inbox.PROCESSED
    assert deliver(clean_engine, paid) == "duplicate"
    end = end_state(clean_engine, sale, [paid])
    assert (end["status"], end["cancel_reason"]) == (orders.CANCELLED, payments.PAYMENT_MISMATCH)
    assert end["holds"] == [(QUANTITY, inventory.RELEASED)]
    assert end["stock"] == (QUANTITY, 0, 0, QUANTITY)
    assert end["outbox"] == {payments.BOOK_BALANCE}
    assert end["trial_balance_zero"]
    with Session(clean_engine) as s:
        assert ledger.balances(s) == {
            (ledger.STRIPE_BALANCE, currency): amount,
            (ledger.UNMATCHED_PAYMENTS, currency): -amount,
        }
        flag = s.get(OrderFlag, (sale.order_id, orders.PAYMENT_MISMATCH))
        assert flag is not None and flag.resolved_at is None
        assert flag.data == {
            "payment_intent_id": sale.payment_intent_id,
            "expected_amount": AMOUNT,
            "expected_currency": "usd",
            "received_amount": amount,
            "received_currency": currency,
        }
        assert [a.action for a in audit.recent(s, subject=sale.order_id)] == ["payment.mismatch"]
        assert orders.PAYMENT_MISMATCH in [k for _, k, _ in orders.view(s, sale.order_id).timeline]

    # A human refunds it in the Dashboard: the money leaves the suspense account.
    back = event("refund.created", refund(sale, stripe_id("re"), amount, currency=currency))
    assert deliver(clean_engine, back) == inbox.PROCESSED
    with Session(clean_engine) as s:
        assert ledger.account_balance(s, ledger.UNMATCHED_PAYMENTS, currency) == 0
        assert ledger.account_balance(s, ledger.STRIPE_BALANCE, currency) == 0


# ------------------------------------------------------------- (g) giving up, one bad event


def test_a_flagged_event_is_abandoned_after_its_maximum_age(clean_engine: Engine) -> None:
    stray = Sale("ord_x", "x", stripe_id("pi"), stripe_id("ch"), stripe_id("dp"))
    lost = event("payment_intent.succeeded", payment_intent(stray, "succeeded", metadata={}))
    assert deliver(clean_engine, lost) == inbox.FLAGGED
    with transaction(clean_engine) as s:
        assert payments.retry_flagged(s) == 0
    assert inbox_rows(clean_engine, [lost])[lost["id"]][0] == inbox.FLAGGED
    later = datetime.now(UTC) + payments.MAX_FLAGGED_AGE + timedelta(minutes=1)
    with transaction(clean_engine) as s:
        assert payments.retry_flagged(s, now=later) == 0
    status, error = inbox_rows(clean_engine, [lost])[lost["id"]]
    assert status == inbox.ABANDONED
    assert error == f"{payments.ABANDONED_TOO_OLD}: {payments.UNKNOWN_PAYMENT_INTENT}"
    with transaction(clean_engine) as s:  # never picked up again
        assert inbox.flagged(s, provider="stripe") == []


def test_a_flagged_event_is_abandoned_after_its_maximum_attempts(
    clean_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(payments, "MAX_FLAGGED_ATTEMPTS", 3)
    stray = Sale("ord_x", "x", stripe_id("pi"), stripe_id("ch"), stripe_id("dp"))
    lost = event("payment_intent.succeeded", payment_intent(stray, "succeeded", metadata={}))
    deliver(clean_engine, lost)  # attempt 1
    sweep(clean_engine)  # 2
    sweep(clean_engine)  # 3
    assert inbox_rows(clean_engine, [lost])[lost["id"]][0] == inbox.FLAGGED
    sweep(clean_engine)
    assert inbox_rows(clean_engine, [lost])[lost["id"]][0] == inbox.ABANDONED


def test_one_event_that_raises_does_not_stop_the_sweep(clean_engine: Engine) -> None:
    broken_sale = place_order(clean_engine, seed_sku(clean_engine, QUANTITY))
    good_sale = place_order(clean_engine, seed_sku(clean_engine, QUANTITY))
    # A refund without an amount cannot be applied once its payment is known.
    broken = event("refund.created", {**refund(broken_sale, stripe_id("re"), 1), "amount": None})
    good = event("refund.created", refund(good_sale, stripe_id("re"), 500))
    assert deliver(clean_engine, broken) == inbox.FLAGGED
    assert deliver(clean_engine, good) == inbox.FLAGGED
    for sale in (broken_sale, good_sale):  # payments recorded without their webhooks' effects
        with transaction(clean_engine) as s:
            s.get(Order, sale.order_id).paid_at = T0

    with transaction(clean_engine) as s:
        assert payments.retry_flagged(s) == 1
    rows = inbox_rows(clean_engine, [broken, good])
    assert rows[good["id"]] == (inbox.PROCESSED, None)
    assert rows[broken["id"]][0] == inbox.FLAGGED
    assert rows[broken["id"]][1].startswith("error: ")
