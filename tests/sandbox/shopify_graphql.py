"""Shared by the tests/sandbox/test_shopify_graphql_*.py modules: the sandbox Shopify's GraphQL
Admin API through the real ShopifyAPI library's `shopify.GraphQL()`, its control API, and a
small webhook receiver."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import shopify

from sandbox.options import DEFAULT_SHOPIFY_ACCESS_TOKEN, DEFAULT_SHOPIFY_SHOP
from tests.processes import Process, free_port

VERSION = "2026-04"
LOCATION = "gid://shopify/Location/1"
QUANTITY_NAMES = ("available", "committed", "reserved", "on_hand")

LEVEL = """
query Level($item: ID!, $location: ID!) {
  inventoryItem(id: $item) {
    inventoryLevel(locationId: $location) {
      quantities(names: ["available", "committed", "reserved", "on_hand"]) { name quantity }
    }
  }
}"""
ITEM_BY_SKU = """
query Item($query: String!) {
  productVariants(first: 1, query: $query) { nodes { id sku inventoryItem { id } } }
}"""


class Shop:
    """The sandbox Shopify seen from a test: GraphQL through the library, REST, control API."""

    def __init__(self, base: str, version: str = VERSION) -> None:
        self.base = base
        self.version = version

    def graphql(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        return json.loads(shopify.GraphQL().execute(query, variables))

    def data(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        """The `data` of an answer that must have no top-level errors."""
        answer = self.graphql(query, variables)
        assert "errors" not in answer, answer
        return answer["data"]

    def control(self, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
        return httpx.post(f"{self.base}/_sandbox/{path}", json=body or {}, timeout=10)

    def item(self, sku: str) -> str:
        found = self.data(ITEM_BY_SKU, {"query": f"sku:{sku}"})["productVariants"]["nodes"]
        assert found and found[0]["sku"] == sku
        return found[0]["inventoryItem"]["id"]

    def levels(self, item: str, location: str = LOCATION) -> dict[str, int]:
        level = self.data(LEVEL, {"item": item, "location": location})
        pairs = level["inventoryItem"]["inventoryLevel"]["quantities"]
        return {q["name"]: q["quantity"] for q in pairs}

    def rest_available(self, item: str, location_id: int = 1) -> int:
        """What the REST Admin API (and so every REST client) sees for the same level."""
        item_id = int(item.rsplit("/", 1)[1])
        response = httpx.get(
            f"{self.base}/admin/api/2025-01/inventory_levels.json",
            params={"inventory_item_ids": item_id, "location_ids": location_id},
            headers={"X-Shopify-Access-Token": DEFAULT_SHOPIFY_ACCESS_TOKEN},
            timeout=10,
        )
        response.raise_for_status()
        return response.json()["inventory_levels"][0]["available"]


def key() -> str:
    return str(uuid.uuid4())


def open_shop(sandbox: Process) -> Iterator[Shop]:
    """A freshly reset sandbox Shopify with the library's session pointed at its GraphQL API
    (the body of each module's `shop` fixture)."""
    base = sandbox.urls["shopify"]
    httpx.post(f"{base}/_sandbox/reset", json={"seed": 0}, timeout=10).raise_for_status()
    session = shopify.Session(DEFAULT_SHOPIFY_SHOP, VERSION, DEFAULT_SHOPIFY_ACCESS_TOKEN)
    shopify.ShopifyResource.activate_session(session)
    # The Session rewrites hosts to *.myshopify.com; set_site after activation points it here.
    shopify.ShopifyResource.set_site(f"{base}/admin/api/{VERSION}")
    yield Shop(base)
    shopify.ShopifyResource.clear_session()
    httpx.post(f"{base}/_sandbox/faults", json={"error_rate": 0.0}, timeout=10)


class Receiver:
    """A local webhook endpoint that records every delivery (always answers 200)."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver.lock:
                    receiver.received.append(
                        {"headers": dict(self.headers), "body": json.loads(body)}
                    )
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/webhooks/shopify"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def topics(self) -> list[str]:
        with self.lock:
            return [r["headers"]["X-Shopify-Topic"] for r in self.received]

    def bodies(self, topic: str) -> list[dict[str, Any]]:
        with self.lock:
            return [r["body"] for r in self.received if r["headers"]["X-Shopify-Topic"] == topic]


def open_receiver() -> Iterator[Receiver]:
    rec = Receiver()
    yield rec
    rec.server.shutdown()
