"""The storefront end to end: browse, check out, pay through the real stripe SDK against the
sandbox, let the signed webhooks land; then check order, stock, ledger and Shopify."""

from __future__ import annotations

import json
import uuid

import httpx
import pytest
import stripe

from tests.e2e.conftest import Stack, wait_for
from tests.e2e.helpers import checkout, order, stock


def a_sku_with_stock(stack: Stack, minimum: int = 3) -> str:
    page = httpx.get(f"{stack.api['us']}/v1/products?limit=100", timeout=10).json()
    for product in page["data"]:
        for variant in product["variants"]:
            if variant["available"] >= minimum:
                return variant["sku"]
    raise AssertionError("no SKU with stock in the demo catalog")


def test_browse_checkout_pay_webhook_ledger_shopify(stack: Stack) -> None:
    page = httpx.get(f"{stack.api['us']}/v1/products?limit=5", timeout=10).json()
    assert len(page["data"]) == 5 and page["has_more"] and page["next_cursor"]
    sku = a_sku_with_stock(stack)
    before = stock(stack, sku)

    created = checkout(stack, [{"sku": sku, "quantity": 2}])
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["id"].startswith("chk_") and body["order_id"].startswith("ord_")
    assert body["status"] == "awaiting_payment" and body["currency"] == "usd"
    assert body["payment"]["payment_intent_id"].startswith("pi_")
    assert stock(stack, sku) == (before[0], before[1] + 2, before[2])

    client = stack.stripe_client()
    pi = client.v1.payment_intents.confirm(
        body["payment"]["payment_intent_id"], {"payment_method": "pm_card_visa"}
    )
    assert pi.status == "succeeded"
    assert wait_for(lambda: order(stack, body["order_id"])["status"] == "paid")
    assert stock(stack, sku) == (before[0], before[1], before[2] + 2)

    # The ledger holds the payment, balanced per currency.
    assert (
        stack.scalar("SELECT count(*) FROM ledger_txn WHERE order_id = :o", o=body["order_id"]) >= 1
    )
    unbalanced = stack.sql(
        "SELECT currency FROM ledger_entry GROUP BY currency HAVING sum(amount_minor) <> 0"
    )
    assert unbalanced == []
    # The outbox holds the Shopify push (and the fee lookup) until the relay runs.
    topics = {
        r[0]
        for r in stack.sql(
            "SELECT topic FROM outbox WHERE payload->>'order_id' = :o", o=body["order_id"]
        )
    }
    assert {"shopify.push_order", "stripe.book_balance_transactions"} <= topics

    stack.settle()
    shopify_id = stack.scalar(
        "SELECT shopify_order_id FROM orders WHERE id = :o", o=body["order_id"]
    )
    assert shopify_id is not None
    state = httpx.get(f"{stack.shopify_base}/_sandbox/state", timeout=10).json()
    pushed = [o for o in state["orders"] if o["id"] == shopify_id]
    assert len(pushed) == 1
    # Shopify decremented its stock; ours is acknowledged (committed back to 0 for this order).
    available, _, committed = stock(stack, sku)
    assert committed == before[2] and available == before[0] - 2
    # The Stripe fee was posted too, and everything still balances.
    assert (
        stack.scalar(
            "SELECT count(*) FROM ledger_txn WHERE order_id = :o AND kind = 'stripe_settlement'",
            o=body["order_id"],
        )
        == 1
    )
    timeline = [e["kind"] for e in order(stack, body["order_id"])["timeline"]]
    assert timeline[:1] == ["created"] and "paid" in timeline and "pushed_to_shopify" in timeline


