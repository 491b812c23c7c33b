"""The ledger speaks Stripe's balance (core/balance_txns.py), end to end through the real stripe
SDK against the sandbox, whose account settles in USD only, like a US Stripe account: an EU
order is charged in EUR and Stripe converts it into USD in its balance transaction.

Stripe API reference, BalanceTransaction: `amount`, `fee` and `net` are in the balance's
`currency`; "if you charge a customer 10.00 EUR, the PaymentIntent's amount is 1000 and
currency is eur. If this converts to 12.34 USD in your Stripe account, the BalanceTransaction's
amount is 1234, its currency is usd, and the exchange_rate is 1.234"; funds are `pending` until
`available_on`.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx

from core import balance_txns, ledger, payments
from core.db import transaction
from core.outbox import Message
from core.payment_effects import StripeEffects
from tests.e2e.conftest import Stack, wait_for
from tests.e2e.helpers import admin, checkout, order, skus_with_stock
from tests.e2e.test_payouts import check, run_payouts


def eu_paid_order(stack: Stack, sku: str, pm: str = "pm_card_visa") -> dict:
    """An EU checkout (EUR), confirmed and authenticated (SCA), paid and settled."""
    body = checkout(stack, [{"sku": sku, "quantity": 1}], region="eu").json()
    assert body["currency"] == "eur"
    pi = stack.stripe_client().v1.payment_intents.confirm(
        body["payment"]["payment_intent_id"], {"payment_method": pm}
    )
    done = httpx.post(
        f"{stack.stripe_base}/_sandbox/payment_intents/{pi.id}/authenticate",
        json={"outcome": "succeed"},
        timeout=10,
    )
    assert done.status_code == 200, done.text
    assert wait_for(lambda: order(stack, body["order_id"], "eu")["status"] in ("paid", "disputed"))
    stack.settle()
    return body


def charge_bt(stack: Stack, payment_intent_id: str) -> dict[str, Any]:
    pi = stack.stripe_client().v1.payment_intents.retrieve(
        payment_intent_id, {"expand": ["latest_charge.balance_transaction"]}
    )
    return pi.latest_charge.balance_transaction.to_dict()  # type: ignore[union-attr]


def by_currency(stack: Stack, order_id: str, account: str) -> dict[str, int]:
    rows = stack.sql(
        "SELECT e.currency, sum(e.amount_minor) FROM ledger_entry e"
        " JOIN ledger_txn t ON t.id = e.txn_id WHERE t.order_id = :o AND e.account = :a"
        " GROUP BY e.currency",
        o=order_id,
        a=account,
    )
    return {cur: int(total) for cur, total in rows if total}


def recorded(stack: Stack, txn_id: str) -> dict[str, Any]:
    [row] = stack.sql(
        "SELECT type, reporting_category, source_id, amount_minor, fee_minor, net_minor, currency,"
        " exchange_rate, source_amount_minor, source_currency, available_on, ledger_sources"
        " FROM balance_txn WHERE id = :i",
        i=txn_id,
    )
    return dict(row._mapping)


def test_an_eur_charge_settled_in_usd_is_booked_as_its_balance_transaction_says(
    stack: Stack,
) -> None:
    body = eu_paid_order(stack, skus_with_stock(stack)[20])
    order_id, amount, pi_id = body["order_id"], body["amount"], body["payment"]["payment_intent_id"]
    bt = charge_bt(stack, pi_id)
    assert bt["currency"] == "usd" and bt["exchange_rate"]
    assert bt["amount"] == round(amount * Decimal(str(bt["exchange_rate"])))

    row = recorded(stack, bt["id"])
    assert row == {
        "type": "charge",
        "reporting_category": "charge",
        "source_id": bt["source"],
        "amount_minor": bt["amount"],
        "fee_minor": bt["fee"],
        "net_minor": bt["net"],
        "currency": "usd",
        "exchange_rate": Decimal(str(bt["exchange_rate"])),
        "source_amount_minor": amount,
        "source_currency": "eur",
        "available_on": datetime.fromtimestamp(bt["available_on"], UTC),
        "ledger_sources": [f"payment:{pi_id}", f"txn:{bt['id']}"],
    }
    # The sale stays in EUR; the Stripe balance holds exactly the USD net Stripe credited.
    assert by_currency(stack, order_id, ledger.REVENUE) == {"eur": -amount}
    assert by_currency(stack, order_id, ledger.STRIPE_BALANCE) == {"usd": bt["net"]}
    assert by_currency(stack, order_id, ledger.STRIPE_FEES) == {"usd": bt["fee"]}
    assert by_currency(stack, order_id, ledger.FX_CONVERSION) == {
        "eur": amount,
        "usd": -bt["amount"],
    }

    # A partial refund converts back at its own balance transaction's rate.
    refund_path = f"/admin/v1/orders/{order_id}/refunds"
    part = amount // 4
    made = admin(
        stack,
        "POST",
        refund_path,
        json={"amount": part},
        headers={"Idempotency-Key": str(uuid.uuid4())},
    )
    assert made.status_code == 202, made.text
    stack.settle()
    [refund] = stack.stripe_client().v1.refunds.list({"payment_intent": pi_id}).data
    refund_bt = (
        stack.stripe_client()
        .v1.balance_transactions.retrieve(refund.balance_transaction)  # type: ignore[arg-type]
        .to_dict()
    )
    assert refund_bt["currency"] == "usd" and refund_bt["amount"] < 0
    assert recorded(stack, refund_bt["id"])["source_amount_minor"] == -part
    assert by_currency(stack, order_id, ledger.STRIPE_BALANCE) == {
        "usd": bt["net"] + refund_bt["amount"]
    }
    assert by_currency(stack, order_id, ledger.REFUNDS) == {"eur": part}

    # Booking again (a redelivered message, a retried job) changes nothing.
    before = stack.scalar("SELECT count(*) FROM ledger_entry")
    effects = StripeEffects(stack.engine, stack.stripe_gateway())
    for payload in ({"payment_intent_id": pi_id}, {"refund_id": refund.id}):
        effects.book_balance_transactions(
            Message(
                id=0,
                public_id="msg_replay",
                topic=payments.BOOK_BALANCE,
                ordering_key=payments.balance_key(order_id),
                payload={"order_id": order_id, **payload},
                attempts=1,
            )
        )
    assert stack.scalar("SELECT count(*) FROM ledger_entry") == before
    with transaction(stack.engine) as session:
        assert ledger.trial_balance(session) == {"usd": 0, "eur": 0}


def test_an_eur_chargeback_is_withdrawn_in_usd_and_booked_in_both(stack: Stack) -> None:
    """A dispute's balance transactions settle in USD too: the disputed EUR amount is an EUR
    expense, the withdrawal and Stripe's dispute fee leave the USD balance."""
    body = eu_paid_order(stack, skus_with_stock(stack)[21], pm="pm_card_createDispute")
    order_id, amount = body["order_id"], body["amount"]

    def disputed() -> dict | None:
        rows = stack.sql(
            "SELECT id FROM balance_txn WHERE order_id = :o AND reporting_category = 'dispute'",
            o=order_id,
        )
        return rows[0] if rows else None

    [txn_id] = wait_for(disputed)
    stack.settle()
    withdrawal = recorded(stack, txn_id)
    assert withdrawal["currency"] == "usd" and withdrawal["amount_minor"] < 0
    assert (withdrawal["source_amount_minor"], withdrawal["source_currency"]) == (-amount, "eur")
    charge = charge_bt(stack, body["payment"]["payment_intent_id"])
    assert by_currency(stack, order_id, ledger.DISPUTES) == {"eur": amount}
    assert by_currency(stack, order_id, ledger.DISPUTE_FEES) == {"usd": withdrawal["fee_minor"]}
    assert by_currency(stack, order_id, ledger.STRIPE_BALANCE) == {
        "usd": charge["net"] + withdrawal["net_minor"]
    }


