"""The outbox relay: delivers outbox messages after commit, in per-key order, with retries.

No database transaction stays open while a handler calls Stripe or Shopify. One pass is:
 1. claim: one short transaction takes the due heads of their ordering keys (SKIP LOCKED),
    gives them a lease (`locked_until`), and commits;
 2. per message: count the attempt (a one-statement transaction, committed before the call, so
    a handler that kills the process still counts and a poison message reaches the dead letter
    instead of looping), call the handler outside any transaction, then record the result
    (sent / retry with backoff / dead) in another one-statement transaction.
Each write after the claim is fenced on the lease: a relay that lost its lease (it was too slow
and another relay took the message over) records nothing. A lease that runs out (relay killed)
makes the message claimable again; if that attempt was the last allowed, the message is dead.

 - Per-key order: a claim takes, per key, an unbroken run from the key's head (the oldest
   undelivered message), and the pass delivers it in order; when one fails (retry, dead letter,
   lost lease) the rest of its run is released untouched, and a leased or failing head keeps
   every later message of its key out of other relays' claims.
 - At least once: a handler may have run when the relay died before recording the result.
   Handlers are idempotent (provider idempotency keys derived from the message), so that is fine.

`dotshop relay` runs `run_once` in a loop (core/worker.py) and idles on `LISTEN dotshop_outbox`
(the outbox trigger notifies on every insert and status change) with polling as a fallback.
"""

from __future__ import annotations

import functools
import random
import threading
import time
import traceback
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from sqlalchemy import Connection, Engine, bindparam, func, select, text, update
from sqlalchemy.orm import Session

from core import audit
from core.errors import InvalidRequest
from core.logs import get_logger
from core.metrics import OUTBOX_DELIVERIES, OUTBOX_DELIVERY_DURATION
from core.models import OutboxMessage
from core.outbox import LAST_ERROR_MAX_CHARS, Handlers, Message, PermanentError, RetryPolicy

log = get_logger("dotshop.relay")

# Messages claimed per pass: big enough to amortise the claim query, small enough that a pass
# finishes well inside its lease.
BATCH_SIZE = 50
# The longest run of one key in a pass: a hot key's queue moves ten at a time while the heads
# of other keys still get the rest of the batch.
RUN_LENGTH = 10
# How long a claim is ours. Each provider call times out well within this (Stripe 10 s, Shopify
# ~30 s), and a pass stops starting handlers at half-lease, so a live relay never loses a lease
# it is using; a killed relay's messages wait at most this long before another relay takes them.
LEASE_SECONDS = 120.0
# The channel the outbox trigger notifies (migration 0002).
NOTIFY_CHANNEL = "dotshop_outbox"
# Sent messages removed per prune statement: keeps each delete (and its locks) short.
PRUNE_BATCH = 1000
# The longest reason an operator can give for acting on a dead letter (kept in the audit log).
REASON_MAX_CHARS = 500
# Statuses an operator can list.
STATUSES = ("pending", "sent", "dead", "discarded")

