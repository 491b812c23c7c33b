"""The checks and what they need: a check is a function `(ctx) -> list[Finding]`, registered
with its name, how often it runs, and the runbook that tells on-call what to do."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine

from core.settings import Settings
from core.violations import Finding


@dataclass(frozen=True)
class CheckContext:
    """What a check may look at. `now` is the run's clock (injectable in tests); `grace` is
    `settings.grace_seconds`: a mismatch younger than that does not count yet. The gateways are
    built lazily by the runner, so checks that only read the database need no credentials."""

    engine: Engine
    settings: Settings
    now: datetime
    stripe: Any = None  # core.stripe_gateway.StripeGateway
    shopify: Any = None  # core.shopify_gateway.ShopifyGateway


CheckFn = Callable[[CheckContext], list[Finding]]


@dataclass(frozen=True)
class Check:
    name: str
    run: CheckFn
    interval_seconds: float
    runbook: str  # path in the repository, e.g. "dashboards/runbooks/oversell.md"
    summary: str  # one line for on-call: what broke


CHECKS: dict[str, Check] = {}


def check(
    name: str, *, interval_seconds: float, runbook: str, summary: str
) -> Callable[[CheckFn], CheckFn]:
    """Register a check (a module of checks/ registers its own when imported)."""

    def register(fn: CheckFn) -> CheckFn:
        if name in CHECKS:
            raise ValueError(f"check {name!r} is registered twice")
        CHECKS[name] = Check(name, fn, interval_seconds, runbook, summary)
        return fn

    return register