def test_declined_card_releases_the_hold(stack: Stack) -> None:
    sku = a_sku_with_stock(stack)
    before = stock(stack, sku)
    body = checkout(stack, [{"sku": sku, "quantity": 1}]).json()
    with pytest.raises(stripe.CardError):
        stack.stripe_client().v1.payment_intents.confirm(
            body["payment"]["payment_intent_id"], {"payment_method": "pm_card_chargeDeclined"}
        )
    got = wait_for(lambda: (o := order(stack, body["order_id"]))["status"] == "cancelled" and o)
    assert got["cancel_reason"] == "payment_failed"
    assert stock(stack, sku) == before


def test_logs_carry_request_order_and_key_but_no_secrets(stack: Stack) -> None:
    from tests.e2e.conftest import (
        ADMIN_TOKEN,
        SHOPIFY_SECRET,
        SHOPIFY_TOKEN,
        STRIPE_KEY,
        WEBHOOK_SECRET,
    )

    sku = a_sku_with_stock(stack)
    key = f"log-check-{uuid.uuid4()}"
    response = checkout(stack, [{"sku": sku, "quantity": 1}], key=key)
    assert response.status_code == 201
    request_id = response.headers["X-Request-Id"]
    body = response.json()
    api = next(p for p in stack.processes if p.log_path.endswith("api-us.log"))

    def request_lines() -> tuple[str, list[dict], list[dict]] | None:
        # The request's line is written once the response has gone out: wait for it.
        text = api.output()
        lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
        http = [
            ln
            for ln in lines
            if ln.get("event") == "http_request" and ln.get("request_id") == request_id
        ]
        return (text, lines, http) if http else None

    api_log, lines, http = wait_for(request_lines, timeout=10)
    assert len(http) == 1
    assert http[0]["idempotency_key"] == key and http[0]["order_id"] == body["order_id"]
    assert http[0]["route"] == "/v1/checkouts" and http[0]["status"] == 201
    # One structured line per request: the request's line carries the business ids.
    assert [ln["event"] for ln in lines if ln.get("request_id") == request_id] == ["http_request"]
    for secret in (
        STRIPE_KEY,
        WEBHOOK_SECRET,
        SHOPIFY_TOKEN,
        SHOPIFY_SECRET,
        ADMIN_TOKEN,
        body["payment"]["client_secret"],
    ):
        assert secret not in api_log


def created_count(stack: Stack) -> float:
    text = httpx.get(f"{stack.api['us']}/metrics", timeout=10).text
    prefix = 'dotshop_checkouts_total{outcome="created",region="us"} '
    return sum(float(ln[len(prefix) :]) for ln in text.splitlines() if ln.startswith(prefix))


def test_metrics_expose_red_and_business_series(stack: Stack) -> None:
    """`dotshop api` runs one worker process per core: /metrics adds up every worker's
    counters (prometheus_client multiprocess mode), whichever worker answers."""
    sku = a_sku_with_stock(stack, minimum=7)
    before = created_count(stack)
    for _ in range(6):  # a new connection each: the kernel spreads them over the workers
        assert checkout(stack, [{"sku": sku, "quantity": 1}]).status_code == 201
    assert created_count(stack) == before + 6
    assert checkout(stack, [{"sku": "NOPE", "quantity": 1}]).status_code == 404
    text = httpx.get(f"{stack.api['us']}/metrics", timeout=10).text
    assert (
        'dotshop_http_requests_total{method="POST",region="us",route="/v1/checkouts",'
        'service="checkout_api",status="201"}' in text
    )
    assert (
        'dotshop_http_request_duration_seconds_bucket{le="0.5",method="POST",region="us",'
        'route="/v1/checkouts"' in text
    )
    assert 'dotshop_checkouts_total{outcome="created",region="us"}' in text
    assert 'dotshop_checkouts_total{outcome="unknown_sku",region="us"}' in text
    reserved = stack.scalar("SELECT sum(reserved) FROM stock")
    assert f"dotshop_reserved_units {float(reserved)}" in text
    assert (
        "dotshop_outbox_pending{topic=" in text
        and "dotshop_outbox_oldest_pending_age_seconds{topic=" in text
    )
