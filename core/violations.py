"""Violations of the business invariants: what the checks found, stored so that on-call and
finance can see it, deduplicated by fingerprint, resolved by themselves when the condition clears.

A check is a function that returns `Finding`s: the conditions that hold *now* (past their grace
period). `record_findings` reconciles them with the stored violations of that check in the
caller's transaction: a new fingerprint opens a violation, a known one is seen again
(`last_seen`, current amount and evidence), an open one no longer found is resolved. So the set
of open violations of a check always equals what its last run found.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, tuple_, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from core import audit
from core.errors import InvalidRequest, NotFound
from core.ids import new_id
from core.models import CheckRun, Violation

OPEN = "open"
RESOLVED = "resolved"


@dataclass(frozen=True)
class Finding:
    """One broken invariant, as a check sees it now: which check, about what (a SKU, order,
    payment id...), the money at stake (minor units, with its currency) and the evidence an
    operator needs to act, without looking anything up."""

    check: str
    subject: str
    amount_minor: int | None = None
    currency: str | None = None
    evidence: dict[str, Any] = field(default_factory=dict)

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.check, self.subject)


@dataclass(frozen=True)
class Recorded:
    """What one check's findings did to the stored violations."""

    opened: int
    still_open: int
    resolved: int

    @property
    def open(self) -> int:
        return self.opened + self.still_open


def fingerprint(check: str, subject: str) -> str:
    """Stable identity of a violation: the same check about the same subject is the same
    problem however often it is seen (and the same alert for Alertmanager)."""
    return hashlib.sha256(f"{check}\n{subject}".encode()).hexdigest()


def start_run(session: Session) -> str:
    """A new check run (`run_...`), status `running`."""
    run_id = new_id("run")
    session.add(CheckRun(id=run_id, status="running", results={}))
    session.flush()
    return run_id


def finish_run(session: Session, run_id: str, results: dict[str, Any]) -> str:
    """Close the run with each check's result; its status is `error` when a check failed,
    `violations` when any is open, else `ok`."""
    failed = any("error" in r for r in results.values())
    open_count = sum(r.get("open", 0) for r in results.values())
    status = "error" if failed else ("violations" if open_count else "ok")
    session.execute(
        update(CheckRun)
        .where(CheckRun.id == run_id)
        .values(status=status, results=results, finished_at=func.now())
    )
    return status


def record_findings(
    session: Session, run_id: str, check: str, findings: Sequence[Finding], now: datetime
) -> Recorded:
    """Make the stored open violations of `check` equal to `findings` (see the module doc)."""
    if any(f.check != check for f in findings):
        raise ValueError(f"findings of another check passed as {check!r}")
    by_print = {f.fingerprint: f for f in findings}
    known = set(
        session.scalars(
            select(Violation.fingerprint)
            .where(Violation.check_name == check, Violation.resolved_at.is_(None))
            .with_for_update()
        )
    )
    for fp, f in by_print.items():
        values = {
            "amount_minor": f.amount_minor,
            "currency": f.currency,
            "evidence": f.evidence,
            "last_seen": now,
            "last_run_id": run_id,
        }
        session.execute(
            insert(Violation)
            .values(
                id=new_id("vio"),
                fingerprint=fp,
                check_name=check,
                subject=f.subject,
                first_seen=now,
                first_run_id=run_id,
                **values,
            )
            .on_conflict_do_update(
                index_elements=[Violation.fingerprint],
                index_where=Violation.resolved_at.is_(None),
                set_=values,
            )
        )
    gone = known - set(by_print)
    if gone:
        session.execute(
            update(Violation)
            .where(
                Violation.check_name == check,
                Violation.resolved_at.is_(None),
                Violation.fingerprint.in_(gone),
            )
            .values(resolved_at=now, last_run_id=run_id)
        )
    opened = len(set(by_print) - known)
    return Recorded(opened=opened, still_open=len(by_print) - opened, resolved=len(gone))


def listing(
    session: Session,
    *,
    status: str | None = None,
    checks: Iterable[str] | None = None,
    limit: int | None = None,
    starting_after: str | None = None,
) -> list[Violation]:
    """Violations, newest first: `open`, `resolved` or both; at most `limit`, after the
    violation `starting_after` (Stripe-style keyset paging: stable while new ones open)."""
    query = select(Violation).order_by(Violation.first_seen.desc(), Violation.id.desc())
    if status == OPEN:
        query = query.where(Violation.resolved_at.is_(None))
    elif status == RESOLVED:
        query = query.where(Violation.resolved_at.is_not(None))
    elif status is not None:
        raise ValueError(f"status is {OPEN!r} or {RESOLVED!r}, not {status!r}")
    if checks is not None:
        query = query.where(Violation.check_name.in_(list(checks)))
    if starting_after is not None:
        after = session.get(Violation, starting_after)
        if after is None:
            raise NotFound("no such violation", starting_after=starting_after)
        query = query.where(
            tuple_(Violation.first_seen, Violation.id) < tuple_(after.first_seen, after.id)
        )
    if limit is not None:
        query = query.limit(limit)
    return list(session.scalars(query))


MAX_PAGE = 1000


def page(
    session: Session,
    *,
    status: str | None = None,
    limit: int = 100,
    starting_after: str | None = None,
) -> tuple[list[Violation], bool]:
    """One page of `listing` for an API: the violations, and whether more follow."""
    if status not in (None, OPEN, RESOLVED):
        raise InvalidRequest("status is open or resolved", param="status")
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidRequest(f"limit is between 1 and {MAX_PAGE}", param="limit")
    rows = listing(session, status=status, limit=limit + 1, starting_after=starting_after)
    return rows[:limit], len(rows) > limit


def acknowledge(session: Session, violation_id: str, *, actor: str) -> bool:
    """An operator takes an open violation ("I am on it"), audit-logged. It stays open until a
    check run no longer finds it. False when it is not open or someone already took it."""
    taken = session.execute(
        update(Violation)
        .where(
            Violation.id == violation_id,
            Violation.resolved_at.is_(None),
            Violation.acknowledged_at.is_(None),
        )
        .values(acknowledged_at=func.now(), acknowledged_by=actor)
    ).rowcount
    if taken:
        audit.record(session, actor=actor, action="violation.acknowledge", subject=violation_id)
    return bool(taken)
