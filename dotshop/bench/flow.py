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
import queue
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

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
# Threads taking the open arm's due flows: more than are ever in flight at its rate.
OPEN_SHOPPERS = 32
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


class _Flows:
    """The flows of one arm: each is checkout -> confirm -> paid, recorded by order id with when
    it began (for the open model: when it fell due) and when its confirm began."""

    def __init__(self, api: str, stripe_base: str, engine: Engine, skus: list[str]) -> None:
        self.api, self.stripe_base, self.skus = api, stripe_base, skus
        self.watcher = PaidWatcher(engine)
        self.started: dict[str, tuple[datetime, datetime]] = {}
        self.failures: list[str] = []
        self.lock = threading.Lock()

    def client(self) -> tuple[httpx.Client, stripe.StripeClient]:
        stripe_client = stripe.StripeClient(STRIPE_KEY, base_addresses={"api": self.stripe_base})
        return httpx.Client(base_url=self.api, timeout=30), stripe_client

    def one(
        self,
        http: httpx.Client,
        stripe_client: stripe.StripeClient,
        email: str,
        n: int,
        began: datetime,
    ) -> None:
        try:
            created = http.post(
                "/v1/checkouts",
                content=checkout_body(email, self.skus[n % len(self.skus)]),
                headers={"Idempotency-Key": str(uuid.uuid4()), "Content-Type": "application/json"},
            )
            if created.status_code != 201:
                raise RuntimeError(f"checkout answered {created.status_code}")
            body = created.json()
            confirming = datetime.now(UTC)
            stripe_client.v1.payment_intents.confirm(
                body["payment"]["payment_intent_id"], {"payment_method": "pm_card_visa"}
            )
        except (httpx.HTTPError, stripe.StripeError, RuntimeError) as exc:
            with self.lock:
                self.failures.append(str(exc))
            return
        with self.lock:
            self.started[body["order_id"]] = (began, confirming)
        # An order never paid is counted by `result` (started but not paid).
        self.watcher.wait(body["order_id"], PAID_TIMEOUT_SECONDS)

    def result(self, engine: Engine, target: str, clients: int, extra: dict) -> ArmResult:
        started = self.started
        events = _settled(engine, list(started))
        paid = {oid: e[0] for oid, e in events.items() if e[0] is not None}
        pushed = sum(1 for e in events.values() if e[1] is not None)
        to_paid = [(paid[oid] - started[oid][1]).total_seconds() for oid in paid]
        flows = [(paid[oid] - started[oid][0]).total_seconds() for oid in paid]
        first = min((s[0] for s in started.values()), default=None)
        window = (max(paid.values()) - first).total_seconds() if paid and first else 0
        return ArmResult(
            arm="e2e",
            target=target,
            clients=clients,
            duration_s=round(window, 3),
            requests=len(paid),
            errors=len(self.failures) + len(started) - len(paid),
            p50_ms=percentile_ms(flows, 50),
            p95_ms=percentile_ms(flows, 95),
            p99_ms=percentile_ms(flows, 99),
            extra={
                **extra,
                "started": len(started),
                "paid": len(paid),
                "pushed_to_shopify": pushed,
                "confirm_to_paid_p50_ms": percentile_ms(to_paid, 50),
                "confirm_to_paid_p99_ms": percentile_ms(to_paid, 99),
                "failures": self.failures[:5],
            },
        )


def run(
    api: str, stripe_base: str, engine: Engine, skus: list[str], *, clients: int, seconds: float
) -> ArmResult:
    """Closed loop: `clients` shoppers, each starting its next flow once its order is paid."""
    flows = _Flows(api, stripe_base, engine, skus)
    deadline = time.monotonic() + seconds

    def client(n: int) -> None:
        http, stripe_client = flows.client()
        with http:
            i = 0
            while time.monotonic() < deadline:
                i += 1
                flows.one(http, stripe_client, f"flow{n}@bench.example", n + i, datetime.now(UTC))

    threads = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(clients)]
    with flows.watcher:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    return flows.result(engine, "paid", clients, {})


def run_open(
    api: str, stripe_base: str, engine: Engine, skus: list[str], *, rate: float, seconds: float
) -> ArmResult:
    """Open model: flows fall due `rate` times a second whether or not earlier ones are paid, and
    each runs from when it fell due, so time queued behind a busy stack counts (no coordinated
    omission). OPEN_SHOPPERS threads take due flows; more than are ever in flight at once."""
    flows = _Flows(api, stripe_base, engine, skus)
    due: queue.Queue[tuple[int, datetime] | None] = queue.Queue()

    def shopper() -> None:
        http, stripe_client = flows.client()
        with http:
            while (item := due.get()) is not None:
                n, at = item
                flows.one(http, stripe_client, "flowopen@bench.example", n, at)

    threads = [threading.Thread(target=shopper, daemon=True) for _ in range(OPEN_SHOPPERS)]
    total = max(1, round(rate * seconds))
    with flows.watcher:
        for t in threads:
            t.start()
        # Flow n falls due n / rate seconds after a start 0.2 s from now (the shoppers are up);
        # its due time on the wall clock is the same offset from `wall` as `at` from `clock`.
        wall, clock = datetime.now(UTC), time.perf_counter()
        start = clock + 0.2
        for n in range(total):
            at = start + n / rate
            time.sleep(max(0.0, at - time.perf_counter()))
            due.put((n, wall + timedelta(seconds=at - clock)))
        for _ in threads:
            due.put(None)
        for t in threads:
            t.join()
    return flows.result(engine, "paid-open", 0, {"rate_per_s": round(rate, 1), "scheduled": total})


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
