"""The relay on a real PostgreSQL: concurrent relays keep per-key order and acknowledge each
message once, failures back off, dead letters block their key until retried, and a killed relay
leaves its claimed messages to the others."""

from __future__ import annotations

import collections
import os
import random
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, select, text
from sqlalchemy.orm import Session
from structlog.testing import capture_logs

from core import relay, worker
from core.models import OutboxMessage
from core.outbox import Handlers, Message, PermanentError, RetryPolicy, enqueue

# Backoff in milliseconds so that retries happen within the test.
FAST = RetryPolicy(max_attempts=10, base_seconds=0.001, cap_seconds=0.01)


def _enqueue(engine: Engine, items: list[tuple[str, dict]], topic: str = "test") -> list[str]:
    with Session(engine) as session, session.begin():
        return [enqueue(session, topic=topic, ordering_key=k, payload=p) for k, p in items]


def _rows(engine: Engine) -> dict[str, OutboxMessage]:
    with Session(engine) as session:
        return {r.public_id: r for r in session.scalars(select(OutboxMessage))}


def _recorder() -> tuple[Handlers, list[Message]]:
    seen: list[Message] = []
    handlers = Handlers()
    handlers.register("test", seen.append)
    return handlers, seen


def test_delivers_in_order_and_marks_sent(clean_engine: Engine) -> None:
    ids = _enqueue(clean_engine, [("a", {"n": 1}), ("b", {"n": 1}), ("a", {"n": 2})])
    handlers, seen = _recorder()
    assert relay.run_once(clean_engine, handlers) == 3  # a's run (both, in order) and b's head
    assert relay.run_once(clean_engine, handlers) == 0
    assert [m.public_id for m in seen] == ids
    rows = _rows(clean_engine)
    assert all(r.status == "sent" and r.sent_at and r.attempts == 1 for r in rows.values())
    assert seen[0].payload == {"n": 1} and seen[0].attempts == 0


def test_a_claim_reads_the_backlog_once_whatever_the_statistics(clean_engine: Engine) -> None:
    """A hot key's queue (2,000 holds of one SKU) behind which 20 other keys wait: the claim
    takes a run of the hot key (RUN_LENGTH, in order) and the head of every other key, and finds
    them in one pass over the undelivered messages, not one probe or subquery run per queued
    message, before the table has statistics or after."""
    hot = _enqueue(clean_engine, [("sku:HOT", {"n": n}) for n in range(2000)])
    others = _enqueue(clean_engine, [(f"sku:{n:02d}", {"n": n}) for n in range(20)])
    for analyzed in (False, True):
        if analyzed:
            with clean_engine.connect() as conn:
                conn.execute(text("ANALYZE outbox"))
                conn.commit()
        with clean_engine.begin() as conn:
            explained = conn.execute(
                text("EXPLAIN (ANALYZE, FORMAT JSON) " + relay.CLAIM_SQL.text),
                {"now": datetime.now(UTC), "batch": 50, "run": relay.RUN_LENGTH},
            ).scalar_one()
            claimed = conn.execute(
                relay.CLAIM_SQL, {"now": datetime.now(UTC), "batch": 50, "run": relay.RUN_LENGTH}
            )
            assert [r.public_id for r in claimed] == [*hot[: relay.RUN_LENGTH], *others]
        nodes, scans = [explained[0]["Plan"]], []
        while nodes:
            node = nodes.pop()
            nodes.extend(node.get("Plans", []))
            if node.get("Index Name") == "ix_outbox_pending" or (
                node.get("Relation Name") == "outbox" and node["Actual Rows"] >= 2000
            ):
                scans.append(node["Actual Loops"])
        assert scans and all(loops == 1 for loops in scans), (analyzed, scans)


