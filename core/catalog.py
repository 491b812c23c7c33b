"""The catalog projection: Shopify's products and variants as we serve them, priced per region
and with `available` = sellable stock. Shopify is the source of truth; `upsert_product` never
lets an older Shopify payload overwrite a newer one."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, func, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from core.errors import InvalidRequest, NotFound
from core.ids import new_id
from core.models import Product, Stock, Variant, VariantPrice

MAX_PAGE_SIZE = 100


@dataclass(frozen=True)
class VariantData:
    sku: str
    title: str
    shopify_variant_id: int
    shopify_inventory_item_id: int
    prices: dict[str, int]  # currency -> minor units
    position: int = 1


@dataclass(frozen=True)
class ProductData:
    shopify_product_id: int
    handle: str
    title: str
    updated_at: datetime
    variants: Sequence[VariantData]
    category: str | None = None
    description: str | None = None
    image_url: str | None = None
    status: str = "active"


@dataclass(frozen=True)
class VariantView:
    sku: str
    title: str
    price: int
    currency: str
    available: int


@dataclass(frozen=True)
class ProductView:
    handle: str
    title: str
    category: str | None
    description: str | None
    image_url: str | None
    variants: list[VariantView] = field(default_factory=list)


def upsert_product(session: Session, data: ProductData) -> bool:
    """Insert or update a product and its variants/prices; False when the payload is stale."""
    existing = session.scalar(
        select(Product)
        .where(Product.shopify_product_id == data.shopify_product_id)
        .with_for_update()
    )
    if existing is not None and existing.shopify_updated_at > data.updated_at:
        return False
    product = existing or Product(id=new_id("prd"), shopify_product_id=data.shopify_product_id)
    product.handle, product.title = data.handle, data.title
    product.category, product.description = data.category, data.description
    product.image_url, product.status = data.image_url, data.status
    product.shopify_updated_at = data.updated_at
    product.synced_at = func.now()
    session.add(product)
    session.flush()
    for v in data.variants:
        session.execute(
            insert(Variant)
            .values(
                id=new_id("var"),
                product_id=product.id,
                sku=v.sku,
                title=v.title,
                shopify_variant_id=v.shopify_variant_id,
                shopify_inventory_item_id=v.shopify_inventory_item_id,
                position=v.position,
                shopify_updated_at=data.updated_at,
            )
            .on_conflict_do_update(
                index_elements=[Variant.shopify_variant_id],
                set_={
                    "sku": v.sku,
                    "title": v.title,
                    "position": v.position,
                    "product_id": product.id,
                    "shopify_updated_at": data.updated_at,
                },
            )
        )
        for currency, amount in v.prices.items():
            session.execute(
                insert(VariantPrice)
                .values(sku=v.sku, currency=currency.lower(), amount_minor=amount)
                .on_conflict_do_update(
                    index_elements=[VariantPrice.sku, VariantPrice.currency],
                    set_={"amount_minor": amount},
                )
            )
        session.execute(
            insert(Stock).values(sku=v.sku, shopify_available=0).on_conflict_do_nothing()
        )
    return True


def delete_product(session: Session, shopify_product_id: int) -> None:
    """Shopify deleted it: hide it from the storefront (orders keep their lines)."""
    session.execute(
        Product.__table__.update()
        .where(Product.shopify_product_id == shopify_product_id)
        .values(status="archived")
    )


def _encode_cursor(handle: str) -> str:
    return base64.urlsafe_b64encode(handle.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> str:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        return base64.b64decode(padded, altchars=b"-_", validate=True).decode()
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise InvalidRequest("cursor is not valid", param="cursor") from exc


# What the storefront shows of the products in `p`: each with its variants priced in
# :currency, in position order, with their sellable count; a product none of whose variants
# sells in that currency comes with no variants. One statement, one round trip.
_WITH_VARIANTS = """
    SELECT p.handle, p.title, p.category, p.description, p.image_url,
           v.sku, v.title AS variant_title, v.price, v.sellable
      FROM {products} p
      LEFT JOIN LATERAL (
            SELECT variant.sku, variant.title, variant.position, price.amount_minor AS price,
                   stock.shopify_available - stock.reserved - stock.committed AS sellable
              FROM variant
              JOIN variant_price price
                ON price.sku = variant.sku AND price.currency = :currency
              JOIN stock ON stock.sku = variant.sku
             WHERE variant.product_id = p.id) v ON true
     ORDER BY p.handle, v.position, v.sku
"""

# -- product_by_handle --
_PRODUCT = text(
    _WITH_VARIANTS.format(
        products="(SELECT * FROM product WHERE handle = :handle AND status = 'active')"
    )
)

# -- product_page --
# Active products by handle after the cursor's; one more than the page, to tell whether
# another page follows.
_PRODUCT_PAGE = text(
    _WITH_VARIANTS.format(
        products="""(SELECT * FROM product
                      WHERE status = 'active' AND handle > :after
                      ORDER BY handle
                      LIMIT :limit)"""
    )
)


def _views(rows: Sequence[Row[Any]], currency: str) -> list[ProductView]:
    views: list[ProductView] = []
    for row in rows:
        if not views or views[-1].handle != row.handle:
            views.append(
                ProductView(row.handle, row.title, row.category, row.description, row.image_url)
            )
        if row.sku is not None:
            views[-1].variants.append(
                VariantView(row.sku, row.variant_title, row.price, currency, max(0, row.sellable))
            )
    return views


def list_products(
    db: Session | Connection, *, currency: str, limit: int = 20, cursor: str | None = None
) -> tuple[list[ProductView], str | None]:
    """One page of active products by handle; returns (page, cursor of the next page or None)."""
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise InvalidRequest(f"limit must be between 1 and {MAX_PAGE_SIZE}", param="limit")
    after = _decode_cursor(cursor) if cursor else ""
    rows = db.execute(_PRODUCT_PAGE, {"after": after, "limit": limit + 1, "currency": currency})
    views = _views(rows.all(), currency)
    more = len(views) > limit
    views = views[:limit]
    return views, (_encode_cursor(views[-1].handle) if more else None)


def get_product(db: Session | Connection, handle: str, *, currency: str) -> ProductView:
    rows = db.execute(_PRODUCT, {"handle": handle, "currency": currency}).all()
    if not rows:
        raise NotFound(f"no product with handle {handle!r}", param="handle")
    return _views(rows, currency)[0]


def prices(session: Session, skus: Sequence[str], currency: str) -> dict[str, int]:
    """Unit price in minor units per known SKU sold in `currency` (unknown SKUs are absent)."""
    rows = session.execute(
        select(VariantPrice.sku, VariantPrice.amount_minor)
        .join(Variant, Variant.sku == VariantPrice.sku)
        .join(Product, Product.id == Variant.product_id)
        .where(
            VariantPrice.sku.in_(list(skus)),
            VariantPrice.currency == currency,
            Product.status == "active",
        )
    ).all()
    return dict(rows)
