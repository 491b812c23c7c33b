"""The console's Inventory & sync page reads (core.stock_report) against the real stack: drift as
the inventory_drift check defines it (checks/inventory.py: projection - our holds in Shopify's
`reserved` - Shopify's count) appears when the two sides part and disappears once the sync
brings them together; the sync health and lag series come from the real sync's samples and
cursor."""

from __future__ import annotations

import pickle
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy.orm import Session

from checks.inventory import inventory_drift
from checks.registry import CheckContext
from core import shopify_sync, stock_report, violations
from core.db import transaction
from core.errors import InvalidRequest
from core.settings import Settings
from tests.e2e.conftest import Stack, wait_for
from tests.e2e.helpers import checkout, order, skus_with_stock
from tests.e2e.test_shopify_sync import sell_elsewhere

LOCATIONS = [1]


def row(stack: Stack, sku: str, tolerance: int = 0) -> stock_report.StockRow:
    with Session(stack.engine) as session:
        rows, _ = stock_report.stock_rows(
            session, sku_prefix=sku, tolerance=tolerance, locations=LOCATIONS
        )
    return next(r for r in rows if r.sku == sku)


def drifting_skus(stack: Stack) -> set[str]:
    with Session(stack.engine) as session:
        rows, more = stock_report.stock_rows(
            session, drift_only=True, limit=1000, locations=LOCATIONS
        )
    assert not more
    return {r.sku for r in rows}


def run_drift_check(stack: Stack) -> None:
    """One inventory_drift run (grace 0) reading Shopify live, recorded like the runner does."""
    settings = Settings(grace_seconds=0)
    now = datetime.now(UTC)
    found = inventory_drift(
        CheckContext(stack.engine, settings, now, shopify=stack.shopify_gateway())
    )
    with transaction(stack.engine) as session:
        run_id = violations.start_run(session)
        violations.record_findings(session, run_id, "inventory_drift", found, now)


def test_a_hold_ended_here_drifts_until_shopify_has_the_units_back(stack: Stack) -> None:
    """core.shopify_sync: our projection counts the units of our holds Shopify keeps in
    `reserved`; a hold that ends here stops counting at once, while Shopify has the units back
    in `available` only when the relay delivers the unhold. In between, the projection is ahead
    of Shopify's count by the hold: the drift the check would see, shown per SKU."""
    sku = skus_with_stock(stack, minimum=4)[0]
    body = checkout(stack, [{"sku": sku, "quantity": 2}]).json()
    stack.settle()  # the hold reached Shopify's `reserved`
    held = row(stack, sku)
    assert (held.reserved, held.held_in_shopify_reserved, held.drift) == (2, 2, 0)
    assert held.shopify_level == held.shopify_available - 2
    assert held.sellable == held.shopify_available - 2 - held.committed
    assert sku not in drifting_skus(stack)

    cancelled = httpx.post(
        f"{stack.api['us']}/v1/checkouts/{body['id']}/cancel",
        headers={"Idempotency-Key": str(uuid.uuid4())},
        timeout=30,
    )
    assert cancelled.status_code == 200, cancelled.text
    apart = row(stack, sku)
    assert (apart.reserved, apart.held_in_shopify_reserved) == (0, 0)
    assert apart.drift == 2 and apart.drift_exceeds and apart.drifting
    assert not row(stack, sku, tolerance=2).drift_exceeds
    assert sku in drifting_skus(stack)

    stack.settle()  # the unhold gives Shopify its units back
    together = row(stack, sku)
    assert (together.drift, together.drift_exceeds) == (0, False)
    assert together.shopify_level == together.shopify_available == held.shopify_available
    assert together.last_inbound_at is not None
    assert sku not in drifting_skus(stack)


def test_a_change_only_shopify_knows_shows_once_the_check_reads_it_and_clears_after_sync(
    stack: Stack,
) -> None:
    """A sale in another channel whose webhook never came: our last read agrees with our
    projection, so only the drift check's live read can see it (its open violation is shown on
    the row); the periodic repair brings the level and the next check run resolves it."""
    sku = skus_with_stock(stack, minimum=4)[1]
    before = row(stack, sku)
    stack.faults("shopify", webhook_drop_rate=1.0)
    try:
        sell_elsewhere(stack, sku, 1)
        stack.wait_webhooks()
    finally:
        stack.clear_faults()
    unheard = row(stack, sku)
    assert (unheard.shopify_level, unheard.drift) == (before.shopify_level, 0)
    assert not unheard.drifting

    run_drift_check(stack)
    seen = row(stack, sku)
    assert seen.drift_violation_since is not None and seen.drifting
    assert seen.drift_violation_shopify == before.shopify_level - 1
    assert seen.drift_violation_difference == 1
    assert sku in drifting_skus(stack)

    shopify_sync.repair(stack.engine, stack.shopify_gateway(), LOCATIONS)
    run_drift_check(stack)
    synced = row(stack, sku)
    assert synced.shopify_level == synced.shopify_available == before.shopify_level - 1
    assert synced.drift == 0 and synced.drift_violation_since is None
    assert sku not in drifting_skus(stack)


