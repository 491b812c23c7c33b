"""`ledger_imbalance` re-verifies from outside what the database's deferred trigger enforces
(DESIGN.md "every transaction balances (debits = credits per currency)"), and `order_flag`
raises every unresolved order flag with its money; both resolve once the cause is fixed."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Engine, text

from core import orders, payments
from core.db import transaction
from core.ledger import Posting, post
from core.settings import Settings
from tests.checks.support import open_of, run, settings_fixture, shop_fixture  # noqa: F401
from tests.core.shopify_support import Shop, paid_order

BYPASS = "SET LOCAL session_replication_role = replica"  # triggers off: tests only


def write_unchecked(engine: Engine, txn_id: str, legs: list[tuple[str, str, int]]) -> None:
    """A ledger transaction written past the balance trigger (as a bad restore could)."""
    with engine.begin() as conn:
        conn.execute(text(BYPASS))
        conn.execute(
            text(
                "INSERT INTO ledger_txn (id, source, kind, occurred_at)"
                " VALUES (:id, :id, 'test', now())"
            ),
            {"id": txn_id},
        )
        for account, currency, amount in legs:
            conn.execute(
                text(
                    "INSERT INTO ledger_entry (txn_id, account, currency, amount_minor)"
                    " VALUES (:t, :a, :c, :m)"
                ),
                {"t": txn_id, "a": account, "c": currency, "m": amount},
            )


def test_an_unbalanced_or_one_legged_transaction_is_found_until_balanced(
    clean_engine: Engine, settings: Settings
) -> None:
    with transaction(clean_engine) as session:  # a sound one: no false alarm
        post(
            session,
            source="test:sound",
            kind="test",
            occurred_at=datetime.now(UTC),
            postings=[
                Posting("assets:stripe_balance", 500, "usd"),
                Posting("revenue:sales", -500, "usd"),
            ],
        )
    write_unchecked(
        clean_engine,
        "led_unbalanced",
        [("assets:stripe_balance", "usd", 1000), ("revenue:sales", "usd", -900)],
    )
    write_unchecked(clean_engine, "led_lonely", [])
    found = open_of(run(clean_engine, settings, "ledger_imbalance"), "ledger_imbalance")
    assert set(found) == {"led_unbalanced", "led_lonely"}
    assert (found["led_unbalanced"].amount_minor, found["led_unbalanced"].currency) == (100, "usd")
    assert found["led_unbalanced"].evidence["net"] == {"usd": 100}
    assert found["led_lonely"].evidence["legs"] == 0

    with clean_engine.begin() as conn:  # the missing legs, written with the trigger on
        conn.execute(
            text(
                "INSERT INTO ledger_entry (txn_id, account, currency, amount_minor) VALUES"
                " ('led_unbalanced', 'revenue:sales', 'usd', -100),"
                " ('led_lonely', 'assets:stripe_balance', 'usd', 1),"
                " ('led_lonely', 'revenue:sales', 'usd', -1)"
            )
        )
    result = run(clean_engine, settings, "ledger_imbalance")
    assert (result.status, result.violations) == ("ok", [])
    assert result.results["ledger_imbalance"]["resolved"] == 2


def test_every_unresolved_order_flag_is_a_violation_with_its_money(
    shop: Shop, clean_engine: Engine, settings: Settings
) -> None:
    mismatched = paid_order(clean_engine, {"BTY-SERUM-30ML": 1})
    lost = paid_order(clean_engine, {"BTY-SERUM-30ML": 2})
    with transaction(clean_engine) as session:
        orders.flag(
            session,
            mismatched,
            payments.PAYMENT_MISMATCH,
            {"received_amount": 1500, "received_currency": "eur", "expected_amount": 1000},
        )
        orders.flag(
            session,
            lost,
            payments.STOCK_LOST_AFTER_FAILED_REFUND,
            {"refunded": 0, "amount": 2000},
        )
    found = open_of(run(clean_engine, settings, "order_flag"), "order_flag")
    assert set(found) == {
        f"{mismatched}:payment_mismatch",
        f"{lost}:stock_lost_after_failed_refund",
    }
    assert (
        found[f"{mismatched}:payment_mismatch"].amount_minor,
        found[f"{mismatched}:payment_mismatch"].currency,
    ) == (1500, "eur")
    assert found[f"{lost}:stock_lost_after_failed_refund"].amount_minor == 2000

    with clean_engine.begin() as conn:
        conn.execute(text("UPDATE order_flag SET resolved_at = now()"))
    result = run(clean_engine, settings, "order_flag")
    assert (result.status, result.violations) == ("ok", [])
