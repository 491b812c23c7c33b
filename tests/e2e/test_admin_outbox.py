"""Operators act on dead letters through the admin API (CONTRACT.md: outbox retry and discard
of dead letters): list them, retry or discard with a reason; every action is audit-logged with
who and why, and a discard unblocks the message's key."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.orm import Session

from core import audit
from core.outbox import enqueue
from tests.e2e.conftest import Stack
from tests.e2e.helpers import admin


def _dead_letters(stack: Stack, n: int) -> list[str]:
    with Session(stack.engine) as session, session.begin():
        ids = [
            enqueue(session, topic="test.admin", ordering_key=f"admin:{i}", payload={})
            for i in range(n)
        ]
    with stack.engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE outbox SET status = 'dead', dead_at = now(), attempts = 10,"
                " last_error = 'Shopify says 422' WHERE public_id = ANY(:ids)"
            ),
            {"ids": ids},
        )
    return ids


def test_list_retry_and_discard_dead_letters(stack: Stack) -> None:
    to_retry, to_discard = _dead_letters(stack, 2)
    listed = admin(stack, "GET", "/admin/v1/outbox?status=dead")
    assert listed.status_code == 200, listed.text
    rows = {m["id"]: m for m in listed.json()["data"]}
    assert {to_retry, to_discard} <= set(rows)
    assert rows[to_discard]["last_error"] == "Shopify says 422"
    assert rows[to_discard]["attempts"] == 10

    no_reason = admin(stack, "POST", f"/admin/v1/outbox/{to_discard}/discard", json={})
    assert no_reason.status_code in (400, 422), no_reason.text
    blank = admin(stack, "POST", f"/admin/v1/outbox/{to_discard}/discard", json={"reason": " "})
    assert blank.status_code == 422 and blank.json()["error"]["code"] == "invalid_request"
    bad_status = admin(stack, "GET", "/admin/v1/outbox?status=lost")
    assert bad_status.status_code == 422

    headers = {"X-Dotshop-Actor": "ops:grace"}
    discarded = admin(
        stack,
        "POST",
        f"/admin/v1/outbox/{to_discard}/discard",
        json={"reason": "order cancelled in Shopify by hand"},
        headers=headers,
    )
    assert discarded.status_code == 200, discarded.text
    assert discarded.json() == {"id": to_discard, "status": "discarded"}
    again = admin(stack, "POST", f"/admin/v1/outbox/{to_discard}/discard", json={"reason": "x"})
    assert again.status_code == 404

    retried = admin(
        stack,
        "POST",
        f"/admin/v1/outbox/{to_retry}/retry",
        json={"reason": "Shopify fixed the product"},
        headers=headers,
    )
    assert retried.status_code == 200 and retried.json()["status"] == "pending"
    assert stack.scalar("SELECT status FROM outbox WHERE public_id = :p", p=to_discard) == (
        "discarded"
    )
    unauthorized = admin(
        stack, "GET", "/admin/v1/outbox", headers={"Authorization": "Bearer wrong"}
    )
    assert unauthorized.status_code == 401

    with Session(stack.engine) as session:
        (discard_entry,) = audit.recent(session, subject=to_discard)
        (retry_entry,) = audit.recent(session, subject=to_retry)
    assert (discard_entry.actor, discard_entry.action) == ("ops:grace", "outbox.discard")
    assert discard_entry.data == {"reason": "order cancelled in Shopify by hand"}
    assert (retry_entry.action, retry_entry.data) == (
        "outbox.retry",
        {"reason": "Shopify fixed the product"},
    )
    # Leave no pending message of an unknown topic for other tests' drains.
    stack.sql(
        "UPDATE outbox SET status = 'discarded' WHERE public_id = :p RETURNING id", p=to_retry
    )
