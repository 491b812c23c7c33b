"""The sandbox Stripe account: everything one running stand-in holds, behind one lock."""

from __future__ import annotations

import threading
from collections.abc import Callable

from sandbox.faults import Faults
from sandbox.options import SandboxOptions
from sandbox.stripe.events import DEFAULT_ENDPOINT_ID, Events
from sandbox.stripe.idempotency import IdempotencyCache
from sandbox.stripe.state import Clock, Store
from sandbox.webhooks import WebhookDispatcher


class Account:
    def __init__(self, options: SandboxOptions, faults: Faults) -> None:
        self.options = options
        self.faults = faults
        self.dispatcher = WebhookDispatcher(faults)
        self.clock = Clock()
        # The currencies the account has a bank account in; anything else converts into the
        # first (the account's default currency).
        self.settlement_currencies = options.stripe_settlement_currencies
        self.store = Store()
        self.events = Events(self.store, self.clock, self.dispatcher)
        self.idempotency = IdempotencyCache(self.clock)
        self._timers: set[threading.Timer] = set()
        self._add_configured_endpoint()

    def _add_configured_endpoint(self) -> None:
        if self.options.stripe_webhook_url:
            self.events.add_endpoint(
                self.options.stripe_webhook_url,
                list(self.options.stripe_webhook_events),
                secret=self.options.stripe_webhook_secret,
                endpoint_id=DEFAULT_ENDPOINT_ID,
                description="Configured at start (--stripe-webhook-url)",
            )

    def later(self, seconds: float, action: Callable[[], None]) -> None:
        """Run `action` once, off the request (e.g. the card network opening a dispute)."""

        def run() -> None:
            self._timers.discard(timer)
            action()

        timer = threading.Timer(seconds, run)
        timer.daemon = True
        self._timers.add(timer)
        timer.start()

    def cancel_timers(self) -> None:
        for timer in list(self._timers):
            timer.cancel()
        self._timers.clear()

    def reset(self, seed: int | None = None) -> None:
        """Forget every object, idempotency key, delivery and fault; keep the configured
        endpoint, so a reset sandbox looks like a freshly started one."""
        self.cancel_timers()
        with self.store.lock:
            self.store.clear()
            self.idempotency.clear()
            self.clock.offset = 0.0
            self._add_configured_endpoint()
        self.dispatcher.reset()
        self.faults.reset(seed)
