"""The outbox's producer side: messages commit with the caller's transaction, handlers by topic,
and the retry policy's backoff."""

from __future__ import annotations

import random

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from core.errors import DotshopError
from core.models import OutboxMessage
from core.outbox import (
    BACKOFF_CAP_SECONDS,
    MAX_ATTEMPTS,
    Handlers,
    Message,
    PermanentError,
    RetryPolicy,
    enqueue,
)


def test_enqueue_commits_with_the_callers_transaction(clean_engine: Engine) -> None:
    with Session(clean_engine) as session, session.begin():
        kept = enqueue(session, topic="t", ordering_key="sku:A", payload={"n": 1, "s": "é"})
    with pytest.raises(RuntimeError), Session(clean_engine) as session, session.begin():
        enqueue(session, topic="t", ordering_key="sku:A", payload={"n": 2})
        raise RuntimeError("the state change failed")

    with Session(clean_engine) as session:
        rows = session.scalars(select(OutboxMessage)).all()
    assert [r.public_id for r in rows] == [kept]
    row = rows[0]
    assert kept.startswith("obx_")
    assert (row.topic, row.ordering_key, row.payload) == ("t", "sku:A", {"n": 1, "s": "é"})
    assert (row.status, row.attempts, row.sent_at, row.dead_at) == ("pending", 0, None, None)


def test_enqueue_refuses_a_message_without_key(clean_engine: Engine) -> None:
    with Session(clean_engine) as session, session.begin(), pytest.raises(ValueError):
        enqueue(session, topic="t", ordering_key="", payload={})


def test_handlers_register_once_per_topic() -> None:
    handlers = Handlers()
    seen: list[Message] = []
    assert handlers.register("a", seen.append) is not None
    with pytest.raises(ValueError):
        handlers.register("a", seen.append)
    msg = Message(1, "obx_1", "a", "k", {}, 0)
    handlers["a"](msg)
    assert seen == [msg]
    assert issubclass(PermanentError, DotshopError)


def test_backoff_doubles_with_jitter_and_is_capped() -> None:
    policy = RetryPolicy(base_seconds=2.0, cap_seconds=60.0)
    rng = random.Random(7)
    delays = [policy.delay(n, rng) for n in range(10)]
    for n, d in enumerate(delays):
        nominal = min(60.0, 2.0 * 2**n)
        assert nominal * 0.5 <= d <= nominal
    # Deterministic given the seed: a test can predict next_attempt_at.
    again = random.Random(7)
    assert delays == [policy.delay(n, again) for n in range(10)]
    assert len(set(delays[:5])) == 5
    assert RetryPolicy().max_attempts == MAX_ATTEMPTS and BACKOFF_CAP_SECONDS >= 60
