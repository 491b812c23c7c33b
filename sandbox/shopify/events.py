"""Shopify webhooks: the topics, the signed headers, and hand-off to the shared dispatcher.

One event (one change) gets one `X-Shopify-Event-Id`; each subscription's delivery of it gets
its own `X-Shopify-Webhook-Id`, which stays the same across retries and injected duplicates,
exactly what a receiver deduplicates on.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sandbox.webhooks import WebhookDispatcher

TOPICS = (
    "products/create",
    "products/update",
    "products/delete",
    "inventory_levels/update",
    "orders/create",
    "orders/cancelled",
)


def shopify_hmac(secret: str, body: bytes) -> str:
    """X-Shopify-Hmac-Sha256: base64 of HMAC-SHA256 over the raw body, keyed by the app secret."""
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


class WebhookPublisher:
    def __init__(
        self,
        dispatcher: WebhookDispatcher,
        shop_domain: str,
        api_secret: str,
        subscribers: Callable[[str], list[dict[str, Any]]],
    ) -> None:
        self.dispatcher = dispatcher
        self.shop_domain = shop_domain
        self.api_secret = api_secret
        self.subscribers = subscribers
        self._lock = threading.Lock()
        self._sent: dict[str, dict[str, Any]] = {}  # webhook id -> topic, event id, when

    def __call__(self, topic: str, payload: dict[str, Any]) -> None:
        subscriptions = self.subscribers(topic)
        if not subscriptions:
            return
        body = json.dumps(payload).encode()
        event_id = str(uuid.uuid4())
        triggered_at = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        for subscription in subscriptions:
            webhook_id = str(uuid.uuid4())
            headers = {
                "X-Shopify-Topic": topic,
                "X-Shopify-Webhook-Id": webhook_id,
                "X-Shopify-Event-Id": event_id,
                "X-Shopify-Triggered-At": triggered_at,
                "X-Shopify-Shop-Domain": self.shop_domain,
                "X-Shopify-API-Version": subscription["api_version"],
            }
            with self._lock:
                self._sent[webhook_id] = {
                    "topic": topic,
                    "shopify_event_id": event_id,
                    "subscription_id": subscription["id"],
                    "triggered_at": triggered_at,
                }
            self.dispatcher.publish(
                subscription["address"], body, self._signer(headers), webhook_id
            )

    def _signer(self, headers: dict[str, str]) -> Callable[[bytes], dict[str, str]]:
        def sign(body: bytes) -> dict[str, str]:
            return {**headers, "X-Shopify-Hmac-Sha256": shopify_hmac(self.api_secret, body)}

        return sign

    def log(self) -> list[dict[str, Any]]:
        """The dispatcher's delivery log, with each delivery's topic and Shopify ids."""
        with self._lock:
            sent = dict(self._sent)
        return [
            {**entry, "webhook_id": entry["event_id"], **sent.get(entry["event_id"], {})}
            for entry in self.dispatcher.log()
        ]

    def reset(self) -> None:
        with self._lock:
            self._sent.clear()
        self.dispatcher.reset()
