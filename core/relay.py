"""The outbox relay: delivers outbox messages after commit, in per-key order, with retries.

Transaction shape: one transaction per batch. It claims the batch (row locks, SKIP LOCKED),
runs each message's handler while holding its lock, records the result, and commits.
 - Per-key order stays simple: a batch holds at most the *head* of each ordering key, and the
   next message of that key only becomes a head once this commit marks its predecessor sent.
 - A relay that dies (killed, connection lost) releases its locks with its connection; nothing
   was marked, so another relay delivers the same messages again.
 - The price is at-least-once: a handler may have run when the relay died before committing.
   Handlers are idempotent (provider idempotency keys derived from the message), so that is fine.
 - A slow handler holds only its batch's rows: other relays skip them and carry on with other
   keys. Keep batches small so that locks (and the transaction) stay short.

Several relays may run at once; they never deliver the same message concurrently, and never
deliver message n+1 of a key before n is acknowledged (committed as sent).
"""

from __future__ import annotations

import importlib
import random
import signal
import threading
import traceback
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import Engine, func, select, text, update
from sqlalchemy.orm import Session

from core.models import OutboxMessage
from core.outbox import (
    LAST_ERROR_MAX_CHARS,
    Handlers,
    Message,
    PermanentError,
    RetryPolicy,
)

log = structlog.get_logger("dotshop.relay")

# Messages claimed per transaction: big enough to amortise the claim query, small enough that a
# batch's locks and transaction stay short (at most one message per ordering key anyway).
BATCH_SIZE = 50
# How long an idle relay sleeps before looking again: a fresh message waits at most this long.
IDLE_SLEEP_SECONDS = 0.5

# Modules that add handlers: each has `register_handlers(handlers: Handlers) -> None`. A module
# that produces outbox messages adds itself here (e.g. "core.shopify_push").
HANDLER_MODULES: tuple[str, ...] = ()

# -- claim_outbox_heads --
# Due pending messages that are the head of their ordering key, oldest first, locked for this
# relay. "Head" means nothing earlier in the same key is still pending (in flight, or waiting
# for its retry) or dead (a dead message blocks its key until an operator retries it, so order
# is never broken). Rows another relay has locked are skipped, so relays share the work; and
# since a locked head is still 'pending', its successors are not heads either: no relay can
# overtake a message in flight. The NOT EXISTS probe uses ix_outbox_pending
# (ordering_key, id) WHERE status <> 'sent'.
CLAIM_SQL = text(
    """
    SELECT o.id, o.public_id, o.topic, o.ordering_key, o.payload, o.attempts
      FROM outbox AS o
     WHERE o.status = 'pending'
       AND o.next_attempt_at <= :now
       AND NOT EXISTS (
             SELECT 1
               FROM outbox AS earlier
              WHERE earlier.ordering_key = o.ordering_key
                AND earlier.id < o.id
                AND earlier.status <> 'sent')
     ORDER BY o.id
     LIMIT :batch
       FOR UPDATE OF o SKIP LOCKED
    """
)

_table = OutboxMessage.__table__


def _utcnow() -> datetime:
    return datetime.now(UTC)


def run_once(
    engine: Engine,
    handlers: Handlers,
    *,
    batch: int = BATCH_SIZE,
    now: datetime | None = None,
    policy: RetryPolicy | None = None,
    rng: random.Random | None = None,
) -> int:
    """Claim and deliver one batch; returns how many messages were handled (sent, failed or
    dead-lettered). `now`, `policy` and `rng` are injectable for tests."""
    now = now or _utcnow()
    policy = policy or RetryPolicy()
    rng = rng or random.Random()
    with Session(engine) as session, session.begin():
        rows = session.execute(CLAIM_SQL, {"now": now, "batch": batch}).all()
        for row in rows:
            message = Message(
                id=row.id,
                public_id=row.public_id,
                topic=row.topic,
                ordering_key=row.ordering_key,
                payload=row.payload,
                attempts=row.attempts,
            )
            session.execute(
                update(_table)
                .where(_table.c.id == message.id)
                .values(**_deliver(message, handlers, now, policy, rng))
            )
    return len(rows)


