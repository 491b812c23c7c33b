"""End to end: N clients each loop checkout -> confirm with the stripe SDK (as a browser would)
-> wait until the order is paid: the sandbox signs and sends `payment_intent.succeeded`, the API
marks the order paid, and the relay pushes it to Shopify. A client starts its next flow only once
its order is paid, as a shopper waits on the confirmation page, so the time to paid is the
pipeline's latency at the rate it sustains, not a queue that grows while clients outrun the
webhooks. Paid orders per second and the times to paid are read back from the database (the
order's `paid` event); one watcher thread polls it for every client, so no client polls the API
and the pacing costs the server one small query every few milliseconds."""

from __future__ import annotations

import json
import threading
import time
import uuid
from datetime import UTC, datetime

import httpx
import stripe
from sqlalchemy import Engine, bindparam, text

from dotshop.bench.environment import STRIPE_KEY
from dotshop.bench.results import ArmResult, percentile_ms

ADDRESS = {
    "name": "Bench Client",
    "line1": "1 Main St",
    "city": "New York",
    "postal_code": "10001",
    "country": "US",
}
# The emails of the flows' orders: flow<client>@bench.example.
EMAIL_PATTERN = "flow%@bench.example"
# How long the last orders may take to become paid once the clients stop.
SETTLE_SECONDS = 60
# How long a client waits for its order to be paid before it counts the flow as failed.
PAID_TIMEOUT_SECONDS = 30
# How often the watcher looks for newly paid orders (the pacing's resolution, not the measure:
# times to paid come from the events' own timestamps).
WATCH_INTERVAL_SECONDS = 0.005

EVENTS = text(
    "SELECT o.id, "
    "  min(e.created_at) FILTER (WHERE e.kind = 'paid') AS paid, "
    "  min(e.created_at) FILTER (WHERE e.kind = 'pushed_to_shopify') AS pushed "
    "FROM orders o LEFT JOIN order_event e ON e.order_id = o.id "
    "WHERE o.id IN :ids GROUP BY o.id"
).bindparams(bindparam("ids", expanding=True))

PAID = text("SELECT order_id FROM order_event WHERE kind = 'paid' AND order_id IN :ids").bindparams(
    bindparam("ids", expanding=True)
)

PUSHED = text(
    "SELECT count(*) FILTER (WHERE e.kind = 'paid'), "
    "  count(*) FILTER (WHERE e.kind = 'pushed_to_shopify') "
    "FROM order_event e JOIN orders o ON o.id = e.order_id WHERE o.email LIKE :pattern"
)


def checkout_body(email: str, sku: str) -> str:
    return json.dumps(
        {"email": email, "lines": [{"sku": sku, "quantity": 1}], "shipping_address": ADDRESS}
    )


def wait_pushed(engine: Engine) -> tuple[int, int]:
    """(paid, pushed to Shopify) among the flows' orders, once equal or after SETTLE_SECONDS:
    the relay pushes at Shopify's rate limit, behind the paid orders."""
    deadline = time.monotonic() + SETTLE_SECONDS
    while True:
        with engine.connect() as conn:
            paid, pushed = conn.execute(PUSHED, {"pattern": EMAIL_PATTERN}).one()
        if paid == pushed or time.monotonic() > deadline:
            return paid, pushed
        time.sleep(0.5)


