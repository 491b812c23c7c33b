"""Shared by the invariant-check tests: a real sandbox Shopify (reset per test) whose catalog is
loaded into an empty database, settings pointing the checks at it with no grace period, and a
clock a little ahead of Shopify's (its updated_at has whole seconds)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine

from checks.runner import RunResult, run_checks
from core import shopify_sync
from core.models import Violation
from core.settings import Settings
from core.shopify_gateway import API_VERSION
from sandbox.options import (
    DEFAULT_SHOPIFY_ACCESS_TOKEN,
    DEFAULT_SHOPIFY_SHOP,
    DEFAULT_STRIPE_API_KEY,
)
from tests.core.shopify_support import Shop
from tests.processes import Process


@pytest.fixture(scope="module", name="settings")
def settings_fixture(sandbox: Process) -> Settings:
    return Settings(
        grace_seconds=0,
        stripe_api_key=DEFAULT_STRIPE_API_KEY,
        stripe_api_base=sandbox.urls["stripe"],
        shopify_shop=DEFAULT_SHOPIFY_SHOP,
        shopify_site=f"{sandbox.urls['shopify']}/admin/api/{API_VERSION}",
        shopify_access_token=DEFAULT_SHOPIFY_ACCESS_TOKEN,
        shopify_location_id=1,
    )


@pytest.fixture(name="shop")
def shop_fixture(sandbox: Process, clean_engine: Engine) -> Iterator[Shop]:
    """A freshly reset sandbox Shopify, its catalog loaded into an empty database."""
    shop = Shop(sandbox.urls["shopify"])
    shop.reset()
    shopify_sync.load_catalog(clean_engine, shop.gateway(), [1])
    yield shop
    shop.reset()


# Tests move the sandbox Shopify's clock a few seconds ahead (whole-second updated_at); a check
# clock this far ahead sees every change made so far as past.
SHOPIFY_CLOCK_SLACK_SECONDS = 60


def soon() -> datetime:
    """The check clock: past the current second of every clock involved (grace is 0)."""
    return datetime.now(UTC) + timedelta(seconds=SHOPIFY_CLOCK_SLACK_SECONDS)


def run(engine: Engine, settings: Settings, *names: str, now: datetime | None = None) -> RunResult:
    """One run of the named checks, on the test clock."""
    return run_checks(engine, settings, now=now or soon(), names=names)


def open_of(result: RunResult, check: str) -> dict[str, Violation]:
    """The run's open violations of one check, by subject."""
    return {v.subject: v for v in result.violations if v.check_name == check}
