"""Fixtures shared by the checkout and completer tests: a real sandbox Stripe process for the
module, settings pointing at it, and our gateway to it."""

from __future__ import annotations

import pytest

from core.settings import Settings
from core.stripe_gateway import StripeGateway
from sandbox.options import DEFAULT_STRIPE_API_KEY
from tests.processes import Process


@pytest.fixture(scope="module")
def stripe_base(sandbox: Process) -> str:
    return sandbox.urls["stripe"]


@pytest.fixture(scope="module")
def settings(stripe_base: str) -> Settings:
    return Settings(
        region="us",
        primary_region="us",
        reservation_ttl=900,
        stripe_api_key=DEFAULT_STRIPE_API_KEY,
        stripe_api_base=stripe_base,
        stripe_timeout=5,
    )


@pytest.fixture(scope="module")
def gateway(stripe_base: str) -> StripeGateway:
    # No SDK retries: an injected outage is seen at once, and the test stays fast.
    return StripeGateway(DEFAULT_STRIPE_API_KEY, stripe_base, timeout=5, max_network_retries=0)
