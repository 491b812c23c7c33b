"""Our one door to Shopify: the GraphQL Admin API through the real `ShopifyAPI` library
(`shopify.GraphQL()`), pinned to one API version, pointed at a shop or at the sandbox.

Shopify limits GraphQL by calculated query cost (shopify.dev "GraphQL Admin API rate limits"):
every answer reports `extensions.cost.throttleStatus` (maximumAvailable, currentlyAvailable,
restoreRate). That status is our only budget: before a query whose cost we have seen we wait
until the bucket holds it, and a THROTTLED answer (nothing executed) is retried after
(requested - available) / restoreRate seconds. User errors become typed errors (core.errors).
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from decimal import Decimal
from typing import Any

import httpx
import shopify

from core.errors import (
    DotshopError,
    ProviderUnavailable,
    ShopifyRejected,
    ShopifyThrottled,
)
from core.metrics import SHOPIFY_THROTTLED, shopify_call_limit
from core.settings import Settings

# 2026-04 is the first version where inventory writes demand @idempotent and changeFromQuantity;
# we pin the newest stable one so the pin lasts a full year of Shopify's support window.
API_VERSION = "2026-10"
# Every order we push carries our order id twice: as sourceIdentifier (searchable) and as this
# custom attribute (visible to staff in the admin).
REFERENCE_ATTRIBUTE = "dotshop_order_id"
# Past this much waiting on THROTTLED in one call we give the message back to the relay, whose
# backoff spaces retries out; other callers (the sync) simply run again next interval.
MAX_THROTTLE_WAIT_SECONDS = 120.0
# Connection page sizes chosen so one page costs well under Shopify's 1,000-point query cap.
VARIANT_PAGE = 100  # ~8 points a variant
LEVEL_PAGE = 100  # ~8 points a level
PRODUCT_ID_PAGE = 250  # 1 point a product
# Shopify's search syntax takes this many OR-ed ids in one query string comfortably.
IDS_PER_QUERY = 50
# How often a bulk operation's status is polled, and how long we wait for it at most.
BULK_POLL_SECONDS = 0.5
BULK_TIMEOUT_SECONDS = 3600.0
# Countries whose contextual price we read, by our currency (Shopify markets price per country).
PRICE_COUNTRIES = {"usd": "US", "eur": "DE"}


def money_to_minor(amount: str | Decimal) -> int:
    """Shopify money strings ("828.00") to minor units (our currencies have 2 decimals)."""
    return int((Decimal(str(amount)) * 100).to_integral_value())


def minor_to_money(minor: int) -> str:
    return f"{Decimal(minor) / 100:.2f}"


def gid(kind: str, legacy_id: int) -> str:
    return f"gid://shopify/{kind}/{legacy_id}"


def legacy_id(global_id: str) -> int:
    return int(global_id.rsplit("/", 1)[1].split("?", 1)[0])


class Budget:
    """The last throttleStatus Shopify reported, projected forward at its restore rate."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._status: tuple[float, float, float] | None = None  # available, rate, at
        self._costs: dict[str, int] = {}

    def record(self, query: str, cost: dict[str, Any] | None) -> None:
        if not cost:
            return
        status = cost.get("throttleStatus") or {}
        with self._lock:
            if cost.get("requestedQueryCost") is not None:
                self._costs[query] = int(cost["requestedQueryCost"])
            if status.get("restoreRate"):
                self._status = (
                    float(status["currentlyAvailable"]),
                    float(status["restoreRate"]),
                    self.clock(),
                )

    def wait_before(self, query: str) -> float:
        """Seconds until the bucket holds what this query cost last time (0 when unknown)."""
        with self._lock:
            cost, status = self._costs.get(query), self._status
        if cost is None or status is None:
            return 0.0
        available, rate, at = status
        now_available = available + (self.clock() - at) * rate
        return max(0.0, (cost - now_available) / rate)

    @staticmethod
    def wait_after_throttled(cost: dict[str, Any]) -> float:
        status = cost.get("throttleStatus") or {}
        rate = float(status.get("restoreRate") or 0)
        if rate <= 0:
            raise ShopifyThrottled("THROTTLED without a restore rate")
        deficit = float(cost.get("requestedQueryCost") or 0) - float(
            status.get("currentlyAvailable") or 0
        )
        return max(deficit, 1.0) / rate


