"""How a sandbox is configured: by `dotshop sandbox` flags/environment, or by tests."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

DEFAULT_STRIPE_API_KEY = "sk_test_dotshop_sandbox"
DEFAULT_STRIPE_WEBHOOK_SECRET = "whsec_dotshop_sandbox"
DEFAULT_SHOPIFY_ACCESS_TOKEN = "shpat_dotshop_sandbox"
DEFAULT_SHOPIFY_API_SECRET = "shpss_dotshop_sandbox"
DEFAULT_SHOPIFY_SHOP = "dotshop-demo.myshopify.com"
# The version webhook subscriptions are made with (core.shopify_gateway.API_VERSION).
SHOPIFY_API_VERSION = "2026-10"


@dataclass(frozen=True)
class SandboxOptions:
    seed: int = 0
    stripe_api_key: str = DEFAULT_STRIPE_API_KEY
    # A webhook endpoint configured at start (more can be created through the API).
    stripe_webhook_url: str | None = None
    stripe_webhook_secret: str = DEFAULT_STRIPE_WEBHOOK_SECRET
    # The configured endpoint's `enabled_events`; "*" is every event.
    stripe_webhook_events: tuple[str, ...] = ("*",)
    # A US Stripe account: it settles (and pays out) in USD only, so an EUR charge is
    # converted into USD in its balance transaction.
    stripe_settlement_currencies: tuple[str, ...] = ("usd",)
    shopify_shop: str = DEFAULT_SHOPIFY_SHOP
    shopify_access_token: str = DEFAULT_SHOPIFY_ACCESS_TOKEN
    shopify_api_secret: str = DEFAULT_SHOPIFY_API_SECRET
    # When set, every supported topic is subscribed to this address at start.
    shopify_webhook_url: str | None = None
    # Seed the demo catalog (fashion, beauty, jewelry) into the Shopify stand-in.
    demo_catalog: bool = True
    # Fault settings (FaultConfig fields) both stand-ins start with, e.g. from `--fault`.
    faults: dict[str, Any] = field(default_factory=dict)
