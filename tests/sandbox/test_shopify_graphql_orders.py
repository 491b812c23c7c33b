"""Orders through the sandbox's GraphQL Admin API via the real ShopifyAPI library: orderCreate
with prices, currency, taxes and custom attributes, search by that attribute, orderCancel and
refundCreate (`@idempotent`)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.processes import Process
from tests.sandbox.shopify_graphql import Shop, key, open_shop


@pytest.fixture
def shop(sandbox: Process) -> Iterator[Shop]:
    yield from open_shop(sandbox)


SKU = "FSH-TRENCH-BEIGE-M"  # 36 available

CREATE = """
mutation Create($order: OrderCreateOrderInput!, $options: OrderCreateOptionsInput) {
  orderCreate(order: $order, options: $options) {
    order {
      id name currencyCode displayFinancialStatus sourceIdentifier
      customAttributes { key value }
      subtotalPriceSet { presentmentMoney { amount currencyCode } }
      totalTaxSet { presentmentMoney { amount currencyCode } }
      totalPriceSet { presentmentMoney { amount currencyCode } }
      taxLines { title rate priceSet { presentmentMoney { amount } } }
      lineItems(first: 10) {
        nodes { sku quantity originalUnitPriceSet { presentmentMoney { amount currencyCode } } }
      }
    }
    userErrors { code field message }
  }
}"""
SEARCH = """
query Find($query: String!) {
  orders(first: 5, query: $query) { nodes { id name customAttributes { key value } } }
}"""
REFUND = """
mutation Refund($input: RefundInput!, $key: String!) {
  refundCreate(input: $input) @idempotent(key: $key) {
    refund { id totalRefundedSet { presentmentMoney { amount currencyCode } } }
    order { displayFinancialStatus totalRefundedSet { presentmentMoney { amount } } }
    userErrors { field message }
  }
}"""


def money(amount: str, currency: str = "EUR") -> dict:
    return {"shopMoney": {"amount": amount, "currencyCode": currency}}


def order_input(shop: Shop, our_id: str, quantity: int = 2) -> dict:
    variant = shop.data(
        "query V($q: String!) { productVariants(first: 1, query: $q) { nodes { id } } }",
        {"q": f"sku:{SKU}"},
    )["productVariants"]["nodes"][0]["id"]
    return {
        "currency": "EUR",
        "email": "ada@example.com",
        "financialStatus": "PAID",
        "customAttributes": [{"key": "dotshop_order_id", "value": our_id}],
        "sourceIdentifier": our_id,
        "lineItems": [{
            "variantId": variant, "quantity": quantity, "priceSet": money("100.00"),
            "taxLines": [{"title": "VAT", "rate": "0.2", "priceSet": money("40.00")}],
        }],
    }  # fmt: skip


def create(
    shop: Shop, our_id: str, quantity: int = 2, behaviour: str = "DECREMENT_OBEYING_POLICY"
) -> dict:
    answer = shop.data(
        CREATE,
        {
            "order": order_input(shop, our_id, quantity),
            "options": {"inventoryBehaviour": behaviour},
        },
    )["orderCreate"]
    assert answer["userErrors"] == [], answer
    return answer["order"]


def test_order_create_keeps_prices_currency_taxes_and_custom_attributes(shop: Shop):
    """orderCreate: line prices, presentment currency, tax lines and customAttributes are kept
    as given; total = subtotal + tax when taxes are not included."""
    order = create(shop, "ord_test_1")
    assert order["currencyCode"] == "EUR"
    assert order["displayFinancialStatus"] == "PAID"
    assert order["customAttributes"] == [{"key": "dotshop_order_id", "value": "ord_test_1"}]
    assert order["subtotalPriceSet"]["presentmentMoney"] == {
        "amount": "200.00",
        "currencyCode": "EUR",
    }
    assert order["totalTaxSet"]["presentmentMoney"]["amount"] == "40.00"
    assert order["totalPriceSet"]["presentmentMoney"]["amount"] == "240.00"
    assert order["taxLines"] == [
        {"title": "VAT", "rate": 0.2, "priceSet": {"presentmentMoney": {"amount": "40.00"}}}
    ]
    [line] = order["lineItems"]["nodes"]
    assert (line["sku"], line["quantity"]) == (SKU, 2)
    assert line["originalUnitPriceSet"]["presentmentMoney"] == {
        "amount": "100.00",
        "currencyCode": "EUR",
    }


def test_orders_are_found_by_their_custom_attribute_value_and_source_identifier(shop: Shop):
    """orders(query:): a retried push finds the order it made by our id, never by scanning."""
    create(shop, "ord_find_me", behaviour="BYPASS")
    create(shop, "ord_other", behaviour="BYPASS")
    by_attribute = shop.data(SEARCH, {"query": "ord_find_me"})["orders"]["nodes"]
    by_source = shop.data(SEARCH, {"query": "source_identifier:ord_find_me"})["orders"]["nodes"]
    assert [o["customAttributes"] for o in by_attribute] == [
        [{"key": "dotshop_order_id", "value": "ord_find_me"}]
    ]
    assert [o["id"] for o in by_source] == [o["id"] for o in by_attribute]
    assert shop.data(SEARCH, {"query": "ord_missing"})["orders"]["nodes"] == []


def test_order_with_decrement_commits_units_and_cancel_with_restock_returns_them(shop: Shop):
    """OrderCreateOptionsInput.inventoryBehaviour DECREMENT_*: units move from available to
    committed; orderCancel(restock: true) gives them back to available."""
    order = create(shop, "ord_commit", quantity=3)
    item = shop.item(SKU)
    assert shop.levels(item) == {"available": 33, "committed": 3, "reserved": 0, "on_hand": 36}
    cancelled = shop.data(
        """mutation C($id: ID!) {
             orderCancel(orderId: $id, reason: CUSTOMER, refund: false, restock: true) {
               job { id done } orderCancelUserErrors { code message } } }""",
        {"id": order["id"]},
    )["orderCancel"]
    assert cancelled["orderCancelUserErrors"] == []
    assert shop.levels(item) == {"available": 36, "committed": 0, "reserved": 0, "on_hand": 36}
    again = shop.data(
        """mutation C($id: ID!) { orderCancel(orderId: $id, reason: CUSTOMER, restock: true) {
             orderCancelUserErrors { code message } } }""",
        {"id": order["id"]},
    )["orderCancel"]
    assert [e["code"] for e in again["orderCancelUserErrors"]] == ["INVALID"]
    found = shop.data(
        "query O($id: ID!) { order(id: $id) { cancelledAt cancelReason closed } }",
        {"id": order["id"]},
    )
    assert found["order"]["cancelReason"] == "CUSTOMER"
    assert found["order"]["cancelledAt"] is not None


def test_refund_create_with_the_same_idempotent_key_refunds_once(shop: Shop):
    """refundCreate @idempotent: a retry returns the original refund; a partial refund makes the
    order PARTIALLY_REFUNDED; over-refunding is a user error."""
    order = create(shop, "ord_refund", behaviour="BYPASS")
    same = key()
    refund = {
        "orderId": order["id"],
        "transactions": [
            {"amount": "60.00", "gateway": "stripe", "kind": "REFUND", "orderId": order["id"]}
        ],
    }
    first = shop.data(REFUND, {"input": refund, "key": same})["refundCreate"]
    again = shop.data(REFUND, {"input": refund, "key": same})["refundCreate"]
    assert first["userErrors"] == []
    assert first["refund"]["id"] == again["refund"]["id"]
    assert first["order"]["displayFinancialStatus"] == "PARTIALLY_REFUNDED"
    now = shop.data(
        """query O($id: ID!) {
             order(id: $id) {
               totalRefundedSet { presentmentMoney { amount } } refunds { id } } }""",
        {"id": order["id"]},
    )["order"]
    assert now["totalRefundedSet"]["presentmentMoney"]["amount"] == "60.00"
    assert len(now["refunds"]) == 1
    too_much = dict(refund, transactions=[dict(refund["transactions"][0], amount="200.00")])
    refused = shop.data(REFUND, {"input": too_much, "key": key()})["refundCreate"]
    assert refused["refund"] is None and refused["userErrors"]
    missing = shop.graphql(
        """mutation R($input: RefundInput!) {
             refundCreate(input: $input) { userErrors { message } } }""",
        {"input": refund},
    )
    assert missing["errors"][0]["extensions"]["code"] == "BAD_REQUEST"


def test_refund_with_restock_type_cancel_returns_committed_units_to_available(shop: Shop):
    """RefundLineItemInput.restockType CANCEL: refunded unshipped units leave `committed` and
    are sellable again."""
    order = create(shop, "ord_restock", quantity=3)
    line = shop.data(
        "query O($id: ID!) { order(id: $id) { lineItems(first: 1) { nodes { id } } } }",
        {"id": order["id"]},
    )["order"]["lineItems"]["nodes"][0]["id"]
    refund = {
        "orderId": order["id"],
        "refundLineItems": [{"lineItemId": line, "quantity": 1, "restockType": "CANCEL"}],
        "transactions": [
            {"amount": "120.00", "gateway": "stripe", "kind": "REFUND", "orderId": order["id"]}
        ],
    }
    done = shop.data(REFUND, {"input": refund, "key": key()})["refundCreate"]
    assert done["userErrors"] == []
    item = shop.item(SKU)
    assert shop.levels(item) == {"available": 34, "committed": 2, "reserved": 0, "on_hand": 36}
