"""The stock checks against a real sandbox Shopify (DESIGN.md "Reconciliation and invariants"):
`oversell` when Shopify holds fewer units than we sold and hold (another channel sold them),
`inventory_drift` when our projection misses a Shopify change for longer than the grace; both
resolve on the next run once the cause is fixed."""

from __future__ import annotations

from sqlalchemy import Engine, text

from core import shopify_sync
from core.settings import Settings
from tests.checks.support import open_of, run, settings_fixture, shop_fixture  # noqa: F401
from tests.core.shopify_support import Shop, item_of, paid_order, stock

SKU = "FSH-CASHCREW-CAMEL-M"


def usd_price(engine: Engine, sku: str) -> int:
    with engine.connect() as conn:
        return conn.execute(
            text("SELECT amount_minor FROM variant_price WHERE sku = :s AND currency = 'usd'"),
            {"s": sku},
        ).scalar_one()


def test_a_sale_on_another_channel_below_our_commitments_is_an_oversell_until_restocked(
    shop: Shop, clean_engine: Engine, settings: Settings
) -> None:
    paid_order(clean_engine, {SKU: 2})
    item = item_of(clean_engine, SKU)
    shop.advance_clock(1)
    shop.set_level(item, 1)  # the shop's POS sold all but one unit
    shopify_sync.load_catalog(clean_engine, shop.gateway(), [1])
    assert stock(clean_engine, SKU) == (1, 0, 2)

    result = run(clean_engine, settings, "oversell")
    assert result.status == "violations"
    found = open_of(result, "oversell")[SKU]
    assert found.evidence["short_units"] == 1
    assert (found.amount_minor, found.currency) == (usd_price(clean_engine, SKU), "usd")

    shop.advance_clock(1)
    shop.set_level(item, 5)  # restocked: Shopify covers our two units again
    shopify_sync.load_catalog(clean_engine, shop.gateway(), [1])
    result = run(clean_engine, settings, "oversell")
    assert (result.status, result.violations) == ("ok", [])
    assert result.results["oversell"] == {"open": 0, "opened": 0, "resolved": 1}


def test_negative_shopify_stock_is_an_oversell(
    shop: Shop, clean_engine: Engine, settings: Settings
) -> None:
    shop.advance_clock(1)
    shop.set_level(item_of(clean_engine, SKU), -2)
    shopify_sync.load_catalog(clean_engine, shop.gateway(), [1])
    found = open_of(run(clean_engine, settings, "oversell"), "oversell")[SKU]
    assert found.evidence["short_units"] == 2
    assert found.amount_minor == 2 * usd_price(clean_engine, SKU)


def test_a_level_change_we_never_heard_of_is_drift_past_the_grace_until_the_sync_repairs_it(
    shop: Shop, clean_engine: Engine, settings: Settings
) -> None:
    projected = stock(clean_engine, SKU)[0]
    shop.advance_clock(1)
    shop.set_level(item_of(clean_engine, SKU), projected + 3)  # its webhook was dropped

    patient = settings.model_copy(update={"grace_seconds": 600})
    assert run(clean_engine, patient, "inventory_drift").violations == []  # still on its way

    result = run(clean_engine, settings, "inventory_drift")
    found = open_of(result, "inventory_drift")[SKU]
    assert found.evidence["projected"] == projected
    assert found.evidence["shopify"] == projected + 3
    assert found.evidence["difference"] == -3
    assert (found.amount_minor, found.currency) == (3 * usd_price(clean_engine, SKU), "usd")
    assert set(open_of(result, "inventory_drift")) == {SKU}  # no false alarm for the others

    tolerant = settings.model_copy(update={"drift_tolerance": 3})
    assert run(clean_engine, tolerant, "inventory_drift").violations == []

    shopify_sync.load_catalog(clean_engine, shop.gateway(), [1])
    result = run(clean_engine, settings, "inventory_drift")
    assert (result.status, result.violations) == ("ok", [])
