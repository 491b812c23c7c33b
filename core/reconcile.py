"""Pull what reconciliation needs from Stripe into the staging tables (stripe_payment,
stripe_refund, stripe_dispute), incrementally and without depending on webhooks.

The pull follows Stripe's event log (`/v1/events`, kept listable for 30 days). Stripe lists
newest first; `ending_before=<cursor>` returns the page just newer than the cursor, so we page
forward from the last event applied, apply each page oldest first, and store the new cursor in
`sync_cursor` in the same transaction as the page's rows: a pull that dies resumes where the
last committed page ended. Each event carries a snapshot of its object, upserted by Stripe's id
only when it is at least as new as the stored one (`seen_at`).

Repair: on the first pull, or when Stripe no longer has the cursor event (older than 30 days),
the objects themselves are listed by `created` range (`created[gte]`, paging back with
`starting_after`) and the cursor restarts at the newest event. `covered_since` records from
when the staging tables are complete: orders paid before it are not compared with Stripe.

Payouts are not staged: their events (or, on repair, the payouts listed) are applied to the
ledger with the webhook's own idempotent functions (core.payouts), so a payout whose webhooks
were all lost is still booked and queued for its `payout_mismatch` verification.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, Table
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from core import balance_txns, cursors, payouts
from core.db import transaction
from core.errors import PaymentProviderError
from core.models import StripeDispute, StripePayment, StripeRefund
from core.stripe_gateway import StripeGateway

EVENTS_CURSOR = "stripe_events"
# Stripe's largest page.
PAGE_SIZE = 100
# When the cursor event is gone, repair from a little before it: events of one second are not
# ordered by id, so a margin covers the ones listed around it.
CURSOR_LOST_MARGIN = timedelta(hours=1)
# Payout events are applied to the ledger by the pull itself (idempotent, keyed by the payout),
# so a payout whose webhooks were all lost is still booked and verified.
PAYOUT_EVENTS: dict[str, Callable[[Session, dict[str, Any]], None]] = {
    "payout.paid": payouts.payout_paid,
    "payout.reconciliation_completed": payouts.payout_reconciled,
    "payout.failed": payouts.payout_failed,
}
# The event types whose objects reconciliation reads (Stripe's `types[]` takes at most 20 exact
# names). PaymentIntents carry the money taken, refunds and disputes the money given back.
EVENT_TYPES = (
    "payment_intent.created",
    "payment_intent.processing",
    "payment_intent.requires_action",
    "payment_intent.amount_capturable_updated",
    "payment_intent.succeeded",
    "payment_intent.payment_failed",
    "payment_intent.canceled",
    "refund.created",
    "refund.updated",
    "refund.failed",
    "charge.refund.updated",
    "charge.dispute.created",
    "charge.dispute.updated",
    "charge.dispute.closed",
    "charge.dispute.funds_withdrawn",
    "charge.dispute.funds_reinstated",
    *PAYOUT_EVENTS,
)


@dataclass(frozen=True)
class PullResult:
    """What one pull did: events applied, objects listed by a repair, where the cursor is."""

    events: int
    repaired: int
    cursor: str | None
    covered_since: datetime


def _at(timestamp: int | None) -> datetime:
    return datetime.fromtimestamp(timestamp or 0, UTC)


def _id(value: Any) -> str | None:
    """An expandable field: an id, or the expanded object."""
    return value.get("id") if isinstance(value, dict) else value


def payment_row(pi: dict[str, Any], seen_at: datetime) -> dict[str, Any]:
    return {
        "id": pi["id"],
        "order_id": (pi.get("metadata") or {}).get("order_id"),
        "amount": pi["amount"],
        "amount_received": pi.get("amount_received") or 0,
        "currency": pi["currency"].lower(),
        "status": pi["status"],
        "latest_charge": _id(pi.get("latest_charge")),
        "created": _at(pi["created"]),
        "seen_at": seen_at,
    }


def refund_row(refund: dict[str, Any], seen_at: datetime) -> dict[str, Any]:
    return {
        "id": refund["id"],
        "payment_intent_id": _id(refund.get("payment_intent")),
        "amount": refund["amount"],
        "currency": refund["currency"].lower(),
        "status": refund["status"],
        "created": _at(refund["created"]),
        "seen_at": seen_at,
    }


def dispute_row(dispute: dict[str, Any], seen_at: datetime) -> dict[str, Any]:
    # A withdrawal is a negative balance transaction, a reinstatement a positive one; counted
    # in the dispute's currency, as our ledger books it, whatever currency Stripe settled in.
    moved = sum(
        balance_txns.dispute_source_amount(bt, dispute)
        for bt in dispute.get("balance_transactions") or []
    )
    return {
        "id": dispute["id"],
        "payment_intent_id": _id(dispute.get("payment_intent")),
        "amount": dispute["amount"],
        "withdrawn": -moved,
        "currency": dispute["currency"].lower(),
        "status": dispute["status"],
        "created": _at(dispute["created"]),
        "seen_at": seen_at,
    }


Converter = Callable[[dict[str, Any], datetime], dict[str, Any]]
# Per Stripe list endpoint: the staging table and how an object becomes its row.
RESOURCES: dict[str, tuple[Table, Converter]] = {
    "payment_intents": (StripePayment.__table__, payment_row),  # type: ignore[dict-item]
    "refunds": (StripeRefund.__table__, refund_row),  # type: ignore[dict-item]
    "disputes": (StripeDispute.__table__, dispute_row),  # type: ignore[dict-item]
}


def _resource_of(event_type: str) -> str:
    if event_type.startswith("payment_intent."):
        return "payment_intents"
    if event_type.startswith("charge.dispute."):
        return "disputes"
    return "refunds"  # refund.* and charge.refund.updated carry a refund


def upsert(
    session: Session, resource: str, objects: Iterable[tuple[dict[str, Any], datetime]]
) -> int:
    """Stage Stripe objects (each with the Stripe time of its snapshot); a snapshot older than
    the stored one changes nothing. Returns how many objects were given."""
    table, convert = RESOURCES[resource]
    # One row per id (the newest snapshot): one INSERT cannot update a row twice.
    rows = {o["id"]: convert(o, seen) for o, seen in sorted(objects, key=lambda x: x[1])}
    if not rows:
        return 0
    stmt = insert(table).values(list(rows.values()))
    columns = {c.name: stmt.excluded[c.name] for c in table.columns if c.name != "id"}
    session.execute(
        stmt.on_conflict_do_update(
            index_elements=["id"],
            set_=columns,
            where=table.c.seen_at <= stmt.excluded.seen_at,
        )
    )
    return len(rows)


def load_cursor(engine: Engine) -> dict[str, Any]:
    with Session(engine) as session:
        return cursors.load(session, EVENTS_CURSOR)


def _cursor_lost(exc: PaymentProviderError) -> bool:
    return exc.details.get("stripe_code") == "resource_missing"


def pull(
    engine: Engine, gateway: StripeGateway, now: datetime, *, backfill_days: int = 30
) -> PullResult:
    """Bring the staging tables up to date with Stripe (see the module doc)."""
    cursor = load_cursor(engine)
    if cursor.get("event_id"):
        try:
            return _follow_events(engine, gateway, cursor, now)
        except PaymentProviderError as exc:
            if not _cursor_lost(exc):
                raise
        since = _at(cursor["event_created"]) - CURSOR_LOST_MARGIN
    else:
        since = now - timedelta(days=backfill_days)
    covered = datetime.fromisoformat(cursor["covered_since"]) if cursor else since
    return _repair(engine, gateway, since, min(covered, since), now)


def _follow_events(
    engine: Engine, gateway: StripeGateway, cursor: dict[str, Any], now: datetime
) -> PullResult:
    applied = 0
    more = True
    while more:
        page, more = gateway.list_page(
            "events",
            {"limit": PAGE_SIZE, "ending_before": cursor["event_id"], "types": list(EVENT_TYPES)},
        )
        if not page:
            break
        by_resource: dict[str, list[tuple[dict[str, Any], datetime]]] = {}
        payout_events = []
        for event in reversed(page):  # oldest first
            obj = event["data"]["object"]
            if event["type"] in PAYOUT_EVENTS:
                payout_events.append((PAYOUT_EVENTS[event["type"]], obj))
                continue
            by_resource.setdefault(_resource_of(event["type"]), []).append(
                (obj, _at(event["created"]))
            )
        cursor = {**cursor, "event_id": page[0]["id"], "event_created": page[0]["created"]}
        with transaction(engine) as session:
            for resource, objects in by_resource.items():
                upsert(session, resource, objects)
            for apply, payout in payout_events:
                apply(session, payout)
            cursors.save(session, EVENTS_CURSOR, cursor, now)
        applied += len(page)
    return PullResult(
        applied, 0, cursor["event_id"], datetime.fromisoformat(cursor["covered_since"])
    )


def _repair_payouts(engine: Engine, gateway: StripeGateway, since: datetime) -> int:
    """Book the payouts created since `since` as their events would have."""
    params: dict[str, Any] = {"limit": PAGE_SIZE, "created": {"gte": int(since.timestamp())}}
    listed, more = 0, True
    while more:
        page, more = gateway.list_page("payouts", params)
        with transaction(engine) as session:
            for payout in page:
                if payout["status"] == "paid":
                    payouts.payout_paid(session, payout)
                if payout["status"] == "failed":
                    payouts.payout_failed(session, payout)
                if payout.get("reconciliation_status") == "completed":
                    payouts.payout_reconciled(session, payout)
        listed += len(page)
        if page:
            params["starting_after"] = page[-1]["id"]
    return listed


def _repair(
    engine: Engine, gateway: StripeGateway, since: datetime, covered: datetime, now: datetime
) -> PullResult:
    """List the objects created since `since`, then restart the cursor at the newest event.
    The cursor event is read first: the listings are at least as new as it, and every event
    after it is applied by the next pull."""
    newest, _ = gateway.list_page("events", {"limit": 1, "types": list(EVENT_TYPES)})
    seen_at = _at(newest[0]["created"]) if newest else _at(0)
    listed = 0
    for resource in RESOURCES:
        params: dict[str, Any] = {"limit": PAGE_SIZE, "created": {"gte": int(since.timestamp())}}
        more = True
        while more:
            page, more = gateway.list_page(resource, params)
            with transaction(engine) as session:
                listed += upsert(session, resource, [(o, seen_at) for o in page])
            if page:
                params["starting_after"] = page[-1]["id"]
    listed += _repair_payouts(engine, gateway, since)
    cursor = {
        "event_id": newest[0]["id"] if newest else None,
        "event_created": newest[0]["created"] if newest else None,
        "covered_since": covered.isoformat(),
    }
    with transaction(engine) as session:
        cursors.save(session, EVENTS_CURSOR, cursor, now)
    return PullResult(0, listed, cursor["event_id"], covered)
