"""The real ShopifyAPI library against a real `dotshop sandbox` process: catalog, inventory,
orders and their effects on stock, and the Admin API's error shapes."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

import httpx
import pytest
import shopify
from pyactiveresource.connection import ResourceInvalid, ResourceNotFound, UnauthorizedAccess

from sandbox.catalog import demo_catalog, demo_variants
from sandbox.options import DEFAULT_SHOPIFY_ACCESS_TOKEN, DEFAULT_SHOPIFY_SHOP
from tests.processes import Process

VERSION = "2025-01"


@pytest.fixture
def shop(sandbox: Process) -> Iterator[str]:
    """A freshly reset shop with the library's session pointed at it; yields the base URL."""
    base = sandbox.urls["shopify"]
    httpx.post(f"{base}/_sandbox/reset", json={"seed": 0}).raise_for_status()
    session = shopify.Session(DEFAULT_SHOPIFY_SHOP, VERSION, DEFAULT_SHOPIFY_ACCESS_TOKEN)
    shopify.ShopifyResource.activate_session(session)
    # The Session rewrites hosts to *.myshopify.com; set_site after activation points it here.
    shopify.ShopifyResource.set_site(f"{base}/admin/api/{VERSION}")
    yield base
    shopify.ShopifyResource.clear_session()


def level(item_id: int, location_id: int = 1) -> int:
    levels = shopify.InventoryLevel.find(inventory_item_ids=item_id, location_ids=location_id)
    assert len(levels) == 1
    return levels[0].available


def advance_clock(shop: str, seconds: float) -> None:
    httpx.post(f"{shop}/_sandbox/clock/advance", json={"seconds": seconds}).raise_for_status()


def variant_by_sku(sku: str) -> shopify.Variant:
    for product in shopify.Product.find(limit=250):
        for variant in product.variants:
            if variant.sku == sku:
                # Nested variants keep product_id as a prefix option (pyactiveresource).
                variant.attributes["product_id"] = product.id
                return variant
    raise AssertionError(f"{sku} not in the sandbox catalog")


def test_set_site_after_activation_keeps_the_token_header(shop):
    assert shopify.ShopifyResource.site == f"{shop}/admin/api/{VERSION}"
    assert shopify.ShopifyResource.headers["X-Shopify-Access-Token"] == DEFAULT_SHOPIFY_ACCESS_TOKEN
    assert shopify.Shop.current().myshopify_domain == DEFAULT_SHOPIFY_SHOP


