"""The `shopify.push_order` handler against a real sandbox Shopify (GraphQL Admin API) and a
real PostgreSQL: retried pushes converge to exactly one Shopify order (DESIGN.md: "a retry after
a crash resumes where the last committed phase left off"; the retry finds the order by its
sourceIdentifier), the order carries the prices and currency charged, and Shopify reflects
refunds (refundCreate, @idempotent) and cancellations (orderCancel with restock: true)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine

from core import shopify_sync
from core.errors import ProviderUnavailable
from core.shopify_gateway import API_VERSION, ShopifyGateway
from tests.core.shopify_support import (
    DiesAfterOrderCreate,
    Shop,
    item_of,
    paid_order,
    push_message,
    refund_in_full,
    refund_part,
    stock,
    timeline,
)
from tests.processes import Process

SKU = "FSH-CASHCREW-CAMEL-M"
OTHER = "BTY-SERUM-30ML"


@pytest.fixture
def shop(sandbox: Process, clean_engine: Engine) -> Iterator[Shop]:
    """A freshly reset sandbox Shopify, its catalog loaded into an empty database."""
    shop = Shop(sandbox.urls["shopify"])
    shop.reset()
    shopify_sync.load_catalog(clean_engine, shop.gateway(), [1])
    yield shop
    shop.reset()


def pusher(engine: Engine, gateway: Any) -> shopify_sync.OrderPusher:
    return shopify_sync.OrderPusher(engine, gateway, [1])


def kinds(engine: Engine, order_id: str) -> list[str]:
    return [kind for kind, _ in timeline(engine, order_id)]


def pushed_before(engine: Engine, shop: Shop) -> None:
    """Another order already in Shopify: the next push's resume marker is a real Shopify order
    id (~5.6e12), beyond PostgreSQL's integer."""
    order_id = paid_order(engine, {OTHER: 1})
    pusher(engine, shop.gateway())(push_message(order_id))
    assert int(shop.orders_for(order_id)[0]["legacyResourceId"]) > 2**31


class DiesBeforeShopify(ShopifyGateway):
    """Our process dies after the push began (marker committed), before calling Shopify."""

    def create_order(self, **kwargs: Any) -> int:
        raise RuntimeError("killed before calling Shopify")


def fail_first_attempt(engine: Engine, shop: Shop, order_id: str, how: str) -> None:
    if how == "before_the_call":
        with pytest.raises(RuntimeError):
            pusher(engine, shop.gateway(DiesBeforeShopify))(push_message(order_id))
    elif how == "during_the_call":
        # Shopify applies the create, then the response is lost (a dropped connection).
        shop.faults(
            error_rate=1.0,
            error_phase="after",
            path_prefix=f"/admin/api/{API_VERSION}/graphql.json",
            method="POST",
        )
        try:
            with pytest.raises(ProviderUnavailable):
                pusher(engine, shop.gateway())(push_message(order_id))
        finally:
            shop.faults(error_rate=0.0, path_prefix="", method="")
    else:
        with pytest.raises(RuntimeError):
            pusher(engine, shop.gateway(DiesAfterOrderCreate))(push_message(order_id))


@pytest.mark.parametrize("how", ["before_the_call", "during_the_call", "after_the_call"])
def test_a_retried_push_converges_to_one_acknowledged_shopify_order(
    shop: Shop, clean_engine: Engine, how: str
) -> None:
    pushed_before(clean_engine, shop)
    order_id = paid_order(clean_engine, {SKU: 2})
    fail_first_attempt(clean_engine, shop, order_id, how)
    assert stock(clean_engine, SKU)[2] == 2  # still committed: not acknowledged

    pusher(clean_engine, shop.gateway())(push_message(order_id, attempts=1))  # the retry
    pusher(clean_engine, shop.gateway())(push_message(order_id, attempts=2))  # a redelivery

    ours = shop.orders_for(order_id)
    assert len(ours) == 1
    assert [(li["sku"], li["quantity"]) for li in ours[0]["lineItems"]["nodes"]] == [(SKU, 2)]
    assert kinds(clean_engine, order_id).count("pushed_to_shopify") == 1
    available, reserved, committed = stock(clean_engine, SKU)
    assert (reserved, committed) == (0, 0)
    assert available == shop.level(item_of(clean_engine, SKU))


def test_an_order_refunded_before_its_push_is_never_sent(shop: Shop, clean_engine: Engine) -> None:
    order_id = paid_order(clean_engine, {SKU: 1})
    before = shop.level(item_of(clean_engine, SKU))
    refund_in_full(clean_engine, order_id)

    pusher(clean_engine, shop.gateway())(push_message(order_id))  # the payment's message

    assert shop.orders_for(order_id) == []
    assert shop.level(item_of(clean_engine, SKU)) == before
    skipped = [data for kind, data in timeline(clean_engine, order_id) if kind == "push_skipped"]
    assert skipped == [{"reason": "not_paid", "status": "refunded"}]
    assert stock(clean_engine, SKU) == (before, 0, 0)


