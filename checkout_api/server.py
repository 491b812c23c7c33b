"""`dotshop api`: run the checkout API for DOTSHOP_REGION under uvicorn."""

from __future__ import annotations

import uvicorn

from checkout_api.app import create_app
from core import logs, migrate
from core.db import database_url, engine_for
from core.settings import get_settings
from core.stripe_gateway import StripeGateway


def serve(*, host: str = "127.0.0.1", port: int = 8000) -> None:
    settings = get_settings()  # an unknown DOTSHOP_REGION fails here, at start-up
    logs.configure(settings.log_level)
    engine = engine_for(database_url(settings))
    migrate.require_current(engine)  # refuse to serve an unmigrated database
    app = create_app(settings, engine, StripeGateway.from_settings(settings))
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
