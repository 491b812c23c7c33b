"""Events and webhook endpoints: every state change becomes an Event (with the object's snapshot
at that moment) and is delivered, signed anew per attempt, to every endpoint that wants it."""

from __future__ import annotations

import contextvars
import hashlib
import hmac
import secrets
import time
from typing import Any

import orjson

from sandbox.stripe.errors import ApiError
from sandbox.stripe.state import Clock, Store, new_id, render
from sandbox.webhooks import WebhookDispatcher

# The API version the pinned `stripe` SDK speaks; events and responses carry it.
API_VERSION = "2026-10-28.endive"
DEFAULT_ENDPOINT_ID = "we_sandbox_default"

# The API request that caused the events being emitted (None for asynchronous ones, such as a
# dispute opened by the card network), like Stripe's `event.request`.
current_request: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "current_request", default=None
)


def signature_header(secret: str, payload: bytes, timestamp: int) -> str:
    """`Stripe-Signature: t=<unix>,v1=<hex HMAC-SHA256(secret, "t.payload")>`."""
    signed = f"{timestamp}.".encode() + payload
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


class Events:
    def __init__(self, store: Store, clock: Clock, dispatcher: WebhookDispatcher) -> None:
        self.store = store
        self.clock = clock
        self.dispatcher = dispatcher

    # --- endpoints ------------------------------------------------------------------------

    def add_endpoint(
        self,
        url: str,
        enabled_events: list[str],
        *,
        secret: str | None = None,
        endpoint_id: str | None = None,
        description: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        endpoint = {
            "id": endpoint_id or new_id("we"),
            "object": "webhook_endpoint",
            "api_version": None,
            "application": None,
            "created": self.clock.now(),
            "description": description,
            "enabled_events": enabled_events,
            "livemode": False,
            "metadata": metadata or {},
            "status": "enabled",
            "url": url,
            # Stripe shows the secret only in the create response.
            "_secret": secret or "whsec_" + secrets.token_hex(16),
        }
        return self.store.add("webhook_endpoints", endpoint)

    def endpoints_for(self, event_type: str) -> list[dict[str, Any]]:
        with self.store.lock:
            return [
                e
                for e in self.store.tables["webhook_endpoints"].values()
                if e["status"] == "enabled"
                and ("*" in e["enabled_events"] or event_type in e["enabled_events"])
            ]

    # --- events ---------------------------------------------------------------------------

    def emit(self, event_type: str, obj: dict[str, Any]) -> dict[str, Any]:
        """Record one event with a snapshot of `obj` now, and queue its deliveries."""
        request = current_request.get() or {"id": None, "idempotency_key": None}
        with self.store.lock:
            endpoints = self.endpoints_for(event_type)
            event = {
                "id": new_id("evt"),
                "object": "event",
                "api_version": API_VERSION,
                "created": self.clock.now(),
                "data": {"object": render(obj)},
                "livemode": False,
                "pending_webhooks": len(endpoints),
                "request": dict(request),
                "type": event_type,
            }
            self.store.add("events", event)
            for endpoint in endpoints:
                self._deliver(event, endpoint)
        return event

    def resend(self, event_id: str, endpoint_id: str | None = None) -> int:
        """Deliver an event again (the Dashboard's "Resend"); returns how many were queued."""
        with self.store.lock:
            event = self.store.get("events", event_id)
            endpoints = self.endpoints_for(event["type"])
            if endpoint_id is not None:
                endpoints = [e for e in endpoints if e["id"] == endpoint_id]
            for endpoint in endpoints:
                self._deliver(event, endpoint)
        return len(endpoints)

    def _deliver(self, event: dict[str, Any], endpoint: dict[str, Any]) -> None:
        body = orjson.dumps(event, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS)
        secret = endpoint["_secret"]

        def sign(payload: bytes) -> dict[str, str]:
            # Wall time, not the sandbox clock: receivers check freshness against their own.
            return {"Stripe-Signature": signature_header(secret, payload, int(time.time()))}

        self.dispatcher.publish(endpoint["url"], body, sign, event["id"], lane=_subject(event))


def _subject(event: dict[str, Any]) -> str:
    """What an event is about, for delivery order: the PaymentIntent of a payment's charges,
    refunds and disputes, else the object itself."""
    obj = event["data"]["object"]
    return str(obj.get("payment_intent") or obj.get("id"))


def event_types_filter(params: dict[str, Any]) -> Any:
    """`type=charge.*` (a wildcard suffix) or `types[]=a&types[]=b`."""
    single = params.get("type")
    many = params.get("types")
    if single is not None and many is not None:
        raise ApiError.invalid("You may pass either type or types, not both.", param="types")
    patterns = [single] if isinstance(single, str) else list(many or [])

    def matches(event: dict[str, Any]) -> bool:
        if not patterns:
            return True
        for pattern in patterns:
            if pattern.endswith("*") and event["type"].startswith(pattern[:-1]):
                return True
            if event["type"] == pattern:
                return True
        return False

    return matches
