"""Every Stripe outbox handler converges when its first attempt dies: before the Stripe call,
during it (Stripe applied the request and the response was lost), or after Stripe answered but
before we recorded it. The retry (same Stripe idempotency key, DESIGN.md "Idempotency") makes
exactly one Stripe object, one ledger posting and the right order state."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from core import relay
from core.outbox import Handlers, Message, RetryPolicy
from core.payment_effects import StripeEffects
from tests.e2e.conftest import Stack
from tests.e2e.helpers import admin, checkout, order, paid_order, skus_with_stock

PHASES = ("before_call", "response_lost", "after_call")
# Retries at once and never dead-letter within a test.
PATIENT = RetryPolicy(max_attempts=100, base_seconds=0.0, cap_seconds=0.0)
# The gateway method each handler calls Stripe through.
GATEWAY_METHOD = {
    "stripe.refund": "refund",
    "stripe.cancel_payment_intent": "cancel_payment_intent",
    "stripe.book_balance_transactions": "latest_charge",
}


class InjectedCrash(Exception):
    """Our process dies here (once)."""


def once() -> Callable[[], None]:
    armed = [True]

    def fire() -> None:
        if armed[0]:
            armed[0] = False
            raise InjectedCrash

    return fire


def crashing_handlers(stack: Stack, topic: str, phase: str) -> Handlers:
    """The real handlers, with one crash injected into our own process at `phase`."""
    gateway = stack.stripe_gateway()
    fire = once()
    if phase == "after_call":
        real = getattr(gateway, GATEWAY_METHOD[topic])

        def answered_then_crash(*args: Any, **kwargs: Any) -> Any:
            result = real(*args, **kwargs)
            fire()
            return result

        setattr(gateway, GATEWAY_METHOD[topic], answered_then_crash)
    handlers = Handlers()
    StripeEffects(stack.engine, gateway).register(handlers)
    if phase == "before_call":
        handler = handlers[topic]

        def crash_then_call(message: Message) -> None:
            fire()
            handler(message)

        handlers[topic] = crash_then_call
    return handlers


def first_attempt_dies(stack: Stack, topic: str, phase: str, order_id: str, path: str) -> None:
    """Run the relay until the order's `topic` message has failed once, then retry normally."""

    def attempts() -> tuple[int, str]:
        row = stack.sql(
            "SELECT attempts, status FROM outbox WHERE topic = :t AND payload->>'order_id' = :o",
            t=topic,
            o=order_id,
        )
        return tuple(row[0])  # type: ignore[return-value]

    assert attempts() == (0, "pending")
    handlers = crashing_handlers(stack, topic, phase)
    if phase == "response_lost":
        stack.faults("stripe", error_rate=1.0, error_phase="after", path_prefix=path)
    try:
        relay.run_once(stack.engine, handlers, policy=PATIENT)
    finally:
        stack.clear_faults()
    assert attempts() == (1, "pending")
    for _ in range(5):
        relay.run_once(stack.engine, stack.handlers(), policy=PATIENT)
    stack.settle()
    assert attempts()[1] == "sent"


def ledger_kinds(stack: Stack, order_id: str) -> list[str]:
    rows = stack.sql("SELECT kind FROM ledger_txn WHERE order_id = :o ORDER BY kind", o=order_id)
    return [r[0] for r in rows]


@pytest.mark.parametrize("phase", PHASES)
def test_a_refund_retried_after_dying_is_made_once(stack: Stack, phase: str) -> None:
    body = paid_order(stack, skus_with_stock(stack)[12 + PHASES.index(phase)])
    order_id = body["order_id"]
    path = f"/admin/v1/orders/{order_id}/refunds"
    requested = admin(
        stack, "POST", path, json={"amount": 1000}, headers={"Idempotency-Key": str(uuid.uuid4())}
    )
    assert requested.status_code == 202, requested.text

    first_attempt_dies(stack, "stripe.refund", phase, order_id, "/v1/refunds")

    pi_id = body["payment"]["payment_intent_id"]
    made = stack.stripe_client().v1.refunds.list({"payment_intent": pi_id}).data
    assert [r.amount for r in made] == [1000]
    got = order(stack, order_id)
    assert (got["status"], got["refunded"]) == ("partially_refunded", 1000)
    assert ledger_kinds(stack, order_id).count("refund") == 1
    rows = stack.sql("SELECT status, stripe_refund_id FROM refund WHERE order_id = :o", o=order_id)
    assert [tuple(r) for r in rows] == [("succeeded", made[0].id)]


@pytest.mark.parametrize("phase", PHASES)
def test_a_payment_intent_cancel_retried_after_dying_converges(stack: Stack, phase: str) -> None:
    body = checkout(stack, [{"sku": skus_with_stock(stack)[15], "quantity": 1}]).json()
    order_id, pi_id = body["order_id"], body["payment"]["payment_intent_id"]
    cancelled = stack_post_cancel(stack, body["id"])
    assert cancelled == "cancelled"

    first_attempt_dies(
        stack, "stripe.cancel_payment_intent", phase, order_id, f"/v1/payment_intents/{pi_id}"
    )

    assert stack.stripe_client().v1.payment_intents.retrieve(pi_id).status == "canceled"
    assert order(stack, order_id)["status"] == "cancelled"
    assert ledger_kinds(stack, order_id) == []


def stack_post_cancel(stack: Stack, checkout_id: str) -> str:
    response = httpx.post(
        f"{stack.api['us']}/v1/checkouts/{checkout_id}/cancel",
        headers={"Idempotency-Key": str(uuid.uuid4())},
        timeout=10,
    )
    return response.json()["status"]


@pytest.mark.parametrize("phase", PHASES)
def test_a_charge_balance_transaction_retried_after_dying_is_booked_once(
    stack: Stack, phase: str
) -> None:
    body = checkout(stack, [{"sku": skus_with_stock(stack)[16], "quantity": 1}]).json()
    order_id, pi_id = body["order_id"], body["payment"]["payment_intent_id"]
    stack.stripe_client().v1.payment_intents.confirm(pi_id, {"payment_method": "pm_card_visa"})
    stack.wait_webhooks()

    first_attempt_dies(
        stack, "stripe.book_balance_transactions", phase, order_id, f"/v1/payment_intents/{pi_id}"
    )

    assert ledger_kinds(stack, order_id) == ["payment", "stripe_settlement"]
    charge = (
        stack.stripe_client()
        .v1.payment_intents.retrieve(pi_id, {"expand": ["latest_charge.balance_transaction"]})
        .latest_charge
    )
    fee = stack.scalar(
        "SELECT e.amount_minor FROM ledger_entry e JOIN ledger_txn t ON t.id = e.txn_id "
        "WHERE t.order_id = :o AND t.kind = 'stripe_settlement'"
        " AND e.account = 'expenses:stripe_fees'",
        o=order_id,
    )
    assert fee == charge.balance_transaction.fee
