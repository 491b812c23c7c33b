"""Operators and housekeeping on the outbox: dead letters listed, retried or discarded (a
discarded message no longer blocks its key), delivered messages pruned after the retention."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from core import relay, sweeper
from core.errors import InvalidRequest
from core.outbox import Handlers, Message, PermanentError, enqueue


def _enqueue(engine: Engine, items: list[tuple[str, dict]]) -> list[str]:
    with Session(engine) as session, session.begin():
        return [enqueue(session, topic="test", ordering_key=k, payload=p) for k, p in items]


def test_a_discarded_dead_letter_unblocks_its_key(clean_engine: Engine) -> None:
    """DESIGN.md: a dead message blocks its key until an operator acts; discarding is the
    other way out (the message is kept, marked discarded, for the record)."""
    poison, after = _enqueue(clean_engine, [("order:1", {"poison": True}), ("order:1", {})])
    delivered: list[str] = []

    def handler(msg: Message) -> None:
        if msg.payload.get("poison"):
            raise PermanentError("Shopify says 422")
        delivered.append(msg.public_id)

    handlers = Handlers()
    handlers.register("test", handler)
    assert relay.run_once(clean_engine, handlers) == 1
    assert relay.run_once(clean_engine, handlers) == 0  # `after` is blocked by the dead letter
    with Session(clean_engine) as session:
        dead = relay.list_messages(session, "dead")
    assert [(v.id, v.attempts, v.status) for v in dead] == [(poison, 1, "dead")]
    assert "Shopify says 422" in (dead[0].last_error or "")

    with Session(clean_engine) as session, session.begin():
        assert relay.discard_dead(session, poison, actor="test", reason="test") is True
        assert (
            relay.discard_dead(session, poison, actor="test", reason="test") is False
        )  # not dead any more
        assert relay.retry_dead(session, poison, actor="test") is False
    assert relay.run_once(clean_engine, handlers) == 1
    assert delivered == [after]
    with Session(clean_engine) as session:
        (discarded,) = relay.list_messages(session, "discarded")
        assert discarded.id == poison and discarded.discarded_at is not None
        assert relay.list_messages(session, "dead") == []
        with pytest.raises(InvalidRequest):
            relay.list_messages(session, "lost")


def test_the_sweep_prunes_delivered_messages_after_the_retention(clean_engine: Engine) -> None:
    old, recent, pending = _enqueue(clean_engine, [("a", {}), ("b", {}), ("c", {})])
    with clean_engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE outbox SET status = 'sent', sent_at = now() - make_interval(hours => h)"
                " FROM (VALUES (:old, 24 * 7 + 1), (:recent, 24 * 7 - 1)) AS v(pid, h)"
                " WHERE public_id = v.pid"
            ),
            {"old": old, "recent": recent},
        )
    result = sweeper.run_once(clean_engine, datetime.now(UTC))
    assert result.pruned_messages == 1
    with clean_engine.connect() as conn:
        left = set(conn.scalars(text("SELECT public_id FROM outbox")))
    assert left == {recent, pending}
    later = sweeper.run_once(clean_engine, datetime.now(UTC) + timedelta(hours=2))
    assert later.pruned_messages == 1
