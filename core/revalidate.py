"""Storefront revalidation: when the catalog changes in a way a statically rendered page shows
(a price, a title, stock crossing zero), the storefront is told to re-render the product's page
and its collection's, through its on-demand revalidation endpoint (a Next.js route handler that
calls revalidatePath / revalidateTag): `POST <DOTSHOP_REVALIDATE_URL>?path=...&tags=...&secret=...`.

Calls leave through the outbox (retried with backoff, dead-lettered after the usual attempts),
one message per path. Changes to one path within COALESCE_SECONDS share one call: a message is
written only when none for that path is waiting, and it waits out the window before delivery.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import exists, func, insert, select
from sqlalchemy.orm import Session

from core.errors import ProviderUnavailable
from core.ids import new_id
from core.models import OutboxMessage, Product, Stock, Variant, VariantPrice
from core.outbox import Message, PermanentError
from core.settings import Settings, get_settings

TOPIC = "storefront.revalidate"
# A burst of changes (a repair, a sale of several sizes) makes one call per page, not one each.
COALESCE_SECONDS = 2.0
# The storefront answers a revalidation in milliseconds; a slow one is retried later.
TIMEOUT_SECONDS = 5.0


def paths(handle: str, category: str | None) -> list[str]:
    """A product's page and its collection's page."""
    return [f"/products/{handle}"] + ([f"/collections/{category}"] if category else [])


def enqueue(session: Session, pages: Iterable[str]) -> int:
    """Queue a revalidation of each page, in the caller's transaction, unless one is already
    waiting for it; returns how many were queued (0 when no endpoint is configured)."""
    if not enabled():
        return 0
    queued = 0
    for path in sorted(set(pages)):
        key = f"revalidate:{path}"
        waiting = session.scalar(
            select(
                exists().where(
                    OutboxMessage.ordering_key == key,
                    OutboxMessage.status == "pending",
                    OutboxMessage.attempts == 0,
                )
            )
        )
        if waiting:
            continue
        session.execute(
            insert(OutboxMessage).values(
                public_id=new_id("obx"),
                topic=TOPIC,
                ordering_key=key,
                payload={"path": path},
                next_attempt_at=func.now() + timedelta(seconds=COALESCE_SECONDS),
            )
        )
        queued += 1
    return queued


def enabled() -> bool:
    return get_settings().revalidate_url is not None


def product_state(session: Session, shopify_product_id: int) -> dict[str, Any] | None:
    """What a product page shows that our sync can change (None when revalidation is off)."""
    if not enabled():
        return None
    product = session.scalar(
        select(Product).where(Product.shopify_product_id == shopify_product_id)
    )
    if product is None:
        return None
    prices = session.execute(
        select(VariantPrice.sku, VariantPrice.currency, VariantPrice.amount_minor)
        .join(Variant, Variant.sku == VariantPrice.sku)
        .where(Variant.product_id == product.id)
        .order_by(VariantPrice.sku, VariantPrice.currency)
    ).all()
    return {
        "handle": product.handle,
        "category": product.category,
        "title": product.title,
        "status": product.status,
        "prices": [tuple(row) for row in prices],
    }


def product_changed(
    session: Session, shopify_product_id: int, before: dict[str, Any] | None
) -> int:
    """Queue the product's pages when what they show changed since `before`."""
    after = product_state(session, shopify_product_id)
    if after is None or before == after:
        return 0
    pages = paths(after["handle"], after["category"])
    if before is not None:
        pages += paths(before["handle"], before["category"])
    return enqueue(session, pages)


def in_stock(session: Session, skus: Sequence[str]) -> dict[str, bool]:
    """Whether each SKU can be sold (Shopify's stock less our holds); {} when revalidation is
    off."""
    if not enabled() or not skus:
        return {}
    rows = session.execute(
        select(Stock.sku, (Stock.shopify_available - Stock.reserved - Stock.committed) > 0).where(
            Stock.sku.in_(list(skus))
        )
    ).all()
    return dict(rows)


def stock_changed(session: Session, before: dict[str, bool]) -> int:
    """Queue the pages of the products whose SKUs went in or out of stock since `before`."""
    after = in_stock(session, list(before))
    crossed = [sku for sku, was in before.items() if after.get(sku, False) != was]
    if not crossed:
        return 0
    rows = session.execute(
        select(Product.handle, Product.category)
        .join(Variant, Variant.product_id == Product.id)
        .where(Variant.sku.in_(crossed))
        .distinct()
    ).all()
    return enqueue(session, [page for handle, category in rows for page in paths(handle, category)])


class Revalidator:
    """The outbox handler for `storefront.revalidate`."""

    def __init__(self, settings: Settings, client: httpx.Client | None = None) -> None:
        self.settings = settings
        self.client = client or httpx.Client(timeout=TIMEOUT_SECONDS)

    def __call__(self, message: Message) -> None:
        url, secret = self.settings.revalidate_url, self.settings.revalidate_secret
        if url is None or secret is None:
            raise PermanentError(
                "DOTSHOP_REVALIDATE_URL and DOTSHOP_REVALIDATE_SECRET are required"
            )
        path = message.payload["path"]
        kind, _, name = path.strip("/").partition("/")
        params = {
            "path": path,
            "tags": f"{kind.rstrip('s')}:{name}",
            "secret": secret.get_secret_value(),
        }
        try:
            response = self.client.post(url, params=params)
        except httpx.HTTPError as exc:
            raise ProviderUnavailable(f"storefront unreachable: {type(exc).__name__}") from exc
        if response.status_code in (401, 403):
            raise PermanentError(f"the storefront refused our secret ({response.status_code})")
        if response.status_code >= 300:
            raise ProviderUnavailable(f"storefront answered {response.status_code}")
