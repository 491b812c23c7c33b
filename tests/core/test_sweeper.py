"""The sweeper's steps are independent: one failing (a bad flagged event, a bug) does not stop
holds from expiring or outbox messages from being pruned; the pass then reports the failure."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from core import sweeper
from core.outbox import enqueue


def test_every_step_runs_when_an_earlier_one_fails(
    clean_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Session(clean_engine) as session, session.begin():
        public_id = enqueue(session, topic="t", ordering_key="k", payload={})
    with clean_engine.begin() as conn:
        conn.execute(
            text("UPDATE outbox SET status = 'sent', sent_at = now() - interval '30 days'")
        )

    def broken(engine: Engine, now: datetime | None = None) -> int:
        raise RuntimeError("injected: the first step fails")

    monkeypatch.setattr(sweeper, "expire_holds", broken)
    with pytest.raises(sweeper.SweepIncomplete) as failed:
        sweeper.run_once(clean_engine, datetime.now(UTC))
    assert failed.value.details["steps"] == ["expired_orders"]
    with clean_engine.connect() as conn:
        # The prune, the last step, still ran.
        assert (
            conn.scalar(text("SELECT count(*) FROM outbox WHERE public_id = :p"), {"p": public_id})
            == 0
        )
