"""Our one door to Shopify: the real `ShopifyAPI` library, pointed at a shop or at the sandbox.

ShopifyAPI keeps its site and headers per thread, so every call activates the session in the
calling thread first. The REST leaky bucket answers 429 with Retry-After; we wait as told and
retry (tenacity), a bounded number of times, then report the shop unavailable."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from decimal import Decimal
from typing import Any, TypeVar

import shopify
from pyactiveresource.connection import (
    ClientError,
    ConnectionError,
    ResourceInvalid,
    ServerError,
)
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt

from core.errors import DotshopError, ProviderUnavailable
from core.settings import Settings

T = TypeVar("T")

# Shopify asks for 2 s between calls when the bucket is full; a few waits are normal under load.
RATE_LIMIT_RETRIES = 6
DEFAULT_RETRY_AFTER_SECONDS = 2.0
PAGE_SIZE = 250  # Shopify's maximum page size for REST lists
API_VERSION = "2025-01"
# Every order we push carries this note attribute, so a retried push finds the order it made.
REFERENCE_ATTRIBUTE = "dotshop_order_id"


class ShopifyRejected(DotshopError):
    """Shopify refused the request."""

    code = "shopify_rejected"
    http_status = 502


def _retry_after(exc: BaseException) -> float:
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None) or {}
    try:
        return float(
            headers.get("Retry-After") or headers.get("retry-after") or DEFAULT_RETRY_AFTER_SECONDS
        )
    except (TypeError, ValueError):
        return DEFAULT_RETRY_AFTER_SECONDS


def _is_throttled(exc: BaseException) -> bool:
    return isinstance(exc, ClientError) and getattr(exc, "code", None) == 429


def _wait(state: RetryCallState) -> float:
    return _retry_after(state.outcome.exception()) if state.outcome else DEFAULT_RETRY_AFTER_SECONDS


def money_to_minor(amount: str | Decimal) -> int:
    """Shopify money strings ("828.00") to minor units (our currencies have 2 decimals)."""
    return int((Decimal(str(amount)) * 100).to_integral_value())


class ShopifyGateway:
    def __init__(self, *, shop: str, site: str, access_token: str, timeout: float = 10) -> None:
        self.shop, self.site, self.token, self.timeout = shop, site, access_token, timeout

    @classmethod
    def from_settings(cls, settings: Settings) -> ShopifyGateway:
        if settings.shopify_access_token is None:
            raise DotshopError("SHOPIFY_ACCESS_TOKEN is not set")
        return cls(
            shop=settings.shopify_shop,
            site=settings.shopify_site,
            access_token=settings.shopify_access_token.get_secret_value(),
        )

    @contextlib.contextmanager
    def _activated(self) -> Iterator[None]:
        session = shopify.Session(self.shop, API_VERSION, self.token)
        shopify.ShopifyResource.activate_session(session)
        # The Session rewrote the host to *.myshopify.com; point the site back (the token
        # header set by activate_session survives this).
        shopify.ShopifyResource.set_site(self.site)
        # Per-currency prices (EUR for the eu storefront) come only when asked for.
        shopify.ShopifyResource.headers["X-Shopify-Api-Features"] = "include-presentment-prices"
        shopify.ShopifyResource.set_timeout(self.timeout)
        yield

    def call(self, fn: Callable[[], T]) -> T:
        """Run one ShopifyAPI call in this thread's session, waiting out 429s."""
        retrying = Retrying(
            retry=retry_if_exception(_is_throttled),
            stop=stop_after_attempt(RATE_LIMIT_RETRIES),
            wait=_wait,
            reraise=True,
        )
        try:
            with self._activated():
                return retrying(fn)
        except (ServerError, ConnectionError) as exc:
            if isinstance(exc, ClientError) and not _is_throttled(exc):
                raise ShopifyRejected(str(exc)) from exc
            raise ProviderUnavailable(f"Shopify unavailable: {type(exc).__name__}") from exc
        except OSError as exc:
            raise ProviderUnavailable(f"Shopify unreachable: {exc}") from exc

    def products(self) -> Iterator[dict[str, Any]]:
        """Every product (with variants and presentment prices), page by page."""
        page = self.call(lambda: shopify.Product.find(limit=PAGE_SIZE))
        while True:
            for product in page:
                yield product.to_dict()
            if not page.has_next_page():
                return
            page = self.call(page.next_page)

    def inventory_levels(
        self, item_ids: Sequence[int], location_ids: Sequence[int]
    ) -> list[dict[str, Any]]:
        """The levels of these items at these locations (one per stocked pair), page by page."""
        levels: list[dict[str, Any]] = []
        locations = ",".join(str(i) for i in location_ids)
        for start in range(0, len(item_ids), 50):  # Shopify takes 50 ids per request
            chunk = ",".join(str(i) for i in item_ids[start : start + 50])
            page = self.call(
                lambda chunk=chunk: shopify.InventoryLevel.find(
                    inventory_item_ids=chunk, location_ids=locations, limit=PAGE_SIZE
                )
            )
            while True:
                levels.extend(level.to_dict() for level in page)
                if not page.has_next_page():
                    break
                page = self.call(page.next_page)
        return levels

    def find_order_by_reference(self, reference: str, since_id: int | None) -> int | None:
        """A Shopify order we pushed earlier for `reference`, among orders newer than since_id."""
        params: dict[str, Any] = {"status": "any", "limit": PAGE_SIZE}
        if since_id:
            params["since_id"] = since_id
        page = self.call(lambda: shopify.Order.find(**params))
        while True:
            for order in page:
                attrs = {
                    a.get("name"): a.get("value")
                    for a in order.to_dict().get("note_attributes") or []
                }
                if attrs.get(REFERENCE_ATTRIBUTE) == reference:
                    return int(order.id)
            if not page.has_next_page():
                return None
            page = self.call(page.next_page)

    def create_order(
        self, *, reference: str, email: str, currency: str, lines: list[tuple[int, int]]
    ) -> int:
        """Create a paid order (Shopify decrements its inventory); returns its Shopify id."""

        def create() -> int:
            order = shopify.Order.create(
                {
                    "email": email,
                    "currency": currency.upper(),
                    "financial_status": "paid",
                    "line_items": [{"variant_id": v, "quantity": q} for v, q in lines],
                    "note_attributes": [{"name": REFERENCE_ATTRIBUTE, "value": reference}],
                    "tags": "dotshop",
                    "send_receipt": False,
                    # The customer has paid: the order must reach Shopify even if another channel
                    # sold the last unit meanwhile. Shopify then goes negative, which the
                    # oversell check reports, instead of the push failing silently forever.
                    "inventory_behaviour": "decrement_ignoring_policy",
                }
            )
            if order.errors.full_messages():
                raise ShopifyRejected("; ".join(order.errors.full_messages()))
            return int(order.id)

        return self.call(create)

    def cancel_order(self, shopify_order_id: int, *, reason: str) -> None:
        """Cancel an order we pushed, restocking its units as Shopify does (`restock=true` puts
        back what the order claimed and announces the new levels). Cancelling is final and
        Shopify refuses a second one (422): an order already cancelled counts as done, so a
        retry after a lost response converges."""

        def cancel() -> None:
            try:
                shopify.Order({"id": shopify_order_id}).cancel(restock=True, reason=reason)
            except ResourceInvalid:
                if not shopify.Order.find(shopify_order_id).cancelled_at:
                    raise

        self.call(cancel)
