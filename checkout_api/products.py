"""Storefront catalog: products priced in the region's currency, `available` = sellable.
Each read is one statement in autocommit: one round trip, no BEGIN or ROLLBACK around it, on
the region's own database (core.db.read_engine): a catalog read never leaves the region."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, get
from litestar.params import FromPath, QueryParameter

from checkout_api.deps import Ctx
from checkout_api.schemas import ProductOut, ProductPage, VariantOut
from core import catalog
from core.db import autocommit, read_engine

# Cursors are ones we minted: unpadded URL-safe base64. Anything else is refused as a 422
# before it reaches the decoder.
CURSOR_PATTERN = r"^[A-Za-z0-9_-]*$"


def _out(view: catalog.ProductView) -> ProductOut:
    return ProductOut(
        handle=view.handle,
        title=view.title,
        category=view.category,
        description=view.description,
        image_url=view.image_url,
        variants=[
            VariantOut(v.sku, v.title, v.price, v.currency, v.available) for v in view.variants
        ],
    )


class ProductController(Controller):
    path = "/v1/products"
    tags = ["storefront"]

    @get("/", sync_to_thread=True, summary="List products (cursor pagination)")
    def list_products(
        self,
        ctx: Ctx,
        limit: Annotated[int, QueryParameter(ge=1, le=catalog.MAX_PAGE_SIZE)] = 20,
        cursor: Annotated[
            str | None, QueryParameter(max_length=200, pattern=CURSOR_PATTERN)
        ] = None,
    ) -> ProductPage:
        with autocommit(read_engine(ctx.settings, ctx.engine)) as conn:
            views, next_cursor = catalog.list_products(
                conn, currency=ctx.settings.currency, limit=limit, cursor=cursor
            )
        return ProductPage([_out(v) for v in views], next_cursor is not None, next_cursor)

    @get("/{handle:str}", sync_to_thread=True, summary="One product by handle")
    def get_product(self, ctx: Ctx, handle: FromPath[str]) -> ProductOut:
        with autocommit(read_engine(ctx.settings, ctx.engine)) as conn:
            return _out(catalog.get_product(conn, handle, currency=ctx.settings.currency))