# -- claim_outbox_runs --
# The due pending messages at the front of their ordering key, oldest first, locked until this
# transaction commits their lease. A key's front is its oldest undelivered messages up to the
# first one that is dead (a dead message blocks its key until an operator retries or discards
# it), waiting for its retry, or leased by a live relay; so a key whose head is leased or failing
# offers nothing. `n` is each message's place in its key (1 = the head): `_claim` keeps, per key,
# only an unbroken run from the head, because SKIP LOCKED may skip a row another relay is
# claiming at this very moment and order must never jump over it.
# Runs matter for a hot key: a SKU selling 200 times a second queues 200 holds a second, and one
# message per key per pass (a claim each) could not keep up. The front is found once
# (MATERIALIZED: whatever the statistics say, never once per candidate) by one pass over
# ix_outbox_pending (ordering_key, id), about a microsecond per undelivered message.
CLAIM_SQL = text(
    """
    WITH front AS MATERIALIZED (
             SELECT id, n
               FROM (SELECT id,
                            row_number() OVER in_key AS n,
                            bool_and(status = 'pending' AND next_attempt_at <= :now
                                     AND (locked_until IS NULL OR locked_until <= :now))
                              OVER in_key AS clear
                       FROM outbox
                      WHERE status IN ('pending', 'dead')
                     WINDOW in_key AS (PARTITION BY ordering_key ORDER BY id)) AS undelivered
              WHERE clear AND n <= :run)
    SELECT o.id, o.public_id, o.topic, o.ordering_key, o.payload, o.attempts, o.locked_until,
           front.n
      FROM front
      JOIN outbox AS o ON o.id = front.id
     WHERE o.status = 'pending'
       AND o.next_attempt_at <= :now
       AND (o.locked_until IS NULL OR o.locked_until <= :now)
     ORDER BY o.id
     LIMIT :batch
       FOR UPDATE OF o SKIP LOCKED
    """
)

_table = OutboxMessage.__table__


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _error_text(exc: BaseException) -> str:
    return "".join(traceback.format_exception_only(exc)).strip()[:LAST_ERROR_MAX_CHARS]


@dataclass(frozen=True)
class _Claim:
    message: Message
    lease: datetime  # our `locked_until`: the fence of every later write


def run_once(
    engine: Engine,
    handlers: Handlers,
    *,
    batch: int = BATCH_SIZE,
    now: datetime | None = None,
    policy: RetryPolicy | None = None,
    rng: random.Random | None = None,
    lease_seconds: float = LEASE_SECONDS,
) -> int:
    """Claim and deliver one batch; returns how many messages were handled (sent, failed, or
    dead-lettered). `now`, `policy`, `rng` and `lease_seconds` are injectable for tests."""
    now = now or _utcnow()
    policy = policy or RetryPolicy()
    rng = rng or random.Random()
    started = time.monotonic()
    claims, dead = _claim(engine, now, batch, policy, lease_seconds)
    stopped: set[str] = set()  # keys whose run broke: their later messages wait, in order
    handled, untouched = dead, []
    for i, claim in enumerate(claims):
        if time.monotonic() - started > lease_seconds / 2:
            # Leave the rest to the next pass rather than run a handler past our lease.
            untouched += claims[i:]
            break
        if claim.message.ordering_key in stopped:
            untouched.append(claim)
            continue
        handled += 1
        if not _deliver(engine, claim, handlers, now, policy, rng):
            stopped.add(claim.message.ordering_key)
    if untouched:
        _release(engine, untouched)
    return handled


def _claim(
    engine: Engine, now: datetime, batch: int, policy: RetryPolicy, lease_seconds: float
) -> tuple[list[_Claim], int]:
    """Lease the due heads; dead-letter those whose last allowed attempt never reported (the
    relay died in the handler). Returns the leases and how many were dead-lettered."""
    lease = now + timedelta(seconds=lease_seconds)
    with engine.begin() as conn:
        params = {"now": now, "batch": batch, "run": RUN_LENGTH}
        rows = _unbroken_runs(conn.execute(CLAIM_SQL, params).all())
        exhausted = [r for r in rows if r.attempts >= policy.max_attempts]
        # A key whose head is dead-lettered here delivers none of its run.
        blocked = {r.ordering_key for r in exhausted}
        live = [
            r for r in rows if r.attempts < policy.max_attempts and r.ordering_key not in blocked
        ]
        if live:
            conn.execute(
                update(_table)
                .where(_table.c.id.in_([r.id for r in live]))
                .values(locked_until=lease)
            )
        for row in exhausted:
            error = f"attempt {row.attempts} never reported: the relay stopped in the handler"
            _dead_letter(conn, row.id, row.attempts, now, error, row.public_id, row.topic)
    for row in live:
        if row.locked_until is not None:
            log.warning(
                "outbox.lease_expired",
                outbox_id=row.public_id,
                topic=row.topic,
                attempts=row.attempts,
            )
    claims = [
        _Claim(
            Message(
                id=row.id,
                public_id=row.public_id,
                topic=row.topic,
                ordering_key=row.ordering_key,
                payload=row.payload,
                attempts=row.attempts,
            ),
            lease,
        )
        for row in live
    ]
    return claims, len(exhausted)


