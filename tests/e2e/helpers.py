"""Small clients for the e2e tests: the storefront as a browser would call it."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime

import httpx

from checks.registry import CheckContext
from core import violations
from core.db import transaction
from core.settings import Settings
from core.violations import Finding
from tests.e2e.conftest import ADMIN_TOKEN, STRIPE_KEY, Stack, wait_for

ADDRESS = {
    "name": "Ada Lovelace",
    "line1": "12 St James's Square",
    "city": "London",
    "postal_code": "SW1Y 4JH",
    "country": "GB",
}


def checkout(
    stack: Stack, lines: list[dict], *, region: str = "us", key: str | None = None
) -> httpx.Response:
    return httpx.post(
        f"{stack.api[region]}/v1/checkouts",
        json={"email": "ada@example.com", "lines": lines, "shipping_address": ADDRESS},
        headers={"Idempotency-Key": key or str(uuid.uuid4())},
        timeout=60,
    )


def order(stack: Stack, order_id: str, region: str = "us") -> dict:
    return httpx.get(f"{stack.api[region]}/v1/orders/{order_id}", timeout=10).json()


def stock(stack: Stack, sku: str) -> tuple[int, int, int]:
    row = stack.sql(
        "SELECT shopify_available, reserved, committed FROM stock WHERE sku = :sku", sku=sku
    )[0]
    return tuple(row)


def skus_with_stock(stack: Stack, minimum: int = 3) -> list[str]:
    rows = stack.sql(
        "SELECT sku FROM stock WHERE shopify_available - reserved - committed >= :m ORDER BY sku",
        m=minimum,
    )
    return [r[0] for r in rows]


def admin(stack: Stack, method: str, path: str, **kwargs: object) -> httpx.Response:
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}", **kwargs.pop("headers", {})}  # type: ignore[dict-item]
    return httpx.request(method, f"{stack.api['us']}{path}", headers=headers, timeout=30, **kwargs)  # type: ignore[arg-type]


def paid_order(stack: Stack, sku: str, quantity: int = 1, pm: str = "pm_card_visa") -> dict:
    body = checkout(stack, [{"sku": sku, "quantity": quantity}]).json()
    stack.stripe_client().v1.payment_intents.confirm(
        body["payment"]["payment_intent_id"], {"payment_method": pm}
    )
    stack.settle()
    return body


def disputed_order(stack: Stack, sku: str) -> tuple[dict, dict, str]:
    """Pay with Stripe's dispute test card and wait for the dispute to reach the order:
    (checkout body, order as disputed, dispute id)."""
    body = paid_order(stack, sku, pm="pm_card_createDispute")

    def opened() -> dict | None:
        o = order(stack, body["order_id"])
        return o if o["status"] == "disputed" else None

    got = wait_for(opened)
    dispute_id = next(
        e["data"]["dispute_id"] for e in got["timeline"] if e["kind"] == "dispute_opened"
    )
    return body, got, dispute_id


def resolve_dispute(stack: Stack, dispute_id: str, outcome: str) -> None:
    """Close the dispute in the sandbox as the card network would ('won' or 'lost')."""
    response = httpx.post(
        f"{stack.stripe_base}/_sandbox/disputes/{dispute_id}/resolve",
        json={"outcome": outcome},
        timeout=10,
    )
    assert response.status_code == 200, response.text


def run_check(
    stack: Stack, name: str, check: Callable[[CheckContext], list[Finding]]
) -> dict[str, Finding]:
    """One run of a check (grace 0) against the stack's Stripe, recorded like the runner does;
    its findings by subject."""
    settings = Settings(
        grace_seconds=0, stripe_api_key=STRIPE_KEY, stripe_api_base=stack.stripe_base
    )
    now = datetime.now(UTC)
    found = check(CheckContext(stack.engine, settings, now, stripe=stack.stripe_gateway()))
    with transaction(stack.engine) as session:
        run_id = violations.start_run(session)
        violations.record_findings(session, run_id, name, found, now)
    return {f.subject: f for f in found}
