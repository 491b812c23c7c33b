"""The webhook inbox: every provider event we accepted, keyed by (provider, event id).

`accept` inserts inside the caller's transaction; a redelivery of an event already accepted is
a no-op. Events that cannot be applied yet are kept as `flagged` with the reason, never dropped,
and re-applied later by `flagged()` consumers (the sweeper), which mark them `abandoned` (with
an alert) once retrying them is pointless."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from core.models import WebhookInbox

RECEIVED, PROCESSED, FLAGGED, FAILED, ABANDONED = (
    "received",
    "processed",
    "flagged",
    "failed",
    "abandoned",
)


@dataclass(frozen=True)
class InboxEvent:
    id: int
    provider: str
    event_id: str
    event_type: str
    payload: dict[str, Any]
    status: str
    error: str | None
    attempts: int = 0
    received_at: datetime | None = None


_inbox = WebhookInbox.__table__
# Built once (Core, on the table): every webhook runs both, a hold's level webhook included.
_ACCEPT = (
    insert(_inbox)
    .values(
        provider=bindparam("new_provider"),
        event_id=bindparam("new_event_id"),
        event_type=bindparam("new_event_type"),
        payload=bindparam("new_payload", type_=_inbox.c.payload.type),
    )
    .on_conflict_do_nothing(constraint="uq_webhook_inbox_provider_event")
    .returning(_inbox.c.id)
)


def _mark_statement(processed: bool) -> Any:
    return (
        update(_inbox)
        .where(_inbox.c.id == bindparam("inbox_id"))
        .values(
            status=bindparam("new_status"),
            error=bindparam("new_error"),
            attempts=_inbox.c.attempts + 1,
            processed_at=func.now() if processed else None,
        )
    )


_MARK = {True: _mark_statement(processed=True), False: _mark_statement(processed=False)}


def accept(
    session: Session, *, provider: str, event_id: str, event_type: str, payload: dict[str, Any]
) -> InboxEvent | None:
    """Store a new event; None when this (provider, event_id) was accepted before."""
    params = {"new_provider": provider, "new_event_id": event_id, "new_event_type": event_type}
    row = session.execute(_ACCEPT, params | {"new_payload": payload}).scalar_one_or_none()
    if row is None:
        return None
    return InboxEvent(row, provider, event_id, event_type, payload, RECEIVED, None)


def mark(session: Session, inbox_id: int, status: str, error: str | None = None) -> None:
    params = {"inbox_id": inbox_id, "new_status": status, "new_error": error}
    session.execute(_MARK[status == PROCESSED], params)


def flagged(
    session: Session, *, provider: str, limit: int = 100, reason_prefix: str | None = None
) -> list[InboxEvent]:
    """Flagged events, least retried first (then oldest), locked so that two sweepers never
    apply one twice. Every retry counts an attempt, so events that can never be applied (a
    PaymentIntent of another integration) cannot keep a batch from reaching newer ones."""
    query = (
        select(WebhookInbox)
        .where(WebhookInbox.provider == provider, WebhookInbox.status == FLAGGED)
        .order_by(WebhookInbox.attempts, WebhookInbox.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    if reason_prefix:
        query = query.where(WebhookInbox.error.startswith(reason_prefix))
    return [
        InboxEvent(
            r.id,
            r.provider,
            r.event_id,
            r.event_type,
            r.payload,
            r.status,
            r.error,
            r.attempts,
            r.received_at,
        )
        for r in session.scalars(query)
    ]
