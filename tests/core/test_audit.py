"""The audit log: written with the caller's transaction, read newest first, never edited."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from core import audit
from core.errors import InvalidRequest


def test_records_read_back_newest_first(clean_engine: Engine) -> None:
    ids = []
    for n in range(3):
        with Session(clean_engine) as s, s.begin():
            ids.append(
                audit.record(
                    s,
                    actor="ops@example.com",
                    action="refund.requested",
                    subject=f"ord_{n}",
                    data={"amount": 100 * n},
                )
            )
    with Session(clean_engine) as s, s.begin():
        ids.append(audit.record(s, actor="relay", action="outbox.retry", subject="obx_1"))

    with Session(clean_engine) as s:
        entries = audit.recent(s)
        assert [e.id for e in entries] == ids[::-1]
        assert all(i.startswith("aud_") for i in ids)
        last = entries[0]
        assert (last.actor, last.action, last.subject, last.data) == (
            "relay",
            "outbox.retry",
            "obx_1",
            {},
        )
        assert entries[1].data == {"amount": 200} and entries[1].at.tzinfo is not None
        assert [e.id for e in audit.recent(s, limit=2)] == ids[:1:-1]
        assert [e.subject for e in audit.recent(s, subject="ord_1")] == ["ord_1"]


def test_a_record_rolls_back_with_the_action_it_describes(clean_engine: Engine) -> None:
    with pytest.raises(RuntimeError), Session(clean_engine) as s, s.begin():
        audit.record(s, actor="ops", action="refund.requested", subject="ord_9")
        assert [e.subject for e in audit.recent(s)] == ["ord_9"]  # visible in its transaction
        raise RuntimeError("the refund failed")
    with Session(clean_engine) as s:
        assert audit.recent(s) == []


def test_records_need_who_what_and_which(clean_engine: Engine) -> None:
    with Session(clean_engine) as s, s.begin():
        for missing in ("actor", "action", "subject"):
            fields = {"actor": "ops", "action": "x", "subject": "y", missing: ""}
            with pytest.raises(InvalidRequest):
                audit.record(s, **fields)


def test_the_audit_log_is_append_only(clean_engine: Engine) -> None:
    with Session(clean_engine) as s, s.begin():
        audit.record(s, actor="ops", action="refund.requested", subject="ord_1")
    for stmt in ("UPDATE audit_log SET actor = 'someone else'", "DELETE FROM audit_log"):
        with pytest.raises(DBAPIError, match="append-only"), clean_engine.begin() as conn:
            conn.execute(text(stmt))
    with Session(clean_engine) as s:
        assert [e.actor for e in audit.recent(s)] == ["ops"]


def test_records_of_one_transaction_keep_their_order(clean_engine: Engine) -> None:
    with Session(clean_engine) as s, s.begin():
        made = [audit.record(s, actor="ops", action=f"step.{n}", subject="ord_1") for n in range(5)]
    with Session(clean_engine) as s:
        assert [e.id for e in audit.recent(s)] == made[::-1]
