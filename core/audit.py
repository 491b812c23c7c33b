"""Who did what to which object: operators' and finance's actions (refunds, outbox retries...).

The table is append-only (a trigger refuses UPDATE and DELETE); `record` writes in the caller's
transaction, so an action and its audit row commit or roll back together.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from core.errors import InvalidRequest
from core.ids import new_id
from core.models import AuditLog


@dataclass(frozen=True)
class AuditEntry:
    id: str
    actor: str
    action: str
    subject: str
    data: dict[str, Any]
    at: datetime


def record(
    session: Session, *, actor: str, action: str, subject: str, data: dict[str, Any] | None = None
) -> str:
    """Append one audit row; returns its `aud_` id."""
    if not (actor and action and subject):
        raise InvalidRequest("an audit record needs an actor, an action and a subject")
    entry = AuditLog(
        id=new_id("aud"),
        actor=actor,
        action=action,
        subject=subject,
        data=data or {},
        # The wall clock, not the transaction's start (now()): records made in one transaction
        # keep the order they were made in.
        at=func.clock_timestamp(),
    )
    session.add(entry)
    session.flush()  # the row exists now, so it is readable in this transaction and `at` is set
    return entry.id


def recent(session: Session, limit: int = 100, *, subject: str | None = None) -> list[AuditEntry]:
    """The newest records first (optionally for one subject)."""
    stmt = select(AuditLog).order_by(AuditLog.at.desc(), AuditLog.id.desc()).limit(limit)
    if subject is not None:
        stmt = stmt.where(AuditLog.subject == subject)
    return [
        AuditEntry(r.id, r.actor, r.action, r.subject, dict(r.data), r.at)
        for r in session.scalars(stmt)
    ]
