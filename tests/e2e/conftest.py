"""A real stack on loopback for end-to-end tests: the sandbox process, the checkout API
process(es) and a fresh migrated database. The outbox relay and the sweeper run in the test
process (`stack.drain()`, `stack.sweep(now)`), so each test decides when side effects happen
and can inject the clock; the relay process itself is covered by tests/core."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import stripe
from sqlalchemy import Engine, text

from core import relay, shopify_sync, sweeper
from core.outbox import Handlers, RetryPolicy
from core.payment_effects import StripeEffects
from core.shopify_gateway import API_VERSION, ShopifyGateway
from core.stripe_gateway import StripeGateway
from dotshop.stack import stripe_webhook_flags
from tests.processes import Process, free_port, start_dotshop

STRIPE_KEY = "sk_test_e2e_dotshop"
WEBHOOK_SECRET = "whsec_e2e_dotshop"
SHOPIFY_TOKEN = "shpat_e2e_dotshop"
SHOPIFY_SECRET = "shpss_e2e_dotshop"
ADMIN_TOKEN = "admin-e2e-token"
SHOP = "dotshop-demo.myshopify.com"
# Relay retries in tests: quick, so a transient injected fault clears within the test.
NO_FAULTS = {
    "error_rate": 0.0,
    "timeout_rate": 0.0,
    "latency_ms": 0,
    "webhook_duplicate_rate": 0.0,
    "webhook_drop_rate": 0.0,
    "webhook_reorder": False,
    "webhook_delay_ms": 0,
    "path_prefix": "",
    "method": "",
}
FAST_RETRY = RetryPolicy(max_attempts=5, base_seconds=0.0, cap_seconds=0.0)


@dataclass
class Stack:
    api: dict[str, str]
    stripe_base: str
    shopify_base: str
    engine: Engine
    db_url: str
    processes: list[Process] = field(default_factory=list)
    api_env: dict[str, dict[str, str]] = field(default_factory=dict)
    api_processes: dict[str, Process] = field(default_factory=dict)

    def start_api(self, region: str, log_path: str) -> Process:
        """Start (or restart) the API process of a region on its port."""
        port = self.api[region].rsplit(":", 1)[1]
        proc = start_dotshop(
            ["api", "--port", port],
            [f"{self.api[region]}/readyz"],
            log_path,
            env=self.api_env[region],
        )
        self.processes.append(proc)
        self.api_processes[region] = proc
        return proc

    @property
    def shopify_site(self) -> str:
        return f"{self.shopify_base}/admin/api/{API_VERSION}"

    def stripe_client(self, retries: int = 0) -> stripe.StripeClient:
        return stripe.StripeClient(
            STRIPE_KEY, base_addresses={"api": self.stripe_base}, max_network_retries=retries
        )

    def stripe_gateway(self) -> StripeGateway:
        return StripeGateway(STRIPE_KEY, self.stripe_base)

    def shopify_gateway(self) -> ShopifyGateway:
        return ShopifyGateway(shop=SHOP, site=self.shopify_site, access_token=SHOPIFY_TOKEN)

    def handlers(self) -> Handlers:
        handlers = Handlers()
        StripeEffects(self.engine, self.stripe_gateway()).register(handlers)
        handlers.register(
            "shopify.push_order", shopify_sync.OrderPusher(self.engine, self.shopify_gateway(), 1)
        )
        shopify_sync.HoldMirror(self.engine, self.shopify_gateway(), 1).register(handlers)
        return handlers

    def drain(self, rounds: int = 50) -> None:
        """Deliver every due outbox message (and what it causes), like a relay would."""
        handlers = self.handlers()
        for _ in range(rounds):
            if relay.run_once(self.engine, handlers, policy=FAST_RETRY) == 0:
                return

    def sweep(self, now: datetime | None = None) -> sweeper.SweepResult:
        return sweeper.run_once(self.engine, now or datetime.now(UTC))

    def wait_webhooks(self, timeout: float = 30) -> None:
        for base in (self.stripe_base, self.shopify_base):
            idle = httpx.post(
                f"{base}/_sandbox/webhooks/wait", json={"timeout": timeout}, timeout=timeout + 5
            )
            assert idle.json()["idle"], f"webhooks of {base} still pending"

    def settle(self) -> None:
        """Webhooks delivered, outbox drained, and the webhooks that caused delivered too."""
        for _ in range(3):
            self.wait_webhooks()
            self.drain()
        self.wait_webhooks()

    def faults(self, which: str, **config: Any) -> None:
        base = self.stripe_base if which == "stripe" else self.shopify_base
        response = httpx.post(f"{base}/_sandbox/faults", json=config, timeout=10)
        assert response.status_code == 200, response.text

    def clear_faults(self) -> None:
        for base in (self.stripe_base, self.shopify_base):
            httpx.post(f"{base}/_sandbox/faults", json=NO_FAULTS, timeout=10)

    def sql(self, query: str, **params: Any) -> list[Any]:
        with self.engine.connect() as conn:
            return list(conn.execute(text(query), params))

    def scalar(self, query: str, **params: Any) -> Any:
        with self.engine.connect() as conn:
            return conn.execute(text(query), params).scalar()

    def set_stock(self, sku: str, available: int) -> None:
        """Set Shopify's level for a SKU and apply it to the projection (as a webhook would)."""
        from core.db import transaction
        from tests.core.shopify_support import Shop

        item_id = self.scalar(
            "SELECT shopify_inventory_item_id FROM variant WHERE sku = :sku", sku=sku
        )
        level = Shop(self.shopify_base, SHOPIFY_TOKEN).set_level(item_id, available)
        with transaction(self.engine) as session:
            shopify_sync.apply_level(session, level)


