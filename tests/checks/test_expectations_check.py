"""`data_expectations` (a Great Expectations checkpoint over PostgreSQL) re-verifies the row
invariants the schema's CHECK constraints state (DESIGN.md "Invariants live in schema CHECKs
... and checks/ re-verifies them"): with a constraint lost (as after a bad migration) and a bad
row in, the check names it; once the row is fixed, the next run resolves it."""

from __future__ import annotations

from sqlalchemy import Engine, text

from core.settings import Settings
from tests.checks.support import open_of, run, settings_fixture, shop_fixture  # noqa: F401
from tests.core.shopify_support import Shop

SKU = "BTY-SERUM-30ML"
BYPASS = "SET LOCAL session_replication_role = replica"  # append-only triggers off: tests only


def test_clean_data_meets_every_expectation(
    shop: Shop, clean_engine: Engine, settings: Settings
) -> None:
    result = run(clean_engine, settings, "data_expectations")
    assert (result.status, result.violations) == ("ok", [])


def test_rows_that_lost_their_constraints_are_found_until_fixed(
    shop: Shop, clean_engine: Engine, settings: Settings
) -> None:
    with clean_engine.begin() as conn:
        conn.execute(text(BYPASS))
        conn.execute(text("ALTER TABLE stock DROP CONSTRAINT ck_stock_reserved_nonnegative"))
        conn.execute(text("ALTER TABLE stock DROP CONSTRAINT ck_stock_sellable_nonnegative"))
        conn.execute(text("ALTER TABLE ledger_entry DROP CONSTRAINT ck_ledger_entry_currency_iso"))
        conn.execute(text("UPDATE stock SET reserved = -1 WHERE sku = :s"), {"s": SKU})
        conn.execute(
            text(
                "UPDATE stock SET committed = shopify_available + 2, shortfall_since = NULL"
                " WHERE sku = 'FSH-CASHCREW-CAMEL-M'"
            )
        )
        conn.execute(
            text(
                "INSERT INTO ledger_txn (id, source, kind, occurred_at)"
                " VALUES ('led_bad', 'test:bad', 'test', now())"
            )
        )
        conn.execute(
            text(
                "INSERT INTO ledger_entry (txn_id, account, currency, amount_minor) VALUES"
                " ('led_bad', 'assets:stripe_balance', 'USD', 100),"
                " ('led_bad', 'revenue:sales', 'USD', -100)"
            )
        )
    found = open_of(run(clean_engine, settings, "data_expectations"), "data_expectations")
    assert set(found) == {
        "stock.reserved:expect_column_values_to_be_between",
        "stock.rows:unexpected_rows_expectation",
        "ledger_entry.currency:expect_column_values_to_match_regex",
    }, found
    assert (
        found["stock.reserved:expect_column_values_to_be_between"].evidence["unexpected_count"] == 1
    )
    assert found["ledger_entry.currency:expect_column_values_to_match_regex"].evidence[
        "sample"
    ] == ["USD", "USD"]

    with clean_engine.begin() as conn:
        conn.execute(text(BYPASS))
        conn.execute(text("UPDATE stock SET reserved = 0 WHERE sku = :s"), {"s": SKU})
        conn.execute(text("UPDATE stock SET committed = 0 WHERE sku = 'FSH-CASHCREW-CAMEL-M'"))
        conn.execute(text("UPDATE ledger_entry SET currency = 'usd' WHERE txn_id = 'led_bad'"))
    result = run(clean_engine, settings, "data_expectations")
    assert (result.status, result.violations) == ("ok", [])
    assert result.results["data_expectations"]["resolved"] == 3
