"""The double-entry ledger on a real PostgreSQL: balanced, append-only, posted once per source."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine, func, select, text
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session

from core import balance_txns, ledger
from core.errors import InvalidRequest, LedgerUnbalanced
from core.ledger import Posting
from core.models import LedgerEntry, LedgerTransaction

AT = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def post(engine: Engine, source: str, postings: list[Posting], **kw: object) -> str | None:
    with Session(engine) as s, s.begin():
        return ledger.post(
            s, source=source, kind=kw.pop("kind", "test"), postings=postings, occurred_at=AT, **kw
        )


def row_counts(engine: Engine) -> tuple[int, int]:
    with Session(engine) as s:
        return (
            s.scalar(select(func.count()).select_from(LedgerTransaction)),
            s.scalar(select(func.count()).select_from(LedgerEntry)),
        )


def read(engine: Engine, fn):
    with Session(engine) as s:
        return fn(s)


def test_a_balanced_transaction_posts_and_reads_back(clean_engine: Engine) -> None:
    postings = ledger.payment_postings(5000, "USD")
    txn = post(clean_engine, "payment:pi_1", postings, order_id="ord_1", description="pay")

    assert txn is not None and txn.startswith("led_")
    (got,) = read(clean_engine, lambda s: ledger.transactions_for_order(s, "ord_1"))
    assert (got.id, got.source, got.kind, got.order_id, got.occurred_at) == (
        txn,
        "payment:pi_1",
        "test",
        "ord_1",
        AT,
    )
    assert got.postings == tuple(postings)
    assert {p.currency for p in got.postings} == {"usd"}
    assert read(clean_engine, lambda s: ledger.transactions_for_order(s, "ord_other")) == []


def test_an_unbalanced_transaction_is_rejected_before_the_database(clean_engine: Engine) -> None:
    lopsided = [Posting(ledger.STRIPE_BALANCE, 100, "usd"), Posting(ledger.REVENUE, -99, "usd")]
    with pytest.raises(LedgerUnbalanced) as caught:
        post(clean_engine, "bad:1", lopsided)
    assert caught.value.details == {"unbalanced": {"usd": 1}}
    # Balanced in total but not per currency: still unbalanced.
    mixed = [Posting(ledger.STRIPE_BALANCE, 100, "usd"), Posting(ledger.REVENUE, -100, "eur")]
    with pytest.raises(LedgerUnbalanced):
        post(clean_engine, "bad:2", mixed)
    with pytest.raises(LedgerUnbalanced):
        post(clean_engine, "bad:3", [Posting(ledger.REVENUE, 0, "usd")])
    for bad in (
        [Posting(ledger.STRIPE_BALANCE, 0, "usd"), Posting(ledger.REVENUE, 0, "usd")],
        [Posting(ledger.STRIPE_BALANCE, 1, "US"), Posting(ledger.REVENUE, -1, "US")],
        [Posting("", 1, "usd"), Posting(ledger.REVENUE, -1, "usd")],
    ):
        with pytest.raises(InvalidRequest):
            post(clean_engine, "bad:4", bad)
    assert row_counts(clean_engine) == (0, 0)


def test_the_database_trigger_refuses_an_unbalanced_transaction_at_commit(
    clean_engine: Engine,
) -> None:
    """Bypass the Python check with raw SQL: the deferred trigger still refuses at COMMIT."""
    insert_txn = text(
        "INSERT INTO ledger_txn (id, source, kind, occurred_at) VALUES (:id, :id, 'raw', now())"
    )
    insert_leg = text(
        "INSERT INTO ledger_entry (txn_id, account, currency, amount_minor) VALUES (:t, :a, :c, :n)"
    )
    with clean_engine.connect() as conn:
        conn.execute(insert_txn, {"id": "led_raw_bad"})
        conn.execute(insert_leg, {"t": "led_raw_bad", "a": "assets:x", "c": "usd", "n": 100})
        conn.execute(insert_leg, {"t": "led_raw_bad", "a": "revenue:x", "c": "usd", "n": -60})
        with pytest.raises(IntegrityError, match="does not balance"):
            conn.commit()
    # The same raw path with balancing legs (inserted one by one) commits: the trigger is
    # deferred to commit, not checked per row.
    with clean_engine.connect() as conn:
        conn.execute(insert_txn, {"id": "led_raw_ok"})
        conn.execute(insert_leg, {"t": "led_raw_ok", "a": "assets:x", "c": "usd", "n": 100})
        conn.execute(insert_leg, {"t": "led_raw_ok", "a": "revenue:x", "c": "usd", "n": -60})
        conn.execute(insert_leg, {"t": "led_raw_ok", "a": "revenue:y", "c": "usd", "n": -40})
        conn.commit()
    assert row_counts(clean_engine) == (1, 3)


def test_a_replayed_source_posts_nothing(clean_engine: Engine) -> None:
    first = post(clean_engine, "stripe:evt_1", ledger.refund_postings(700, "eur"))
    again = post(clean_engine, "stripe:evt_1", ledger.refund_postings(999, "eur"))

    assert first is not None and again is None
    assert row_counts(clean_engine) == (1, 2)
    assert read(clean_engine, lambda s: ledger.account_balance(s, ledger.REFUNDS, "eur")) == 700


def test_ten_concurrent_posts_of_one_source_make_exactly_one_transaction(
    clean_engine: Engine,
) -> None:
    barrier = threading.Barrier(10)
    results: list[str | None] = []
    lock = threading.Lock()

    def poster() -> None:
        with Session(clean_engine) as s, s.begin():
            s.connection()
            barrier.wait(timeout=30)
            got = ledger.post(
                s,
                source="payment:pi_race",
                kind="payment",
                postings=ledger.payment_postings(1200, "usd"),
                occurred_at=AT,
            )
        with lock:
            results.append(got)

    threads = [threading.Thread(target=poster) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)

    assert len(results) == 10
    assert sum(r is not None for r in results) == 1
    assert row_counts(clean_engine) == (1, 2)
    assert read(clean_engine, ledger.trial_balance) == {"usd": 0}


def bt(txn_id: str, category: str, amount: int, fee: int, currency: str = "usd") -> dict:
    """A Stripe balance transaction, signed as Stripe reports it."""
    return {
        "id": txn_id,
        "reporting_category": category,
        "amount": amount,
        "fee": fee,
        "net": amount - fee,
        "currency": currency,
    }


def test_balances_follow_an_order_through_its_life(clean_engine: Engine) -> None:
    order = "ord_life"
    steps = [
        ("payment:pi_1", "payment", ledger.payment_postings(10_000, "usd")),
        (
            "txn:txn_1",
            "stripe_settlement",
            balance_txns.own_postings(bt("txn_1", "charge", 10_000, 320), 10_000, "usd"),
        ),
        ("refund:re_1", "refund", ledger.refund_postings(2_000, "usd")),
        # A dispute's balance transactions, signed as Stripe reports them: the withdrawal of the
        # amount and its fee, then (won) the reinstatement of the amount only.
        (
            "txn:txn_w",
            "dispute",
            balance_txns.own_postings(bt("txn_w", "dispute", -8_000, 1_500), -8_000, "usd"),
        ),
        (
            "txn:txn_r",
            "dispute",
            balance_txns.own_postings(bt("txn_r", "dispute_reversal", 8_000, 0), 8_000, "usd"),
        ),
    ]
    for source, kind, postings in steps:
        assert post(clean_engine, source, postings, kind=kind, order_id=order)
    post(clean_engine, "payment:pi_eu", ledger.payment_postings(4_000, "eur"))

    def balance(account: str, currency: str = "usd") -> int:
        return read(clean_engine, lambda s: ledger.account_balance(s, account, currency))

    assert balance(ledger.STRIPE_BALANCE) == 10_000 - 320 - 2_000 - 8_000 - 1_500 + 8_000
    assert balance(ledger.REVENUE) == -10_000
    assert balance(ledger.REFUNDS) == 2_000
    assert balance(ledger.STRIPE_FEES) == 320
    assert balance(ledger.DISPUTES) == 0
    assert balance(ledger.DISPUTE_FEES) == 1_500
    assert balance(ledger.STRIPE_BALANCE, "eur") == 4_000
    assert balance("assets:nothing_here") == 0

    assert read(clean_engine, lambda s: ledger.balances(s, account_prefix="expenses:")) == {
        (ledger.STRIPE_FEES, "usd"): 320,
        (ledger.DISPUTES, "usd"): 0,
        (ledger.DISPUTE_FEES, "usd"): 1_500,
    }
    # The prefix is literal text, not a LIKE pattern.
    assert read(clean_engine, lambda s: ledger.balances(s, account_prefix="expenses_")) == {}
    everything = read(clean_engine, ledger.balances)
    assert len(everything) == 8 and sum(everything.values()) == 0
    assert read(clean_engine, ledger.trial_balance) == {"usd": 0, "eur": 0}
    kinds = [t.kind for t in read(clean_engine, lambda s: ledger.transactions_for_order(s, order))]
    assert sorted(kinds) == sorted(k for _, k, _ in steps)


def test_an_eur_charge_settled_in_usd_leaves_no_eur_in_the_stripe_balance(
    clean_engine: Engine,
) -> None:
    """Stripe API, BalanceTransaction.exchange_rate: a 10.00 EUR charge converted to 12.34 USD
    has amount 1234, currency usd, exchange_rate 1.234. The sale stays in EUR, the Stripe
    balance holds USD only, and the conversion sits in the currency trading account."""
    charge = bt("txn_fx", "charge", 10_843, 344)
    post(clean_engine, "payment:pi_fx", ledger.payment_postings(10_000, "eur"))
    post(clean_engine, "txn:txn_fx", balance_txns.own_postings(charge, 10_000, "eur"))
    refund = bt("txn_fxr", "refund", -2_170, 0)
    post(clean_engine, "refund:re_fx", ledger.refund_postings(2_000, "eur"))
    post(clean_engine, "txn:txn_fxr", balance_txns.own_postings(refund, -2_000, "eur"))
    # A chargeback of the rest, withdrawn (with the USD dispute fee) in USD.
    withdrawal = bt("txn_fxd", "dispute", -8_680, 1_500)
    post(clean_engine, "txn:txn_fxd", balance_txns.own_postings(withdrawal, -8_000, "eur"))

    got = read(clean_engine, ledger.balances)
    assert got[(ledger.STRIPE_BALANCE, "usd")] == 10_843 - 344 - 2_170 - 8_680 - 1_500
    assert got.get((ledger.STRIPE_BALANCE, "eur"), 0) == 0
    assert got[(ledger.REVENUE, "eur")] == -10_000
    assert got[(ledger.REFUNDS, "eur")] == 2_000
    assert got[(ledger.DISPUTES, "eur")] == 8_000
    assert got[(ledger.STRIPE_FEES, "usd")] == 344
    assert got[(ledger.DISPUTE_FEES, "usd")] == 1_500
    # EUR in, USD out: the position is flat in EUR and holds the rounding/rate drift in USD.
    assert got[(ledger.FX_CONVERSION, "eur")] == 0
    assert got[(ledger.FX_CONVERSION, "usd")] == -(10_843 - 2_170 - 8_680)
    assert read(clean_engine, ledger.trial_balance) == {"usd": 0, "eur": 0}


def test_every_posting_helper_balances() -> None:
    built = [
        ledger.payment_postings(100, "usd"),
        ledger.refund_postings(40, "usd"),
        ledger.refund_postings(40, "usd", ledger.UNMATCHED_PAYMENTS),
        ledger.refund_failure_postings(40, "usd"),
        ledger.unmatched_payment_postings(100, "eur"),
        ledger.conversion_postings(100, "eur", 108, "usd"),
        ledger.conversion_postings(-100, "eur", -109, "usd"),
        balance_txns.own_postings(bt("t", "dispute", -100, 0), -100, "usd"),
        balance_txns.own_postings(bt("t", "dispute", -100, 15), -100, "usd"),
        balance_txns.own_postings(bt("t", "dispute_reversal", 100, -15), 100, "usd"),
        balance_txns.own_postings(bt("t", "dispute", -108, 15), -100, "eur"),
        balance_txns.own_postings(bt("t", "charge", 108, 33), 100, "eur"),
    ]
    for postings in built:
        ledger.check_balanced(postings)
        assert sum(p.amount_minor for p in postings) == 0
    # Same currency, nothing to convert; a fee alone is a transaction of its own.
    assert ledger.conversion_postings(100, "usd", 100, "usd") == []
    assert balance_txns.own_postings(bt("t", "refund", -40, 0), -40, "usd") == []
    for bad in (
        lambda: ledger.payment_postings(0, "usd"),
        lambda: ledger.refund_postings(-5, "usd"),
        lambda: ledger.conversion_postings(100, "eur", -108, "usd"),
        lambda: ledger.unmatched_payment_postings(0, "usd"),
    ):
        with pytest.raises(InvalidRequest):
            bad()


def test_ledger_rows_cannot_be_updated_or_deleted(clean_engine: Engine) -> None:
    txn = post(clean_engine, "payment:pi_x", ledger.payment_postings(100, "usd"))
    for stmt in (
        "UPDATE ledger_entry SET amount_minor = amount_minor * 2",
        "DELETE FROM ledger_entry",
        "UPDATE ledger_txn SET source = 'other'",
        "DELETE FROM ledger_txn",
    ):
        with pytest.raises(DBAPIError, match="append-only"), clean_engine.begin() as conn:
            conn.execute(text(stmt))
    assert row_counts(clean_engine) == (1, 2)
    (got,) = read(
        clean_engine,
        lambda s: s.scalars(select(LedgerTransaction.id)).all(),
    )
    assert got == txn


def test_a_failed_refund_reverses_exactly_what_the_refund_posted() -> None:
    for account in (ledger.REFUNDS, ledger.UNMATCHED_PAYMENTS):
        out = ledger.refund_postings(700, "EUR", account)
        back = ledger.refund_failure_postings(700, "EUR", account)
        net: dict[tuple[str, str], int] = {}
        for p in out + back:
            net[(p.account, p.currency)] = net.get((p.account, p.currency), 0) + p.amount_minor
        assert set(net.values()) == {0} and len(net) == 2