def _unbroken_runs(rows: list[Any]) -> list[Any]:
    """Per key, the locked rows that run unbroken from its head (n = 1, 2, ...), in id order."""
    expected: dict[str, int] = {}
    kept = []
    for row in rows:  # id order, so each key's rows come in n order
        if row.n == expected.get(row.ordering_key, 1):
            expected[row.ordering_key] = row.n + 1
            kept.append(row)
        else:
            expected[row.ordering_key] = -1  # broken: nothing after the gap
    return kept


@functools.cache
def _fenced_update(columns: tuple[str, ...]) -> Any:
    """UPDATE of these columns (parameters `set_<column>`) of one message, only while it is
    pending and still leased by us (`fence_id`, `fence_lease`). Built once per column set:
    the relay writes two of these per message."""
    return (
        update(_table)
        .where(
            (_table.c.id == bindparam("fence_id"))
            & (_table.c.status == "pending")
            & (_table.c.locked_until == bindparam("fence_lease"))
        )
        .values({column: bindparam(f"set_{column}") for column in columns})
    )


def _fenced_write(conn: Connection, claim: _Claim, **values: Any) -> int:
    """Write `values` on the claimed message if the lease is still ours; rows written (0/1)."""
    params = {f"set_{column}": value for column, value in values.items()}
    params |= {"fence_id": claim.message.id, "fence_lease": claim.lease}
    return conn.execute(_fenced_update(tuple(values)), params).rowcount


def _release(engine: Engine, claims: list[_Claim]) -> None:
    with engine.begin() as conn:
        for claim in claims:
            _fenced_write(conn, claim, locked_until=None)


def _deliver(
    engine: Engine,
    claim: _Claim,
    handlers: Handlers,
    now: datetime,
    policy: RetryPolicy,
    rng: random.Random,
) -> bool:
    """Deliver one message; True when it was sent (so the next of its key may follow)."""
    message = claim.message
    attempts = message.attempts + 1
    with engine.begin() as conn:
        counted = _fenced_write(conn, claim, attempts=attempts)
    if not counted:
        log.warning("outbox.lease_lost", outbox_id=message.public_id, stage="before_handler")
        return False
    handler = handlers.get(message.topic)
    started = time.perf_counter()
    try:
        if handler is None:
            # A producer deployed before the relay that handles it: retry, do not lose it.
            raise LookupError(f"no outbox handler for topic {message.topic!r}")
        handler(message)
    except Exception as exc:
        values = _failure(message, attempts, exc, now, policy, rng)
    else:
        values = {"status": "sent", "sent_at": now}
    OUTBOX_DELIVERY_DURATION.labels(message.topic).observe(time.perf_counter() - started)
    OUTBOX_DELIVERIES.labels(message.topic, values.get("status", "retry")).inc()
    with engine.begin() as conn:
        recorded = _fenced_write(conn, claim, locked_until=None, **values)
    if not recorded:
        # Another relay took the message over; it will record its own attempt.
        log.warning("outbox.lease_lost", outbox_id=message.public_id, stage="after_handler")
        return False
    return values.get("status") == "sent"


