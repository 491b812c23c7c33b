"""Violations follow the findings of each check run: opened once per fingerprint, seen again while
the condition holds, resolved when it clears, opened anew if it comes back."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from core import violations
from core.db import transaction
from core.errors import InvalidRequest
from core.violations import Finding

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


def run(engine: Engine, check: str, findings: list[Finding], at: datetime) -> violations.Recorded:
    with transaction(engine) as s:
        run_id = violations.start_run(s)
        recorded = violations.record_findings(s, run_id, check, findings, at)
        violations.finish_run(s, run_id, {check: {"open": recorded.open}})
    return recorded


def test_a_violation_is_deduplicated_then_resolves_and_can_come_back(clean_engine: Engine) -> None:
    short = Finding("oversell", "SKU-1", 2500, "usd", {"short_by": 1})
    other = Finding("oversell", "SKU-2", 100, "usd")
    assert run(clean_engine, "oversell", [short, other], T0) == violations.Recorded(2, 0, 0)
    again = Finding("oversell", "SKU-1", 5000, "usd", {"short_by": 2})
    later = T0 + timedelta(minutes=1)
    assert run(clean_engine, "oversell", [again], later) == violations.Recorded(0, 1, 1)
    with Session(clean_engine) as s:
        (open_one,) = violations.listing(s, status=violations.OPEN)
        assert (open_one.subject, open_one.amount_minor, open_one.evidence) == (
            "SKU-1",
            5000,
            {"short_by": 2},
        )
        assert (open_one.first_seen, open_one.last_seen) == (T0, later)
        assert [v.subject for v in violations.listing(s, status=violations.RESOLVED)] == ["SKU-2"]
    # Cleared, then back: a new violation, the old one stays resolved for the record.
    assert run(clean_engine, "oversell", [], later).resolved == 1
    assert run(clean_engine, "oversell", [short], later + timedelta(minutes=1)).opened == 1
    with Session(clean_engine) as s:
        assert len(violations.listing(s, status=violations.RESOLVED)) == 2
        assert len(violations.listing(s, status=violations.OPEN)) == 1


def test_one_checks_run_never_resolves_another_checks_violations(clean_engine: Engine) -> None:
    run(clean_engine, "oversell", [Finding("oversell", "SKU-1")], T0)
    assert run(clean_engine, "stuck_outbox", [], T0).resolved == 0
    with Session(clean_engine) as s:
        assert [v.check_name for v in violations.listing(s, status="open")] == ["oversell"]
    with pytest.raises(ValueError), transaction(clean_engine) as s:
        violations.record_findings(s, "run_x", "drift", [Finding("oversell", "SKU-1")], T0)


def test_violations_page_newest_first_by_keyset_like_stripe_lists(clean_engine: Engine) -> None:
    """Stripe-style paging (`limit`, `starting_after`, `has_more`): every violation exactly once,
    newest first, even when several share a `first_seen` and new ones open meanwhile."""
    for i in range(5):
        run(clean_engine, f"check_{i}", [Finding(f"check_{i}", "s", None, None)], T0)
    run(clean_engine, "later", [Finding("later", "s", None, None)], T0 + timedelta(minutes=1))
    seen: list[str] = []
    after = None
    with Session(clean_engine) as s:
        while True:
            found, more = violations.page(s, limit=2, starting_after=after)
            seen += [v.id for v in found]
            if after is None:
                assert found[0].check_name == "later"
                # Opened after the first page: not in the pages that follow it.
                run(clean_engine, "newest", [Finding("newest", "s", None, None)], T0 + HOUR)
            if not more:
                break
            after = found[-1].id
        everything = violations.listing(s)
    assert len(seen) == len(set(seen)) == 6
    assert seen == [v.id for v in everything if v.check_name != "newest"]
    with Session(clean_engine) as s, pytest.raises(InvalidRequest):
        violations.page(s, limit=0)
