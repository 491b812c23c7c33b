"""Payouts and the balance they drain, through the real `stripe` SDK: settlement from `pending`
to `available`, automatic payouts that sweep the available balance, the `payout` filter of
the Balance Transactions list, payout events and failures."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import stripe

from sandbox.stripe.balance import SETTLEMENT_SECONDS
from tests.sandbox.stripe_support import Control, Receiver


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    yield receiver
    receiver.close()


def _paid(sdk: stripe.StripeClient, amount: int) -> stripe.PaymentIntent:
    return sdk.v1.payment_intents.create(
        {"amount": amount, "currency": "usd", "payment_method": "pm_card_visa", "confirm": True}
    )


def _txn(sdk: stripe.StripeClient, source: str) -> stripe.BalanceTransaction:
    return sdk.v1.balance_transactions.list({"source": source}).data[0]


def _run(control: Control) -> list[dict]:
    response = control.post("/payouts/run")
    assert response.status_code == 200, response.text
    return response.json()["payouts"]


def _sales_and_refund(sdk: stripe.StripeClient) -> list[stripe.BalanceTransaction]:
    """Two card payments and a partial refund: the transactions a payout should cover."""
    a, b = _paid(sdk, 5000), _paid(sdk, 2000)
    refund = sdk.v1.refunds.create({"payment_intent": a.id, "amount": 1500})
    return [_txn(sdk, a.latest_charge), _txn(sdk, b.latest_charge), _txn(sdk, refund.id)]


def _amounts(entries: list) -> dict[str, int]:
    return {e.currency: e.amount for e in entries}


def test_balance_settles_from_pending_to_available_on_available_on(sdk, control):
    """Stripe's Balance: incoming funds are `pending` until `available_on` (two days on the
    standard US schedule), then `available`; a refund leaves the balance at once. Each
    transaction carries the reporting category Stripe documents for its type."""
    charge_txn, other_txn, refund_txn = _sales_and_refund(sdk)
    assert (charge_txn.status, charge_txn.reporting_category) == ("pending", "charge")
    assert charge_txn.available_on == charge_txn.created + SETTLEMENT_SECONDS
    assert (refund_txn.status, refund_txn.reporting_category) == ("available", "refund")
    assert refund_txn.available_on == refund_txn.created and refund_txn.net == -1500
    nets = charge_txn.net + other_txn.net
    balance = sdk.v1.balance.retrieve()
    assert _amounts(balance.pending) == {"usd": nets}
    assert _amounts(balance.available) == {"usd": -1500}

    control.post("/clock/advance", seconds=SETTLEMENT_SECONDS)
    assert sdk.v1.balance_transactions.retrieve(charge_txn.id).status == "available"
    balance = sdk.v1.balance.retrieve()
    assert _amounts(balance.pending) == {"usd": 0}
    assert _amounts(balance.available) == {"usd": nets - 1500}


def test_automatic_payout_sweeps_available_nets_and_lists_them_by_payout(sdk, control):
    """Stripe's automatic payouts pay out the available balance; its amount is the sum of the
    nets it covers, and `balance_transactions.list(payout=...)` (for automatic payouts only)
    returns exactly those transactions plus the payout's own `payout` transaction."""
    covered = _sales_and_refund(sdk)
    control.post("/clock/advance", seconds=SETTLEMENT_SECONDS)
    still_pending = _txn(sdk, _paid(sdk, 700).latest_charge)

    [run] = _run(control)
    payout = sdk.v1.payouts.retrieve(run["id"])
    assert payout.id.startswith("po_") and payout.automatic and payout.currency == "usd"
    assert payout.amount == sum(t.net for t in covered)
    assert (payout.status, payout.reconciliation_status) == ("paid", "completed")

    listed = sdk.v1.balance_transactions.list({"payout": payout.id, "limit": 100}).data
    own = sdk.v1.balance_transactions.retrieve(payout.balance_transaction)
    assert (own.type, own.reporting_category, own.net) == ("payout", "payout", -payout.amount)
    assert sorted(t.id for t in listed) == sorted([own.id, *(t.id for t in covered)])
    assert still_pending.id not in {t.id for t in listed}
    categories = {t.id: t.reporting_category for t in listed}
    assert [categories[t.id] for t in covered] == ["charge", "charge", "refund"]
    assert _amounts(sdk.v1.balance.retrieve().available) == {"usd": 0}
    assert [p.id for p in sdk.v1.payouts.list().data] == [payout.id]