def _failure(
    message: Message,
    attempts: int,
    exc: Exception,
    now: datetime,
    policy: RetryPolicy,
    rng: random.Random,
) -> dict[str, Any]:
    error = _error_text(exc)
    fields = {
        "outbox_id": message.public_id,
        "topic": message.topic,
        "ordering_key": message.ordering_key,
        "attempts": attempts,
        "error": error,
    }
    if isinstance(exc, PermanentError) or attempts >= policy.max_attempts:
        # Alert-worthy: the key is blocked until an operator retries or discards this message.
        log.error(
            "outbox.dead_lettered", alert=True, permanent=isinstance(exc, PermanentError), **fields
        )
        return {"status": "dead", "dead_at": now, "last_error": error}
    delay = policy.delay(message.attempts, rng)
    log.warning("outbox.delivery_failed", retry_in_seconds=round(delay, 3), **fields)
    return {"last_error": error, "next_attempt_at": now + timedelta(seconds=delay)}


def _dead_letter(
    conn: Connection,
    row_id: int,
    attempts: int,
    now: datetime,
    error: str,
    public_id: str,
    topic: str,
) -> None:
    conn.execute(
        update(_table)
        .where(_table.c.id == row_id)
        .values(status="dead", dead_at=now, locked_until=None, last_error=error)
    )
    log.error(
        "outbox.dead_lettered",
        alert=True,
        permanent=False,
        outbox_id=public_id,
        topic=topic,
        attempts=attempts,
        error=error,
    )


# ------------------------------------------------------------------------------ waking up


class Wakeup:
    """Idle until the outbox changes: `LISTEN dotshop_outbox` on a connection of its own, with
    polling as the fallback (a retry falling due, an expired lease, or the listening connection
    being down all show up at the next poll at the latest)."""

    # How often a wait looks at `stop`: a SIGTERM is honoured within this.
    STOP_CHECK_SECONDS = 0.5

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._conn: Connection | None = None

    def _listening(self) -> psycopg.Connection | None:
        if self._conn is None:
            try:
                conn = self._engine.connect().execution_options(isolation_level="AUTOCOMMIT")
                conn.exec_driver_sql(f"LISTEN {NOTIFY_CHANNEL}")
            except Exception as exc:
                log.warning("relay.listen_unavailable", error=_error_text(exc))
                return None
            self._conn = conn
        return self._conn.connection.driver_connection  # type: ignore[return-value]

    def wait(self, timeout: float, stop: threading.Event) -> bool:
        """Return once notified (True), or after `timeout` seconds or on `stop` (False)."""
        deadline = time.monotonic() + timeout
        while not stop.is_set() and (left := deadline - time.monotonic()) > 0:
            driver = self._listening()
            if driver is None:
                stop.wait(left)
                return False
            try:
                chunk = min(left, self.STOP_CHECK_SECONDS)
                if list(driver.notifies(timeout=chunk, stop_after=1)):
                    list(driver.notifies(timeout=0))  # a burst of notifications: one wake-up
                    return True
            except Exception as exc:
                log.warning("relay.listen_lost", error=_error_text(exc))
                self.close()
        return False

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.invalidate()
                self._conn.close()
            except Exception as exc:  # the connection is gone already; nothing to give back
                log.debug("relay.listen_close_failed", error=_error_text(exc))
            self._conn = None


# ------------------------------------------------------------------------------ operators


@dataclass(frozen=True)
class OutboxView:
    """One message as an operator sees it."""

    id: str
    topic: str
    ordering_key: str
    status: str
    attempts: int
    last_error: str | None
    created_at: datetime
    next_attempt_at: datetime
    sent_at: datetime | None
    dead_at: datetime | None
    discarded_at: datetime | None


