"""The periodic housekeeping that keeps promises in time: expire stock holds (and cancel their
PaymentIntents through the outbox), re-apply flagged webhook events, reap old idempotency keys.

`run_once` does one pass and returns what it did; `dotshop relay` runs it every few seconds
beside the relay loop."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Engine

from core import idempotency, inventory, orders, payments
from core.db import transaction
from core.logs import get_logger

log = get_logger("core.sweeper")

# Holds expired per transaction: keeps each sweep's locks short under a backlog.
EXPIRY_BATCH = 100
# How often the relay process sweeps. A hold lives 15 minutes; a few seconds late is nothing.
SWEEP_INTERVAL_SECONDS = 2.0


@dataclass(frozen=True)
class SweepResult:
    expired_orders: int
    reapplied_events: int
    reaped_keys: int


def expire_holds(engine: Engine, now: datetime | None = None) -> int:
    """Release every hold past its expiry; cancel the orders still awaiting payment."""
    now = now or datetime.now(UTC)
    total = 0
    while True:
        with transaction(engine) as session:
            order_ids = inventory.expire_due(session, now, limit=EXPIRY_BATCH)
            for order_id in order_ids:
                order = orders.lock(session, order_id)
                if order.status != orders.AWAITING_PAYMENT:
                    continue
                orders.cancel(session, order, "expired")
                payments.enqueue_cancel_payment_intent(session, order)
        total += len(order_ids)
        if len(order_ids) < EXPIRY_BATCH:
            return total


def run_once(engine: Engine, now: datetime | None = None) -> SweepResult:
    expired = expire_holds(engine, now)
    with transaction(engine) as session:
        reapplied = payments.retry_flagged(session)
    reaped = idempotency.reap_expired(engine, now)
    if expired or reapplied or reaped:
        log.info("sweep", expired_orders=expired, reapplied_events=reapplied, reaped_keys=reaped)
    return SweepResult(expired, reapplied, reaped)
