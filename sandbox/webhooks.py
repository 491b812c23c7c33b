"""Webhook delivery shared by both stand-ins: at least once, retried with exponential backoff on
non-2xx or connection errors, with the seeded faults (duplicate, drop, reorder, delay).

Signing is the caller's: `publish()` takes a `sign(body) -> headers` callable that is called for
every attempt, because Stripe signs each attempt with a fresh timestamp.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from sandbox.faults import Faults

Signer = Callable[[bytes], dict[str, str]]

# Stripe retries for days; the sandbox compresses that into seconds so tests converge quickly.
MAX_ATTEMPTS = 8
FIRST_BACKOFF_SECONDS = 0.2
MAX_BACKOFF_SECONDS = 5.0
# With reordering on, due deliveries are collected this long so there is something to shuffle.
REORDER_WINDOW_SECONDS = 0.3
DELIVERY_TIMEOUT_SECONDS = 10.0


@dataclass
class Delivery:
    id: int
    url: str
    body: bytes
    sign: Signer
    event_id: str
    attempts: int = 0
    next_at: float = 0.0
    status: str = "pending"  # pending | delivered | failed | dropped
    statuses: list[int | str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "url": self.url,
            "event_id": self.event_id,
            "attempts": self.attempts,
            "status": self.status,
            "responses": list(self.statuses),
        }


class WebhookDispatcher:
    def __init__(self, faults: Faults) -> None:
        self.faults = faults
        self._ids = itertools.count(1)
        self._deliveries: list[Delivery] = []
        self._cond = threading.Condition()
        self._stop = False
        self._busy = False
        self._thread = threading.Thread(target=self._run, name="webhooks", daemon=True)
        self._client = httpx.Client(timeout=DELIVERY_TIMEOUT_SECONDS)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        self._thread.join(timeout=5)
        self._client.close()

    def reset(self) -> None:
        with self._cond:
            self._deliveries.clear()

    def publish(self, url: str, body: bytes, sign: Signer, event_id: str) -> None:
        """Queue one event for one endpoint, applying drop and duplicate faults."""
        copies = 2 if self.faults.roll(self.faults.config.webhook_duplicate_rate) else 1
        dropped = self.faults.roll(self.faults.config.webhook_drop_rate)
        with self._cond:
            for _ in range(copies):
                delivery = Delivery(next(self._ids), url, body, sign, event_id)
                if dropped:
                    delivery.status = "dropped"
                self._deliveries.append(delivery)
            self._cond.notify_all()

    def pending(self) -> int:
        with self._cond:
            return sum(1 for d in self._deliveries if d.status == "pending") + int(self._busy)

    def wait_idle(self, timeout: float = 30.0) -> bool:
        """Block until nothing is pending (or timeout); True when idle."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.pending() == 0:
                return True
            time.sleep(0.05)
        return self.pending() == 0

    def log(self) -> list[dict[str, Any]]:
        with self._cond:
            return [d.summary() for d in self._deliveries]

    def _due(self) -> list[Delivery]:
        now = time.monotonic()
        return [d for d in self._deliveries if d.status == "pending" and d.next_at <= now]

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stop and not self._due():
                    pending = [d.next_at for d in self._deliveries if d.status == "pending"]
                    wait = max(0.01, min(pending) - time.monotonic()) if pending else None
                    self._cond.wait(timeout=wait)
                if self._stop:
                    return
                self._busy = True
            try:
                if self.faults.config.webhook_reorder:
                    time.sleep(REORDER_WINDOW_SECONDS)
                with self._cond:
                    batch = self._due()
                if self.faults.config.webhook_reorder:
                    self.faults.shuffle(batch)
                for delivery in batch:
                    self._attempt(delivery)
            finally:
                with self._cond:
                    self._busy = False

    def _attempt(self, delivery: Delivery) -> None:
        delay_ms = self.faults.config.webhook_delay_ms
        if delay_ms:
            time.sleep(delay_ms / 1000)
        delivery.attempts += 1
        try:
            headers = {"Content-Type": "application/json", **delivery.sign(delivery.body)}
            response = self._client.post(delivery.url, content=delivery.body, headers=headers)
            outcome: int | str = response.status_code
            ok = 200 <= response.status_code < 300
        except Exception as exc:
            # Any failure (an unreachable host, or an invalid URL, which httpx raises outside
            # HTTPError) is a failed attempt; it must never end the delivery thread.
            outcome, ok = type(exc).__name__, False
        with self._cond:
            delivery.statuses.append(outcome)
            if ok:
                delivery.status = "delivered"
            elif delivery.attempts >= MAX_ATTEMPTS:
                delivery.status = "failed"
            else:
                backoff = min(
                    MAX_BACKOFF_SECONDS, FIRST_BACKOFF_SECONDS * 2 ** (delivery.attempts - 1)
                )
                delivery.next_at = time.monotonic() + backoff