def test_stock_rows_are_keyset_paged_in_sku_order(stack: Stack) -> None:
    with Session(stack.engine) as session:
        everything, more = stock_report.stock_rows(session, limit=1000, locations=LOCATIONS)
        assert not more and len(everything) > 5
        assert pickle.loads(pickle.dumps(everything)) == everything  # the console caches them
        skus = [r.sku for r in everything]
        assert skus == sorted(skus)
        paged: list[str] = []
        after = None
        while True:
            rows, more = stock_report.stock_rows(
                session, limit=2, starting_after=after, locations=LOCATIONS
            )
            paged += [r.sku for r in rows]
            if not more:
                break
            after = rows[-1].sku
        assert paged == skus
        prefix = skus[3][:4]
        matching, _ = stock_report.stock_rows(session, sku_prefix=prefix, locations=LOCATIONS)
        assert [r.sku for r in matching] == [s for s in skus if s.startswith(prefix)]
        assert stock_report.stock_rows(session, sku_prefix="%", locations=LOCATIONS)[0] == []
        for bad in ({"limit": 0}, {"limit": 1001}, {"tolerance": -1}, {"sku_prefix": "S" * 65}):
            with pytest.raises(InvalidRequest):
                stock_report.stock_rows(session, **bad)  # type: ignore[arg-type]


def test_sync_health_and_lag_series_follow_the_real_sync(stack: Stack) -> None:
    """A paid order waits for Shopify's acknowledgement (the oldest unacknowledged push ages)
    until the relay pushes it; an inbound change and the push leave lag samples per direction;
    a repair stamps the cursor with its time and mode."""
    since = datetime.now(UTC) - timedelta(minutes=1)
    sku_in, sku_out = skus_with_stock(stack, minimum=3)[2:4]
    sell_elsewhere(stack, sku_in, 1)  # inbound, through the webhook
    body = checkout(stack, [{"sku": sku_out, "quantity": 1}]).json()
    stack.stripe_client().v1.payment_intents.confirm(
        body["payment"]["payment_intent_id"], {"payment_method": "pm_card_visa"}
    )
    wait_for(lambda: order(stack, body["order_id"])["status"] == "paid")
    with Session(stack.engine) as session:
        waiting = stock_report.sync_health(session)
    assert waiting.oldest_unacknowledged_seconds > 0

    stack.settle()  # pushed and acknowledged
    with Session(stack.engine) as session:
        health = stock_report.sync_health(session)
        points = stock_report.lag_series(session, since=since, bucket=timedelta(seconds=20))
    assert pickle.loads(pickle.dumps((health, points))) == (health, points)
    assert health.oldest_unacknowledged_seconds == 0
    recent = {d.direction: d for d in health.recent}
    assert recent["inbound"].samples >= 1 and recent["outbound"].samples >= 1
    assert 0 <= recent["outbound"].p50_seconds <= recent["outbound"].p99_seconds < 30
    counted = stack.sql(
        "SELECT direction, count(*) FROM sync_lag_sample WHERE observed_at >= :s GROUP BY 1",
        s=since,
    )
    assert {d: sum(p.samples for p in points if p.direction == d) for d, _ in counted} == dict(
        counted
    )
    for p in points:
        assert p.p50_seconds <= p.p95_seconds <= p.p99_seconds
        assert p.bucket_start >= since - timedelta(seconds=20)
    assert [p.bucket_start for p in points] == sorted(p.bucket_start for p in points)
    assert row(stack, sku_out).last_outbound_at is not None

    assert health.last_repair_at is not None and health.last_repair_mode in ("full", "incremental")
    shopify_sync.repair(stack.engine, stack.shopify_gateway(), LOCATIONS)
    with Session(stack.engine) as session:
        repaired = stock_report.sync_health(session)
        for bad in (
            {"since": since, "bucket": timedelta(0)},
            {"since": since.replace(tzinfo=None), "bucket": timedelta(minutes=1)},
            {"since": since - timedelta(days=30), "bucket": timedelta(seconds=1)},
        ):
            with pytest.raises(InvalidRequest):
                stock_report.lag_series(session, **bad)  # type: ignore[arg-type]
    assert repaired.last_repair_mode == "incremental"
    assert repaired.last_repair_at > health.last_repair_at
    assert repaired.next_repair_since is not None
