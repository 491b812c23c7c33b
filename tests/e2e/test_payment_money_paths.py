"""Money paths against the real stack (API processes, sandbox Stripe and Shopify, PostgreSQL):
dispute inquiries, refunds Stripe fails later, payments that differ from their order, and fees
fetched on their own ordering key."""

from __future__ import annotations

import uuid

from core import relay
from core.outbox import RetryPolicy
from tests.e2e.conftest import Stack, wait_for
from tests.e2e.helpers import admin, checkout, order, paid_order, resolve_dispute, skus_with_stock
from tests.e2e.test_payment_lifecycle import ledger_net


def kinds(stack: Stack, order_id: str) -> list[str]:
    return [e["kind"] for e in order(stack, order_id)["timeline"]]


def outbox_topics(stack: Stack, order_id: str) -> list[tuple[str, str, str]]:
    return [
        tuple(r)
        for r in stack.sql(
            "SELECT topic, ordering_key, status FROM outbox WHERE payload->>'order_id' = :o "
            "ORDER BY id",
            o=order_id,
        )
    ]


def test_an_inquiry_holds_the_order_then_closes_without_moving_money(stack: Stack) -> None:
    """Stripe: an inquiry (`warning_needs_response` -> `warning_closed`) withdraws nothing; the
    order is disputed while it is open and paid again once it closes."""
    body = paid_order(stack, skus_with_stock(stack)[8], pm="pm_card_createDisputeInquiry")
    got = wait_for(lambda: (o := order(stack, body["order_id"]))["status"] == "disputed" and o)
    dispute_id = next(
        e["data"]["dispute_id"] for e in got["timeline"] if e["kind"] == "dispute_opened"
    )
    resolve_dispute(stack, dispute_id, "warning_closed")
    assert wait_for(lambda: order(stack, body["order_id"])["status"] == "paid")
    assert "inquiry_closed" in kinds(stack, body["order_id"])
    # Settled again, the order ships, whether or not a push skipped it while disputed.
    stack.settle()
    assert kinds(stack, body["order_id"]).count("pushed_to_shopify") == 1
    assert ledger_net(stack, body["order_id"], "expenses:disputes") == 0
    assert ledger_net(stack, body["order_id"], "expenses:dispute_fees") == 0


def test_a_refund_stripe_fails_later_frees_the_amount_and_reverses_the_ledger(
    stack: Stack,
) -> None:
    """Stripe's pm_card_refundFail: the refund succeeds, then fails (`refund.failed`)."""
    body = paid_order(stack, skus_with_stock(stack)[9], pm="pm_card_refundFail")
    order_id, amount = body["order_id"], body["amount"]
    path = f"/admin/v1/orders/{order_id}/refunds"
    first = admin(stack, "POST", path, json={}, headers={"Idempotency-Key": str(uuid.uuid4())})
    assert first.status_code == 202, first.text
    stack.settle()

    def failed() -> bool:
        rows = stack.sql("SELECT status FROM refund WHERE order_id = :o", o=order_id)
        return [r[0] for r in rows] == ["failed"]

    wait_for(failed)
    stack.settle()
    got = order(stack, order_id)
    assert (got["status"], got["refunded"]) == ("paid", 0)
    assert {"refunded", "refund_failed"} <= set(kinds(stack, order_id))
    assert ledger_net(stack, order_id, "revenue:refunds") == 0
    assert ledger_net(stack, order_id, "assets:stripe_balance") == amount - stack.scalar(
        "SELECT coalesce(sum(e.amount_minor), 0) FROM ledger_entry e JOIN ledger_txn t "
        "ON t.id = e.txn_id WHERE t.order_id = :o AND e.account = 'expenses:stripe_fees'",
        o=order_id,
    )
    # Each change to the paid order was queued for Shopify on the order's key.
    pushes = [t for t in outbox_topics(stack, order_id) if t[0] == "shopify.push_order"]
    assert len(pushes) >= 3 and {k for _, k, _ in pushes} == {f"order:{order_id}"}
    # The failed amount is refundable again.
    again = admin(stack, "POST", path, json={}, headers={"Idempotency-Key": str(uuid.uuid4())})
    assert again.status_code == 202 and again.json()["refund"]["amount"] == amount


def test_a_payment_for_another_amount_is_flagged_and_never_sold(stack: Stack) -> None:
    """DESIGN.md (unreconciled payment: amount mismatch). The PaymentIntent's amount is changed
    in Stripe before it is paid, so Stripe takes more than the order's total."""
    sku = skus_with_stock(stack)[10]
    before = stack.sql("SELECT reserved, committed FROM stock WHERE sku = :s", s=sku)[0]
    body = checkout(stack, [{"sku": sku, "quantity": 1}]).json()
    pi_id = body["payment"]["payment_intent_id"]
    client = stack.stripe_client()
    client.v1.payment_intents.update(pi_id, {"amount": body["amount"] + 100})
    client.v1.payment_intents.confirm(pi_id, {"payment_method": "pm_card_visa"})
    stack.settle()

    got = order(stack, body["order_id"])
    assert (got["status"], got["cancel_reason"]) == ("cancelled", "payment_mismatch")
    flag = stack.sql(
        "SELECT data, resolved_at FROM order_flag "
        "WHERE order_id = :o AND kind = 'payment_mismatch'",
        o=body["order_id"],
    )
    assert flag[0][0]["received_amount"] == body["amount"] + 100 and flag[0][1] is None
    assert ledger_net(stack, body["order_id"], "revenue:sales") == 0
    assert ledger_net(stack, body["order_id"], "liabilities:unmatched_payments") == -(
        body["amount"] + 100
    )
    assert tuple(stack.sql("SELECT reserved, committed FROM stock WHERE sku = :s", s=sku)[0]) == (
        tuple(before)
    )
    assert "shopify.push_order" not in [t[0] for t in outbox_topics(stack, body["order_id"])]


def test_a_stripe_read_outage_holds_back_fees_but_not_the_shopify_push(stack: Stack) -> None:
    """Fees wait on their own ordering key (`balance:<order>`): per-key order (DESIGN.md, outbox)
    must not make the order's Shopify push wait for Stripe."""
    body = checkout(stack, [{"sku": skus_with_stock(stack)[11], "quantity": 1}]).json()
    order_id = body["order_id"]
    stack.stripe_client().v1.payment_intents.confirm(
        body["payment"]["payment_intent_id"], {"payment_method": "pm_card_visa"}
    )
    stack.wait_webhooks()
    assert order(stack, order_id)["status"] == "paid"
    patient = RetryPolicy(max_attempts=100, base_seconds=0.0, cap_seconds=0.0)
    stack.faults("stripe", error_rate=1.0, error_status=503, path_prefix="/v1/payment_intents")
    try:
        for _ in range(3):
            relay.run_once(stack.engine, stack.handlers(), policy=patient)
        topics = {t: (k, s) for t, k, s in outbox_topics(stack, order_id)}
        assert topics["shopify.push_order"] == (f"order:{order_id}", "sent")
        assert topics["stripe.book_balance_transactions"] == (f"balance:{order_id}", "pending")
        assert "pushed_to_shopify" in kinds(stack, order_id)
    finally:
        stack.clear_faults()
    stack.drain()
    assert ledger_net(stack, order_id, "expenses:stripe_fees") > 0
