"""Page-load benchmark of the console (`dotshop bench console --orders N`).

It builds a scratch database on the configured server (DATABASE_URL, or the embedded one) the
way `dotshop bench reconcile` does (N synthetic paid orders with their ledger and Stripe staging
rows, one mismatch of each kind per hundred payments), adds what the other pages read (a
catalog with stock, an order line per order, Shopify sync-lag samples, delivered and
dead-lettered outbox messages), runs the payment check so the unreconciled payments are open
violations, then renders every page with Streamlit's own script runner (AppTest), signed in,
cold (empty caches) and warm. The baseline is the sign-in page, rendered by the same runtime in
the same process: it reads nothing, so a page's ratio to it is what its queries cost.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import make_url

from core.db import make_engine, normalize_url
from core.migrate import upgrade
from core.operators import ADMIN, hash_password
from core.reconcile_bench import TRIGGERED, _libpq, _load

APP = Path(__file__).with_name("app.py")
VIEWS = APP.with_name("views")
PAGES = ("overview", "reconciliation", "inventory", "orders", "outbox", "alerts")
SKUS = 500
LAG_SAMPLES = 100_000
SENT_MESSAGES_PER_ORDER = 1
DEAD_LETTERS = 200
PASSWORD = secrets.token_urlsafe(12)

# The loader books every order on one day; a real million orders spread over a year, which is
# what a day view or a week's summary reads a slice of.
SPREAD_SQL = """
UPDATE orders SET created_at = now() - (abs(hashtext(id)) % 365) * interval '1 day',
                  paid_at = CASE WHEN paid_at IS NOT NULL
                                 THEN now() - (abs(hashtext(id)) % 365) * interval '1 day' END;
UPDATE ledger_txn SET occurred_at = now() - (abs(hashtext(order_id)) % 365) * interval '1 day'
 WHERE order_id IS NOT NULL;
UPDATE stripe_payment SET created = now() - (abs(hashtext(order_id)) % 365) * interval '1 day'
 WHERE order_id IS NOT NULL;
"""

# What the other pages read, made in SQL from the orders the reconcile loader wrote.
EXTRA_SQL = f"""
INSERT INTO product (id, shopify_product_id, handle, title, shopify_updated_at)
SELECT 'prd_b' || i, 7000000 + i, 'bench-' || i, 'Bench product ' || i, now()
  FROM generate_series(1, {SKUS}) AS i;
INSERT INTO variant (id, product_id, sku, title, shopify_variant_id, shopify_inventory_item_id,
                     shopify_updated_at)
SELECT 'var_b' || i, 'prd_b' || i, 'BENCH-' || i, 'Default', 8000000 + i, 9000000 + i, now()
  FROM generate_series(1, {SKUS}) AS i;
INSERT INTO stock (sku, shopify_available, reserved, committed, shopify_updated_at)
SELECT 'BENCH-' || i, 100 + i % 50, i % 3, i % 2, now() FROM generate_series(1, {SKUS}) AS i;
INSERT INTO inventory_level (shopify_inventory_item_id, shopify_location_id, available,
                             shopify_updated_at)
SELECT 9000000 + i, 1, 100 + i % 50 - (CASE WHEN i % 97 = 0 THEN 3 ELSE 0 END), now()
  FROM generate_series(1, {SKUS}) AS i;
INSERT INTO order_line (order_id, sku, quantity, unit_price_minor)
SELECT id, 'BENCH-' || (1 + abs(hashtext(id)) % {SKUS}), 1, amount_minor FROM orders;
INSERT INTO sync_lag_sample (direction, sku, lag_ms, observed_at)
SELECT CASE WHEN i % 2 = 0 THEN 'inbound' ELSE 'outbound' END, 'BENCH-' || (1 + i % {SKUS}),
       200 + i % 1500, now() - (i % 86400) * interval '1 second'
  FROM generate_series(1, {LAG_SAMPLES}) AS i;
INSERT INTO outbox (public_id, topic, ordering_key, payload, status, attempts, sent_at)
SELECT 'obx_s' || o.id, 'shopify.push_order', 'order:' || o.id,
       jsonb_build_object('order_id', o.id), 'sent', 1, o.paid_at
  FROM orders o WHERE o.paid_at IS NOT NULL;
INSERT INTO outbox (public_id, topic, ordering_key, payload, status, attempts, last_error,
                    dead_at)
SELECT 'obx_d' || i, 'shopify.push_order', 'order:ord_dead' || i,
       jsonb_build_object('order_id', 'ord_dead' || i), 'dead', 10,
       'core.errors.ProviderUnavailable: Shopify unavailable: HTTP 503', now()
  FROM generate_series(1, {DEAD_LETTERS}) AS i;
