"""Webhook delivery shared by both stand-ins: at least once, retried with exponential backoff on
non-2xx or connection errors, with the seeded faults (duplicate, drop, reorder, delay).

Deliveries run in parallel lanes, as Stripe delivers concurrently: each delivery belongs to a
lane by its `lane` key (the caller's: Stripe passes the PaymentIntent an event is about), and a
lane delivers in publish order, so the events of one object keep their order unless the reorder
fault shuffles them, while a busy checkout's events do not queue behind another's.

Signing is the caller's: `publish()` takes a `sign(body) -> headers` callable that is called for
every attempt, because Stripe signs each attempt with a fresh timestamp.
"""

from __future__ import annotations

import itertools
import threading
import time
import zlib
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
# Concurrent deliveries (per stand-in).
LANES = 8


@dataclass
class Delivery:
    id: int
    url: str
    body: bytes
    sign: Signer
    event_id: str
    lane: int = 0
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
    def __init__(self, faults: Faults, lanes: int = LANES) -> None:
        self.faults = faults
        self._ids = itertools.count(1)
        self._deliveries: list[Delivery] = []  # every delivery, for the log
        self._pending: list[Delivery] = []  # the ones not final yet, in publish order
        self._cond = threading.Condition()
        self._stop = False
        self._busy = 0
        self._threads = [
            threading.Thread(target=self._run, args=(lane,), name=f"webhooks-{lane}", daemon=True)
            for lane in range(lanes)
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(timeout=5)

    def reset(self) -> None:
        with self._cond:
            self._deliveries.clear()
            self._pending.clear()

    def publish(
        self, url: str, body: bytes, sign: Signer, event_id: str, lane: str | None = None
    ) -> None:
        """Queue one event for one endpoint, applying drop and duplicate faults. Deliveries
        with the same `lane` key (default: the endpoint) are made one after the other."""
        copies = 2 if self.faults.roll(self.faults.config.webhook_duplicate_rate) else 1
        dropped = self.faults.roll(self.faults.config.webhook_drop_rate)
        index = zlib.crc32((url if lane is None else lane).encode()) % len(self._threads)
        if self.faults.config.webhook_reorder:
            index = 0  # one lane collects them all, so its batches can be shuffled
        with self._cond:
            for _ in range(copies):
                delivery = Delivery(next(self._ids), url, body, sign, event_id, index)
                if dropped:
                    delivery.status = "dropped"
                else:
                    self._pending.append(delivery)
                self._deliveries.append(delivery)
            self._cond.notify_all()

    def pending(self) -> int:
        with self._cond:
            return len(self._pending) + self._busy

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

    def _due(self, lane: int) -> list[Delivery]:
        now = time.monotonic()
        return [d for d in self._pending if d.lane == lane and d.next_at <= now]

    def _run(self, lane: int) -> None:
        client = httpx.Client(timeout=DELIVERY_TIMEOUT_SECONDS)
        try:
            while self._deliver_due(lane, client):
                pass
        finally:
            client.close()

    def _deliver_due(self, lane: int, client: httpx.Client) -> bool:
        """Wait for this lane's due deliveries and make them; False once stopped."""
        with self._cond:
            while not self._stop and not self._due(lane):
                waiting = [d.next_at for d in self._pending if d.lane == lane]
                wait = max(0.01, min(waiting) - time.monotonic()) if waiting else None
                self._cond.wait(timeout=wait)
            if self._stop:
                return False
            self._busy += 1
        try:
            if self.faults.config.webhook_reorder:
                time.sleep(REORDER_WINDOW_SECONDS)
            with self._cond:
                batch = self._due(lane)
            if self.faults.config.webhook_reorder:
                self.faults.shuffle(batch)
            for delivery in batch:
                self._attempt(delivery, client)
        finally:
            with self._cond:
                self._busy -= 1
        return True

    def _attempt(self, delivery: Delivery, client: httpx.Client) -> None:
        delay_ms = self.faults.config.webhook_delay_ms
        if delay_ms:
            time.sleep(delay_ms / 1000)
        delivery.attempts += 1
        try:
            headers = {"Content-Type": "application/json", **delivery.sign(delivery.body)}
            response = client.post(delivery.url, content=delivery.body, headers=headers)
            outcome: int | str = response.status_code
            ok = 200 <= response.status_code < 300
        except Exception as exc:
            # Any failure (an unreachable host, or an invalid URL, which httpx raises outside
            # HTTPError) is a failed attempt; it must never end a delivery thread.
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
            if delivery.status != "pending":
                self._pending.remove(delivery)
            self._cond.notify_all()
