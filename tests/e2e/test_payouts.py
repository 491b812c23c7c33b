"""Payouts end to end (core/payouts.py, check `payout_mismatch`), through the real stripe SDK
against the sandbox and our API processes: Stripe's automatic payout sweeps the available
balance, `payout.paid` books it once, and after `payout.reconciliation_completed` the check
compares the payout with `balance_transactions?payout=` and with our ledger."""

from __future__ import annotations

import httpx
from sqlalchemy import text

from checks.payouts import CHECK, payout_mismatch
from core import ledger
from core.violations import Finding
from sandbox.stripe.balance import SETTLEMENT_SECONDS
from tests.e2e.conftest import Stack
from tests.e2e.helpers import checkout, paid_order, run_check, skus_with_stock
from tests.e2e.test_reconcile import dropped, resend
from tests.e2e.test_reconcile import reconcile as reconcile_check


def run_payouts(stack: Stack) -> list[dict]:
    """Funds become available, then Stripe's automatic payout schedule runs."""
    base = f"{stack.stripe_base}/_sandbox"
    advanced = httpx.post(f"{base}/clock/advance", json={"seconds": SETTLEMENT_SECONDS}, timeout=10)
    assert advanced.status_code == 200, advanced.text
    response = httpx.post(f"{base}/payouts/run", timeout=10)
    assert response.status_code == 200, response.text
    stack.settle()
    return response.json()["payouts"]


def check(stack: Stack) -> dict[str, Finding]:
    """One run of the check; its findings by subject."""
    return run_check(stack, CHECK, payout_mismatch)


def payout_txns(stack: Stack, payout_id: str) -> list[tuple[str, str, int]]:
    return stack.sql(
        "SELECT t.source, e.account, e.amount_minor FROM ledger_txn t"
        " JOIN ledger_entry e ON e.txn_id = t.id WHERE t.source LIKE :s ORDER BY e.account",
        s=f"%:{payout_id}",
    )


def test_a_clean_payout_is_booked_once_in_transit_and_matches(stack: Stack) -> None:
    """Stripe: an automatic payout's amount is the sum of the nets it covers; our payment minus
    its fee is that net, so the payout matches, and it moves the money to the clearing account."""
    body = paid_order(stack, skus_with_stock(stack)[0])
    [payout] = run_payouts(stack)
    net = body["amount"] - stack.scalar(
        "SELECT sum(e.amount_minor) FROM ledger_txn t JOIN ledger_entry e ON e.txn_id = t.id"
        " WHERE t.order_id = :o AND t.kind = 'stripe_settlement' AND e.account = :a",
        o=body["order_id"],
        a=ledger.STRIPE_FEES,
    )
    assert payout["amount"] == net
    assert payout_txns(stack, payout["id"]) == [
        (f"payout:{payout['id']}", ledger.PAYOUTS_IN_TRANSIT, net),
        (f"payout:{payout['id']}", ledger.STRIPE_BALANCE, -net),
    ]
    assert payout["id"] not in check(stack)
    [stored] = stack.sql(
        "SELECT value->'stripe' FROM sync_cursor WHERE name = :n", n=f"payout:{payout['id']}"
    )
    assert [(t["category"], t["net"]) for t in stored[0]] == [("charge", net)]


def test_a_payout_covering_a_charge_we_never_heard_of_is_a_mismatch(stack: Stack) -> None:
    """The payout covers a charge whose `payment_intent.succeeded` was dropped: our books miss
    that charge's net. Delivering the event (and so its fee) resolves it."""
    body = checkout(stack, [{"sku": skus_with_stock(stack)[1], "quantity": 1}]).json()
    pi_id = body["payment"]["payment_intent_id"]
    with dropped(stack):
        stack.stripe_client().v1.payment_intents.confirm(pi_id, {"payment_method": "pm_card_visa"})
    [payout] = run_payouts(stack)

    found = check(stack)[payout["id"]]
    assert (found.amount_minor, found.currency) == (payout["amount"], "usd")
    assert found.evidence["stripe_by_category"] == {"charge": payout["amount"]}
    assert found.evidence["ledger_by_category"] == {"charge": 0}

    resend(stack, "payment_intent.succeeded", pi_id)
    assert payout["id"] not in check(stack)
    open_rows = stack.sql(
        "SELECT 1 FROM violation WHERE check_name = :c AND subject = :s AND resolved_at IS NULL",
        c=CHECK,
        s=payout["id"],
    )
    assert open_rows == []


def test_redelivered_payout_events_post_once(stack: Stack) -> None:
    """Stripe may deliver an event more than once: `payout.paid` and
    `payout.reconciliation_completed` of the same payout book it once."""
    paid_order(stack, skus_with_stock(stack)[0])
    [payout] = run_payouts(stack)
    before = payout_txns(stack, payout["id"])
    for event_type in ("payout.paid", "payout.reconciliation_completed", "payout.paid"):
        resend(stack, event_type, payout["id"])
    assert payout_txns(stack, payout["id"]) == before and len(before) == 2
    assert payout["id"] not in check(stack)


def test_a_failed_payout_is_reversed(stack: Stack) -> None:
    """Stripe: a failed payout returns its funds to the balance (`payout.failed`, with a
    `payout_failure` transaction); we book the payout and its reversal, netting to zero."""
    paid_order(stack, skus_with_stock(stack)[0])
    stack.faults("stripe", extra={"stripe_payout_failure_code": "account_closed"})
    try:
        [payout] = run_payouts(stack)
    finally:
        stack.faults("stripe", extra={})
    rows = payout_txns(stack, payout["id"])
    assert {r[0] for r in rows} == {f"payout:{payout['id']}", f"payout_failed:{payout['id']}"}
    assert sum(r[2] for r in rows if r[1] == ledger.PAYOUTS_IN_TRANSIT) == 0
    # The returned funds go out with the next payout, as its `payout_reversal` transaction:
    # covered money like any other, and our `payout_failed:` booking holds it.
    [again] = run_payouts(stack)
    assert again["amount"] == payout["amount"]
    assert again["id"] not in check(stack)
    [stored] = stack.sql(
        "SELECT value->'stripe' FROM sync_cursor WHERE name = :n", n=f"payout:{again['id']}"
    )
    assert [t["category"] for t in stored[0]] == ["payout_reversal"]


def test_a_payout_whose_webhooks_were_all_lost_is_booked_by_the_reconciler(stack: Stack) -> None:
    """Stripe keeps undelivered events listable for 30 days: the reconciler's pull applies
    `payout.paid` / `payout.reconciliation_completed` from the event log, and its repair (no
    cursor) books payouts from the payouts list, so the check still verifies them."""
    from core import reconcile

    reconcile_check(stack)  # the pull's cursor now follows the event log
    for repair in (False, True):
        paid_order(stack, skus_with_stock(stack)[0])
        with dropped(stack):
            [payout] = run_payouts(stack)
        assert payout_txns(stack, payout["id"]) == []
        if repair:  # Stripe no longer has our cursor event: the pull lists objects instead
            with stack.engine.begin() as conn:
                conn.execute(
                    text("DELETE FROM sync_cursor WHERE name = :n"), {"n": reconcile.EVENTS_CURSOR}
                )
        reconcile_check(stack)
        assert [r[0] for r in payout_txns(stack, payout["id"])] == [f"payout:{payout['id']}"] * 2
        assert payout["id"] not in check(stack)
        [stored] = stack.sql(
            "SELECT value->'stripe' FROM sync_cursor WHERE name = :n", n=f"payout:{payout['id']}"
        )
        assert stored[0], "verified against its balance transactions"
