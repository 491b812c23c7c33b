"""The demo catalog: a premium store in three categories (fashion, beauty, jewelry).

`sandbox/data/demo_catalog.json` is the source of truth so the storefront, the sync and the tests
all see the same SKUs, prices and stock. The sandbox Shopify seeds itself from it; our own code
may import `demo_catalog()` to know what to expect (e.g. the EUR price list, which Shopify holds
as a presentment price rather than as the variant's `price`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources

CATEGORIES = ("fashion", "beauty", "jewelry")
CURRENCIES = ("usd", "eur")


@dataclass(frozen=True)
class CatalogVariant:
    sku: str  # stable, e.g. FSH-TRENCH-BEIGE-M
    title: str  # "Beige / M", as Shopify builds it from the option values
    options: dict[str, str]  # option name -> value, in Shopify's option1..3 order
    prices: dict[str, int]  # lower-case currency -> minor units ("usd", "eur")
    stock: int  # units available at the default location when seeded


@dataclass(frozen=True)
class CatalogProduct:
    handle: str
    title: str
    category: str  # Shopify product_type
    description: str
    image_url: str
    variants: tuple[CatalogVariant, ...]

    @property
    def option_names(self) -> list[str]:
        return list(self.variants[0].options) if self.variants else []


@cache
def _load() -> tuple[CatalogProduct, ...]:
    raw = resources.files("sandbox").joinpath("data/demo_catalog.json").read_text("utf-8")
    return tuple(
        CatalogProduct(
            handle=p["handle"],
            title=p["title"],
            category=p["category"],
            description=p["description"],
            image_url=p["image_url"],
            variants=tuple(
                CatalogVariant(
                    sku=v["sku"],
                    title=v["title"],
                    options=dict(v["options"]),
                    prices=dict(v["prices"]),
                    stock=int(v["stock"]),
                )
                for v in p["variants"]
            ),
        )
        for p in json.loads(raw)["products"]
    )


def demo_catalog() -> list[CatalogProduct]:
    """Every demo product in seeding order (the order Shopify ids are assigned in)."""
    return list(_load())


def demo_variants() -> dict[str, CatalogVariant]:
    """Every demo variant by SKU."""
    return {v.sku: v for p in _load() for v in p.variants}
