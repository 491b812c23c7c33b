"""`dotshop outbox list|retry|discard`: operators act on dead letters from a shell; every action
is audit-logged with who and why, and bad input exits 2 with a clear message."""

from __future__ import annotations

import getpass

from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from core import audit
from core.outbox import enqueue
from tests.dotshop.test_cli import dotshop


def test_list_retry_and_discard_from_the_command_line(clean_engine: Engine, db_url: str) -> None:
    with Session(clean_engine) as session, session.begin():
        dead, other = (
            enqueue(session, topic="t", ordering_key=f"k{i}", payload={}) for i in range(2)
        )
    with clean_engine.begin() as conn:
        conn.execute(
            text("UPDATE outbox SET status = 'dead', dead_at = now(), last_error = 'HTTP 422'")
        )

    listed = dotshop("outbox", "list", DATABASE_URL=db_url)
    assert listed.returncode == 0, listed.stderr
    assert dead in listed.stdout and other in listed.stdout and "HTTP 422" in listed.stdout

    missing = dotshop("outbox", "discard", dead, DATABASE_URL=db_url)
    assert missing.returncode == 2 and "--reason" in missing.stderr
    blank = dotshop("outbox", "discard", dead, "--reason", " ", DATABASE_URL=db_url)
    assert blank.returncode == 2 and "--reason must say why" in blank.stderr
    unknown = dotshop("outbox", "retry", "obx_nope", DATABASE_URL=db_url)
    assert unknown.returncode == 2 and "no dead outbox message obx_nope" in unknown.stderr
    bad_status = dotshop("outbox", "list", "--status", "lost", DATABASE_URL=db_url)
    assert bad_status.returncode == 2 and "status must be one of" in bad_status.stderr

    done = dotshop("outbox", "discard", dead, "--reason", "duplicate push", DATABASE_URL=db_url)
    assert done.returncode == 0, done.stderr
    retried = dotshop("outbox", "retry", other, DATABASE_URL=db_url)
    assert retried.returncode == 0, retried.stderr

    with clean_engine.connect() as conn:
        statuses = dict(conn.execute(text("SELECT public_id, status FROM outbox")).all())
    assert statuses == {dead: "discarded", other: "pending"}
    with Session(clean_engine) as session:
        (entry,) = audit.recent(session, subject=dead)
    assert (entry.actor, entry.action) == (f"cli:{getpass.getuser()}", "outbox.discard")
    assert entry.data == {"reason": "duplicate push"}