def test_paginates_the_whole_demo_catalog(shop):
    page = shopify.Product.find(limit=7)
    assert not page.has_previous_page()
    pages = [page]
    while page.has_next_page():
        page = page.next_page()
        pages.append(page)
    products = [p for pg in pages for p in pg]
    catalog = demo_catalog()
    assert len(pages) == -(-len(catalog) // 7)
    assert [p.handle for p in products] == [c.handle for c in catalog]
    assert [p.id for p in products] == sorted(p.id for p in products)
    assert pages[-1].has_previous_page()
    assert [p.id for p in pages[-1].previous_page()] == [p.id for p in pages[-2]]
    assert shopify.Product.count() == len(catalog)
    # Everything a sync needs is on the wire, in Shopify's shapes.
    by_sku = demo_variants()
    variants = [v for p in products for v in p.variants]
    assert len(variants) == len(by_sku)
    trench = next(p for p in products if p.handle == "classic-trench-coat")
    assert trench.product_type == "fashion"
    assert trench.images[0].src.startswith("https://cdn.dotshop.example/")
    assert [o.name for o in trench.options] == ["Colour", "Size"]
    beige_m = next(v for v in trench.variants if v.sku == "FSH-TRENCH-BEIGE-M")
    assert beige_m.price == "890.00"
    assert (beige_m.option1, beige_m.option2, beige_m.title) == ("Beige", "M", "Beige / M")
    assert beige_m.inventory_management == "shopify"
    assert beige_m.inventory_quantity == by_sku["FSH-TRENCH-BEIGE-M"].stock
    prices = {p.price.currency_code: p.price.amount for p in beige_m.presentment_prices}
    eur = by_sku["FSH-TRENCH-BEIGE-M"].prices["eur"]
    assert prices == {"USD": "890.00", "EUR": f"{eur // 100}.{eur % 100:02d}"}


def test_list_filters(shop):
    first_three = shopify.Product.find(limit=3)
    ids = [p.id for p in first_three]
    assert [p.id for p in shopify.Product.find(ids=",".join(map(str, ids[1:])))] == ids[1:]
    assert [p.id for p in shopify.Product.find(since_id=ids[1], limit=1)] == [ids[2]]
    found = shopify.Product.find(handle="signet-ring")
    assert [p.title for p in found] == ["Signet Ring"]
    slim = shopify.Product.find(ids=str(ids[0]), fields="id,title")
    assert set(slim[0].attributes) == {"id", "title"}
    later = shopify.Product.find(updated_at_min="2999-01-01T00:00:00Z")
    assert len(later) == 0
    assert shopify.Product.count(product_type="jewelry") == sum(
        1 for c in demo_catalog() if c.category == "jewelry"
    )


def test_product_create_update_delete(shop):
    product = shopify.Product.create(
        {
            "title": "Test Kimono",
            "product_type": "fashion",
            "options": [{"name": "Size"}],
            "variants": [{"sku": "FSH-KIMONO-S", "price": "120", "option1": "S"}],
            "images": [{"src": "https://cdn.dotshop.example/fashion/kimono.jpg"}],
        }
    )
    assert product.errors.full_messages() == []
    assert product.handle == "test-kimono"
    assert product.variants[0].price == "120.00"
    assert product.variants[0].inventory_item_id
    product.title = "Test Kimono II"
    product.variants[0].price = "130.50"
    assert product.save()
    again = shopify.Product.find(product.id)
    assert again.title == "Test Kimono II" and again.variants[0].price == "130.50"
    assert again.updated_at >= product.created_at
    bad = shopify.Product.create({"title": ""})
    assert bad.errors.on("title") == "can't be blank"
    again.destroy()
    with pytest.raises(ResourceNotFound):
        shopify.Product.find(product.id)


def test_variant_find_and_update(shop):
    variant = variant_by_sku("BTY-LIP-ROUGE")
    found = shopify.Variant.find(variant.id)
    assert found.sku == "BTY-LIP-ROUGE" and found.product_id == variant.product_id
    found.price = "55.00"
    assert found.save()
    assert shopify.Variant.find(variant.id).price == "55.00"
    assert shopify.InventoryItem.find(variant.inventory_item_id).sku == "BTY-LIP-ROUGE"
    items = shopify.InventoryItem.find(ids=f"{variant.inventory_item_id}")
    assert [i.id for i in items] == [variant.inventory_item_id]


def test_inventory_set_adjust_connect_list(shop):
    locations = shopify.Location.find()
    assert [(loc.id, loc.name) for loc in locations] == [(1, "Warehouse"), (2, "Paris Boutique")]
    item_id = variant_by_sku("JWL-RING-GOLD-52").inventory_item_id
    assert level(item_id) == demo_variants()["JWL-RING-GOLD-52"].stock
    before = shopify.InventoryLevel.find(inventory_item_ids=item_id)[0].updated_at
    advance_clock(shop, 1)  # updated_at has whole seconds, like Shopify's
    updated = shopify.InventoryLevel.set(1, item_id, 12)
    assert updated.available == 12 and updated.updated_at > before
    assert shopify.InventoryLevel.adjust(1, item_id, -5).available == 7
    assert level(item_id) == 7
    # Not stocked at location 2 until connected.
    assert len(shopify.InventoryLevel.find(inventory_item_ids=item_id, location_ids=2)) == 0
    connected = shopify.InventoryLevel.connect(2, item_id)
    assert (connected.location_id, connected.available) == (2, 0)
    levels = shopify.InventoryLevel.find(inventory_item_ids=[item_id])
    assert sorted((lv.location_id, lv.available) for lv in levels) == [(1, 7), (2, 0)]
    warehouse = shopify.InventoryLevel.find(location_ids=1, limit=250)
    assert len(warehouse) == len(demo_variants())
    assert len(shopify.Location.find(1).inventory_levels(limit=250)) == len(demo_variants())


def test_inventory_errors_are_shaped_like_shopify(shop):
    item_id = variant_by_sku("JWL-RING-GOLD-52").inventory_item_id
    token = {"X-Shopify-Access-Token": DEFAULT_SHOPIFY_ACCESS_TOKEN}
    api = f"{shop}/admin/api/{VERSION}"
    adjust = httpx.post(
        f"{api}/inventory_levels/adjust.json",
        json={"location_id": 2, "inventory_item_id": item_id, "available_adjustment": 1},
        headers=token,
    )
    assert adjust.status_code == 422 and "errors" in adjust.json()
    missing = httpx.get(f"{api}/inventory_levels.json", headers=token)
    assert missing.status_code == 422
    unknown = httpx.get(f"{api}/products/1.json", headers=token)
    assert unknown.status_code == 404 and unknown.json() == {"errors": "Not Found"}


def test_order_decrements_and_cancel_restocks(shop):
    variant = variant_by_sku("FSH-CASHCREW-CAMEL-M")
    stock = level(variant.inventory_item_id)
    order = shopify.Order.create(
        {
            "line_items": [{"variant_id": variant.id, "quantity": 2}],
            "financial_status": "paid",
            "inventory_behaviour": "decrement_obeying_policy",
            "note_attributes": [{"name": "dotshop_order_id", "value": "ord_123"}],
            "tags": "dotshop, us",
            "email": "a@example.com",
        }
    )
    assert order.errors.full_messages() == []
    assert order.name == "#1001" and order.financial_status == "paid"
    assert order.line_items[0].sku == "FSH-CASHCREW-CAMEL-M"
    assert order.total_price == "840.00"
    assert order.note_attributes[0].value == "ord_123"
    assert level(variant.inventory_item_id) == stock - 2
    assert shopify.Variant.find(variant.id).inventory_quantity == stock - 2
    order.cancel(restock=True, reason="customer")
    assert order.cancelled_at and order.cancel_reason == "customer"
    assert level(variant.inventory_item_id) == stock
    assert shopify.Order.find(order.id).cancelled_at == order.cancelled_at
    # Open orders hide the cancelled one; status=any finds it.
    assert len(shopify.Order.find()) == 0
    assert [o.id for o in shopify.Order.find(status="any", ids=str(order.id))] == [order.id]


def test_cancel_without_restock_keeps_stock_down(shop):
    variant = variant_by_sku("BTY-SERUM-30ML")
    stock = level(variant.inventory_item_id)
    order = shopify.Order.create(
        {
            "line_items": [{"variant_id": variant.id, "quantity": 1}],
            "inventory_behaviour": "decrement_ignoring_policy",
        }
    )
    order.cancel()
    assert level(variant.inventory_item_id) == stock - 1
    second = shopify.Order.create({"line_items": [{"variant_id": variant.id, "quantity": 1}]})
    assert [o.id for o in shopify.Order.find(status="any", since_id=order.id)] == [second.id]


def test_inventory_behaviour_like_shopify(shop):
    sold_out = variant_by_sku("FSH-TOTE-IVORY")
    assert level(sold_out.inventory_item_id) == 0
    # Shopify's default for API orders is bypass: the order is taken, stock is untouched.
    bypass = shopify.Order.create({"line_items": [{"variant_id": sold_out.id, "quantity": 1}]})
    assert bypass.id and level(sold_out.inventory_item_id) == 0
    refused = shopify.Order.create(
        {
            "line_items": [{"variant_id": sold_out.id, "quantity": 1}],
            "inventory_behaviour": "decrement_obeying_policy",
        }
    )
    assert refused.id is None
    assert "out of stock" in refused.errors.on("line_items")
    ignoring = shopify.Order.create(
        {
            "line_items": [{"variant_id": sold_out.id, "quantity": 2}],
            "inventory_behaviour": "decrement_ignoring_policy",
        }
    )
    assert ignoring.id and level(sold_out.inventory_item_id) == -2


def test_sale_on_another_channel(shop):
    variant = variant_by_sku("JWL-EMERALDDROP-54")
    stock = level(variant.inventory_item_id)
    sold = httpx.post(
        f"{shop}/_sandbox/inventory/sell", json={"sku": "JWL-EMERALDDROP-54", "quantity": 1}
    )
    assert sold.json()["inventory_level"]["available"] == stock - 1
    assert level(variant.inventory_item_id) == stock - 1
    moved = httpx.post(
        f"{shop}/_sandbox/inventory/sell",
        json={"inventory_item_id": variant.inventory_item_id, "location_id": 1, "delta": 3},
    )
    assert moved.json()["inventory_level"]["available"] == stock + 2


def test_bad_token_is_401(shop):
    shopify.ShopifyResource.headers["X-Shopify-Access-Token"] = "shpat_wrong"
    with pytest.raises(UnauthorizedAccess):
        shopify.Product.find()
    raw = httpx.get(f"{shop}/admin/api/{VERSION}/products.json")
    assert raw.status_code == 401
    assert raw.json() == {
        "errors": "[API] Invalid API key or access token (unrecognized login or wrong password)"
    }


def test_state_export(shop):
    variant = variant_by_sku("BTY-CANDLE-FIG")
    shopify.Order.create({"line_items": [{"variant_id": variant.id, "quantity": 1}]})
    state = httpx.get(f"{shop}/_sandbox/state").json()
    assert len(state["products"]) == len(demo_catalog())
    assert len(state["inventory_levels"]) == len(demo_variants())
    assert len(state["orders"]) == 1
    assert state["calls"]["POST /orders.json"] == 1
    assert state["calls"]["GET /products.json"] >= 1
    empty = httpx.post(f"{shop}/_sandbox/reset", json={"demo_catalog": False}).json()
    assert empty["status"] == "reset"
    assert httpx.get(f"{shop}/_sandbox/state").json()["products"] == []


def test_updated_at_has_whole_seconds_like_shopify(shop):
    """Shopify's REST timestamps are ISO-8601 to the second ("2024-01-02T09:00:00-05:00"), so
    two changes within one second share an updated_at; the sandbox clock moves them on."""
    item_id = variant_by_sku("JWL-RING-GOLD-52").inventory_item_id
    first = shopify.InventoryLevel.set(1, item_id, 9)
    second = shopify.InventoryLevel.set(1, item_id, 10)
    for stamp in (first.updated_at, second.updated_at):
        assert datetime.fromisoformat(stamp).microsecond == 0 and "." not in stamp
    advance_clock(shop, 1)
    third = shopify.InventoryLevel.set(1, item_id, 11)
    assert datetime.fromisoformat(third.updated_at) > datetime.fromisoformat(second.updated_at)


def test_cancel_reason_must_be_one_of_shopifys(shop):
    """orders/{id}/cancel.json takes reason customer, inventory, fraud, declined or other; an
    order cancels once (a second cancel is 422)."""
    variant = variant_by_sku("BTY-SERUM-30ML")
    order = shopify.Order.create({"line_items": [{"variant_id": variant.id, "quantity": 1}]})
    with pytest.raises(ResourceInvalid):
        order.cancel(reason="bored")
    order.cancel(reason="customer")
    with pytest.raises(ResourceInvalid):
        order.cancel(reason="customer")
