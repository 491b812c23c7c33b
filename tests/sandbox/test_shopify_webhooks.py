"""Webhooks from the sandbox Shopify to a small local receiver: every topic, Shopify's headers,
an HMAC we verify ourselves, retries, and the webhook fault knobs."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
import shopify

from sandbox.options import (
    DEFAULT_SHOPIFY_ACCESS_TOKEN,
    DEFAULT_SHOPIFY_API_SECRET,
    DEFAULT_SHOPIFY_SHOP,
    SHOPIFY_API_VERSION,
)
from tests.processes import Process, free_port, start_sandbox

VERSION = SHOPIFY_API_VERSION
TOPICS = {
    "products/create",
    "products/update",
    "products/delete",
    "inventory_levels/update",
    "orders/create",
    "orders/cancelled",
}
HEADERS = (
    "X-Shopify-Topic",
    "X-Shopify-Hmac-Sha256",
    "X-Shopify-Webhook-Id",
    "X-Shopify-Event-Id",
    "X-Shopify-Triggered-At",
    "X-Shopify-Shop-Domain",
    "X-Shopify-API-Version",
)


class Receiver:
    """Records every POST; answers with queued statuses first (to force retries), then 200."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.statuses: list[int] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver.lock:
                    status = receiver.statuses.pop(0) if receiver.statuses else 200
                    receiver.received.append(
                        {
                            "headers": dict(self.headers.items()),
                            "body": body,
                            "status": status,
                            "at": time.monotonic(),
                        }
                    )
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/webhooks/shopify"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def delivered(self) -> list[dict[str, Any]]:
        with self.lock:
            return [r for r in self.received if r["status"] == 200]

    def clear(self) -> None:
        with self.lock:
            self.received.clear()
            self.statuses.clear()


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    rec = Receiver()
    yield rec
    rec.server.shutdown()


@pytest.fixture(scope="module")
def hooked_sandbox(tmp_path_factory, receiver) -> Iterator[Process]:
    """A sandbox that subscribed every topic to the receiver at start (--shopify-webhook-url)."""
    log = tmp_path_factory.mktemp("sandbox") / "sandbox.log"
    proc = start_sandbox(str(log), "--shopify-webhook-url", receiver.url)
    yield proc
    proc.stop()


@pytest.fixture
def shop(hooked_sandbox, receiver) -> Iterator[str]:
    base = hooked_sandbox.urls["shopify"]
    httpx.post(f"{base}/_sandbox/reset", json={"seed": 3}).raise_for_status()
    receiver.clear()
    session = shopify.Session(DEFAULT_SHOPIFY_SHOP, VERSION, DEFAULT_SHOPIFY_ACCESS_TOKEN)
    shopify.ShopifyResource.activate_session(session)
    shopify.ShopifyResource.set_site(f"{base}/admin/api/{VERSION}")
    yield base
    shopify.ShopifyResource.clear_session()


def wait_idle(base: str) -> None:
    answer = httpx.post(f"{base}/_sandbox/webhooks/wait", json={"timeout": 10}, timeout=15)
    assert answer.json()["idle"] is True


def sell(base: str, sku: str, quantity: int = 1) -> None:
    httpx.post(
        f"{base}/_sandbox/inventory/sell", json={"sku": sku, "quantity": quantity}
    ).raise_for_status()


def test_subscriptions_from_start_option(shop, receiver):
    hooks = shopify.Webhook.find()
    assert {h.topic for h in hooks} == TOPICS
    assert {h.address for h in hooks} == {receiver.url}
    assert all(h.format == "json" and h.api_version == VERSION for h in hooks)
    extra = shopify.Webhook.create(
        {"topic": "orders/create", "address": "https://example.com/hooks", "format": "json"}
    )
    assert extra.id and shopify.Webhook.find(extra.id).address == "https://example.com/hooks"
    bad = shopify.Webhook.create({"topic": "orders/teleported", "address": "https://x.example"})
    assert bad.errors.on("topic") == "Invalid topic specified."
    extra.destroy()
    assert len(shopify.Webhook.find()) == len(TOPICS)


