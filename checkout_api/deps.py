"""What handlers get from the app: settings, engine and the Stripe gateway, built at start-up."""

from __future__ import annotations

from dataclasses import dataclass

from litestar.di import NamedDependency
from sqlalchemy import Engine

from core.settings import Settings
from core.stripe_gateway import StripeGateway


@dataclass(frozen=True)
class AppContext:
    settings: Settings
    engine: Engine
    gateway: StripeGateway


# What handlers declare: `ctx: Ctx` (an explicit dependency, provided by the app).
Ctx = NamedDependency[AppContext]