def list_messages(session: Session, status: str = "dead", limit: int = 100) -> list[OutboxView]:
    """Messages in `status`, oldest first (for dead letters: the ones blocking longest)."""
    if status not in STATUSES:
        raise InvalidRequest(f"status must be one of {', '.join(STATUSES)}", param="status")
    if not 1 <= limit <= 1000:
        raise InvalidRequest("limit must be between 1 and 1000", param="limit")
    rows = session.execute(
        select(_table).where(_table.c.status == status).order_by(_table.c.id).limit(limit)
    ).all()
    return [
        OutboxView(
            id=r.public_id,
            topic=r.topic,
            ordering_key=r.ordering_key,
            status=r.status,
            attempts=r.attempts,
            last_error=r.last_error,
            created_at=r.created_at,
            next_attempt_at=r.next_attempt_at,
            sent_at=r.sent_at,
            dead_at=r.dead_at,
            discarded_at=r.discarded_at,
        )
        for r in rows
    ]


def operator_reason(reason: str | None, *, required: bool) -> str | None:
    """Why an operator acts on a dead letter, trimmed; InvalidRequest when it is required and
    blank, or too long for the audit log."""
    reason = (reason or "").strip()
    if required and not reason:
        raise InvalidRequest("a reason is required", param="reason")
    if len(reason) > REASON_MAX_CHARS:
        raise InvalidRequest(f"reason is longer than {REASON_MAX_CHARS} characters", param="reason")
    return reason or None


def retry_dead(session: Session, public_id: str, *, actor: str, reason: str | None = None) -> bool:
    """Operator retry, audit-logged with who and why: a dead message goes back to pending with
    attempts reset (its last error stays for the record). False when there is no such dead
    message."""
    reason = operator_reason(reason, required=False)
    result = session.execute(
        update(_table)
        .where(_table.c.public_id == public_id, _table.c.status == "dead")
        .values(
            status="pending",
            attempts=0,
            next_attempt_at=func.now(),
            dead_at=None,
            locked_until=None,
        )
    )
    return _audited(session, result.rowcount == 1, "outbox.retry", public_id, actor, reason)


def discard_dead(session: Session, public_id: str, *, actor: str, reason: str) -> bool:
    """Operator discard, audit-logged with who and why (a reason is required): a dead message is
    given up for good and no longer blocks its key (the next message of the key is delivered).
    False when there is no such dead message."""
    reason = operator_reason(reason, required=True)
    result = session.execute(
        update(_table)
        .where(_table.c.public_id == public_id, _table.c.status == "dead")
        .values(status="discarded", discarded_at=func.now())
    )
    return _audited(session, result.rowcount == 1, "outbox.discard", public_id, actor, reason)


def _audited(
    session: Session, done: bool, action: str, public_id: str, actor: str, reason: str | None
) -> bool:
    if done:
        data = {"reason": reason} if reason else None
        audit.record(session, actor=actor, action=action, subject=public_id, data=data)
    return done


def prune_sent(engine: Engine, older_than: datetime) -> int:
    """Delete messages delivered before `older_than`; returns how many (ix_outbox_sent_at)."""
    doomed = (
        select(_table.c.id)
        .where(_table.c.status == "sent", _table.c.sent_at < older_than)
        .limit(PRUNE_BATCH)
        .scalar_subquery()
    )
    total = 0
    while True:
        with engine.begin() as conn:
            deleted = conn.execute(_table.delete().where(_table.c.id.in_(doomed))).rowcount
        total += deleted
        if deleted < PRUNE_BATCH:
            return total


def depth(session: Session) -> dict[str, Any]:
    """For metrics and the stuck-sync check: pending count, age in seconds of the oldest
    pending message (0 when none), dead count."""
    row = session.execute(
        select(
            func.count().filter(_table.c.status == "pending").label("pending"),
            func.coalesce(
                func.extract(
                    "epoch",
                    func.now() - func.min(_table.c.created_at).filter(_table.c.status == "pending"),
                ),
                0,
            ).label("oldest"),
            func.count().filter(_table.c.status == "dead").label("dead"),
        ).where(_table.c.status.in_(("pending", "dead")))
    ).one()
    return {
        "pending": int(row.pending),
        "oldest_pending_age_seconds": max(0.0, float(row.oldest)),
        "dead": int(row.dead),
    }
