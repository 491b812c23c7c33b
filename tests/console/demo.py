"""The console's test data, made by driving the real stack (sandbox Stripe and Shopify through
their SDKs, our API processes, the relay, the checks), never by inserting rows: what finance and
on-call would see after a day of business with a few things gone wrong."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx

from checks.runner import run_checks
from core.settings import Settings
from tests.core.shopify_support import Shop
from tests.e2e.conftest import SHOPIFY_TOKEN, STRIPE_KEY, Stack
from tests.e2e.helpers import admin, disputed_order, paid_order, skus_with_stock
from tests.e2e.test_balance_ledger import eu_paid_order
from tests.e2e.test_payouts import run_payouts

# Every check but the Great Expectations suite (a ~20 s cold start, covered in tests/checks).
CHECKS = (
    "oversell",
    "inventory_drift",
    "stuck_outbox",
    "sync_lag",
    "ledger_imbalance",
    "order_flag",
    "unreconciled_payment",
    "payout_mismatch",
)


@dataclass(frozen=True)
class Demo:
    paid_order: str  # US, paid, two units
    paid_email: str
    paid_sku: str
    payment_intent: str  # the paid order's
    refunded_order: str  # paid, then partly refunded through the admin API
    refund_amount: int
    eu_order: str  # EUR, settled in USD
    disputed_order: str
    stray_payment: str  # a second PaymentIntent charging the paid order: unreconciled
    payout: str
    dead_letter: str  # an outbox message that exhausted its retries
    drift_sku: str  # Shopify changed it while its webhooks were lost


def _duplicate_charge(stack: Stack, order: dict) -> str:
    """A second PaymentIntent for a paid order (someone charged again from the Dashboard)."""
    client = stack.stripe_client()
    second = client.v1.payment_intents.create(
        {
            "amount": order["amount"],
            "currency": "usd",
            "payment_method_types": ["card"],
            "metadata": {"order_id": order["order_id"]},
        }
    )
    client.v1.payment_intents.confirm(second.id, {"payment_method": "pm_card_visa"})
    stack.settle()
    return second.id


def _dead_letter(stack: Stack, sku: str) -> str:
    """A paid order whose Shopify calls all fail: its messages exhaust their retries."""
    stack.faults("shopify", error_rate=1.0)
    try:
        body = paid_order(stack, sku)
    finally:
        stack.clear_faults()
    [public_id] = stack.sql(
        "SELECT public_id FROM outbox WHERE status = 'dead' AND payload ->> 'order_id' = :o"
        " ORDER BY id LIMIT 1",
        o=body["order_id"],
    )[0]
    return public_id


def _drift(stack: Stack, sku: str) -> None:
    """Another channel sells units while Shopify's webhooks are lost."""
    item_id = stack.scalar("SELECT shopify_inventory_item_id FROM variant WHERE sku = :s", s=sku)
    stack.faults("shopify", webhook_drop_rate=1.0)
    try:
        Shop(stack.shopify_base, SHOPIFY_TOKEN).set_level(item_id, 1)
        stack.wait_webhooks()
    finally:
        stack.clear_faults()


def seed(stack: Stack) -> Demo:
    skus = skus_with_stock(stack, minimum=5)
    paid = paid_order(stack, skus[0], quantity=2)
    refunded = paid_order(stack, skus[1])
    refund_amount = refunded["amount"] // 2
    response = admin(
        stack,
        "POST",
        f"/admin/v1/orders/{refunded['order_id']}/refunds",
        json={"amount": refund_amount, "reason": "requested_by_customer"},
        headers={"Idempotency-Key": str(uuid.uuid4())},
    )
    assert response.status_code == 202, response.text
    stack.settle()
    eu = eu_paid_order(stack, skus[2])
    disputed, _, _ = disputed_order(stack, skus[3])
    [payout] = run_payouts(stack)
    stray = _duplicate_charge(stack, paid)
    dead = _dead_letter(stack, skus[4])
    _drift(stack, skus[5])
    settings = Settings(
        grace_seconds=0,
        stripe_api_key=STRIPE_KEY,
        stripe_api_base=stack.stripe_base,
        shopify_site=stack.shopify_site,
        shopify_access_token=SHOPIFY_TOKEN,
    )
    stack.wait_webhooks()
    # The payout advanced Stripe's clock by days; the checks run at Stripe's time, so that what
    # Stripe created "now" is past the grace period.
    stripe_now = httpx.get(f"{stack.stripe_base}/_sandbox/state", timeout=10).json()["now"]
    run_checks(stack.engine, settings, names=CHECKS, now=datetime.fromtimestamp(stripe_now, UTC))
    return Demo(
        paid_order=paid["order_id"],
        paid_email="ada@example.com",
        paid_sku=skus[0],
        payment_intent=paid["payment"]["payment_intent_id"],
        refunded_order=refunded["order_id"],
        refund_amount=refund_amount,
        eu_order=eu["order_id"],
        disputed_order=disputed["order_id"],
        stray_payment=stray,
        payout=payout["id"],
        dead_letter=dead,
        drift_sku=skus[5],
    )
