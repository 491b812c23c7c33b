"""Where an incremental pull from a provider got to (`sync_cursor`): one row per pull, written in
the transaction that stores what was pulled, so the cursor never runs ahead of the data."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from core.models import SyncCursor


def save(session: Session, name: str, value: dict[str, Any], at: datetime | None = None) -> None:
    """Record the cursor `name` (and when), in the caller's transaction."""
    when = at if at is not None else func.now()
    session.execute(
        insert(SyncCursor)
        .values(name=name, value=value, updated_at=when)
        .on_conflict_do_update(
            index_elements=[SyncCursor.name], set_={"value": value, "updated_at": when}
        )
    )


def load(session: Session, name: str) -> dict[str, Any]:
    """The cursor's value, or {} before the first pull."""
    row = session.get(SyncCursor, name)
    return dict(row.value) if row is not None else {}


def claim(session: Session, name: str) -> dict[str, Any]:
    """The cursor's value ({} when new), its row locked until the caller's transaction ends:
    several processes advancing one cursor take turns, so none reads a range twice."""
    session.execute(insert(SyncCursor).values(name=name, value={}).on_conflict_do_nothing())
    row = session.scalar(select(SyncCursor).where(SyncCursor.name == name).with_for_update())
    return dict(row.value) if row is not None else {}
