"""Business gauges read from the database when /metrics is scraped."""

from __future__ import annotations

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from core import metrics, relay
from core.models import Reservation, Stock


def refresh_business_gauges(engine: Engine) -> None:
    with Session(engine) as session:
        reserved, committed = session.execute(
            select(
                func.coalesce(func.sum(Stock.reserved), 0),
                func.coalesce(func.sum(Stock.committed), 0),
            )
        ).one()
        holds = session.scalar(
            select(func.count()).select_from(Reservation).where(Reservation.status == "held")
        )
        outbox = relay.depth(session)
    metrics.RESERVED_UNITS.set(reserved)
    metrics.COMMITTED_UNITS.set(committed)
    metrics.ACTIVE_RESERVATIONS.set(holds or 0)
    metrics.OUTBOX_PENDING.set(outbox["pending"])
    metrics.OUTBOX_OLDEST_AGE.set(outbox["oldest_pending_age_seconds"])
    metrics.OUTBOX_DEAD.set(outbox["dead"])
