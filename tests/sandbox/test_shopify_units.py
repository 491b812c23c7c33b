"""Pure parts of the sandbox Shopify: the leaky bucket (with an injected clock), the cursor
and the demo catalog."""

from __future__ import annotations

import pytest

from sandbox.catalog import CATEGORIES, demo_catalog, demo_variants
from sandbox.shopify.http import ShopifyError
from sandbox.shopify.pagination import Cursor
from sandbox.shopify.ratelimit import BUCKET_SIZE, LeakyBucket, OffsetClock


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_bucket_fills_to_40_then_refuses():
    clock = FakeClock()
    bucket = LeakyBucket(clock)
    verdicts = [bucket.take("tok") for _ in range(BUCKET_SIZE)]
    assert all(v.allowed for v in verdicts)
    assert [v.header for v in verdicts[:3]] == ["1/40", "2/40", "3/40"]
    assert verdicts[-1].header == "40/40"
    refused = bucket.take("tok")
    assert not refused.allowed and refused.header == "40/40"
    # Another token has its own bucket.
    assert bucket.take("other").allowed


def test_bucket_leaks_two_per_second():
    clock = FakeClock()
    bucket = LeakyBucket(clock)
    for _ in range(BUCKET_SIZE):
        bucket.take("tok")
    clock.now += 0.49  # not even one unit has leaked
    assert not bucket.take("tok").allowed
    clock.now += 0.51  # one second in total: exactly two units
    assert bucket.take("tok").allowed
    assert bucket.take("tok").allowed
    assert not bucket.take("tok").allowed
    clock.now += 20  # 40 units leak in 20 s: empty again
    assert bucket.used("tok") == 0
    assert bucket.take("tok").header == "1/40"


def test_offset_clock_only_moves_forward():
    clock = OffsetClock(base=lambda: 5.0)
    clock.advance(2.5)
    assert clock() == 7.5
    with pytest.raises(ValueError):
        clock.advance(-1)


def test_cursor_round_trips_and_rejects_garbage():
    cursor = Cursor({"ids": "1,2"}, after=17)
    decoded = Cursor.decode(cursor.encode())
    assert (decoded.filters, decoded.after, decoded.before) == ({"ids": "1,2"}, 17, None)
    assert ", " not in cursor.encode() and "; " not in cursor.encode()
    with pytest.raises(ShopifyError) as err:
        Cursor.decode("not-a-cursor!")
    assert err.value.status == 400


def test_demo_catalog_is_a_premium_store_in_three_categories():
    products = demo_catalog()
    variants = demo_variants()
    assert 35 <= len(products) <= 45
    assert 100 <= len(variants) <= 140
    assert {p.category for p in products} == set(CATEGORIES)
    assert len({p.handle for p in products}) == len(products)
    assert sum(len(p.variants) for p in products) == len(variants)  # SKUs are unique
    for product in products:
        assert product.image_url.startswith("https://cdn.dotshop.example/")
        for variant in product.variants:
            assert variant.sku.split("-")[0] in {"FSH", "BTY", "JWL"}
            assert set(variant.prices) == {"usd", "eur"}
            assert all(isinstance(v, int) and v > 0 for v in variant.prices.values())
            assert variant.title == " / ".join(variant.options.values())
    assert variants["FSH-TRENCH-BEIGE-M"].prices["usd"] == 89000
    drops = [v for v in variants.values() if 1 <= v.stock <= 5]
    sold_out = [v for v in variants.values() if v.stock == 0]
    assert len(drops) >= 5 and len(sold_out) >= 3