def test_a_refund_after_the_push_cancels_the_shopify_order_and_restocks(
    shop: Shop, clean_engine: Engine
) -> None:
    order_id = paid_order(clean_engine, {SKU: 2})
    item = item_of(clean_engine, SKU)
    before = shop.level(item)
    pusher(clean_engine, shop.gateway())(push_message(order_id))
    assert shop.level(item) == before - 2 == stock(clean_engine, SKU)[0]

    shop.advance_clock(1)  # a refund comes later than the sale's second
    refund_in_full(clean_engine, order_id)
    pusher(clean_engine, shop.gateway())(push_message(order_id))  # the refund's message
    pusher(clean_engine, shop.gateway())(push_message(order_id, attempts=1))  # redelivered

    (ours,) = shop.orders_for(order_id)
    assert ours["cancelledAt"] and ours["cancelReason"] == "CUSTOMER"
    assert ours["displayFinancialStatus"] == "REFUNDED"
    assert shop.level(item) == before
    assert stock(clean_engine, SKU) == (before, 0, 0)
    cancelled = [d for k, d in timeline(clean_engine, order_id) if k == "shopify_order_cancelled"]
    shopify_id = int(ours["legacyResourceId"])
    assert cancelled == [{"shopify_order_id": shopify_id, "reason": "customer", "restock": True}]


def test_a_cancel_whose_response_was_lost_is_not_repeated(shop: Shop, clean_engine: Engine) -> None:
    order_id = paid_order(clean_engine, {SKU: 1})
    item = item_of(clean_engine, SKU)
    before = shop.level(item)
    pusher(clean_engine, shop.gateway())(push_message(order_id))
    shop.advance_clock(1)
    refund_in_full(clean_engine, order_id)
    shop.faults(error_rate=1.0, error_phase="after", path_prefix="", method="POST")
    try:
        with pytest.raises(ProviderUnavailable):
            pusher(clean_engine, shop.gateway())(push_message(order_id))
    finally:
        shop.faults(error_rate=0.0, method="")

    pusher(clean_engine, shop.gateway())(push_message(order_id, attempts=1))

    assert shop.orders_for(order_id)[0]["cancelledAt"]
    assert shop.level(item) == before == stock(clean_engine, SKU)[0]
    assert kinds(clean_engine, order_id).count("shopify_order_cancelled") == 1


def test_a_refund_after_a_push_that_died_unrecorded_still_cancels_in_shopify(
    shop: Shop, clean_engine: Engine
) -> None:
    pushed_before(clean_engine, shop)
    order_id = paid_order(clean_engine, {SKU: 1})
    item = item_of(clean_engine, SKU)
    before = shop.level(item)
    with pytest.raises(RuntimeError):
        pusher(clean_engine, shop.gateway(DiesAfterOrderCreate))(push_message(order_id))
    shop.advance_clock(1)
    refund_in_full(clean_engine, order_id)  # we never learnt the Shopify id

    pusher(clean_engine, shop.gateway())(push_message(order_id, attempts=1))

    (ours,) = shop.orders_for(order_id)
    assert ours["cancelledAt"]
    assert shop.level(item) == before == stock(clean_engine, SKU)[0]
    assert kinds(clean_engine, order_id)[-3:] == [
        "pushed_to_shopify",
        "shopify_refund_recorded",
        "shopify_order_cancelled",
    ]


def test_a_partial_refund_is_recorded_in_shopify_once_even_when_its_answer_is_lost(
    shop: Shop, clean_engine: Engine
) -> None:
    """refundCreate is @idempotent on a key derived from our refund id: a retry after a lost
    answer returns the first refund (shopify.dev idempotent requests); the order stays open."""
    order_id = paid_order(clean_engine, {SKU: 2})
    pusher(clean_engine, shop.gateway())(push_message(order_id))
    refund_id = refund_part(clean_engine, order_id, 500)
    shop.faults(error_rate=1.0, error_phase="after", path_prefix="", method="POST")
    try:
        with pytest.raises(ProviderUnavailable):
            pusher(clean_engine, shop.gateway())(push_message(order_id))
    finally:
        shop.faults(error_rate=0.0, method="")

    pusher(clean_engine, shop.gateway())(push_message(order_id, attempts=1))
    pusher(clean_engine, shop.gateway())(push_message(order_id, attempts=2))

    (ours,) = shop.orders_for(order_id)
    assert not ours["cancelledAt"]
    assert ours["displayFinancialStatus"] == "PARTIALLY_REFUNDED"
    assert ours["totalRefundedSet"]["shopMoney"]["amount"] == "5.00"
    recorded = [d for k, d in timeline(clean_engine, order_id) if k == "shopify_refund_recorded"]
    shopify_id = int(ours["legacyResourceId"])
    assert recorded == [{"refund_id": refund_id, "amount": 500, "shopify_order_id": shopify_id}]


def test_the_pushed_order_carries_the_prices_and_currency_charged_and_our_id(
    shop: Shop, clean_engine: Engine
) -> None:
    """orderCreate with line priceSet in the order's currency (taxes included in our prices),
    our order id as sourceIdentifier and as the dotshop_order_id custom attribute."""
    order_id = paid_order(clean_engine, {SKU: 2, OTHER: 1}, currency="eur", unit_price=12_345)
    pusher(clean_engine, shop.gateway())(push_message(order_id))

    (ours,) = shop.orders_for(order_id)
    assert ours["currencyCode"] == "EUR"
    assert ours["sourceIdentifier"] == order_id
    assert ours["customAttributes"] == [{"key": "dotshop_order_id", "value": order_id}]
    assert ours["taxesIncluded"] is True
    assert ours["totalPriceSet"]["shopMoney"] == {"amount": "370.35", "currencyCode": "EUR"}
    lines = {
        li["sku"]: (li["quantity"], li["originalUnitPriceSet"]["shopMoney"]["amount"])
        for li in ours["lineItems"]["nodes"]
    }
    assert lines == {SKU: (2, "123.45"), OTHER: (1, "123.45")}
