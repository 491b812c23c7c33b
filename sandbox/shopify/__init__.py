"""The sandbox Shopify: a local stand-in for the Shopify Admin REST API that the real
`ShopifyAPI` library talks to (products, variants, inventory, locations, orders, webhooks),
with Shopify's leaky-bucket rate limit, HMAC-signed webhooks and fault injection."""

from sandbox.shopify.app import ShopifySandbox, create_app

__all__ = ["ShopifySandbox", "create_app"]