def test_our_funds_and_a_usd_payout_of_eur_sales_match_stripe(stack: Stack) -> None:
    """Everything this module did, in our balance_txn records, is what Stripe's Balance says
    per status (pending until `available_on`, then available); the automatic payout (USD) of
    converted EUR sales adds up against our ledger."""
    eu_paid_order(stack, skus_with_stock(stack)[22])

    def stripe_funds() -> dict[str, dict[str, int]]:
        got = stack.stripe_client().v1.balance.retrieve().to_dict()
        funds: dict[str, dict[str, int]] = {}
        for status in ("pending", "available"):
            for money in got[status]:
                per = funds.setdefault(money["currency"], {"pending": 0, "available": 0})
                per[status] += money["amount"]
        return funds

    def ours() -> dict[str, dict[str, int]]:
        now = httpx.get(f"{stack.stripe_base}/_sandbox/state", timeout=10).json()["now"]
        with transaction(stack.engine) as session:
            return balance_txns.funds(session, datetime.fromtimestamp(now, UTC))

    before = stripe_funds()
    assert set(before) == {"usd"} and before["usd"]["pending"] > 0  # settles in USD only
    assert ours() == before
    payouts = run_payouts(stack)
    assert [p["currency"] for p in payouts] == ["usd"]
    assert not {p["id"] for p in payouts} & set(check(stack))  # every payout matches
    assert ours() == stripe_funds()
