"""Payment lifecycle beyond the happy path: 3-D Secure (EU), cancel, expiry (and payments that
arrive after it), disputes and admin refunds — each checked in orders, stock, ledger and Stripe."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import httpx

from tests.e2e.conftest import Stack, wait_for
from tests.e2e.helpers import (
    admin,
    checkout,
    disputed_order,
    order,
    paid_order,
    resolve_dispute,
    skus_with_stock,
    stock,
)


def ledger_net(stack: Stack, order_id: str, account: str) -> int:
    return stack.scalar(
        "SELECT coalesce(sum(e.amount_minor), 0) FROM ledger_entry e "
        "JOIN ledger_txn t ON t.id = e.txn_id WHERE t.order_id = :o AND e.account = :a",
        o=order_id,
        a=account,
    )


def test_eu_checkout_requires_3ds_and_is_priced_in_eur(stack: Stack) -> None:
    sku = skus_with_stock(stack)[0]
    eur = stack.scalar(
        "SELECT amount_minor FROM variant_price WHERE sku = :s AND currency = 'eur'", s=sku
    )
    body = checkout(stack, [{"sku": sku, "quantity": 1}], region="eu").json()
    assert body["currency"] == "eur" and body["amount"] == eur
    client = stack.stripe_client()
    pi = client.v1.payment_intents.confirm(
        body["payment"]["payment_intent_id"], {"payment_method": "pm_card_visa"}
    )
    assert pi.status == "requires_action"  # SCA requested by the EU rules
    stack.wait_webhooks()
    assert order(stack, body["order_id"], "eu")["status"] == "awaiting_payment"
    done = httpx.post(
        f"{stack.stripe_base}/_sandbox/payment_intents/{pi.id}/authenticate",
        json={"outcome": "succeed"},
        timeout=10,
    )
    assert done.status_code == 200
    assert wait_for(lambda: order(stack, body["order_id"], "eu")["status"] == "paid")
    kinds = [e["kind"] for e in order(stack, body["order_id"], "eu")["timeline"]]
    assert "requires_action" in kinds


def test_cancel_releases_hold_and_cancels_payment_intent(stack: Stack) -> None:
    sku = skus_with_stock(stack)[1]
    before = stock(stack, sku)
    body = checkout(stack, [{"sku": sku, "quantity": 2}]).json()
    key = str(uuid.uuid4())
    url = f"{stack.api['us']}/v1/checkouts/{body['id']}/cancel"
    first = httpx.post(url, headers={"Idempotency-Key": key}, timeout=10)
    assert first.status_code == 200 and first.json()["status"] == "cancelled"
    again = httpx.post(url, headers={"Idempotency-Key": key}, timeout=10)
    assert again.content == first.content and again.headers["Idempotent-Replayed"] == "true"
    assert stock(stack, sku) == before
    stack.settle()
    pi = stack.stripe_client().v1.payment_intents.retrieve(body["payment"]["payment_intent_id"])
    assert pi.status == "canceled"
    assert order(stack, body["order_id"])["cancel_reason"] == "customer_cancelled"


def test_expired_hold_is_released_and_payment_intent_cancelled(stack: Stack) -> None:
    sku = skus_with_stock(stack)[2]
    before = stock(stack, sku)
    body = checkout(stack, [{"sku": sku, "quantity": 1}]).json()
    assert stack.sweep(datetime.now(UTC) - timedelta(minutes=1)).expired_orders == 0
    result = stack.sweep(datetime.now(UTC) + timedelta(hours=1))
    assert result.expired_orders >= 1
    got = order(stack, body["order_id"])
    assert got["status"] == "cancelled" and got["cancel_reason"] == "expired"
    assert stock(stack, sku) == before
    stack.settle()
    pi = stack.stripe_client().v1.payment_intents.retrieve(body["payment"]["payment_intent_id"])
    assert pi.status == "canceled"


def test_payment_after_expiry_rereserves_when_stock_allows(stack: Stack) -> None:
    sku = skus_with_stock(stack)[3]
    before = stock(stack, sku)
    body = checkout(stack, [{"sku": sku, "quantity": 1}]).json()
    stack.sweep(datetime.now(UTC) + timedelta(hours=1))  # expired; the cancel is still queued
    pi = stack.stripe_client().v1.payment_intents.confirm(
        body["payment"]["payment_intent_id"], {"payment_method": "pm_card_visa"}
    )
    assert pi.status == "succeeded"
    stack.settle()
    got = order(stack, body["order_id"])
    assert got["status"] == "paid" and got["cancel_reason"] is None
    available, reserved, committed = stock(stack, sku)
    assert (reserved, committed) == (before[1], before[2])  # acknowledged by Shopify already
    assert available == before[0] - 1


def test_payment_after_expiry_without_stock_is_refunded(stack: Stack) -> None:
    sku = skus_with_stock(stack)[4]
    stack.set_stock(sku, 1)
    late = checkout(stack, [{"sku": sku, "quantity": 1}]).json()
    stack.sweep(datetime.now(UTC) + timedelta(hours=1))
    other = checkout(stack, [{"sku": sku, "quantity": 1}])
    assert other.status_code == 201  # the released unit went to someone else
    stack.stripe_client().v1.payment_intents.confirm(
        late["payment"]["payment_intent_id"], {"payment_method": "pm_card_visa"}
    )
    stack.settle()
    got = order(stack, late["order_id"])
    assert got["status"] == "cancelled" and got["cancel_reason"] == "out_of_stock_after_payment"
    assert got["refunded"] == got["amount"]
    pi = stack.stripe_client().v1.payment_intents.retrieve(
        late["payment"]["payment_intent_id"], {"expand": ["latest_charge"]}
    )
    assert pi.latest_charge.amount_refunded == got["amount"]
    # Never oversold: the unit is held by exactly one checkout.
    assert stock(stack, sku) == (1, 1, 0)
    assert (
        ledger_net(stack, late["order_id"], "revenue:sales")
        + ledger_net(stack, late["order_id"], "revenue:refunds")
        == 0
    )


def test_dispute_opened_then_won(stack: Stack) -> None:
    body, got, dispute_id = disputed_order(stack, skus_with_stock(stack)[5])
    # The money moves with its own event (`charge.dispute.funds_withdrawn`), maybe a bit later.
    assert wait_for(
        lambda: ledger_net(stack, body["order_id"], "expenses:disputes") == got["amount"]
    )
    resolve_dispute(stack, dispute_id, "won")
    assert wait_for(lambda: order(stack, body["order_id"])["status"] == "paid")
    assert ledger_net(stack, body["order_id"], "expenses:disputes") == 0


def test_dispute_lost_stays_disputed(stack: Stack) -> None:
    body, got, dispute_id = disputed_order(stack, skus_with_stock(stack)[6])
    resolve_dispute(stack, dispute_id, "lost")
    wait_for(
        lambda: any(e["kind"] == "dispute_lost" for e in order(stack, body["order_id"])["timeline"])
    )
    assert order(stack, body["order_id"])["status"] == "disputed"
    assert wait_for(
        lambda: ledger_net(stack, body["order_id"], "expenses:disputes") == got["amount"]
    )


def test_admin_refunds_partial_then_rest_idempotently(stack: Stack) -> None:
    sku = skus_with_stock(stack)[7]
    body = paid_order(stack, sku)
    amount = body["amount"]
    path = f"/admin/v1/orders/{body['order_id']}/refunds"
    assert (
        httpx.post(
            f"{stack.api['us']}{path}", json={"amount": 100}, headers={"Idempotency-Key": "x"}
        ).status_code
        == 401
    )
    assert (
        admin(stack, "POST", path, json={"amount": 100}).json()["error"]["code"]
        == "idempotency_key_missing"
    )
    key = str(uuid.uuid4())
    first = admin(
        stack,
        "POST",
        path,
        json={"amount": 1000, "reason": "requested_by_customer"},
        headers={"Idempotency-Key": key},
    )
    assert first.status_code == 202, first.text
    replay = admin(
        stack,
        "POST",
        path,
        json={"amount": 1000, "reason": "requested_by_customer"},
        headers={"Idempotency-Key": key},
    )
    assert replay.content == first.content and replay.headers["Idempotent-Replayed"] == "true"
    too_much = admin(
        stack, "POST", path, json={"amount": amount}, headers={"Idempotency-Key": str(uuid.uuid4())}
    )
    assert (
        too_much.status_code == 409
        and too_much.json()["error"]["code"] == "refund_exceeds_remaining"
    )
    stack.settle()
    got = order(stack, body["order_id"])
    assert got["status"] == "partially_refunded" and got["refunded"] == 1000
    rest = admin(stack, "POST", path, json={}, headers={"Idempotency-Key": str(uuid.uuid4())})
    assert rest.status_code == 202 and rest.json()["refund"]["amount"] == amount - 1000
    stack.settle()
    got = order(stack, body["order_id"])
    assert got["status"] == "refunded" and got["refunded"] == amount
    looked_up = admin(stack, "GET", f"/admin/v1/orders/{body['order_id']}")
    assert looked_up.status_code == 200 and looked_up.json() == got
    refunds = stack.stripe_client().v1.refunds.list(
        {"payment_intent": body["payment"]["payment_intent_id"]}
    )
    assert sorted(r.amount for r in refunds.data) == sorted([1000, amount - 1000])
    assert ledger_net(stack, body["order_id"], "revenue:refunds") == amount
    audit = stack.scalar(
        "SELECT count(*) FROM audit_log WHERE subject = :o AND action = 'refund.requested'",
        o=body["order_id"],
    )
    assert audit == 2
