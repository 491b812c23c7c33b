"""The relay's leases on a real PostgreSQL: no transaction (nor row lock) is held while a
handler calls a provider, a relay that dies in a handler still counts the attempt (so a poison
message reaches the dead letter instead of killing relays forever), a lost lease records
nothing, and an idle relay wakes on NOTIFY rather than waiting for its poll."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import Engine, select, text
from sqlalchemy.orm import Session

from core import relay, worker
from core.models import OutboxMessage
from core.outbox import Handlers, Message, enqueue


def _enqueue(engine: Engine, items: list[tuple[str, dict]], topic: str = "test") -> list[str]:
    with Session(engine) as session, session.begin():
        return [enqueue(session, topic=topic, ordering_key=k, payload=p) for k, p in items]


def _row(engine: Engine, public_id: str) -> OutboxMessage:
    with Session(engine) as session:
        return session.scalars(select(OutboxMessage).filter_by(public_id=public_id)).one()


def test_no_transaction_or_row_lock_is_held_during_the_handler(clean_engine: Engine) -> None:
    """DESIGN.md, outbox: a slow Stripe or Shopify call must not hold a transaction (and its
    row locks) open; the lease is committed before the call."""
    (public_id,) = _enqueue(clean_engine, [("order:1", {})])
    observed: dict[str, object] = {}

    def handler(msg: Message) -> None:
        with clean_engine.connect() as conn:
            observed["open_transactions"] = conn.scalar(
                text(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                    " AND xact_start IS NOT NULL"
                )
            )
            # Another session may lock the row at once: nobody holds it.
            observed["locked"] = conn.scalar(
                text("SELECT attempts FROM outbox WHERE id = :id FOR UPDATE NOWAIT"),
                {"id": msg.id},
            )
            observed["lease"] = conn.scalar(
                text("SELECT locked_until > now() FROM outbox WHERE id = :id"), {"id": msg.id}
            )
            conn.rollback()

    handlers = Handlers()
    handlers.register("test", handler)
    assert relay.run_once(clean_engine, handlers) == 1
    # The attempt was committed before the call; the lease covers the call.
    assert observed == {"open_transactions": 0, "locked": 1, "lease": True}
    row = _row(clean_engine, public_id)
    assert (row.status, row.attempts, row.locked_until) == ("sent", 1, None)


def test_a_leased_message_blocks_its_key_and_is_not_claimed_twice(clean_engine: Engine) -> None:
    first, second, other = _enqueue(clean_engine, [("k", {}), ("k", {}), ("j", {})])
    seen: list[str] = []
    inner: list[int] = []

    def handler(msg: Message) -> None:
        seen.append(msg.public_id)
        if msg.public_id == first:
            # A second relay while `first` is leased: only the other key's head is free.
            inner.append(relay.run_once(clean_engine, handlers))

    handlers = Handlers()
    handlers.register("test", handler)
    assert relay.run_once(clean_engine, handlers, batch=1) == 1
    assert inner == [1] and seen == [first, other]
    assert relay.run_once(clean_engine, handlers) == 1
    assert seen == [first, other, second]


def test_a_relay_that_lost_its_lease_records_nothing(clean_engine: Engine) -> None:
    """A relay slower than its lease: another relay took the message over, and the slow one's
    result must not overwrite the newer attempt."""
    (public_id,) = _enqueue(clean_engine, [("k", {})])
    now = datetime.now(UTC)
    taken_over: list[int] = []
    calls: list[int] = []

    def slow(msg: Message) -> None:
        calls.append(msg.attempts)
        if len(calls) == 1:
            later = now + timedelta(seconds=relay.LEASE_SECONDS + 1)
            taken_over.append(relay.run_once(clean_engine, handlers, now=later))
            raise ConnectionError("the slow relay's call failed after all")

    handlers = Handlers()
    handlers.register("test", slow)
    assert relay.run_once(clean_engine, handlers, now=now) == 1
    assert taken_over == [1] and calls == [0, 1]
    row = _row(clean_engine, public_id)
    # The second relay's success stands; the first one's failure was not recorded over it.
    assert (row.status, row.attempts, row.last_error) == ("sent", 2, None)


POISON_RELAY = """
import os, signal, sys
from core.db import make_engine
from core.outbox import Handlers, RetryPolicy
from core.worker import run_relay

def poison(msg):
    with open(sys.argv[2], "a") as fh:
        fh.write(f"{msg.public_id} {msg.attempts}\\n")
    os.kill(os.getpid(), signal.SIGKILL)  # e.g. a payload that makes the SDK segfault

handlers = Handlers()
handlers.register("test", poison)
run_relay(engine=make_engine(sys.argv[1]), handlers=handlers, jobs=(), lease_seconds=1,
          policy=RetryPolicy(max_attempts=3, base_seconds=0, cap_seconds=0), poll_seconds=0.2)
"""


def test_a_message_that_kills_the_relay_reaches_the_dead_letter(
    clean_engine: Engine, db_url: str, tmp_path: Path
) -> None:
    """DESIGN.md: after N failures a message is dead-lettered; a crash in the handler is a
    failure too, so a poison message cannot kill relays forever."""
    (poison,) = _enqueue(clean_engine, [("order:1", {})])
    marker = tmp_path / "attempts"
    killed = 0
    for _ in range(6):
        proc = subprocess.Popen(
            [sys.executable, "-c", POISON_RELAY, db_url, str(marker)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 60
            while proc.poll() is None and _row(clean_engine, poison).status == "pending":
                assert time.monotonic() < deadline, "the relay neither died nor gave up"
                time.sleep(0.1)
        finally:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(10)
        if _row(clean_engine, poison).status != "pending":
            break
        assert proc.returncode == -9
        killed += 1
    # Three attempts, each killing its relay; the fourth relay's claim gives up on it.
    assert killed == 3
    row = _row(clean_engine, poison)
    assert (row.status, row.attempts, row.locked_until) == ("dead", 3, None)
    assert "never reported" in row.last_error
    assert marker.read_text().split() == [poison, "0", poison, "1", poison, "2"]


def test_an_idle_relay_wakes_on_notify_not_on_its_poll(clean_engine: Engine) -> None:
    """Relays LISTEN on dotshop_outbox: a message enqueued while the relay idles with a
    60-second poll interval is delivered within moments."""
    delivered: dict[str, float] = {}
    handlers = Handlers()
    handlers.register("test", lambda msg: delivered.setdefault(msg.public_id, time.monotonic()))
    stop = threading.Event()
    thread = threading.Thread(
        target=worker.relay_loop, args=(clean_engine, handlers, stop), kwargs={"poll_seconds": 60}
    )
    thread.start()
    try:
        time.sleep(1.0)  # the relay found nothing and is idle now
        enqueued = time.monotonic()
        (public_id,) = _enqueue(clean_engine, [("k", {})])
        deadline = enqueued + 10
        while public_id not in delivered and time.monotonic() < deadline:
            time.sleep(0.02)
        assert public_id in delivered, "not delivered: the relay waited for its poll"
        assert delivered[public_id] - enqueued < 3
    finally:
        stop.set()
        thread.join(10)
    assert not thread.is_alive()