"""


@dataclass(frozen=True)
class PageTiming:
    view: str
    cold_seconds: float
    warm_seconds: float


def _scenarios() -> list[tuple[str, str, dict[str, Any]]]:
    """(what, page, widget values by key): each page as it opens, then what people do most."""
    today = datetime.now(UTC).date()
    return [
        *[(page, page, {}) for page in PAGES],
        ("reconciliation, 30 days", "reconciliation", {"rec_days": (today - timedelta(29), today)}),
        ("reconciliation, one payment", "reconciliation", {"rec_subject": "pi_b000000123"}),
        ("orders, by e-mail", "orders", {"orders_query": "b@example.com"}),
        ("orders, by SKU", "orders", {"orders_query": "BENCH-7"}),
        ("orders, by order id", "orders", {"orders_query": "ord_b000000123"}),
        ("inventory, drift only", "inventory", {"stock_drift_only": True}),
        ("outbox, discarded", "outbox", {"outbox_status": "discarded"}),
    ]


@contextmanager
def _scratch_database(server_url: str) -> Iterator[str]:
    name = f"dotshop_console_bench_{secrets.token_hex(4)}"
    with psycopg.connect(_libpq(server_url, "postgres"), autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        url = make_url(normalize_url(server_url)).set(database=name)
        yield url.render_as_string(hide_password=False)
    finally:
        with psycopg.connect(_libpq(server_url, "postgres"), autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _fill(url: str, orders: int) -> None:
    at = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    with psycopg.connect(_libpq(url)) as conn:
        for table in TRIGGERED:
            conn.execute(f"ALTER TABLE {table} DISABLE TRIGGER USER")
        _load(conn, orders, at)
        conn.execute(SPREAD_SQL)
        conn.execute(EXTRA_SQL)
        for table in TRIGGERED:
            conn.execute(f"ALTER TABLE {table} ENABLE TRIGGER USER")
        conn.commit()
        conn.autocommit = True
        conn.execute("VACUUM ANALYZE")


def _run_payment_check(url: str) -> int:
    """The unreconciled payments become open violations, as the scheduled check makes them."""
    from checks.payments import CHECK, findings
    from checks.registry import CheckContext
    from core import violations
    from core.db import transaction
    from core.settings import Settings

    engine = make_engine(url, pool_size=1)
    try:
        now = datetime.now(UTC)
        ctx = CheckContext(engine, Settings(grace_seconds=0, db_statement_timeout_ms=0), now)
        found = findings(ctx, now - timedelta(days=30))
        with transaction(engine) as session:
            run_id = violations.start_run(session)
            violations.record_findings(session, run_id, CHECK, found, now)
            violations.finish_run(session, run_id, {CHECK: {"open": len(found)}})
        return len(found)
    finally:
        engine.dispose()


def _timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def _render(page: str, widgets: dict[str, Any]) -> tuple[float, float]:
    """Seconds to render `page` signed in, with `widgets` set: first (cold caches) and second
    (warm) run."""
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    st.cache_data.clear()
    at = AppTest.from_file(str(APP), default_timeout=600)
    at.run()
    at.text_input(key="login_name").input("bench")
    at.text_input(key="login_password").input(PASSWORD)
    at.button[0].click()
    at.run()
    at.switch_page(str(VIEWS / f"{page}.py"))
    if widgets:  # they exist once the page ran
        at.run()
        for key, value in widgets.items():
            at.get_by_key(key).set_value(value)
    st.cache_data.clear()
    cold = _timed(at.run)
    if at.exception:
        raise RuntimeError(f"{page}: {at.exception[0].value}")
    return cold, _timed(at.run)


def _baseline() -> float:
    """The sign-in page: the same runtime, no query."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(APP), default_timeout=600)
    at.run()
    return min(_timed(at.run) for _ in range(3))


def run(server_url: str, orders: int, say: Callable[[str], None]) -> tuple[float, list[PageTiming]]:
    with _scratch_database(server_url) as url:
        upgrade(url)
        say(f"loading {orders} synthetic orders ...")
        _fill(url, orders)
        say(f"{_run_payment_check(url)} unreconciled payments recorded as open violations")
        os.environ["DATABASE_URL"] = url
        os.environ["DOTSHOP_CONSOLE_USERS"] = json.dumps(
            {"bench": {"role": ADMIN, "password_hash": hash_password(PASSWORD)}}
        )
        baseline = _baseline()
        timings = [PageTiming(what, *_render(page, w)) for what, page, w in _scenarios()]
    return baseline, timings


def main(orders: int) -> int:
    from core.db import database_url

    baseline, timings = run(database_url(), orders, say=lambda m: print(m, file=sys.stderr))
    print(f"baseline: the sign-in page renders in {baseline * 1000:.0f} ms")
    for t in timings:
        print(
            f"{t.view:<30} cold {t.cold_seconds * 1000:7.0f} ms ({t.cold_seconds / baseline:5.1f}x)"
            f"   warm {t.warm_seconds * 1000:7.0f} ms ({t.warm_seconds / baseline:5.1f}x)"
        )
    return 0
