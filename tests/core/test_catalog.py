"""The catalog projection: stale Shopify payloads never win, prices per currency, cursor pages,
and Shopify's product JSON read the way the sync reads it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from core import catalog, inventory
from core.db import transaction
from core.errors import InvalidRequest, NotFound
from core.shopify_sync import product_data

T0 = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def product(
    n: int, *, title: str = "Coat", updated_at: datetime = T0, usd: int = 10000
) -> catalog.ProductData:
    return catalog.ProductData(
        shopify_product_id=n,
        handle=f"p-{n:03d}",
        title=title,
        updated_at=updated_at,
        variants=[
            catalog.VariantData(
                f"SKU-{n}", "One size", 1000 + n, 2000 + n, {"usd": usd, "eur": usd - 500}
            )
        ],
    )


def test_an_older_payload_never_overwrites_a_newer_one(clean_engine: Engine) -> None:
    with transaction(clean_engine) as s:
        assert catalog.upsert_product(s, product(1, title="New", updated_at=T0, usd=20000))
    with transaction(clean_engine) as s:
        assert not catalog.upsert_product(
            s, product(1, title="Old", updated_at=T0 - timedelta(seconds=1), usd=1)
        )
    with Session(clean_engine) as s:
        view = catalog.get_product(s, "p-001", currency="usd")
        assert (view.title, view.variants[0].price) == ("New", 20000)
        assert catalog.get_product(s, "p-001", currency="eur").variants[0].price == 19500


def test_pages_prices_and_sellable(clean_engine: Engine) -> None:
    with transaction(clean_engine) as s:
        for n in range(1, 6):
            catalog.upsert_product(s, product(n))
            inventory.apply_shopify_level(s, f"SKU-{n}", n, T0)
    seen, cursor = [], None
    with Session(clean_engine) as s:
        while True:
            page, cursor = catalog.list_products(s, currency="usd", limit=2, cursor=cursor)
            seen += [(p.handle, p.variants[0].available) for p in page]
            if cursor is None:
                break
        assert seen == [(f"p-{n:03d}", n) for n in range(1, 6)]
        with pytest.raises(InvalidRequest):
            catalog.list_products(s, currency="usd", cursor="%%%")
        with pytest.raises(InvalidRequest):
            catalog.list_products(s, currency="usd", limit=0)
        with pytest.raises(NotFound):
            catalog.get_product(s, "missing", currency="usd")
        assert catalog.prices(s, ["SKU-1", "NOPE"], "eur") == {"SKU-1": 9500}


def test_shopify_product_json_with_presentment_prices() -> None:
    data = product_data(
        {
            "id": 7,
            "handle": "silk-scarf",
            "title": "Silk Scarf",
            "product_type": "fashion",
            "body_html": "<p>Silk.</p>",
            "status": "active",
            "updated_at": "2026-11-26T12:00:00.123Z",
            "image": {"src": "https://cdn.example/scarf.jpg"},
            "variants": [
                {
                    "id": 70,
                    "sku": "SCARF-RED",
                    "title": "Red",
                    "price": "120.00",
                    "position": 1,
                    "inventory_item_id": 700,
                    "presentment_prices": [
                        {"price": {"amount": "120.00", "currency_code": "USD"}},
                        {"price": {"amount": "111.50", "currency_code": "EUR"}},
                    ],
                },
                {"id": 71, "sku": "", "title": "No SKU", "price": "1.00", "inventory_item_id": 701},
            ],
        }
    )
    assert data.updated_at == datetime(2026, 11, 26, 12, 0, 0, 123000, tzinfo=UTC)
    assert [v.sku for v in data.variants] == ["SCARF-RED"]
    assert data.variants[0].prices == {"usd": 12000, "eur": 11150}
    assert (data.category, data.image_url) == ("fashion", "https://cdn.example/scarf.jpg")
