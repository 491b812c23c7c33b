"""A demo day of storefront traffic, so a newcomer's first `dotshop up` has something to show:
customers in both regions check out and pay through the real API and the real `stripe` SDK
(EU payments pass 3-D Secure in the sandbox, as a customer would), one order is partly
refunded through the admin API, one payment is disputed. It only talks to the stack over HTTP.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import stripe

ADDRESS = {
    "name": "Grace Hopper",
    "line1": "1 Navy Yard",
    "city": "Arlington",
    "postal_code": "22202",
    "country": "US",
}
# (region, payment method, what happens next) for each demo customer.
CUSTOMERS = (
    ("us", "pm_card_visa", None),
    ("us", "pm_card_mastercard", None),
    ("us", "pm_card_visa", "refund"),
    ("us", "pm_card_createDispute", None),
    ("eu", "pm_card_visa", None),
    ("eu", "pm_card_visa", None),
)


@dataclass(frozen=True)
class DemoStack:
    api: dict[str, str]
    stripe_base: str
    stripe_key: str
    admin_token: str


def _sellable_skus(api: str, want: int) -> list[str]:
    products = httpx.get(f"{api}/v1/products", params={"limit": 50}, timeout=30).json()["data"]
    skus = [v["sku"] for p in products for v in p["variants"] if v["available"] >= 3]
    return skus[:want]


def _checkout(api: str, email: str, sku: str) -> dict[str, Any]:
    response = httpx.post(
        f"{api}/v1/checkouts",
        json={"email": email, "lines": [{"sku": sku, "quantity": 1}], "shipping_address": ADDRESS},
        headers={"Idempotency-Key": str(uuid.uuid4())},
        timeout=60,
    )
    response.raise_for_status()
    return response.json()


def _paid(api: str, order_id: str, timeout: float = 60) -> None:
    """Wait for the order to be paid: Stripe's webhook reaches the API a moment after confirm."""
    deadline = time.monotonic() + timeout
    while httpx.get(f"{api}/v1/orders/{order_id}", timeout=30).json()["status"] != "paid":
        if time.monotonic() > deadline:
            raise TimeoutError(f"{order_id} was not paid within {timeout} s")
        time.sleep(0.2)


def run(stack: DemoStack, say: Callable[[str], None] = print) -> list[str]:
    """Play the demo day; returns the order ids it made."""
    client = stripe.StripeClient(stack.stripe_key, base_addresses={"api": stack.stripe_base})
    skus = _sellable_skus(stack.api["us"], len(CUSTOMERS))
    orders = []
    for n, ((region, pm, then), sku) in enumerate(zip(CUSTOMERS, skus, strict=False), start=1):
        body = _checkout(stack.api[region], f"customer{n}@example.com", sku)
        pi = client.v1.payment_intents.confirm(
            body["payment"]["payment_intent_id"], {"payment_method": pm}
        )
        if pi.status == "requires_action":  # the EU's strong customer authentication
            httpx.post(
                f"{stack.stripe_base}/_sandbox/payment_intents/{pi.id}/authenticate",
                json={"outcome": "succeed"},
                timeout=30,
            ).raise_for_status()
        if then == "refund":
            _paid(stack.api[region], body["order_id"])
            httpx.post(
                f"{stack.api['us']}/admin/v1/orders/{body['order_id']}/refunds",
                json={"amount": body["amount"] // 2, "reason": "requested_by_customer"},
                headers={
                    "Authorization": f"Bearer {stack.admin_token}",
                    "Idempotency-Key": str(uuid.uuid4()),
                },
                timeout=60,
            ).raise_for_status()
        orders.append(body["order_id"])
    say(f"demo day: {len(orders)} orders placed and paid")
    return orders