class PaidWatcher:
    """Wakes each waiting client when its order's `paid` event is committed."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.waiting: dict[str, threading.Event] = {}
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> PaidWatcher:
        self.thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stopped.set()
        self.thread.join()

    def wait(self, order_id: str, timeout: float) -> bool:
        event = threading.Event()
        with self.lock:
            self.waiting[order_id] = event
        try:
            return event.wait(timeout)
        finally:
            with self.lock:
                self.waiting.pop(order_id, None)

    def _watch(self) -> None:
        while not self.stopped.wait(WATCH_INTERVAL_SECONDS):
            with self.lock:
                ids = list(self.waiting)
            if not ids:
                continue
            with self.engine.connect() as conn:
                paid = conn.execute(PAID, {"ids": ids}).scalars().all()
            with self.lock:
                for order_id in paid:
                    if order_id in self.waiting:
                        self.waiting[order_id].set()


def drain_webhooks(stripe_base: str) -> None:
    """Wait until the sandbox Stripe has delivered every queued webhook (warm-up's included)."""
    with httpx.Client(base_url=stripe_base, timeout=SETTLE_SECONDS + 10) as client:
        client.post("/_sandbox/webhooks/wait", json={"timeout": SETTLE_SECONDS})


def run(
    api: str, stripe_base: str, engine: Engine, skus: list[str], *, clients: int, seconds: float
) -> ArmResult:
    started: dict[str, tuple[datetime, datetime]] = {}  # order id -> (checkout, confirm) start
    failures: list[str] = []
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    watcher = PaidWatcher(engine)

    def client(n: int) -> None:
        stripe_client = stripe.StripeClient(STRIPE_KEY, base_addresses={"api": stripe_base})
        with httpx.Client(base_url=api, timeout=30) as http:
            i = 0
            while time.monotonic() < deadline:
                i += 1
                began = datetime.now(UTC)
                try:
                    created = http.post(
                        "/v1/checkouts",
                        content=checkout_body(f"flow{n}@bench.example", skus[(n + i) % len(skus)]),
                        headers={
                            "Idempotency-Key": str(uuid.uuid4()),
                            "Content-Type": "application/json",
                        },
                    )
                    if created.status_code != 201:
                        raise RuntimeError(f"checkout answered {created.status_code}")
                    body = created.json()
                    confirming = datetime.now(UTC)
                    stripe_client.v1.payment_intents.confirm(
                        body["payment"]["payment_intent_id"], {"payment_method": "pm_card_visa"}
                    )
                except (httpx.HTTPError, stripe.StripeError, RuntimeError) as exc:
                    with lock:
                        failures.append(str(exc))
                    continue
                with lock:
                    started[body["order_id"]] = (began, confirming)
                # An order never paid is counted below (started but not paid).
                watcher.wait(body["order_id"], PAID_TIMEOUT_SECONDS)

    threads = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(clients)]
    with watcher:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    events = _settled(engine, list(started))
    paid = {oid: e[0] for oid, e in events.items() if e[0] is not None}
    pushed = sum(1 for e in events.values() if e[1] is not None)
    to_paid = [(paid[oid] - started[oid][1]).total_seconds() for oid in paid]
    flows = [(paid[oid] - started[oid][0]).total_seconds() for oid in paid]
    window = (
        (max(paid.values()) - min(s[0] for s in started.values())).total_seconds() if paid else 0
    )
    return ArmResult(
        arm="e2e",
        target="paid",
        clients=clients,
        duration_s=round(window, 3),
        requests=len(paid),
        errors=len(failures) + len(started) - len(paid),
        p50_ms=percentile_ms(flows, 50),
        p95_ms=percentile_ms(flows, 95),
        p99_ms=percentile_ms(flows, 99),
        extra={
            "started": len(started),
            "paid": len(paid),
            "pushed_to_shopify": pushed,
            "confirm_to_paid_p50_ms": percentile_ms(to_paid, 50),
            "confirm_to_paid_p99_ms": percentile_ms(to_paid, 99),
            "failures": failures[:5],
        },
    )


def _settled(engine: Engine, order_ids: list[str]) -> dict[str, tuple]:
    """Each order's (paid, pushed) times once all are paid, or as they are after a while."""
    if not order_ids:
        return {}
    deadline = time.monotonic() + SETTLE_SECONDS
    while True:
        with engine.connect() as conn:
            rows = {r.id: (r.paid, r.pushed) for r in conn.execute(EVENTS, {"ids": order_ids})}
        if all(paid is not None for paid, _ in rows.values()):
            return rows
        if time.monotonic() > deadline:
            return rows
        time.sleep(0.25)
