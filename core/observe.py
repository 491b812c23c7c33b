"""Business gauges read from the database when /metrics is scraped."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from core import metrics, relay, sync_lag
from core.models import Reservation, Stock, Violation

# Label sets reported before in this process: set back to 0 when their last violation
# resolves, so a graph drops to 0 instead of ending.
_seen_checks: set[str] = set()
_seen_amounts: set[tuple[str, str]] = set()


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
        open_violations = session.execute(
            select(
                Violation.check_name,
                Violation.currency,
                func.count(),
                func.coalesce(func.sum(Violation.amount_minor), 0),
            )
            .where(Violation.resolved_at.is_(None))
            .group_by(Violation.check_name, Violation.currency)
        ).all()
    metrics.RESERVED_UNITS.set(reserved)
    metrics.COMMITTED_UNITS.set(committed)
    metrics.ACTIVE_RESERVATIONS.set(holds or 0)
    metrics.OUTBOX_PENDING.set(outbox["pending"])
    metrics.OUTBOX_OLDEST_AGE.set(outbox["oldest_pending_age_seconds"])
    metrics.OUTBOX_DEAD.set(outbox["dead"])
    _violation_gauges(open_violations)
    sync_lag.export_metrics(engine)


def _violation_gauges(rows: list[Any]) -> None:
    """Open violations per check, money at stake per check and currency (a violation the check
    cannot price counts in the first and not the second)."""
    counts: dict[str, int] = dict.fromkeys(_seen_checks, 0)
    amounts: dict[tuple[str, str], int] = dict.fromkeys(_seen_amounts, 0)
    for check, currency, count, amount in rows:
        counts[check] = counts.get(check, 0) + count
        if currency is not None:
            amounts[(check, currency)] = int(amount)
    for check, count in counts.items():
        metrics.VIOLATIONS_OPEN.labels(check=check).set(count)
    for (check, currency), amount in amounts.items():
        metrics.VIOLATION_AMOUNT.labels(check=check, currency=currency).set(amount)
    _seen_checks.update(counts)
    _seen_amounts.update(amounts)
