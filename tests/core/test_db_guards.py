"""The database guards what the code promises (migration 0002): only the allowed order status
moves, one order per Shopify order, no ledger transaction with fewer than two entries, no
TRUNCATE of the append-only tables, and timeouts on every connection."""

from __future__ import annotations

import importlib
import itertools
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError

from core.db import make_engine
from core.settings import Settings

STATUSES = ("awaiting_payment", "paid", "cancelled", "refunded", "partially_refunded", "disputed")


def _transitions() -> set[tuple[str, str]]:
    """The allowed moves, as the migration that installed the trigger lists them."""
    module = importlib.import_module("core.migrations.versions.2026_11_26_hardening_0002")
    return set(module.ORDER_TRANSITIONS)


def _insert_order(conn, order_id: str, status: str = "awaiting_payment") -> None:
    conn.execute(
        text(
            "INSERT INTO orders (id, checkout_id, region, status, email, shipping_address, "
            "currency, amount_minor, expires_at) VALUES (:id, :chk, 'us', :status, "
            "'a@example.com', '{}', 'usd', 1000, :exp)"
        ),
        {
            "id": order_id,
            "chk": order_id.replace("ord_", "chk_"),
            "status": status,
            "exp": datetime.now(UTC) + timedelta(minutes=15),
        },
    )


def test_every_order_status_move_outside_the_lifecycle_is_refused(clean_engine: Engine) -> None:
    allowed = _transitions()
    counter = itertools.count()
    for old, new in itertools.product(STATUSES, STATUSES):
        order_id = f"ord_guard{next(counter)}"
        with clean_engine.begin() as conn:
            _insert_order(conn, order_id, old)
        update = text("UPDATE orders SET status = :new WHERE id = :id")
        if old == new or (old, new) in allowed:
            with clean_engine.begin() as conn:
                assert conn.execute(update, {"new": new, "id": order_id}).rowcount == 1
        else:
            with pytest.raises(DBAPIError, match="cannot move from"), clean_engine.begin() as conn:
                conn.execute(update, {"new": new, "id": order_id})
    # The lifecycle the code relies on is in the allowed set.
    assert {("awaiting_payment", "paid"), ("cancelled", "paid"), ("paid", "refunded")} <= allowed
    assert ("paid", "awaiting_payment") not in allowed


def test_a_shopify_order_belongs_to_one_order(clean_engine: Engine) -> None:
    with clean_engine.begin() as conn:
        _insert_order(conn, "ord_a")
        _insert_order(conn, "ord_b")
        conn.execute(text("UPDATE orders SET shopify_order_id = 5600000000001 WHERE id = 'ord_a'"))
    with pytest.raises(DBAPIError, match="uq_orders_shopify_order_id"), clean_engine.begin() as c:
        c.execute(text("UPDATE orders SET shopify_order_id = 5600000000001 WHERE id = 'ord_b'"))


def _ledger_txn(conn, txn_id: str, legs: list[int]) -> None:
    conn.execute(
        text(
            "INSERT INTO ledger_txn (id, source, kind, occurred_at) "
            "VALUES (:id, :id, 'test', now())"
        ),
        {"id": txn_id},
    )
    for i, amount in enumerate(legs):
        conn.execute(
            text(
                "INSERT INTO ledger_entry (txn_id, account, currency, amount_minor) "
                "VALUES (:id, :acct, 'usd', :amount)"
            ),
            {"id": txn_id, "acct": f"acct:{i}", "amount": amount},
        )


@pytest.mark.parametrize(
    ("legs", "refusal"),
    [([], "fewer than two entries"), ([100], r"fewer than two entries|does not balance")],
    ids=["no_entries", "one_leg"],
)
def test_a_ledger_transaction_needs_at_least_two_entries(
    clean_engine: Engine, legs, refusal
) -> None:
    with pytest.raises(DBAPIError, match=refusal), clean_engine.begin() as conn:
        _ledger_txn(conn, "led_short", legs)
    with clean_engine.begin() as conn:
        _ledger_txn(conn, "led_ok", [100, -100])
        assert conn.scalar(text("SELECT count(*) FROM ledger_entry")) == 2


@pytest.mark.parametrize("table", ["order_event", "audit_log", "ledger_txn", "ledger_entry"])
def test_append_only_tables_refuse_truncate(clean_engine: Engine, table: str) -> None:
    with pytest.raises(DBAPIError, match="append-only"), clean_engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {table} CASCADE"))


def test_every_connection_carries_the_timeouts(db_url: str) -> None:
    settings = Settings(
        db_statement_timeout_ms=1234,
        db_lock_timeout_ms=567,
        db_idle_in_transaction_timeout_ms=8901,
    )
    engine = make_engine(db_url, pool_size=1, settings=settings)
    try:
        with engine.connect() as conn:
            shown = {
                name: conn.scalar(text(f"SHOW {name}"))
                for name in (
                    "statement_timeout",
                    "lock_timeout",
                    "idle_in_transaction_session_timeout",
                )
            }
            assert shown == {
                "statement_timeout": "1234ms",
                "lock_timeout": "567ms",
                "idle_in_transaction_session_timeout": "8901ms",
            }
            # And they bite: a statement running past its timeout is cancelled.
            with pytest.raises(DBAPIError, match="statement timeout"):
                conn.execute(text("SELECT pg_sleep(3)"))
    finally:
        engine.dispose()
