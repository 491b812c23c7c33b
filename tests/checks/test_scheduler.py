"""`dotshop checks run` without --once: every check on its own interval, surviving a database it
cannot reach (core.worker.keep_running's growing pause), stopping cleanly."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, create_engine, select
from sqlalchemy.orm import Session
from structlog.testing import capture_logs

from checks import scheduler
from checks.registry import CHECKS, CheckContext, check
from checks.runner import load_checks
from core.models import CheckRun
from core.settings import Settings
from core.violations import Finding
from tests.checks.support import settings_fixture  # noqa: F401


@pytest.fixture
def quick() -> Iterator[str]:
    """A check due every 0.2 s, registered for one test."""

    @check("quick", interval_seconds=0.2, runbook="dashboards/runbooks/x.md", summary="x")
    def _quick(ctx: CheckContext) -> list[Finding]:
        return []

    yield "quick"
    del CHECKS["quick"]


def finished_runs(engine: Engine) -> list[CheckRun]:
    with Session(engine) as session:
        return list(
            session.scalars(
                select(CheckRun)
                .where(CheckRun.finished_at.is_not(None))
                .order_by(CheckRun.started_at)
            )
        )


def test_each_check_runs_at_start_then_on_its_own_interval(
    clean_engine: Engine, settings: Settings, quick: str
) -> None:
    stop = threading.Event()
    thread = threading.Thread(target=scheduler.schedule, args=(clean_engine, settings, stop))
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while len(finished_runs(clean_engine)) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        thread.join(timeout=30)
    assert not thread.is_alive()
    first, *later = finished_runs(clean_engine)
    assert set(first.results) == set(load_checks())  # every check at start
    assert len(later) >= 2
    assert all(set(run.results) == {quick} for run in later)  # the others are not due yet


def test_the_scheduler_survives_an_unreachable_database_and_stops_on_request(
    settings: Settings,
) -> None:
    down = create_engine("postgresql+psycopg://nobody@127.0.0.1:9/none", pool_pre_ping=False)
    stop = threading.Event()
    with capture_logs() as logs:
        thread = threading.Thread(target=scheduler.schedule, args=(down, settings, stop))
        thread.start()
        time.sleep(1.5)  # long enough for a few failed passes with the growing pause
        stop.set()
        thread.join(timeout=30)
    assert not thread.is_alive()
    failures = [e for e in logs if e["event"] == "checks.failed"]
    assert len(failures) >= 2 and failures[-1]["failures"] == len(failures)
