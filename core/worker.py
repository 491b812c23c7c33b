"""`dotshop relay`: the outbox relay plus the periodic sweeper, in one process.

`dotshop sync`: keeps the projection in step with Shopify by a periodic full load (webhooks do
the fast path; this catches anything a dropped webhook missed)."""

from __future__ import annotations

import threading

from sqlalchemy import Engine

from core import relay, sweeper
from core.logs import get_logger

log = get_logger("core.worker")

# Modules whose outbox handlers this relay runs (each has register_handlers(handlers)).
HANDLER_MODULES = ("core.payment_effects", "core.shopify_sync")
# A full catalog + stock reload; webhooks normally arrive within seconds, this is the safety net.
SYNC_INTERVAL_SECONDS = 60.0


def _sweep_until(engine: Engine, stop: threading.Event) -> None:
    while not stop.wait(sweeper.SWEEP_INTERVAL_SECONDS):
        try:
            sweeper.run_once(engine)
        except Exception:  # keep sweeping: one bad pass must not stop expiry for good
            log.exception("sweep_failed")


def run_relay(*, once: bool = False) -> None:
    from core.db import database_url, engine_for

    engine = engine_for(database_url())
    handlers = relay.default_handlers(HANDLER_MODULES)
    if once:
        sweeper.run_once(engine)
        relay.run(once=True, engine=engine, handlers=handlers)
        return
    stop = threading.Event()
    thread = threading.Thread(target=_sweep_until, args=(engine, stop), name="sweeper", daemon=True)
    thread.start()
    relay.run(engine=engine, handlers=handlers, stop=stop)
    stop.set()
    thread.join(timeout=5)


def run_sync(*, once: bool = False) -> None:
    from core import shopify_sync
    from core.db import database_url, engine_for
    from core.settings import get_settings
    from core.shopify_gateway import ShopifyGateway

    settings = get_settings()
    engine = engine_for(database_url(settings))
    gateway = ShopifyGateway.from_settings(settings)
    stop = threading.Event()
    relay.install_stop_signals(stop)
    while True:
        try:
            shopify_sync.load_catalog(engine, gateway, settings.shopify_location_id)
        except Exception:
            if once:
                raise
            log.exception("sync_failed")
        if once or stop.wait(SYNC_INTERVAL_SECONDS):
            return
