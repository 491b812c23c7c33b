"""Webhooks delivered twice, reordered, delayed and redelivered end in the same state as a clean
run: the inbox makes a redelivery a no-op and the payment rules do not depend on order."""

from __future__ import annotations

import uuid

import httpx
import pytest

from tests.e2e.conftest import Stack
from tests.e2e.helpers import (
    admin,
    checkout,
    disputed_order,
    order,
    paid_order,
    resolve_dispute,
    skus_with_stock,
)


def run_scenario(stack: Stack, skus: list[str]) -> dict[str, str]:
    """Three customers: one refunded in two steps, one disputed and won, one declined."""
    refunded = paid_order(stack, skus[0], quantity=2)
    path = f"/admin/v1/orders/{refunded['order_id']}/refunds"
    assert (
        admin(
            stack,
            "POST",
            path,
            json={"amount": 500},
            headers={"Idempotency-Key": str(uuid.uuid4())},
        ).status_code
        == 202
    )
    stack.settle()
    assert (
        admin(
            stack, "POST", path, json={}, headers={"Idempotency-Key": str(uuid.uuid4())}
        ).status_code
        == 202
    )
    stack.settle()

    disputed, _, dispute_id = disputed_order(stack, skus[1])
    resolve_dispute(stack, dispute_id, "won")
    stack.settle()

    declined = checkout(stack, [{"sku": skus[2], "quantity": 1}]).json()
    with pytest.raises(Exception, match="declined"):
        stack.stripe_client().v1.payment_intents.confirm(
            declined["payment"]["payment_intent_id"], {"payment_method": "pm_card_chargeDeclined"}
        )
    stack.settle()
    return {
        "refunded": refunded["order_id"],
        "disputed": disputed["order_id"],
        "declined": declined["order_id"],
    }


def final_state(stack: Stack, orders: dict[str, str]) -> dict[str, object]:
    state: dict[str, object] = {}
    for role, order_id in orders.items():
        o = order(stack, order_id)
        ledger = stack.sql(
            "SELECT t.kind, e.account, sum(e.amount_minor), count(*) FROM ledger_entry e "
            "JOIN ledger_txn t ON t.id = e.txn_id "
            "WHERE t.order_id = :o GROUP BY t.kind, e.account ORDER BY 1, 2",
            o=order_id,
        )
        state[role] = {
            "status": o["status"],
            "cancel_reason": o["cancel_reason"],
            "refunded": o["refunded"],
            "amount": o["amount"],
            "ledger": [tuple(r) for r in ledger],
        }
    return state


def redeliver_everything_reversed(stack: Stack, orders: dict[str, str]) -> int:
    events = stack.stripe_client().v1.events.list({"limit": 100}).data
    ours = [e for e in events if _order_of(stack, e) in orders.values()]
    for event in ours:  # the list is newest first: redeliver in reverse order of occurrence
        httpx.post(f"{stack.stripe_base}/_sandbox/events/{event.id}/resend", json={}, timeout=10)
    stack.settle()
    return len(ours)


def _order_of(stack: Stack, event: object) -> str | None:
    obj = event.data.object  # type: ignore[attr-defined]
    pi = obj.id if obj.object == "payment_intent" else getattr(obj, "payment_intent", None)
    return (
        stack.scalar("SELECT id FROM orders WHERE payment_intent_id = :pi", pi=pi) if pi else None
    )


def test_duplicated_reordered_redelivered_webhooks_converge(stack: Stack) -> None:
    skus = skus_with_stock(stack, minimum=5)
    clean = final_state(stack, run_scenario(stack, skus[0:3]))

    stack.faults("stripe", webhook_duplicate_rate=1.0, webhook_reorder=True, webhook_delay_ms=50)
    try:
        faulted_orders = run_scenario(stack, skus[0:3])
        faulted = final_state(stack, faulted_orders)
        deliveries = httpx.get(f"{stack.stripe_base}/_sandbox/webhooks", timeout=10).json()[
            "deliveries"
        ]
        assert len({d["event_id"] for d in deliveries}) < len(deliveries)  # duplicates happened
        resent = redeliver_everything_reversed(stack, faulted_orders)
        assert resent >= 6
    finally:
        stack.clear_faults()
    assert faulted == clean
    assert final_state(stack, faulted_orders) == clean