def test_four_relays_drain_2000_messages_in_per_key_order(clean_engine: Engine) -> None:
    keys = [f"sku:{k}" for k in range(50)]
    items = [(key, {"seq": seq}) for seq in range(40) for key in keys]
    ids = _enqueue(clean_engine, items)
    rnd = random.Random(42)
    fail_once = set(rnd.sample(ids, 60))

    lock = threading.Lock()
    acked: list[tuple[str, int, str]] = []
    failures: collections.Counter[str] = collections.Counter()
    overtaken: list[str] = []

    def handler(msg: Message) -> None:
        # The invariant itself, checked from outside the relay's transaction: every earlier
        # message of this key is already acknowledged (committed as sent).
        with clean_engine.connect() as conn:
            unacked = conn.scalar(
                text(
                    "SELECT count(*) FROM outbox WHERE ordering_key = :k AND id < :id"
                    " AND status <> 'sent'"
                ),
                {"k": msg.ordering_key, "id": msg.id},
            )
        with lock:
            if unacked:
                overtaken.append(msg.public_id)
            if msg.public_id in fail_once and failures[msg.public_id] == 0:
                failures[msg.public_id] += 1
                raise ConnectionError("injected failure")
            acked.append((msg.ordering_key, msg.payload["seq"], msg.public_id))

    handlers = Handlers()
    handlers.register("test", handler)
    deadline = time.monotonic() + 120
    errors: list[BaseException] = []

    def relay_loop(seed: int) -> None:
        rng = random.Random(seed)
        try:
            while time.monotonic() < deadline:
                if relay.run_once(clean_engine, handlers, batch=20, policy=FAST, rng=rng):
                    continue
                with clean_engine.connect() as conn:
                    left = conn.scalar(text("SELECT count(*) FROM outbox WHERE status <> 'sent'"))
                if left == 0:
                    return
                time.sleep(0.005)
        except BaseException as exc:  # surfaced by the main thread
            errors.append(exc)

    started = time.monotonic()
    threads = [threading.Thread(target=relay_loop, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(130)
    elapsed = time.monotonic() - started

    assert errors == []
    assert overtaken == []
    assert len(failures) == 60  # every injected failure happened, and was retried
    delivered = collections.Counter(public_id for _, _, public_id in acked)
    assert set(delivered) == set(ids)
    assert max(delivered.values()) == 1  # none delivered twice after acknowledgement
    per_key: dict[str, list[int]] = collections.defaultdict(list)
    for key, seq, _ in acked:
        per_key[key].append(seq)
    assert all(per_key[key] == list(range(40)) for key in keys)
    rows = _rows(clean_engine)
    assert all(r.status == "sent" for r in rows.values())
    assert sum(r.attempts for r in rows.values()) == 2000 + 60
    assert elapsed < 60, elapsed


def test_backoff_schedules_the_retry(clean_engine: Engine) -> None:
    (public_id,) = _enqueue(clean_engine, [("k", {})])
    calls: list[int] = []

    def flaky(msg: Message) -> None:
        calls.append(msg.attempts)
        if len(calls) == 1:
            raise ConnectionError("provider 503")

    handlers = Handlers()
    handlers.register("test", flaky)
    policy = RetryPolicy(max_attempts=5, base_seconds=10, cap_seconds=100)
    t0 = datetime.now(UTC) + timedelta(seconds=1)
    assert relay.run_once(clean_engine, handlers, now=t0, policy=policy, rng=random.Random(3)) == 1
    expected = policy.delay(0, random.Random(3))
    assert 5 <= expected <= 10
    row = _rows(clean_engine)[public_id]
    assert row.status == "pending" and row.attempts == 1 and "provider 503" in row.last_error
    assert abs((row.next_attempt_at - t0).total_seconds() - expected) < 0.001

    early = t0 + timedelta(seconds=expected - 0.01)
    assert relay.run_once(clean_engine, handlers, now=early, policy=policy) == 0
    due = t0 + timedelta(seconds=expected + 0.01)
    assert relay.run_once(clean_engine, handlers, now=due, policy=policy) == 1
    assert calls == [0, 1]
    assert _rows(clean_engine)[public_id].status == "sent"


def test_unknown_topic_is_retried_not_lost(clean_engine: Engine) -> None:
    (public_id,) = _enqueue(clean_engine, [("k", {})], topic="not.yet.deployed")
    assert relay.run_once(clean_engine, Handlers(), policy=FAST) == 1
    row = _rows(clean_engine)[public_id]
    assert row.status == "pending" and "no outbox handler" in row.last_error


def test_dead_letter_blocks_its_key_until_retried(clean_engine: Engine) -> None:
    poison, after, other = _enqueue(
        clean_engine, [("order:1", {"poison": True}), ("order:1", {}), ("order:2", {})]
    )
    broken = {"yes": True}
    delivered: list[str] = []

    def handler(msg: Message) -> None:
        if msg.payload.get("poison") and broken["yes"]:
            raise ValueError("Shopify says 422")
        delivered.append(msg.public_id)

    handlers = Handlers()
    handlers.register("test", handler)
    policy = RetryPolicy(max_attempts=3, base_seconds=1, cap_seconds=1)
    now = datetime.now(UTC) + timedelta(seconds=1)
    with capture_logs() as logs:
        for i in range(10):
            relay.run_once(clean_engine, handlers, now=now + timedelta(minutes=i), policy=policy)

    rows = _rows(clean_engine)
    assert (rows[poison].status, rows[poison].attempts) == ("dead", 3)
    assert rows[poison].dead_at is not None and "Shopify says 422" in rows[poison].last_error
    # Claimed in the poison's run each time, released untouched when the poison failed.
    assert (rows[after].status, rows[after].attempts, rows[after].locked_until) == (
        "pending",
        0,
        None,
    )
    assert delivered == [other]
    dead_events = [e for e in logs if e["event"] == "outbox.dead_lettered"]
    assert len(dead_events) == 1
    assert dead_events[0]["alert"] is True and dead_events[0]["outbox_id"] == poison
    assert dead_events[0]["log_level"] == "error"

    with Session(clean_engine) as session:
        d = relay.depth(session)
    assert (d["pending"], d["dead"]) == (1, 1) and d["oldest_pending_age_seconds"] >= 0

    broken["yes"] = False
    with Session(clean_engine) as session, session.begin():
        assert relay.retry_dead(session, poison, actor="test") is True
        assert relay.retry_dead(session, poison, actor="test") is False  # pending now, not dead
        assert relay.retry_dead(session, "obx_nope", actor="test") is False
    later = datetime.now(UTC) + timedelta(seconds=1)
    assert relay.run_once(clean_engine, handlers, now=later, policy=policy) == 2  # in order
    assert relay.run_once(clean_engine, handlers, now=later, policy=policy) == 0
    assert delivered == [other, poison, after]
    rows = _rows(clean_engine)
    assert rows[poison].status == "sent" and rows[poison].dead_at is None
    with Session(clean_engine) as session:
        assert relay.depth(session) == {"pending": 0, "oldest_pending_age_seconds": 0.0, "dead": 0}


def test_permanent_error_dead_letters_at_once(clean_engine: Engine) -> None:
    (public_id,) = _enqueue(clean_engine, [("k", {})])

    def refuse(msg: Message) -> None:
        raise PermanentError("payload can never be valid")

    handlers = Handlers()
    handlers.register("test", refuse)
    assert relay.run_once(clean_engine, handlers) == 1
    row = _rows(clean_engine)[public_id]
    assert (row.status, row.attempts) == ("dead", 1)


def test_depth_reports_oldest_pending_age(clean_engine: Engine) -> None:
    _enqueue(clean_engine, [("k", {}), ("k", {})])
    with clean_engine.begin() as conn:
        conn.execute(text("UPDATE outbox SET created_at = now() - interval '90 seconds'"))
    with Session(clean_engine) as session:
        d = relay.depth(session)
    assert d["pending"] == 2 and d["dead"] == 0
    assert 90 <= d["oldest_pending_age_seconds"] < 100


def test_run_once_mode_drains_and_restores_signal_handlers(clean_engine: Engine) -> None:
    _enqueue(clean_engine, [(f"k{i % 3}", {"i": i}) for i in range(9)])
    handlers, seen = _recorder()
    before = signal.getsignal(signal.SIGTERM)
    worker.run_relay(once=True, engine=clean_engine, handlers=handlers, jobs=(), policy=FAST)
    assert len(seen) == 9
    assert signal.getsignal(signal.SIGTERM) is before


# ------------------------------------------------------------------------------ processes

KILLABLE_RELAY = """
import sys, time
from core.db import make_engine
from core.outbox import Handlers
from core.worker import run_relay

def stuck(msg):
    with open(sys.argv[2], "a") as fh:
        fh.write(msg.public_id + "\\n")
    time.sleep(3600)  # mid-batch, holding the batch's leases

handlers = Handlers()
handlers.register("test", stuck)
run_relay(
    engine=make_engine(sys.argv[1]), handlers=handlers, jobs=(), lease_seconds=float(sys.argv[3])
)
"""
# Long enough that the stuck relay still holds its leases when we look, short for the test.
KILLED_LEASE_SECONDS = 5


def _wait_for(predicate, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_killed_relay_leaves_its_messages_to_another(
    clean_engine: Engine, db_url: str, tmp_path: Path
) -> None:
    """A killed relay's leases run out and another relay delivers its messages, in order; the
    attempt that died counts."""
    items = [(f"order:{k}", {"seq": seq}) for seq in range(2) for k in range(5)]
    ids = _enqueue(clean_engine, items)
    marker = tmp_path / "delivering"
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLABLE_RELAY, db_url, str(marker), str(KILLED_LEASE_SECONDS)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for(lambda: marker.exists() and marker.read_text().strip())
        in_flight = marker.read_text().split()[0]
        assert in_flight in ids[:5]
        # While it holds the heads' leases, another relay can deliver nothing of those keys.
        handlers, seen = _recorder()
        assert relay.run_once(clean_engine, handlers) == 0
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    def drained() -> bool:
        relay.run_once(clean_engine, handlers)
        return len(seen) == 10

    _wait_for(drained, timeout=KILLED_LEASE_SECONDS + 30)
    assert sorted(m.public_id for m in seen) == sorted(ids)
    assert in_flight in [m.public_id for m in seen]  # redelivered
    for k in range(5):
        assert [m.payload["seq"] for m in seen if m.ordering_key == f"order:{k}"] == [0, 1]
    rows = _rows(clean_engine)
    assert all(r.status == "sent" and r.locked_until is None for r in rows.values())
    assert {r.public_id: r.attempts for r in rows.values()} == {
        i: 2 if i == in_flight else 1 for i in ids
    }


def test_relay_process_stops_cleanly_on_sigterm(clean_engine: Engine, db_url: str) -> None:
    """`dotshop relay` as a process: engine from DATABASE_URL, the production handlers, and
    SIGTERM ends it after the pass in hand."""
    env = {
        **os.environ,
        "DATABASE_URL": db_url,
        "STRIPE_API_KEY": "sk_test_x",
        "SHOPIFY_ACCESS_TOKEN": "shpat_x",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "dotshop", "relay"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()  # the relay.started log line
        assert "relay.started" in first, first + proc.stdout.read()
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0, out
        assert "relay.stopped" in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    once = subprocess.run(
        [sys.executable, "-m", "dotshop", "relay", "--once"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert once.returncode == 0, once.stdout + once.stderr


@pytest.fixture(autouse=True)
def _no_leftover_signal_handlers():
    before = (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM))
    yield
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