def test_every_topic_signed_with_shopify_headers(shop, receiver):
    product = shopify.Product.create(
        {"title": "Webhook Tee", "variants": [{"sku": "FSH-WHTEE-M", "price": "40.00"}]}
    )
    product.title = "Webhook Tee II"
    product.save()
    variant = product.variants[0]
    shopify.InventoryLevel.set(1, variant.inventory_item_id, 5)
    order = shopify.Order.create(
        {
            "line_items": [{"variant_id": variant.id, "quantity": 2}],
            "inventory_behaviour": "decrement_obeying_policy",
        }
    )
    order.cancel(restock=True)
    product.destroy()
    wait_idle(shop)

    deliveries = receiver.delivered()
    by_topic: dict[str, list[dict[str, Any]]] = {}
    for delivery in deliveries:
        by_topic.setdefault(delivery["headers"]["X-Shopify-Topic"], []).append(delivery)
    assert set(by_topic) == TOPICS
    for delivery in deliveries:
        headers, body = delivery["headers"], delivery["body"]
        assert all(name in headers for name in HEADERS), headers
        expected = base64.b64encode(
            hmac.new(DEFAULT_SHOPIFY_API_SECRET.encode(), body, hashlib.sha256).digest()
        ).decode()
        assert hmac.compare_digest(headers["X-Shopify-Hmac-Sha256"], expected)
        assert headers["X-Shopify-Shop-Domain"] == DEFAULT_SHOPIFY_SHOP
        assert headers["X-Shopify-API-Version"] == VERSION
        sent_at = datetime.fromisoformat(headers["X-Shopify-Triggered-At"].replace("Z", "+00:00"))
        assert sent_at.utcoffset().total_seconds() == 0
        assert abs((datetime.now(UTC) - sent_at).total_seconds()) < 60
    webhook_ids = [d["headers"]["X-Shopify-Webhook-Id"] for d in deliveries]
    assert len(set(webhook_ids)) == len(webhook_ids)

    levels = [json.loads(d["body"]) for d in by_topic["inventory_levels/update"]]
    assert set(levels[0]) == {
        "inventory_item_id",
        "location_id",
        "available",
        "updated_at",
        "admin_graphql_api_id",
    }
    # set 5 -> order claims 2 -> cancel restocks 2
    assert [lv["available"] for lv in levels] == [5, 3, 5]
    assert [lv["updated_at"] for lv in levels] == sorted(lv["updated_at"] for lv in levels)
    created = json.loads(by_topic["orders/create"][0]["body"])
    assert created["id"] == order.id and created["line_items"][0]["sku"] == "FSH-WHTEE-M"
    assert json.loads(by_topic["orders/cancelled"][0]["body"])["cancelled_at"]
    assert json.loads(by_topic["products/update"][0]["body"])["title"] == "Webhook Tee II"
    assert json.loads(by_topic["products/delete"][0]["body"]) == {"id": product.id}


def test_receiver_errors_are_retried_with_the_same_ids(shop, receiver):
    receiver.statuses = [500, 500]
    sell(shop, "BTY-LIP-NUDE")
    wait_idle(shop)
    attempts = receiver.received
    assert [a["status"] for a in attempts] == [500, 500, 200]
    assert len({a["headers"]["X-Shopify-Webhook-Id"] for a in attempts}) == 1
    assert len({a["headers"]["X-Shopify-Event-Id"] for a in attempts}) == 1
    assert len({a["body"] for a in attempts}) == 1
    log = httpx.get(f"{shop}/_sandbox/webhooks").json()["deliveries"]
    assert [(d["topic"], d["status"], d["responses"]) for d in log] == [
        ("inventory_levels/update", "delivered", [500, 500, 200])
    ]


def test_duplicate_fault_redelivers_the_same_webhook_id(shop, receiver):
    httpx.post(f"{shop}/_sandbox/faults", json={"webhook_duplicate_rate": 1.0})
    sell(shop, "BTY-LIP-BERRY")
    wait_idle(shop)
    deliveries = receiver.delivered()
    assert len(deliveries) == 2
    assert (
        deliveries[0]["headers"]["X-Shopify-Webhook-Id"]
        == (deliveries[1]["headers"]["X-Shopify-Webhook-Id"])
    )


def test_drop_fault_never_delivers(shop, receiver):
    httpx.post(f"{shop}/_sandbox/faults", json={"webhook_drop_rate": 1.0})
    sell(shop, "BTY-LIP-BERRY")
    wait_idle(shop)
    assert receiver.received == []
    log = httpx.get(f"{shop}/_sandbox/webhooks").json()["deliveries"]
    assert [d["status"] for d in log] == ["dropped"]


def test_reorder_fault_shuffles_but_delivers_everything(shop, receiver):
    httpx.post(f"{shop}/_sandbox/faults", json={"webhook_reorder": True})
    # One request, seven events (orders/create + six levels): one batch, shuffled by the seed.
    variants = [v for p in shopify.Product.find(limit=3) for v in p.variants][:6]
    order = shopify.Order.create(
        {
            "line_items": [{"variant_id": v.id, "quantity": 1} for v in variants],
            "inventory_behaviour": "decrement_ignoring_policy",
        }
    )
    wait_idle(shop)
    delivered = receiver.delivered()
    topics = [d["headers"]["X-Shopify-Topic"] for d in delivered]
    assert sorted(topics) == ["inventory_levels/update"] * 6 + ["orders/create"]
    items = [json.loads(d["body"]).get("inventory_item_id") for d in delivered]
    emitted = [None] + [v.inventory_item_id for v in variants]  # the order comes first
    assert sorted(items, key=str) == sorted(emitted, key=str)
    assert items != emitted  # seed 3 shuffles these seven
    assert json.loads(delivered[topics.index("orders/create")]["body"])["id"] == order.id


def test_delay_fault_holds_deliveries(shop, receiver):
    httpx.post(f"{shop}/_sandbox/faults", json={"webhook_delay_ms": 400})
    started = time.monotonic()
    sell(shop, "JWL-CHARM-A")
    wait_idle(shop)
    assert len(receiver.delivered()) == 1
    assert receiver.delivered()[0]["at"] - started >= 0.4
