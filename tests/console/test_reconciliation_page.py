"""The Reconciliation page, for finance, on the demo day: per day and currency the money the
ledger booked (EUR sold, USD fees: the EU order settled in USD), the order charged twice as the
one unreconciled payment with its Stripe objects and ledger side by side, and the payout with
what it is made of."""

from __future__ import annotations

import pytest

from core import finance
from core.db import transaction
from tests.console.demo import Demo
from tests.console.support import open_page
from tests.e2e.conftest import Stack

pytestmark = pytest.mark.slow


def _days_covering(at, stack: Stack) -> None:
    """The demo ran in Stripe's advanced clock too: widen the range to every booked day."""
    first, last = stack.sql(
        "SELECT min(occurred_at)::date, max(occurred_at)::date FROM ledger_txn"
    )[0]
    at.date_input(key="rec_days").set_value((first, last)).run()


def test_per_day_money_matches_the_core_summary(console_env: dict, stack: Stack) -> None:
    at = open_page("reconciliation", "finance")
    _days_covering(at, stack)
    assert not at.exception
    table = at.dataframe[0].value
    first, last = stack.sql(
        "SELECT min(occurred_at)::date, max(occurred_at)::date FROM ledger_txn"
    )[0]
    with transaction(stack.engine) as session:
        expected = finance.daily_summary(session, start=first, end=last)
    assert len(table) == len(expected)
    # Shown in major units: the USD net of the page is the core's, divided by 100.
    usd_net = sum(d.net_minor for d in expected if d.currency == "usd")
    shown = table[table["currency"] == "usd"]["net_minor"].sum()
    assert round(shown * 100) == usd_net
    assert {"usd", "eur"} <= set(table["currency"])
    metrics = {m.label for m in at.metric}
    assert metrics == {"Net"}
    # A region filter leaves out the other region's currency.
    at.selectbox(key="rec_region").select("eu").run()
    assert set(at.dataframe[0].value["currency"]) <= {"eur", "usd"}
    assert "eur" in set(at.dataframe[0].value["currency"])


def test_unreconciled_list_and_side_by_side_drill_down(
    console_env: dict, stack: Stack, demo: Demo
) -> None:
    at = open_page("reconciliation", "finance")
    open_rows = next(df.value for df in at.dataframe if "reason" in df.value.columns)
    assert list(open_rows["subject"]) == [demo.stray_payment]
    assert list(open_rows["reason"]) == ["duplicate_charge"]
    at.selectbox(key="rec_pick").select(demo.stray_payment).run()
    assert not at.exception
    warnings = [w.value for w in at.warning]
    assert any(w.startswith("duplicate_charge: $") for w in warnings)
    ledger = next(df.value for df in at.dataframe if "account" in df.value.columns)
    stripe_payments = next(df.value for df in at.dataframe if "amount_received" in df.value.columns)
    # Stripe has both PaymentIntents of the order; our ledger booked only the first.
    assert set(stripe_payments["id"]) == {demo.payment_intent, demo.stray_payment}
    assert set(ledger["source"]) >= {f"payment:{demo.payment_intent}"}
    assert not any(demo.stray_payment in s for s in ledger["source"])

    at.text_input(key="rec_subject").input(demo.refunded_order).run()
    assert any(demo.refunded_order in m.value for m in at.markdown)
    at.text_input(key="rec_subject").input("nothing_like_an_id").run()
    assert at.error and not at.exception


def test_payouts_with_their_composition(console_env: dict, stack: Stack, demo: Demo) -> None:
    at = open_page("reconciliation", "finance")
    _days_covering(at, stack)
    payouts = next(df.value for df in at.dataframe if "verification" in df.value.columns)
    assert demo.payout in set(payouts["id"])
    at.selectbox(key="rec_payout").select(demo.payout).run()
    assert any(demo.payout in m.value for m in at.markdown)
    lines = next(
        df.value
        for df in at.dataframe
        if {"balance_txn_id", "order_id", "net_minor"} <= set(df.value.columns)
    )
    assert demo.paid_order in set(lines["order_id"])
    amount = stack.scalar(
        "SELECT sum(amount_minor) FROM ledger_entry e JOIN ledger_txn t ON t.id = e.txn_id"
        " WHERE t.source = :s AND e.account = 'assets:payouts_in_transit'",
        s=f"payout:{demo.payout}",
    )
    # The lines a bank deposit pays add up to the deposit.
    assert round(lines["net_minor"].sum() * 100) == amount