def _deliver(
    message: Message,
    handlers: Handlers,
    now: datetime,
    policy: RetryPolicy,
    rng: random.Random,
) -> dict[str, Any]:
    """Run the handler; return the row's new values."""
    attempts = message.attempts + 1
    handler = handlers.get(message.topic)
    try:
        if handler is None:
            # A producer deployed before the relay that handles it: retry, do not lose it.
            raise LookupError(f"no outbox handler for topic {message.topic!r}")
        handler(message)
    except Exception as exc:
        error = "".join(traceback.format_exception_only(exc)).strip()[:LAST_ERROR_MAX_CHARS]
        fields = {
            "outbox_id": message.public_id,
            "topic": message.topic,
            "ordering_key": message.ordering_key,
            "attempts": attempts,
            "error": error,
        }
        if isinstance(exc, PermanentError) or attempts >= policy.max_attempts:
            # Alert-worthy: the key is blocked until an operator retries this message.
            log.error(
                "outbox.dead_lettered",
                alert=True,
                permanent=isinstance(exc, PermanentError),
                **fields,
            )
            return {"status": "dead", "dead_at": now, "attempts": attempts, "last_error": error}
        delay = policy.delay(message.attempts, rng)
        log.warning("outbox.delivery_failed", retry_in_seconds=round(delay, 3), **fields)
        return {
            "attempts": attempts,
            "last_error": error,
            "next_attempt_at": now + timedelta(seconds=delay),
        }
    return {"status": "sent", "sent_at": now, "attempts": attempts}


def retry_dead(session: Session, public_id: str) -> bool:
    """Operator retry: a dead message goes back to pending with attempts reset (its last error
    stays for the record). False when there is no such dead message."""
    result = session.execute(
        update(_table)
        .where(_table.c.public_id == public_id, _table.c.status == "dead")
        .values(status="pending", attempts=0, next_attempt_at=func.now(), dead_at=None)
    )
    return result.rowcount == 1


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
        ).where(_table.c.status != "sent")
    ).one()
    return {
        "pending": int(row.pending),
        "oldest_pending_age_seconds": max(0.0, float(row.oldest)),
        "dead": int(row.dead),
    }


def default_handlers(modules: Iterable[str] = HANDLER_MODULES) -> Handlers:
    """The handlers a production relay runs: each module in HANDLER_MODULES registers its own."""
    handlers = Handlers()
    for name in modules:
        importlib.import_module(name).register_handlers(handlers)
    return handlers


def run(
    once: bool = False,
    *,
    engine: Engine | None = None,
    handlers: Handlers | None = None,
    batch: int = BATCH_SIZE,
    idle_sleep: float = IDLE_SLEEP_SECONDS,
    policy: RetryPolicy | None = None,
    stop: threading.Event | None = None,
) -> None:
    """The relay process: deliver batches until stopped (SIGINT/SIGTERM finish the batch in
    hand, then return). With `once`, deliver everything due now and return."""
    if engine is None:
        from core.db import database_url, engine_for

        engine = engine_for(database_url())
    handlers = default_handlers() if handlers is None else handlers
    stop = stop or threading.Event()
    previous = install_stop_signals(stop)
    rng = random.Random()
    log.info("relay.started", topics=sorted(handlers), once=once)
    handled = 0
    try:
        while not stop.is_set():
            count = run_once(engine, handlers, batch=batch, policy=policy, rng=rng)
            handled += count
            if count == 0:
                if once:
                    break
                stop.wait(idle_sleep)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    log.info("relay.stopped", handled=handled)


def install_stop_signals(stop: threading.Event) -> dict[int, Any]:
    """SIGINT/SIGTERM set `stop` (the batch in hand still commits); returns the handlers they
    replace, to restore afterwards."""
    if threading.current_thread() is not threading.main_thread():
        return {}  # signals only reach the main thread; an embedding caller owns `stop`

    def _stop(signum: int, _frame: object) -> None:
        log.info("relay.stopping", signal=signal.Signals(signum).name)
        stop.set()

    return {signum: signal.signal(signum, _stop) for signum in (signal.SIGINT, signal.SIGTERM)}
