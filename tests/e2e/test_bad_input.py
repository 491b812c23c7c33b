"""Bad input gets a clear, typed 4xx and changes nothing."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid

import httpx
import pytest

from tests.e2e.conftest import ADMIN_TOKEN, SHOPIFY_SECRET, WEBHOOK_SECRET, Stack
from tests.e2e.helpers import ADDRESS, skus_with_stock

BUSINESS_TABLES = (
    "orders",
    "order_line",
    "reservation",
    "ledger_txn",
    "outbox",
    "webhook_inbox",
    "idempotency_key",
)


def counts(stack: Stack) -> dict[str, object]:
    state: dict[str, object] = {
        t: stack.scalar(f"SELECT count(*) FROM {t}") for t in BUSINESS_TABLES
    }
    state["stock"] = stack.sql(
        "SELECT sku, shopify_available, reserved, committed FROM stock ORDER BY sku"
    )
    return state


def post(stack: Stack, body: bytes | dict, key: str | None = "auto") -> httpx.Response:
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["Idempotency-Key"] = str(uuid.uuid4()) if key == "auto" else key
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(
        f"{stack.api['us']}/v1/checkouts", content=content, headers=headers, timeout=30
    )


def good(sku: str, **changes: object) -> dict:
    return {
        "email": "ada@example.com",
        "lines": [{"sku": sku, "quantity": 1}],
        "shipping_address": ADDRESS,
        **changes,
    }


@pytest.mark.parametrize(
    ("make", "status", "code"),
    [
        (lambda sku: b'{"email": "ada@example.com", "lines": [', 400, "invalid_json"),
        (lambda sku: good(sku, lines=[{"sku": sku, "quantity": 0}]), 422, "invalid_request"),
        (lambda sku: good(sku, lines=[{"sku": sku, "quantity": -3}]), 422, "invalid_request"),
        (lambda sku: good(sku, lines=[{"sku": sku, "quantity": 10**12}]), 422, "invalid_request"),
        (lambda sku: good(sku, lines=[{"sku": sku, "quantity": 1.5}]), 422, "invalid_request"),
        (lambda sku: good(sku, lines=[]), 422, "invalid_request"),
        (lambda sku: good(sku, email="not-an-email"), 422, "invalid_request"),
        (lambda sku: good(sku, shipping_address={"name": "x"}), 422, "invalid_request"),
        (lambda sku: good(sku, coupon="FREE"), 422, "invalid_request"),
        (lambda sku: good(sku, lines=[{"sku": "", "quantity": 1}]), 422, "invalid_request"),
    ],
    ids=[
        "malformed-json",
        "zero",
        "negative",
        "huge",
        "fractional",
        "no-lines",
        "email",
        "address",
        "unknown-field",
        "empty-sku",
    ],
)
def test_invalid_checkout_bodies(stack: Stack, make, status: int, code: str) -> None:
    sku = skus_with_stock(stack)[0]
    before = counts(stack)
    response = post(stack, make(sku))
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    assert counts(stack) == before


def test_unknown_sku_is_404_and_holds_nothing(stack: Stack) -> None:
    sku = skus_with_stock(stack)[0]
    before = counts(stack)
    body = good(sku, lines=[{"sku": sku, "quantity": 1}, {"sku": "NO-SUCH-SKU", "quantity": 1}])
    response = post(stack, body)
    assert response.status_code == 404
    assert response.json()["error"] == {
        "code": "unknown_sku",
        "message": "One or more SKUs are not in the catalog.",
        "skus": ["NO-SUCH-SKU"],
    }
    after = counts(stack)
    # The key is kept with its final answer (like Stripe keeps 4xx); nothing else changed.
    assert after.pop("idempotency_key") == before.pop("idempotency_key") + 1
    assert after == before


@pytest.mark.parametrize(
    ("key", "code"),
    [
        (None, "idempotency_key_missing"),
        ("", "idempotency_key_missing"),
        ("k" * 256, "idempotency_key_invalid"),
        ("tab\there", "idempotency_key_invalid"),
    ],
    ids=["missing", "empty", "oversized", "control-char"],
)
def test_bad_idempotency_keys(stack: Stack, key: str | None, code: str) -> None:
    sku = skus_with_stock(stack)[0]
    before = counts(stack)
    response = post(stack, good(sku), key=key)
    assert response.status_code == 400 and response.json()["error"]["code"] == code
    assert counts(stack) == before


def test_oversized_body_is_refused(stack: Stack) -> None:
    before = counts(stack)
    response = post(stack, good("X", padding="y" * 100_000))
    assert response.status_code == 413
    assert counts(stack) == before


def stripe_signature(payload: bytes, secret: str, at: int | None = None) -> str:
    at = at or int(time.time())
    mac = hmac.new(secret.encode(), f"{at}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={at},v1={mac}"


def test_forged_and_stale_stripe_signatures(stack: Stack) -> None:
    event = {
        "id": "evt_forged",
        "object": "event",
        "type": "payment_intent.succeeded",
        "data": {
            "object": {
                "id": "pi_forged",
                "object": "payment_intent",
                "amount": 1,
                "currency": "usd",
            }
        },
    }
    payload = json.dumps(event).encode()
    url = f"{stack.api['us']}/webhooks/stripe"
    before = counts(stack)
    cases = {
        "wrong secret": stripe_signature(payload, "whsec_attacker"),
        "stale": stripe_signature(payload, WEBHOOK_SECRET, at=int(time.time()) - 3600),
        "garbage": "nonsense",
    }
    for name, signature in cases.items():
        response = httpx.post(
            url, content=payload, headers={"Stripe-Signature": signature}, timeout=10
        )
        assert response.status_code == 400, name
        assert response.json()["error"]["code"] == "invalid_signature"
    assert httpx.post(url, content=payload, timeout=10).status_code == 400
    assert counts(stack) == before
    # The same payload, properly signed, is accepted (and kept flagged: unknown PaymentIntent).
    ok = httpx.post(
        url,
        content=payload,
        headers={"Stripe-Signature": stripe_signature(payload, WEBHOOK_SECRET)},
        timeout=10,
    )
    assert ok.status_code == 200 and ok.json()["result"] == "flagged"
    assert (
        stack.scalar("SELECT status FROM webhook_inbox WHERE event_id = 'evt_forged'") == "flagged"
    )


def test_forged_shopify_hmac(stack: Stack) -> None:
    payload = json.dumps(
        {
            "inventory_item_id": 1,
            "location_id": 1,
            "available": 0,
            "updated_at": "2030-01-01T00:00:00Z",
        }
    ).encode()
    url = f"{stack.api['us']}/webhooks/shopify"
    headers = {"X-Shopify-Topic": "inventory_levels/update", "X-Shopify-Event-Id": "forged-1"}
    before = counts(stack)
    wrong = httpx.post(
        url, content=payload, headers={**headers, "X-Shopify-Hmac-Sha256": "AAAA"}, timeout=10
    )
    assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "unauthorized"
    assert httpx.post(url, content=payload, headers=headers, timeout=10).status_code == 401
    import base64

    forged = base64.b64encode(
        hmac.new(b"not-the-secret", payload, hashlib.sha256).digest()
    ).decode()
    assert (
        httpx.post(
            url, content=payload, headers={**headers, "X-Shopify-Hmac-Sha256": forged}, timeout=10
        ).status_code
        == 401
    )
    assert counts(stack) == before
    real = base64.b64encode(
        hmac.new(SHOPIFY_SECRET.encode(), payload, hashlib.sha256).digest()
    ).decode()
    accepted = httpx.post(
        url, content=payload, headers={**headers, "X-Shopify-Hmac-Sha256": real}, timeout=10
    )
    assert accepted.status_code == 200


def test_admin_requires_the_bearer_token(stack: Stack) -> None:
    url = f"{stack.api['us']}/admin/v1/orders/ord_missing"
    assert httpx.get(url, timeout=10).status_code == 401
    assert httpx.get(url, headers={"Authorization": "Bearer wrong"}, timeout=10).status_code == 401
    assert httpx.get(url, headers={"Authorization": "Basic abc"}, timeout=10).status_code == 401


def _request(stack: Stack, method: str, path: str, **kwargs: object) -> httpx.Response:
    headers = {"Idempotency-Key": str(uuid.uuid4()), "Authorization": f"Bearer {ADMIN_TOKEN}"}
    headers.update(kwargs.pop("headers", {}))  # type: ignore[arg-type]
    return httpx.request(method, f"{stack.api['us']}{path}", headers=headers, timeout=30, **kwargs)  # type: ignore[arg-type]


DEEP_JSON = b"[" * 20_000 + b"]" * 20_000
LONG_CHECKOUT_ID = "chk_" + "a" * 70


def _with_nul(sku: str, where: str) -> bytes:
    body = good(sku)
    if where == "email":
        body["email"] = "ada\x00@example.com"
    elif where == "address":
        body["shipping_address"] = {**ADDRESS, "line1": "12 St James\x00s Square"}
    else:
        body["lines"] = [{"sku": sku + "\x00", "quantity": 1}]
    return json.dumps(body).encode()


@pytest.mark.parametrize(
    ("method", "path", "make_body"),
    [
        ("POST", "/v1/checkouts", lambda sku: DEEP_JSON),
        ("POST", "/admin/v1/orders/ord_x/refunds", lambda sku: DEEP_JSON),
        ("POST", "/webhooks/shopify", lambda sku: DEEP_JSON),
        ("POST", "/v1/checkouts", lambda sku: _with_nul(sku, "email")),
        ("POST", "/v1/checkouts", lambda sku: _with_nul(sku, "address")),
        ("POST", "/v1/checkouts", lambda sku: _with_nul(sku, "sku")),
        ("POST", "/v1/checkouts", lambda sku: b'{"email": "ada\xff@example.com"}'),
        ("POST", "/admin/v1/orders/ord_x/refunds", lambda sku: b'{"reason": "\xc3\x28"}'),
        ("GET", "/v1/orders/ord_%00x", None),
        ("GET", "/v1/products/handle%00", None),
        ("GET", "/v1/products?cursor=%00", None),
        ("GET", "/v1/products?cursor=%C3%A9t%C3%A9", None),
        ("POST", "/v1/checkouts/chk_%00/cancel", None),
        ("POST", f"/v1/checkouts/{LONG_CHECKOUT_ID}/cancel", None),
        ("GET", "/admin/v1/orders/ord_%00", None),
        ("POST", "/admin/v1/outbox/obx_%00/retry", None),
        ("POST", "/admin/v1/orders/ord_%00/refunds", None),
    ],
    ids=[
        "deep-json-checkout",
        "deep-json-admin-refund",
        "deep-json-webhook",
        "nul-email",
        "nul-address",
        "nul-sku",
        "non-utf8-body",
        "non-utf8-admin-body",
        "nul-order-id",
        "nul-product-handle",
        "nul-cursor",
        "non-ascii-cursor",
        "nul-checkout-id",
        "long-checkout-id",
        "nul-admin-order-id",
        "nul-outbox-id",
        "nul-refund-order-id",
    ],
)
def test_hostile_input_is_a_4xx_with_our_error_shape(
    stack: Stack, method: str, path: str, make_body
) -> None:
    """CONTRACT.md: hostile input (NUL or control characters, invalid UTF-8, absurd nesting or
    lengths) is a 4xx with the error shape on any route, never a 5xx, and writes nothing."""
    sku = skus_with_stock(stack)[0]
    before = counts(stack)
    content = make_body(sku) if make_body else None
    response = _request(stack, method, path, content=content)
    assert 400 <= response.status_code < 500, response.text
    error = response.json()["error"]
    assert isinstance(error["code"], str) and isinstance(error["message"], str)
    assert counts(stack) == before


@pytest.mark.parametrize(
    "email", ["ada\x01@example.com", "ada@exa\x1bmple.com", "ada@example.com\x7f", "ada\n@x.io"]
)
def test_control_characters_in_an_email_are_refused(stack: Stack, email: str) -> None:
    """An email never holds control characters: 422 invalid_request (201 before)."""
    sku = skus_with_stock(stack)[0]
    before = counts(stack)
    response = post(stack, good(sku, email=email))
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "invalid_request"
    assert counts(stack) == before


IDEMPOTENT_POSTS = [
    ("/v1/checkouts", {"email": 3}),
    ("/v1/checkouts/chk_0123456789abcdef01234567/cancel", {"unexpected": True}),
    ("/admin/v1/orders/ord_0123456789abcdef01234567/refunds", {"amount": -5}),
]


@pytest.mark.parametrize(("path", "body"), IDEMPOTENT_POSTS, ids=["create", "cancel", "refund"])
@pytest.mark.parametrize(
    ("key", "code"),
    [(None, "idempotency_key_missing"), ("too-short", "idempotency_key_invalid")],
    ids=["missing", "short"],
)
def test_the_key_is_checked_before_the_body(
    stack: Stack, path: str, body: dict, key: str | None, code: str
) -> None:
    """CONTRACT.md: Idempotency-Key is required (400 idempotency_key_missing) and checked
    before the body, so an invalid body without a usable key is still that 400 (422 before)."""
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "application/json"}
    if key is not None:
        headers["Idempotency-Key"] = key
    before = counts(stack)
    response = httpx.post(
        f"{stack.api['us']}{path}", content=json.dumps(body), headers=headers, timeout=30
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == code
    assert counts(stack) == before


def test_admin_routes_still_ask_for_the_token_first(stack: Stack) -> None:
    """The bearer guard runs before the key check: no token, no hint about the key."""
    response = httpx.post(
        f"{stack.api['us']}/admin/v1/orders/ord_x/refunds", json={"amount": -5}, timeout=30
    )
    assert response.status_code == 401
