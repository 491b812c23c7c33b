"""The reconciliation pull (core.reconcile) against the real sandbox Stripe through the real SDK,
and the matching's grace period, on a real PostgreSQL.

Stripe (docs: List all events) lists newest first and keeps events 30 days; `ending_before`
returns the page just newer than a cursor. The pull pages forward from its cursor, applies
oldest first, and never needs a webhook."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, select, text
from sqlalchemy.orm import Session

from core import cursors, reconcile
from core.db import transaction
from core.models import StripePayment, StripeRefund
from core.reconcile_match import unreconciled
from core.stripe_gateway import StripeGateway

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


@pytest.fixture
def staging(clean_engine: Engine) -> Engine:
    with clean_engine.begin() as conn:
        conn.execute(text("TRUNCATE stripe_payment, stripe_refund, stripe_dispute"))
    return clean_engine


def paid_intent(gateway: StripeGateway, amount: int, order_id: str, confirm: bool = True) -> str:
    pi = gateway.client.v1.payment_intents.create(
        {
            "amount": amount,
            "currency": "usd",
            "payment_method_types": ["card"],
            "metadata": {"order_id": order_id},
        }
    )
    if confirm:
        gateway.client.v1.payment_intents.confirm(pi.id, {"payment_method": "pm_card_visa"})
    return pi.id


def staged(engine: Engine) -> dict[str, tuple[str, int, str | None]]:
    with Session(engine) as s:
        rows = s.execute(
            select(
                StripePayment.id,
                StripePayment.status,
                StripePayment.amount_received,
                StripePayment.order_id,
            )
        )
        return {r.id: (r.status, r.amount_received, r.order_id) for r in rows}


def newest_event(gateway: StripeGateway) -> str:
    page, _ = gateway.list_page("events", {"limit": 1, "types": list(reconcile.EVENT_TYPES)})
    return page[0]["id"]


def test_first_pull_lists_the_objects_then_later_pulls_follow_the_event_log(
    staging: Engine, gateway: StripeGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Pages of two events, so following the log takes several pages in order.
    monkeypatch.setattr(reconcile, "PAGE_SIZE", 2)
    first = paid_intent(gateway, 1500, "ord_first")
    result = reconcile.pull(staging, gateway, NOW)
    assert result.events == 0 and result.repaired >= 1
    assert staged(staging)[first] == ("succeeded", 1500, "ord_first")
    assert result.cursor == newest_event(gateway)

    second = paid_intent(gateway, 2500, "ord_second")
    pending = paid_intent(gateway, 900, "ord_pending", confirm=False)
    refund = gateway.client.v1.refunds.create({"payment_intent": first, "amount": 400})
    result = reconcile.pull(staging, gateway, NOW)
    # created + succeeded for `second`, created for `pending`, refund.created (at least)
    assert result.events >= 4 and result.repaired == 0
    got = staged(staging)
    assert got[second] == ("succeeded", 2500, "ord_second")
    assert got[pending][0] == "requires_payment_method"
    with Session(staging) as s:
        row = s.get(StripeRefund, refund.id)
        assert (row.payment_intent_id, row.amount, row.status) == (first, 400, "succeeded")
    assert result.cursor == newest_event(gateway)
    assert reconcile.load_cursor(staging)["event_id"] == result.cursor

    again = reconcile.pull(staging, gateway, NOW)
    assert (again.events, again.repaired, again.cursor) == (0, 0, result.cursor)


def test_a_cursor_stripe_no_longer_has_is_repaired_by_listing_objects(
    staging: Engine, gateway: StripeGateway
) -> None:
    """An event older than 30 days is gone from Stripe (404 for `ending_before`): list the
    objects created since a little before the cursor, then restart from the newest event."""
    reconcile.pull(staging, gateway, NOW)
    covered = reconcile.load_cursor(staging)["covered_since"]
    with transaction(staging) as session:
        cursors.save(
            session,
            reconcile.EVENTS_CURSOR,
            {
                "event_id": "evt_expired",
                "event_created": int(NOW.timestamp()),
                "covered_since": covered,
            },
            NOW,
        )
    late = paid_intent(gateway, 700, "ord_late")
    result = reconcile.pull(staging, gateway, NOW)
    assert result.repaired >= 1 and result.cursor == newest_event(gateway)
    assert staged(staging)[late] == ("succeeded", 700, "ord_late")
    assert reconcile.load_cursor(staging)["covered_since"] == covered


def test_an_older_snapshot_never_overwrites_a_newer_one(staging: Engine) -> None:
    """Events can be listed out of order within one second; `seen_at` keeps the newest state."""
    pi = {
        "id": "pi_snapshots",
        "amount": 1000,
        "amount_received": 1000,
        "currency": "usd",
        "status": "succeeded",
        "metadata": {"order_id": "ord_x"},
        "created": int(NOW.timestamp()),
    }
    older = {**pi, "status": "processing", "amount_received": 0}
    with transaction(staging) as session:
        reconcile.upsert(session, "payment_intents", [(pi, NOW)])
    with transaction(staging) as session:
        reconcile.upsert(session, "payment_intents", [(older, NOW - timedelta(seconds=1))])
    assert staged(staging)["pi_snapshots"] == ("succeeded", 1000, "ord_x")


def test_a_mismatch_counts_only_once_older_than_the_grace_period(staging: Engine) -> None:
    """DESIGN.md: each unreconciled payment counts past a grace period (webhooks lag)."""
    created = NOW - timedelta(minutes=5)
    pi = {
        "id": "pi_young",
        "amount": 1000,
        "amount_received": 1000,
        "currency": "usd",
        "status": "succeeded",
        "metadata": {},
        "created": int(created.timestamp()),
    }
    with transaction(staging) as session:
        reconcile.upsert(session, "payment_intents", [(pi, created)])
    with Session(staging) as session:
        since = NOW - timedelta(days=30)
        assert unreconciled(session, cutoff=NOW - timedelta(minutes=10), covered_since=since) == []
        found = unreconciled(session, cutoff=NOW, covered_since=since)
    assert [(f.subject, f.reason, f.amount_minor) for f in found] == [
        ("pi_young", "missing_in_ledger", 1000)
    ]
