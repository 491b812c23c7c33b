"""The console's first screen: are the three promises kept right now, what money is at stake,
how is checkout doing, and did the checks run at all.

A promise is red while any violation of its checks is open, amber when its checks have not
finished a run recently (no news is not good news), green otherwise. Checkout traffic is read
from the idempotency keys of `POST /v1/checkouts` (every checkout request has one, with its
final status), so it is the same from any API process and needs no Prometheus.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from core.checkout import CHECKOUT_SCOPE
from core.idempotency import KEY_TTL

# Which checks guard which promise.
PROMISES: dict[str, tuple[str, ...]] = {
    "No oversold SKU": ("oversell",),
    "Payments reconciled": (
        "unreconciled_payment",
        "payout_mismatch",
        "ledger_imbalance",
        "order_flag",
        "data_expectations",
    ),
    "Sync healthy": ("inventory_drift", "sync_lag", "stuck_outbox"),
}
GREEN, AMBER, RED = "green", "amber", "red"
# A run older than this makes the lights amber: the scheduler runs the fast checks every minute,
# so ten minutes without one means it is down.
STALE_AFTER = timedelta(minutes=10)
# The window the checkout rate and error rate are computed over.
TRAFFIC_WINDOW = timedelta(minutes=15)


@dataclass(frozen=True)
class Promise:
    name: str
    light: str
    open_violations: int
    checks: tuple[str, ...]


@dataclass(frozen=True)
class MoneyAtStake:
    currency: str
    amount_minor: int
    violations: int


@dataclass(frozen=True)
class Traffic:
    """Checkout requests over the window: per minute, and the share answered 5xx (our failure)
    or 4xx (refused: out of stock, bad input)."""

    window_minutes: int
    requests: int
    per_minute: float
    server_errors: int
    refusals: int

    @property
    def error_rate(self) -> float:
        return self.server_errors / self.requests if self.requests else 0.0


@dataclass(frozen=True)
class LastRun:
    id: str
    status: str
    started_at: datetime
    finished_at: datetime | None
    results: dict[str, Any]


@dataclass(frozen=True)
class Overview:
    promises: list[Promise]
    at_stake: list[MoneyAtStake]
    traffic: Traffic
    last_run: LastRun | None
    as_of: datetime


OPEN_BY_CHECK_SQL = text(
    """
-- open_by_check --
-- Open violations per check, and the money they put at stake per currency
-- (ix_violation_check_open).
SELECT check_name, currency, count(*) AS n, coalesce(sum(amount_minor), 0) AS amount
  FROM violation
 WHERE resolved_at IS NULL
 GROUP BY check_name, currency
"""
)

LAST_RUN_SQL = text(
    """
-- last_run --
-- The newest check run (ix_check_run_started_at).
SELECT id, status, started_at, finished_at, results
  FROM check_run
 ORDER BY started_at DESC
 LIMIT 1
"""
)

TRAFFIC_SQL = text(
    """
-- checkout_traffic --
-- Checkout requests since :since, by final status. A key expires KEY_TTL after it was made, so
-- :expires_from (:since + KEY_TTL) lets ix_idempotency_key_expires_at find the window.
SELECT count(*) AS requests,
       count(*) FILTER (WHERE response_status >= 500) AS server_errors,
       count(*) FILTER (WHERE response_status BETWEEN 400 AND 499) AS refusals
  FROM idempotency_key
 WHERE scope = :scope
   AND expires_at >= :expires_from
   AND created_at >= :since
"""
)


def _light(open_count: int, last_run: LastRun | None, now: datetime) -> str:
    if open_count:
        return RED
    if last_run is None or last_run.finished_at is None or now - last_run.finished_at > STALE_AFTER:
        return AMBER
    return GREEN


def overview(session: Session, now: datetime | None = None) -> Overview:
    now = now or datetime.now(UTC)
    open_rows = session.execute(OPEN_BY_CHECK_SQL).all()
    run = session.execute(LAST_RUN_SQL).one_or_none()
    last_run = None
    if run is not None:
        last_run = LastRun(run.id, run.status, run.started_at, run.finished_at, run.results)
    open_by_check: dict[str, int] = {}
    stake: dict[str, tuple[int, int]] = {}
    for check, currency, n, amount in open_rows:
        open_by_check[check] = open_by_check.get(check, 0) + n
        if currency is not None:
            total, count = stake.get(currency, (0, 0))
            stake[currency] = (total + int(amount), count + n)
    promises = [
        Promise(
            name,
            _light(sum(open_by_check.get(c, 0) for c in checks), last_run, now),
            sum(open_by_check.get(c, 0) for c in checks),
            checks,
        )
        for name, checks in PROMISES.items()
    ]
    since = now - TRAFFIC_WINDOW
    t = session.execute(
        TRAFFIC_SQL, {"scope": CHECKOUT_SCOPE, "since": since, "expires_from": since + KEY_TTL}
    ).one()
    minutes = int(TRAFFIC_WINDOW.total_seconds() // 60)
    traffic = Traffic(minutes, t.requests, t.requests / minutes, t.server_errors, t.refusals)
    at_stake = [MoneyAtStake(c, a, n) for c, (a, n) in sorted(stake.items())]
    return Overview(promises, at_stake, traffic, last_run, now)
