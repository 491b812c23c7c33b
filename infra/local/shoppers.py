"""Checkout traffic for the drills: shoppers in every region check out and pay through the real
API and the real `stripe` SDK, as a storefront's customers would, and remember every answer.

A shopper behaves like the storefront: one Idempotency-Key per customer's checkout, the same
key for every retry of it. While its region cannot write (503 `database_unavailable`, a
refused or reset connection while an API restarts) it retries that key. A key still locked by
a request that died with the primary (409 `idempotency_key_in_use`) is set aside and retried
at the end (`settle_parked`), while the shopper serves the next customer, as a storefront whose
customer clicks "pay" again later. Every 201 is an acknowledged order: it must survive anything.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import httpx
import stripe

from sandbox.traffic import ADDRESS

PAYMENT_METHOD = "pm_card_visa"
# Between two tries of one key while its region cannot write: short, the drill measures how
# soon writes come back.
RETRY_PAUSE_SECONDS = 0.05
# Between two rounds of parked keys: a dead request's lock frees itself in seconds, not ms.
PARKED_PAUSE_SECONDS = 0.5
# One request's patience (a checkout's Stripe call included).
REQUEST_TIMEOUT_SECONDS = 30
# Every this-many customers of a shopper wants the scarce SKU, which sells out during a drill.
SCARCE_EVERY = 3


@dataclass(frozen=True)
class Ack:
    """A 201: the checkout the storefront was told about."""

    key: str
    region: str
    order_id: str
    payment_intent_id: str
    sku: str
    quantity: int
    sent_at: float  # monotonic time the answered request was sent
    at: float  # monotonic time of the answer


@dataclass
class Parked:
    region: str
    key: str
    body: dict


def checkout_body(sku: str, quantity: int = 1) -> dict:
    return {
        "email": "drill@example.com",
        "lines": [{"sku": sku, "quantity": quantity}],
        "shipping_address": ADDRESS,
    }


@dataclass
class Shoppers:
    api: dict[str, str]
    stripe_base: str
    stripe_key: str
    skus: Sequence[str]
    scarce_sku: str | None = None
    pay: bool = True
    acks: list[Ack] = field(default_factory=list)
    paid_intents: list[str] = field(default_factory=list)
    parked: list[Parked] = field(default_factory=list)
    outcomes: Counter = field(default_factory=Counter)
    stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self, per_region: int) -> None:
        for region in self.api:
            for n in range(per_region):
                thread = threading.Thread(target=self._shop, args=(region, n), daemon=True)
                thread.start()
                self._threads.append(thread)

    def finish(self) -> None:
        self.stop.set()
        for thread in self._threads:
            thread.join(REQUEST_TIMEOUT_SECONDS * 2)

    def _count(self, outcome: str) -> None:
        with self._lock:
            self.outcomes[outcome] += 1

    def _shop(self, region: str, n: int) -> None:
        client = httpx.Client(timeout=REQUEST_TIMEOUT_SECONDS)
        stripe_client = self._stripe()
        i = 0
        while not self.stop.is_set():
            i += 1
            if self.scarce_sku and i % SCARCE_EVERY == 0:
                sku = self.scarce_sku
            else:
                sku = self.skus[(n * 7 + i) % len(self.skus)]
            self.answer(client, stripe_client, region, str(uuid.uuid4()), checkout_body(sku))

    def _stripe(self) -> stripe.StripeClient:
        return stripe.StripeClient(
            self.stripe_key, base_addresses={"api": self.stripe_base}, max_network_retries=2
        )

    def answer(
        self,
        client: httpx.Client,
        stripe_client: stripe.StripeClient,
        region: str,
        key: str,
        body: dict,
        *,
        until: float | None = None,
    ) -> bool:
        """Send one checkout until it has a final answer; False when it was parked (key in
        use, or the drill stopped or `until` passed first)."""
        url = f"{self.api[region]}/v1/checkouts"
        while not (self.stop.is_set() and until is None) and time.monotonic() < (until or 1e18):
            sent_at = time.monotonic()
            try:
                response = client.post(url, json=body, headers={"Idempotency-Key": key})
            except httpx.TransportError:
                self._count("unreachable")
                time.sleep(RETRY_PAUSE_SECONDS)
                continue
            status = response.status_code
            if status == 201:
                self._acked(stripe_client, region, key, body, response.json(), sent_at)
                return True
            error = response.json().get("error", {}).get("code", "") if response.content else ""
            if status == 409 and error == "insufficient_stock":
                self._count("insufficient_stock")
                return True
            if status == 409 and error == "idempotency_key_in_use":
                self._count("key_in_use")
                break
            if status >= 500:
                self._count(f"{status} {error}".strip())
                time.sleep(RETRY_PAUSE_SECONDS)
                continue
            self._count(f"unexpected {status} {error}".strip())
            return True
        with self._lock:
            self.parked.append(Parked(region, key, body))
        return False

    def _acked(
        self,
        stripe_client: stripe.StripeClient,
        region: str,
        key: str,
        body: dict,
        answer: dict,
        sent_at: float,
    ) -> None:
        line = body["lines"][0]
        pi = answer["payment"]["payment_intent_id"]
        ack = Ack(
            key,
            region,
            answer["order_id"],
            pi,
            line["sku"],
            line["quantity"],
            sent_at,
            time.monotonic(),
        )
        with self._lock:
            self.acks.append(ack)
            self.outcomes["201"] += 1
        if not self.pay:
            return
        try:
            intent = stripe_client.v1.payment_intents.confirm(
                pi, {"payment_method": PAYMENT_METHOD}
            )
            if intent.status == "requires_action":  # the EU's strong customer authentication
                httpx.post(
                    f"{self.stripe_base}/_sandbox/payment_intents/{pi}/authenticate",
                    json={"outcome": "succeed"},
                    timeout=REQUEST_TIMEOUT_SECONDS,
                ).raise_for_status()
        except (stripe.StripeError, httpx.HTTPError):
            self._count("payment_failed")
            return
        with self._lock:
            self.paid_intents.append(pi)

    def settle_parked(self, timeout: float) -> int:
        """Retry every parked key (same region, key and body) until answered or `timeout`;
        how many are still unanswered."""
        client, stripe_client = httpx.Client(timeout=REQUEST_TIMEOUT_SECONDS), self._stripe()
        until = time.monotonic() + timeout
        while self.parked and time.monotonic() < until:
            parked, self.parked = self.parked, []
            for p in parked:
                self.answer(client, stripe_client, p.region, p.key, p.body, until=until)
            if self.parked:
                time.sleep(PARKED_PAUSE_SECONDS)
        return len(self.parked)
