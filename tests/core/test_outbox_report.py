"""The console's Outbox page reads (core.outbox_report): per-topic counts of undelivered
messages and keyset-paged lists by state. Messages are enqueued with core.outbox.enqueue and
moved through the real relay (a handler that fails stands in for a provider), so every state
is reached the way production reaches it (DESIGN.md: retries with backoff, the dead letter, an
operator's discard)."""

from __future__ import annotations

import pickle
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from core import outbox_report, relay
from core.errors import InvalidRequest, NotFound
from core.outbox import Handlers, Message, PermanentError, RetryPolicy, enqueue

# Failed attempts wait long enough that no second attempt happens during the test.
SLOW_RETRY = RetryPolicy(max_attempts=10, base_seconds=3600.0, cap_seconds=3600.0)


def _enqueue(engine: Engine, topic: str, keys: list[str], **payload: object) -> list[str]:
    with Session(engine) as session, session.begin():
        return [enqueue(session, topic=topic, ordering_key=k, payload=dict(payload)) for k in keys]


def _handlers() -> Handlers:
    def fail(message: Message) -> None:
        if message.payload.get("poison"):
            raise PermanentError("Shopify says 422")
        raise RuntimeError("Shopify timed out")

    handlers = Handlers()
    handlers.register("shopify.push_order", fail)
    return handlers


@pytest.fixture
def outbox(clean_engine: Engine) -> dict[str, list[str]]:
    """Pushes: three failing once (pending, attempts 1), two dead (one then discarded), and
    four fee messages never attempted (plain pending)."""
    failing = _enqueue(clean_engine, "shopify.push_order", ["order:a", "order:b", "order:c"])
    dead = _enqueue(clean_engine, "shopify.push_order", ["order:d", "order:e"], poison=True)
    assert relay.run_once(clean_engine, _handlers(), policy=SLOW_RETRY) == 5
    with Session(clean_engine) as session, session.begin():
        assert relay.discard_dead(session, dead[1], actor="ops:test", reason="done by hand")
    waiting = _enqueue(clean_engine, "stripe.fetch_fees", ["order:a", "order:f", "x:1", "x:2"])
    return {"failing": failing, "dead": dead[:1], "discarded": dead[1:], "waiting": waiting}


def test_summary_counts_each_topics_undelivered_messages(
    clean_engine: Engine, outbox: dict[str, list[str]]
) -> None:
    with Session(clean_engine) as session:
        summary = outbox_report.summary(session)
    assert pickle.loads(pickle.dumps(summary)) == summary  # the console caches it
    got = {s.topic: s for s in summary}
    push, fees = got["shopify.push_order"], got["stripe.fetch_fees"]
    assert (push.pending, push.failing, push.dead, push.discarded) == (3, 3, 1, 1)
    assert (fees.pending, fees.failing, fees.dead, fees.discarded) == (4, 0, 0, 0)
    assert push.oldest_pending_age_seconds >= 0 and fees.oldest_pending_age_seconds >= 0
    assert set(got) == {"shopify.push_order", "stripe.fetch_fees"}


def test_messages_by_state_topic_and_key_prefix(
    clean_engine: Engine, outbox: dict[str, list[str]]
) -> None:
    with Session(clean_engine) as session:

        def ids(**kwargs: object) -> list[str]:
            rows, more = outbox_report.messages(session, **kwargs)  # type: ignore[arg-type]
            assert not more
            return [r.id for r in rows]

        assert ids(status="failing") == outbox["failing"]
        assert ids(status="pending") == outbox["failing"] + outbox["waiting"]
        assert ids(status="pending", topic="stripe.fetch_fees") == outbox["waiting"]
        assert (
            ids(status="pending", key_prefix="order:") == outbox["failing"] + outbox["waiting"][:2]
        )
        assert ids(status="dead") == outbox["dead"]
        assert ids(status="discarded") == outbox["discarded"]
        # LIKE's wildcards in a prefix are taken literally.
        assert ids(status="pending", key_prefix="order%") == []
        assert ids(status="pending", key_prefix="x_") == []
        (dead,), _ = outbox_report.messages(session, status="dead")
    assert isinstance(dead, relay.OutboxView)
    assert (dead.status, dead.attempts, dead.topic) == ("dead", 1, "shopify.push_order")
    assert "Shopify says 422" in (dead.last_error or "")


def test_messages_are_keyset_paged_oldest_first(
    clean_engine: Engine, outbox: dict[str, list[str]]
) -> None:
    expected = outbox["failing"] + outbox["waiting"]
    seen: list[str] = []
    after = None
    with Session(clean_engine) as session:
        while True:
            rows, more = outbox_report.messages(
                session, status="pending", limit=3, starting_after=after
            )
            seen += [r.id for r in rows]
            if not more:
                break
            assert len(rows) == 3
            after = rows[-1].id
            if len(seen) == 3:
                # Enqueued while paging: it lands on a later page, never shifts an earlier one.
                expected += _enqueue(clean_engine, "stripe.fetch_fees", ["x:3"])
        assert seen == expected
        with pytest.raises(NotFound):
            outbox_report.messages(session, status="pending", starting_after="obx_nope")


def test_bad_state_or_limit_is_invalid_request(clean_engine: Engine) -> None:
    with Session(clean_engine) as session:
        for kwargs in (
            {"status": "sent"},
            {"status": "lost"},
            {"status": "dead", "limit": 0},
            {"status": "dead", "limit": 1001},
            {"status": "dead", "key_prefix": "k" * 256},
        ):
            with pytest.raises(InvalidRequest):
                outbox_report.messages(session, **kwargs)  # type: ignore[arg-type]


def test_a_pending_message_ages(clean_engine: Engine) -> None:
    (old,) = _enqueue(clean_engine, "stripe.fetch_fees", ["order:z"])
    with clean_engine.begin() as conn:
        conn.exec_driver_sql(
            "UPDATE outbox SET created_at = %(at)s WHERE public_id = %(id)s",
            {"at": datetime.now(UTC) - timedelta(minutes=5), "id": old},
        )
    with Session(clean_engine) as session:
        (fees,) = outbox_report.summary(session)
    assert 299 <= fees.oldest_pending_age_seconds < 400