def test_payout_events_are_signed_and_arrive_in_order(sdk, control, receiver):
    """Stripe emits `payout.created`, `payout.paid`, then `payout.reconciliation_completed`
    (once the automatic payout's transactions can be queried), as signed webhooks and Events."""
    wanted = ["payout.created", "payout.paid", "payout.reconciliation_completed"]
    endpoint = sdk.v1.webhook_endpoints.create({"url": receiver.url, "enabled_events": wanted})
    _paid(sdk, 3000)
    control.post("/clock/advance", seconds=SETTLEMENT_SECONDS)
    [run] = _run(control)
    assert control.wait_webhooks()
    events = receiver.events(endpoint.secret)
    assert [e.type for e in events] == wanted
    assert {e.data.object.id for e in events} == {run["id"]}
    assert [e.data.object.status for e in events] == ["pending", "paid", "paid"]
    assert events[-1].data.object.reconciliation_status == "completed"
    listed = sdk.v1.events.list({"type": "payout.*"}).data
    assert [e.id for e in reversed(listed)] == [e.id for e in events]


def test_run_with_nothing_available_makes_no_payout(sdk, control):
    """Stripe pays out only an available balance: pending funds wait, and a second run after
    everything was paid out creates nothing."""
    _paid(sdk, 4000)
    assert _run(control) == []  # still pending
    control.post("/clock/advance", seconds=SETTLEMENT_SECONDS)
    assert len(_run(control)) == 1
    assert _run(control) == []
    assert len(sdk.v1.payouts.list().data) == 1


def test_manual_payout_limited_to_available_and_not_reconcilable(sdk, control):
    """Stripe's Create Payout: a manual payout (`automatic=false`) can take at most the available
    balance, and the `payout` filter of the Balance Transactions list is for automatic payouts
    only."""
    _paid(sdk, 10000)
    with pytest.raises(stripe.InvalidRequestError) as info:
        sdk.v1.payouts.create({"amount": 100, "currency": "usd"})
    assert info.value.code == "balance_insufficient"
    control.post("/clock/advance", seconds=SETTLEMENT_SECONDS)
    manual = sdk.v1.payouts.create({"amount": 2500, "currency": "usd", "metadata": {"k": "v"}})
    assert not manual.automatic and manual.status == "paid" and manual.metadata["k"] == "v"
    assert manual.reconciliation_status == "not_applicable"
    with pytest.raises(stripe.InvalidRequestError) as info:
        sdk.v1.balance_transactions.list({"payout": manual.id})
    assert info.value.param == "payout"
    [run] = _run(control)  # the rest of the available balance
    assert run["amount"] == 10000 - 320 - 2500
    created = manual.created
    assert [p.id for p in sdk.v1.payouts.list({"created": {"gte": created}, "limit": 1})] == [
        run["id"]
    ]
    second = sdk.v1.payouts.list({"starting_after": run["id"]}).data
    assert [p.id for p in second] == [manual.id]


def test_failed_payout_reports_failure_code_and_returns_funds(sdk, control):
    """Stripe's `payout.failed`: the payout gets a `failure_code` and a `payout_failure`
    transaction (reporting category `payout_reversal`) puts the amount back in the balance."""
    control.faults(extra={"stripe_payout_failure_code": "account_closed"})
    _paid(sdk, 6000)
    control.post("/clock/advance", seconds=SETTLEMENT_SECONDS)
    [run] = _run(control)
    failed = sdk.v1.payouts.retrieve(run["id"])
    assert (failed.status, failed.failure_code) == ("failed", "account_closed")
    back = sdk.v1.balance_transactions.retrieve(failed.failure_balance_transaction)
    assert (back.type, back.reporting_category, back.net) == (
        "payout_failure",
        "payout_reversal",
        failed.amount,
    )
    assert _amounts(sdk.v1.balance.retrieve().available) == {"usd": failed.amount}
    types = [e.type for e in reversed(sdk.v1.events.list({"type": "payout.*"}).data)]
    assert types == ["payout.created", "payout.failed"]

    control.faults(extra={})
    [retry] = _run(control)
    assert retry["amount"] == failed.amount and retry["status"] == "paid"
