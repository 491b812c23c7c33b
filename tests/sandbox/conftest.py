"""Fixtures shared by the sandbox Stripe tests (the Shopify modules define their own `base`)."""

from __future__ import annotations

import pytest
import stripe

from tests.processes import Process
from tests.sandbox.stripe_support import Control, client


@pytest.fixture(scope="module")
def base(sandbox: Process) -> str:
    return sandbox.urls["stripe"]


@pytest.fixture
def control(base: str) -> Control:
    """The control API of a freshly reset sandbox Stripe."""
    control = Control(base)
    control.reset()
    return control


@pytest.fixture
def sdk(control: Control, base: str) -> stripe.StripeClient:
    """The real stripe SDK pointed at a freshly reset sandbox Stripe."""
    return client(base)
