"""The runner (issue 8): one run of every check, each on its own, a failing check stored as an
error without stopping the others, and no false alarm after a normal paid order."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from checks.registry import CHECKS, CheckContext, check
from checks.runner import load_checks, run_checks
from core import shopify_sync
from core.errors import InvalidRequest
from core.models import CheckRun
from core.settings import Settings
from core.violations import Finding
from tests.checks.support import run, settings_fixture, shop_fixture, soon  # noqa: F401
from tests.core.shopify_support import Shop, paid_order, push_message

# The checks of this helper; `unreconciled_payment` needs Stripe money for an order and has its
# own tests (tests/checks/test_payments*.py).
STOCK_AND_SYNC = (
    "data_expectations",
    "inventory_drift",
    "ledger_imbalance",
    "order_flag",
    "oversell",
    "stuck_outbox",
    "sync_lag",
)


@pytest.fixture
def broken() -> Iterator[str]:
    """A check whose code raises, registered for one test."""

    @check("broken", interval_seconds=60, runbook="dashboards/runbooks/x.md", summary="x")
    def _broken(ctx: CheckContext) -> list[Finding]:
        raise RuntimeError("bug in a check")

    yield "broken"
    del CHECKS["broken"]


def test_a_normal_paid_order_that_reached_shopify_leaves_every_check_clean(
    shop: Shop, clean_engine: Engine, settings: Settings
) -> None:
    order_id = paid_order(clean_engine, {"FSH-CASHCREW-CAMEL-M": 2, "BTY-SERUM-30ML": 1})
    shopify_sync.OrderPusher(clean_engine, shop.gateway(), [1])(push_message(order_id))
    shopify_sync.load_catalog(clean_engine, shop.gateway(), [1])
    result = run(clean_engine, settings, *STOCK_AND_SYNC)
    assert (result.status, result.violations) == ("ok", [])
    assert set(result.results) == set(STOCK_AND_SYNC)
    with Session(clean_engine) as session:
        stored = session.get(CheckRun, result.run_id)
        assert stored is not None and stored.status == "ok" and stored.finished_at is not None


def test_a_failing_check_is_recorded_as_an_error_and_the_others_still_run(
    clean_engine: Engine, settings: Settings, broken: str
) -> None:
    result = run(clean_engine, settings, broken, "ledger_imbalance")
    assert result.status == "error"
    assert result.results[broken] == {"error": "RuntimeError: bug in a check"}
    assert result.results["ledger_imbalance"] == {"open": 0, "opened": 0, "resolved": 0}


def test_a_check_that_needs_missing_credentials_fails_alone(
    shop: Shop, clean_engine: Engine, settings: Settings
) -> None:
    """Checks that only read the database need no provider credentials."""
    blind = settings.model_copy(update={"shopify_access_token": None})
    result = run(clean_engine, blind, "inventory_drift", "oversell")
    assert "SHOPIFY_ACCESS_TOKEN" in result.results["inventory_drift"]["error"]
    assert result.results["oversell"]["open"] == 0


def test_every_check_runs_by_default_and_an_unknown_name_is_refused(
    clean_engine: Engine, settings: Settings
) -> None:
    result = run_checks(clean_engine, settings, now=soon())
    assert set(result.results) == set(load_checks())
    assert set(STOCK_AND_SYNC) <= set(result.results)
    with pytest.raises(InvalidRequest, match="unknown check"):
        run_checks(clean_engine, settings, names=["no_such_check"])
    with Session(clean_engine) as session:
        assert len(session.scalars(select(CheckRun)).all()) == 1


def test_every_check_has_its_runbook() -> None:
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    for name in STOCK_AND_SYNC:
        runbook = root / load_checks()[name].runbook
        assert runbook.is_file(), f"{name}: no runbook at {runbook}"
        assert "## How to fix" in runbook.read_text()
