"""The periodic housekeeping that keeps promises in time: expire stock holds (and cancel their
PaymentIntents through the outbox), re-apply flagged webhook events, reap old idempotency keys,
prune delivered outbox messages.

`run_once` does one pass and returns what it did; `dotshop relay` runs it every few seconds
beside the relay loop. Each step runs even when an earlier one failed (a bad flagged event must
not stop holds from expiring); a pass with a failed step raises SweepIncomplete at its end, so
the caller logs it and backs off.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine

from core import idempotency, inventory, orders, payments, relay
from core.db import transaction
from core.errors import DotshopError
from core.logs import get_logger
from core.settings import get_settings

log = get_logger("core.sweeper")

# Holds expired per transaction: keeps each sweep's locks short under a backlog.
EXPIRY_BATCH = 100
# How often the relay process sweeps. A hold lives 15 minutes; a few seconds late is nothing.
SWEEP_INTERVAL_SECONDS = 2.0


class SweepIncomplete(DotshopError):
    """One or more sweep steps failed (each is logged); the others ran."""

    code = "sweep_incomplete"


@dataclass(frozen=True)
class SweepResult:
    expired_orders: int
    reapplied_events: int
    reaped_keys: int
    pruned_messages: int


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


def retry_flagged(engine: Engine) -> int:
    with transaction(engine) as session:
        return payments.retry_flagged(session)


def prune_outbox(engine: Engine, now: datetime | None = None) -> int:
    """Delete outbox messages delivered more than `outbox_retention_hours` ago."""
    now = now or datetime.now(UTC)
    return relay.prune_sent(engine, now - timedelta(hours=get_settings().outbox_retention_hours))


def run_once(engine: Engine, now: datetime | None = None) -> SweepResult:
    steps: dict[str, Callable[[], int]] = {
        "expired_orders": lambda: expire_holds(engine, now),
        "reapplied_events": lambda: retry_flagged(engine),
        "reaped_keys": lambda: idempotency.reap_expired(engine, now),
        "pruned_messages": lambda: prune_outbox(engine, now),
    }
    done: dict[str, int] = {}
    failed: list[str] = []
    for name, step in steps.items():
        try:
            done[name] = step()
        except Exception:
            log.exception("sweep.step_failed", step=name)
            done[name] = 0
            failed.append(name)
    if any(done.values()):
        log.info("sweep", **done)
    if failed:
        raise SweepIncomplete(f"sweep steps failed: {', '.join(failed)}", steps=failed)
    return SweepResult(**done)
