"""`stuck_outbox` and `sync_lag` (DESIGN.md "stuck sync: outbox oldest pending age or sync lag
per direction over its SLO"; "After N failures a message is dead-lettered and alerts"): each
produced for real and resolved on the next run once the cause is fixed."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import Engine, text

from checks.outbox import INBOUND_SLO_SECONDS, OUTBOUND_SLO_SECONDS, OUTBOX_SLO_SECONDS
from core import relay, shopify_sync
from core.db import transaction
from core.outbox import enqueue
from core.settings import Settings
from tests.checks.support import open_of, run, settings_fixture, shop_fixture, soon  # noqa: F401
from tests.core.shopify_support import Shop, paid_order, push_message

SKU = "FSH-CASHCREW-CAMEL-M"


def test_every_dead_letter_is_a_violation_until_retried(
    clean_engine: Engine, settings: Settings
) -> None:
    with transaction(clean_engine) as session:
        dead = enqueue(session, topic="shopify.push_order", ordering_key="order:o1", payload={})
    with clean_engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE outbox SET status = 'dead', dead_at = now(), attempts = 10,"
                " last_error = 'Shopify says 422' WHERE public_id = :id"
            ),
            {"id": dead},
        )
    found = open_of(run(clean_engine, settings, "stuck_outbox"), "stuck_outbox")
    assert set(found) == {dead}
    assert found[dead].evidence["topic"] == "shopify.push_order"
    assert found[dead].evidence["key"] == "order:o1"
    assert found[dead].evidence["last_error"] == "Shopify says 422"

    with transaction(clean_engine) as session:
        assert relay.retry_dead(session, dead, actor="test")
    result = run(clean_engine, settings, "stuck_outbox")
    assert (result.status, result.violations) == ("ok", [])


def test_a_message_pending_past_its_topic_slo_is_stuck_until_delivered(
    clean_engine: Engine, settings: Settings
) -> None:
    with transaction(clean_engine) as session:
        waiting = enqueue(session, topic="stripe.refund", ordering_key="order:o2", payload={})
    slo = OUTBOX_SLO_SECONDS["stripe"]
    assert run(clean_engine, settings, "stuck_outbox").violations == []
    late = soon() + timedelta(seconds=slo)
    (found,) = run(clean_engine, settings, "stuck_outbox", now=late).violations
    assert found.subject == "pending:stripe"
    assert (found.evidence["oldest"], found.evidence["slo_seconds"]) == (waiting, slo)

    with clean_engine.begin() as conn:
        conn.execute(text("UPDATE outbox SET status = 'sent', sent_at = now()"))
    assert run(clean_engine, settings, "stuck_outbox", now=late).violations == []


def test_a_paid_order_shopify_has_not_acknowledged_past_the_slo_lags_outbound(
    shop: Shop, clean_engine: Engine, settings: Settings
) -> None:
    order_id = paid_order(clean_engine, {SKU: 1})
    late = soon() + timedelta(seconds=OUTBOUND_SLO_SECONDS)
    assert run(clean_engine, settings, "sync_lag").violations == []
    found = open_of(run(clean_engine, settings, "sync_lag", now=late), "sync_lag")
    outbound = found["outbound:usd"]
    assert (outbound.amount_minor, outbound.currency) == (1000, "usd")
    assert outbound.evidence["oldest_order"] == order_id

    shopify_sync.OrderPusher(clean_engine, shop.gateway(), [1])(push_message(order_id))
    found = open_of(run(clean_engine, settings, "sync_lag", now=late), "sync_lag")
    assert "outbound:usd" not in found  # (inbound lags too by then: no sync runs in this test)


def test_no_full_sync_for_longer_than_the_slo_lags_inbound_until_the_next_sync(
    shop: Shop, clean_engine: Engine, settings: Settings
) -> None:
    assert run(clean_engine, settings, "sync_lag").violations == []
    with clean_engine.begin() as conn:  # the sync process has been down for a while
        conn.execute(
            text("UPDATE sync_cursor SET updated_at = now() - make_interval(secs => :s)"),
            {"s": INBOUND_SLO_SECONDS + 60},
        )
        conn.execute(
            text("UPDATE inventory_level SET synced_at = now() - make_interval(secs => :s)"),
            {"s": INBOUND_SLO_SECONDS + 60},
        )
    (found,) = run(clean_engine, settings, "sync_lag").violations
    assert found.subject == "inbound"
    assert found.evidence["lag_seconds"] > INBOUND_SLO_SECONDS

    shopify_sync.load_catalog(clean_engine, shop.gateway(), [1])
    result = run(clean_engine, settings, "sync_lag")
    assert (result.status, result.violations) == ("ok", [])