def wait_for(predicate: Any, timeout: float = 20, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("condition not met in time")


@pytest.fixture(scope="module")
def stack(db_url: str, engine: Engine, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    logs = tmp_path_factory.mktemp("e2e")
    ports = {"us": free_port(), "eu": free_port()}
    stripe_port, shopify_port = free_port(), free_port()
    api = {region: f"http://127.0.0.1:{port}" for region, port in ports.items()}
    secrets = {
        "STRIPE_API_KEY": STRIPE_KEY,
        "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "SHOPIFY_ACCESS_TOKEN": SHOPIFY_TOKEN,
        "SHOPIFY_API_SECRET": SHOPIFY_SECRET,
    }
    procs: list[Process] = []
    try:
        sandbox = start_dotshop(
            [
                "sandbox",
                "--stripe-port",
                str(stripe_port),
                "--shopify-port",
                str(shopify_port),
                *stripe_webhook_flags(f"{api['us']}/webhooks/stripe"),
                "--shopify-webhook-url",
                f"{api['us']}/webhooks/shopify",
            ],
            [
                f"http://127.0.0.1:{stripe_port}/_sandbox/health",
                f"http://127.0.0.1:{shopify_port}/_sandbox/health",
            ],
            str(logs / "sandbox.log"),
            env=secrets,
        )
        procs.append(sandbox)
        s = Stack(
            api,
            f"http://127.0.0.1:{stripe_port}",
            f"http://127.0.0.1:{shopify_port}",
            engine,
            db_url,
            procs,
        )
        shopify_sync.load_catalog(engine, s.shopify_gateway(), 1)
        for region in ports:
            s.api_env[region] = {
                **secrets,
                "DATABASE_URL": db_url,
                "DOTSHOP_REGION": region,
                "DOTSHOP_ADMIN_TOKEN": ADMIN_TOKEN,
                "STRIPE_API_BASE": s.stripe_base,
                "SHOPIFY_SITE": s.shopify_site,
                # Injected Stripe timeouts must not make the suite slow.
                "DOTSHOP_STRIPE_TIMEOUT": "1.5",
            }
            s.start_api(region, str(logs / f"api-{region}.log"))
        yield s
    finally:
        for proc in reversed(procs):
            proc.stop()