class _GraphQL(shopify.GraphQL):
    """The library's client (its endpoint and session headers) with a timeout, and HTTP errors
    left to us instead of printed."""

    def __init__(self, timeout: float) -> None:
        super().__init__()
        self.timeout = timeout

    def execute(
        self, query: str, variables: dict[str, Any] | None = None, operation_name: Any = None
    ) -> str:
        headers = self.merge_headers(
            {"Accept": "application/json", "Content-Type": "application/json"}, self.headers
        )
        body = json.dumps({"query": query, "variables": variables}).encode()
        request = urllib.request.Request(self.endpoint, body, headers)  # noqa: S310
        with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
            return response.read().decode()


class ShopifyGateway:
    def __init__(
        self,
        *,
        shop: str,
        site: str,
        access_token: str,
        timeout: float = 10,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.shop, self.site, self.token, self.timeout = shop, site, access_token, timeout
        self.sleep = sleep
        self.budget = Budget()

    @classmethod
    def from_settings(cls, settings: Settings) -> ShopifyGateway:
        if settings.shopify_access_token is None:
            raise DotshopError("SHOPIFY_ACCESS_TOKEN is not set")
        return cls(
            shop=settings.shopify_shop,
            site=settings.shopify_site,
            access_token=settings.shopify_access_token.get_secret_value(),
        )

    @contextlib.contextmanager
    def _activated(self) -> Iterator[None]:
        # ShopifyAPI keeps its site and headers per thread: activate in the calling thread.
        session = shopify.Session(self.shop, API_VERSION, self.token)
        shopify.ShopifyResource.activate_session(session)
        # The Session rewrote the host to *.myshopify.com; point the site back (the token
        # header set by activate_session survives this).
        shopify.ShopifyResource.set_site(self.site)
        yield

    def _send(self, query: str, variables: dict[str, Any] | None) -> dict[str, Any]:
        try:
            with self._activated():
                return json.loads(_GraphQL(self.timeout).execute(query, variables))
        except urllib.error.HTTPError as exc:
            if exc.code >= 500 or exc.code == 429:
                raise ProviderUnavailable(f"Shopify unavailable: HTTP {exc.code}") from exc
            raise ShopifyRejected(f"Shopify answered HTTP {exc.code}") from exc
        except (OSError, ValueError) as exc:
            raise ProviderUnavailable(f"Shopify unreachable: {exc}") from exc

    def execute(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        """One GraphQL call: paced by the budget, THROTTLED waited out, errors typed. Returns
        `data` (a field that failed with an error fails the call)."""
        waited = 0.0
        while True:
            pause = self.budget.wait_before(query)
            if pause:
                self.sleep(pause)
                waited += pause
            answer = self._send(query, variables)
            cost = (answer.get("extensions") or {}).get("cost")
            self.budget.record(query, cost)
            shopify_call_limit(self.shop, cost)
            errors = answer.get("errors") or []
            codes = {(e.get("extensions") or {}).get("code") for e in errors}
            if "THROTTLED" in codes and cost:
                SHOPIFY_THROTTLED.inc()
                pause = Budget.wait_after_throttled(cost)
                if waited + pause > MAX_THROTTLE_WAIT_SECONDS:
                    raise ShopifyThrottled(f"still THROTTLED after {waited:.0f}s")
                self.sleep(pause)
                waited += pause
                continue
            if errors:
                messages = "; ".join(str(e.get("message")) for e in errors)
                if codes & {"INTERNAL_SERVER_ERROR", "SERVICE_UNAVAILABLE"}:
                    raise ProviderUnavailable(f"Shopify: {messages}")
                raise ShopifyRejected(f"Shopify: {messages}", codes=sorted(c for c in codes if c))
            return answer["data"]

    @staticmethod
    def _user_errors(payload: dict[str, Any], key: str = "userErrors") -> None:
        errors = payload.get(key) or []
        if not errors:
            return
        codes = sorted({e.get("code") or "" for e in errors} - {""})
        raise ShopifyRejected("; ".join(e["message"] for e in errors), codes=codes)

    def _pages(
        self, query: str, variables: dict[str, Any], path: Sequence[str]
    ) -> Iterator[dict[str, Any]]:
        """Every node of the connection at `path`, page by page."""
        after = None
        while True:
            data = self.execute(query, {**variables, "after": after})
            for step in path:
                data = data[step] if data is not None else None
            if data is None:
                return
            yield from data["nodes"]
            if not data["pageInfo"]["hasNextPage"]:
                return
            after = data["pageInfo"]["endCursor"]

    # ------------------------------------------------------------------ catalog and stock

    def variants(self, query: str | None = None) -> Iterator[dict[str, Any]]:
        """Variants (each with its product and contextual prices) matching a search query."""
        yield from self._pages(VARIANTS_QUERY, {"query": query}, ["productVariants"])

    def changed_product_ids(self, since: str) -> list[int]:
        """Products whose updatedAt is at or after `since` (Shopify's clock)."""
        return [
            legacy_id(p["id"])
            for p in self._pages(
                PRODUCT_IDS_QUERY, {"query": f"updated_at:>='{since}'"}, ["products"]
            )
        ]

    def inventory_levels(
        self, item_ids: Sequence[int], location_ids: Sequence[int]
    ) -> list[dict[str, Any]]:
        """The levels of these items at these locations (one per stocked pair)."""
        searches = [
            " OR ".join(f"inventory_item_id:{i}" for i in item_ids[start : start + IDS_PER_QUERY])
            for start in range(0, len(item_ids), IDS_PER_QUERY)
        ]
        return self._levels(location_ids, searches)

    def levels_changed_since(self, since: str, location_ids: Sequence[int]) -> list[dict[str, Any]]:
        """The levels at these locations whose updatedAt is at or after `since`."""
        return self._levels(location_ids, [f"updated_at:>='{since}'"])

    def _levels(self, location_ids: Sequence[int], searches: Sequence[str]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for location in sorted(set(location_ids)):
            for search in searches:
                nodes = self._pages(
                    LEVELS_QUERY,
                    {"location": gid("Location", location), "query": search},
                    ["location", "inventoryLevels"],
                )
                out.extend(
                    level_of(node, int(node["item"]["legacyResourceId"]), location)
                    for node in nodes
                )
        return out

    # ------------------------------------------------------------------ bulk operations

    def bulk_query(self, query: str) -> Iterator[dict[str, Any]]:
        """Run a bulk query operation and stream its JSONL lines (shopify.dev "Perform bulk
        operations with the GraphQL Admin API")."""
        started = self.execute(BULK_RUN, {"query": query})["bulkOperationRunQuery"]
        self._user_errors(started)
        deadline = time.monotonic() + BULK_TIMEOUT_SECONDS
        while True:
            operation = self.execute(BULK_CURRENT)["currentBulkOperation"]
            if operation and operation["status"] not in ("CREATED", "RUNNING"):
                break
            if time.monotonic() > deadline:
                raise ProviderUnavailable("Shopify bulk operation did not finish in time")
            self.sleep(BULK_POLL_SECONDS)
        if operation["status"] != "COMPLETED":
            raise ShopifyRejected(
                f"bulk operation {operation['status']}", codes=[operation.get("errorCode") or ""]
            )
        if not operation.get("url"):
            return  # the query matched nothing
        try:
            with httpx.stream("GET", operation["url"], timeout=self.timeout) as response:
                response.raise_for_status()
                for line in response.iter_lines():
                    if line:
                        yield json.loads(line)
        except httpx.HTTPError as exc:
            raise ProviderUnavailable(f"bulk result download failed: {exc}") from exc

    def move_quantities(
        self,
        *,
        item_id: int,
        location_id: int,
        quantity: int,
        source: str,
        target: str,
        key: str,
        document: str,
    ) -> None:
        """Move units of one item between two quantity names at one location
        (inventoryMoveQuantities, @idempotent on `key`: a retry with the same key returns the
        first result and changes nothing). `document` is the ledger document of the side that
        is not `available` (Shopify refuses one on `available`).

        changeFromQuantity is sent as null on purpose: a move is relative, and the compared
        quantity would differ between an attempt that reached Shopify and its retry, which
        Shopify then refuses as IDEMPOTENCY_KEY_PARAMETER_MISMATCH instead of answering the
        first result."""

        def terminal(name: str) -> dict[str, Any]:
            ledger = None if name == "available" else document
            return {
                "locationId": gid("Location", location_id),
                "name": name,
                "ledgerDocumentUri": ledger,
                "changeFromQuantity": None,
            }

        move = {
            "reason": "reservation_created" if target == "reserved" else "reservation_deleted",
            "referenceDocumentUri": document,
            "changes": [
                {
                    "inventoryItemId": gid("InventoryItem", item_id),
                    "quantity": quantity,
                    "from": terminal(source),
                    "to": terminal(target),
                }
            ],
        }
        payload = self.execute(MOVE_QUANTITIES, {"input": move, "key": key})
        self._user_errors(payload["inventoryMoveQuantities"])

    # ------------------------------------------------------------------ orders

    def find_order(self, reference: str) -> int | None:
        """The Shopify order we created for our order `reference` (its sourceIdentifier)."""
        found = self.execute(FIND_ORDER, {"query": f"source_identifier:{reference}"})
        nodes = found["orders"]["nodes"]
        return int(nodes[0]["legacyResourceId"]) if nodes else None

    def create_order(
        self,
        *,
        reference: str,
        email: str,
        currency: str,
        lines: Sequence[tuple[int, int, int]],
    ) -> int:
        """Create a paid order with the prices charged (variant id, quantity, unit price in
        minor units of `currency`); Shopify moves the units from available to committed."""
        code = currency.upper()

        def money(minor: int) -> dict[str, Any]:
            return {"shopMoney": {"amount": minor_to_money(minor), "currencyCode": code}}

        order = {
            "email": email,
            "currency": code,
            "presentmentCurrency": code,
            "financialStatus": "PAID",
            # Our prices are what the customer paid, taxes included; we charge no tax line.
            "taxesIncluded": True,
            "sourceIdentifier": reference,
            "sourceName": "dotshop",
            "customAttributes": [{"key": REFERENCE_ATTRIBUTE, "value": reference}],
            "tags": ["dotshop"],
            "lineItems": [
                {"variantId": gid("ProductVariant", v), "quantity": q, "priceSet": money(p)}
                for v, q, p in lines
            ],
        }
        # The customer has paid: the order must reach Shopify even if another channel sold the
        # last unit meanwhile. Shopify then goes negative, which the oversell check reports,
        # instead of the push failing forever.
        options = {"inventoryBehaviour": "DECREMENT_IGNORING_POLICY", "sendReceipt": False}
        payload = self.execute(ORDER_CREATE, {"order": order, "options": options})["orderCreate"]
        self._user_errors(payload)
        return int(payload["order"]["legacyResourceId"])

    def cancel_order(self, shopify_order_id: int, *, reason: str) -> None:
        """Cancel an order we pushed, restocking its units. Cancelling is final and Shopify
        refuses a second one: an order already cancelled counts as done, so a retry after a
        lost response converges."""
        order = gid("Order", shopify_order_id)
        payload = self.execute(
            ORDER_CANCEL, {"id": order, "reason": reason.upper(), "restock": True}
        )["orderCancel"]
        try:
            self._user_errors(payload, "orderCancelUserErrors")
        except ShopifyRejected:
            if not self.execute(ORDER_CANCELLED, {"id": order})["order"]["cancelledAt"]:
                raise

    def refund(self, shopify_order_id: int, *, key: str, amount_minor: int, currency: str) -> None:
        """Record a refund we made through Stripe (refundCreate, @idempotent on our key: a
        retry returns the first refund instead of a second one)."""
        order = gid("Order", shopify_order_id)
        refund = {
            "orderId": order,
            "currency": currency.upper(),
            "notify": False,
            "transactions": [
                {
                    "amount": minor_to_money(amount_minor),
                    "gateway": "stripe",
                    "kind": "REFUND",
                    "orderId": order,
                }
            ],
        }
        payload = self.execute(REFUND_CREATE, {"input": refund, "key": key})["refundCreate"]
        self._user_errors(payload)


def level_of(node: dict[str, Any], item_id: int, location_id: int) -> dict[str, Any]:
    """A GraphQL InventoryLevel node (updatedAt, quantities) with the field names of the
    inventory_levels/update webhook, which is what the projection records."""
    quantities = {q["name"]: q["quantity"] for q in node["quantities"]}
    return {
        "inventory_item_id": item_id,
        "location_id": location_id,
        "available": int(quantities["available"]),
        "updated_at": node["updatedAt"],
    }


PRICES = " ".join(
    f"{currency}: contextualPricing(context: {{country: {country}}}) "
    "{ price { amount currencyCode } }"
    for currency, country in PRICE_COUNTRIES.items()
)
PRODUCT_FIELDS = (
    "id legacyResourceId handle title status productType descriptionHtml updatedAt"
    " featuredImage { url }"
)
VARIANT_CORE = (
    f"id legacyResourceId sku title position price {PRICES} product {{ {PRODUCT_FIELDS} }}"
)
VARIANT_FIELDS = f"{VARIANT_CORE} inventoryItem {{ legacyResourceId }}"
VARIANTS_QUERY = f"""
query Variants($query: String, $after: String) {{
  productVariants(first: {VARIANT_PAGE}, after: $after, query: $query) {{
    nodes {{ {VARIANT_FIELDS} }}
    pageInfo {{ hasNextPage endCursor }}
  }}
}}"""
PRODUCT_IDS_QUERY = f"""
query ChangedProducts($query: String, $after: String) {{
  products(first: {PRODUCT_ID_PAGE}, after: $after, query: $query) {{
    nodes {{ id }}
    pageInfo {{ hasNextPage endCursor }}
  }}
}}"""
LEVEL_FIELDS = 'updatedAt quantities(names: ["available"]) { name quantity }'
LEVELS_QUERY = f"""
query Levels($location: ID!, $query: String, $after: String) {{
  location(id: $location) {{
    inventoryLevels(first: {LEVEL_PAGE}, after: $after, query: $query) {{
      nodes {{ item {{ legacyResourceId }} {LEVEL_FIELDS} }}
      pageInfo {{ hasNextPage endCursor }}
    }}
  }}
}}"""
# The full catalog with every level, for a bulk operation: variants are root objects (their
# product and item inline), levels are child lines (`__parentId` = the variant's id).
BULK_CATALOG = f"""
{{
  productVariants {{
    edges {{ node {{
      {VARIANT_CORE}
      inventoryItem {{
        legacyResourceId
        inventoryLevels {{ edges {{ node {{ location {{ legacyResourceId }} {LEVEL_FIELDS} }} }} }}
      }}
    }} }}
  }}
}}"""
BULK_RUN = """
mutation Run($query: String!) {
  bulkOperationRunQuery(query: $query) {
    bulkOperation { id status }
    userErrors { code field message }
  }
}"""
BULK_CURRENT = "query Current { currentBulkOperation { id status errorCode objectCount url } }"
FIND_ORDER = """
query FindOrder($query: String!) {
  orders(first: 1, query: $query) { nodes { legacyResourceId } }
}"""
ORDER_CREATE = """
mutation Create($order: OrderCreateOrderInput!, $options: OrderCreateOptionsInput) {
  orderCreate(order: $order, options: $options) {
    order { legacyResourceId }
    userErrors { code field message }
  }
}"""
ORDER_CANCEL = """
mutation Cancel($id: ID!, $reason: OrderCancelReason!, $restock: Boolean!) {
  orderCancel(orderId: $id, reason: $reason, refund: false, restock: $restock,
              notifyCustomer: false) {
    orderCancelUserErrors { code field message }
  }
}"""
MOVE_QUANTITIES = """
mutation Move($input: InventoryMoveQuantitiesInput!, $key: String!) {
  inventoryMoveQuantities(input: $input) @idempotent(key: $key) {
    userErrors { code field message }
  }
}"""
ORDER_CANCELLED = "query Cancelled($id: ID!) { order(id: $id) { cancelledAt } }"
REFUND_CREATE = """
mutation Refund($input: RefundInput!, $key: String!) {
  refundCreate(input: $input) @idempotent(key: $key) {
    refund { id }
    userErrors { field message }
  }
}"""
