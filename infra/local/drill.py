"""`dotshop drill failover` and `dotshop drill latency` on a two-region stack (regions.py).

failover: shoppers check out and pay in both regions; the primary is killed (SIGKILL, the
whole server at once), the standby promoted, DOTSHOP_PRIMARY_REGION flipped and the APIs
re-pointed, while the shoppers carry on. Then: every order acknowledged before the kill is on
the new primary (synchronous commit), paid orders equal succeeded PaymentIntents in Stripe,
nothing is oversold, and the time without a successful write (RTO).

latency: checkout p50/p99 per region with the delay proxies at 0 and at the RTT, and the round
trips one checkout of the remote region makes to the primary, counted on the wire by the proxy
(ReadyForQuery messages), as are the catalog reads that leave their region (none may).

Each function takes a running stack and returns a report whose `table()` is what the command
prints and whose fields the tests assert.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx
import stripe
from sqlalchemy import Engine, text

from core.db import make_engine, transaction
from dotshop.bench.report import ms
from dotshop.bench.results import percentile_ms
from infra.local.regions import RegionStack
from infra.local.shoppers import Shoppers, checkout_body

# Units of the SKU every few customers want: it sells out during the drill, so overselling it
# would show.
SCARCE_STOCK = 4
# Stock of the other SKUs the shoppers buy: never the limit.
PLENTY = 1_000_000
# SKUs the shoppers spread over (the demo catalog's first ones).
DRILL_SKUS = 6
# After the drill: how long webhooks and parked keys get to settle (a key locked by a request
# that died with the primary is free after core.idempotency.lock_timeout_for: ~16 s here).
SETTLE_SECONDS = 40
# Checkouts before each latency measurement that open the API's pool connections (through the
# proxy for the remote region): a cold connection is not what a checkout costs.
WARMUP_CHECKOUTS = 5
CATALOG_READS = 10
# Issue 13: a remote-region checkout costs at most this many round trips to the primary beyond
# its Stripe call, so that at 80 ms RTT its p99 stays far under the 800 ms the business cannot
# accept; the aim for that p99 is P99_AIM_MS.
MAX_REMOTE_ROUND_TRIPS = 2
P99_AIM_MS = 300.0

PAID_ORDERS = text("SELECT count(*) FROM orders WHERE status = 'paid'")
FOUND = text("SELECT id FROM orders WHERE id = ANY(:ids)")


def _prepare_stock(engine: Engine, scarce_stock: int) -> tuple[list[str], str]:
    """The SKUs the shoppers buy (plenty of each) and the scarce one (`scarce_stock` units),
    set as Shopify levels in the projection, as a webhook would."""
    from core import inventory

    with engine.connect() as conn:
        skus = list(conn.scalars(text("SELECT sku FROM stock ORDER BY sku LIMIT :n"), {"n": 7}))
    if len(skus) < DRILL_SKUS + 1:
        raise RuntimeError("the demo catalog did not load")
    *plenty, scarce = skus[: DRILL_SKUS + 1]
    now = datetime.now(UTC)
    with transaction(engine) as session:
        for sku in plenty:
            inventory.apply_shopify_level(session, sku, PLENTY, now)
        inventory.apply_shopify_level(session, scarce, scarce_stock, now)
    return plenty, scarce


def oversold(engine: Engine) -> tuple[int, int]:
    """(units short over every SKU, stock rows below zero): the `oversell` check (grace 0)
    and the bench's own correctness query, both on the database as it is now."""
    from checks.inventory import oversell
    from checks.registry import CheckContext
    from core.settings import Settings
    from dotshop.bench.verify import NEGATIVE_SELLABLE

    findings = oversell(CheckContext(engine, Settings(grace_seconds=0), datetime.now(UTC)))
    with engine.connect() as conn:
        negative = conn.execute(NEGATIVE_SELLABLE).scalar_one()
    return sum(f.evidence["short_units"] for f in findings), negative


def succeeded_intents(stack: RegionStack) -> int:
    """PaymentIntents Stripe says succeeded, listed through the SDK."""
    client = stripe.StripeClient(
        stack.secrets.stripe_api_key, base_addresses={"api": stack.stripe_base}
    )
    listed = client.v1.payment_intents.list({"limit": 100})
    return sum(1 for pi in listed.auto_paging_iter() if pi.status == "succeeded")


def _wait_webhooks(stack: RegionStack, timeout: float) -> None:
    httpx.post(
        f"{stack.stripe_base}/_sandbox/webhooks/wait",
        json={"timeout": timeout},
        timeout=timeout + 5,
    )


# --------------------------------------------------------------------------------- failover


def _replication(delayed: bool) -> str:
    return "replication across it too" if delayed else "replication direct"


@dataclass
class FailoverReport:
    old_primary: str
    new_primary: str
    rtt_ms: float
    delayed_replication: bool
    acked_before_kill: int
    found_after: int
    acked_total: int
    found_total: int
    confirmed_payments: int
    paid_orders: int
    succeeded_intents: int
    rto_seconds: float | None
    promote_seconds: float
    repoint_seconds: float
    oversold_units: int
    rows_below_zero: int
    scarce_sold: int
    scarce_stock: int
    unanswered: int
    outcomes: dict[str, int] = field(default_factory=dict)

    @property
    def lost(self) -> int:
        return self.acked_before_kill - self.found_after

    @property
    def ok(self) -> bool:
        return (
            self.lost == 0
            and self.found_total == self.acked_total
            and self.paid_orders == self.succeeded_intents == self.confirmed_payments
            and self.oversold_units == 0
            and self.rows_below_zero == 0
            and self.scarce_sold <= self.scarce_stock
            and self.rto_seconds is not None
        )

    def table(self) -> str:
        rto = f"{self.rto_seconds:.1f} s" if self.rto_seconds is not None else "no write came back"
        rows = [
            ("acknowledged before the kill", f"{self.acked_before_kill}"),
            ("  found after failover", f"{self.found_after} (lost: {self.lost})"),
            ("acknowledged in all", f"{self.acked_total} (found: {self.found_total})"),
            (
                "paid orders / PaymentIntents",
                f"{self.paid_orders} / {self.succeeded_intents} succeeded "
                f"({self.confirmed_payments} confirmed by shoppers)",
            ),
            (
                "RTO (no successful write)",
                f"{rto} (standby promoted {self.promote_seconds:.1f} s after the kill, "
                f"both APIs restarted {self.repoint_seconds:.1f} s later; the first back ends it)",
            ),
            (
                "oversold units",
                f"{self.oversold_units} (rows below zero: {self.rows_below_zero}; scarce SKU "
                f"{self.scarce_sold} sold of {self.scarce_stock})",
            ),
            ("checkouts left unanswered", f"{self.unanswered}"),
            ("answers seen", ", ".join(f"{k}: {v}" for k, v in sorted(self.outcomes.items()))),
        ]
        head = (
            f"failover drill: primary {self.old_primary} killed, {self.new_primary} promoted "
            f"({self.rtt_ms:g} ms RTT between regions, {_replication(self.delayed_replication)})"
            f" - {'PASS' if self.ok else 'FAIL'}"
        )
        width = max(len(k) for k, _ in rows)
        return "\n".join([head, *(f"  {k.ljust(width)}  {v}" for k, v in rows)])


def failover(
    stack: RegionStack,
    *,
    shoppers_per_region: int = 2,
    before_seconds: float = 5.0,
    after_seconds: float = 5.0,
    scarce_stock: int = SCARCE_STOCK,
    say: Callable[[str], None] = lambda _line: None,
) -> FailoverReport:
    assert stack.topology is not None
    old_primary = stack.topology.primary
    engine = make_engine(stack.primary_url(), pool_size=2)
    try:
        skus, scarce = _prepare_stock(engine, scarce_stock)
    finally:
        engine.dispose()
    shoppers = Shoppers(
        stack.api, stack.stripe_base, stack.secrets.stripe_api_key, skus, scarce_sku=scarce
    )
    say(f"{shoppers_per_region} shopper(s) per region checking out and paying")
    shoppers.start(shoppers_per_region)
    time.sleep(before_seconds)

    killed_at = time.monotonic()
    stack.kill_primary()
    say(f"primary ({old_primary}) killed")
    stack.promote_standby()
    promoted_at = time.monotonic()
    new_primary = stack.topology.primary
    say(f"standby ({new_primary}) promoted; DOTSHOP_PRIMARY_REGION={new_primary}, APIs restarting")
    stack.repoint_apis()
    repointed_at = time.monotonic()
    say("APIs re-pointed; traffic continues")
    time.sleep(after_seconds)
    shoppers.finish()
    unanswered = shoppers.settle_parked(SETTLE_SECONDS)
    _wait_webhooks(stack, SETTLE_SECONDS)

    acks = list(shoppers.acks)
    before = [a.order_id for a in acks if a.at < killed_at]
    after_kill = [a.at for a in acks if a.sent_at >= killed_at]
    engine = make_engine(stack.primary_url(), pool_size=2)
    try:
        with engine.connect() as conn:
            found_before = len(conn.execute(FOUND, {"ids": before}).all())
            found_total = len(conn.execute(FOUND, {"ids": [a.order_id for a in acks]}).all())
        confirmed = len(shoppers.paid_intents)
        deadline = time.monotonic() + SETTLE_SECONDS
        while True:  # a webhook refused while the APIs restarted is redelivered with backoff
            with engine.connect() as conn:
                paid = conn.execute(PAID_ORDERS).scalar_one()
            intents = succeeded_intents(stack)
            if paid == intents == confirmed or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        short_units, below_zero = oversold(engine)
    finally:
        engine.dispose()
    return FailoverReport(
        old_primary=old_primary,
        new_primary=new_primary,
        rtt_ms=stack.rtt_ms,
        delayed_replication=stack.delay_replication,
        acked_before_kill=len(before),
        found_after=found_before,
        acked_total=len(acks),
        found_total=found_total,
        confirmed_payments=confirmed,
        paid_orders=paid,
        succeeded_intents=intents,
        rto_seconds=(min(after_kill) - killed_at) if after_kill else None,
        promote_seconds=promoted_at - killed_at,
        repoint_seconds=repointed_at - promoted_at,
        oversold_units=short_units,
        rows_below_zero=below_zero,
        scarce_sold=sum(a.quantity for a in acks if a.sku == scarce),
        scarce_stock=scarce_stock,
        unanswered=unanswered,
        outcomes=dict(shoppers.outcomes),
    )


# ---------------------------------------------------------------------------------- latency


@dataclass(frozen=True)
class LatencyRow:
    region: str
    remote: bool  # whether its writes cross to another region's primary
    rtt_ms: float
    checkouts: int
    p50_ms: float | None
    p99_ms: float | None


@dataclass
class LatencyReport:
    primary: str
    remote_region: str
    delayed_replication: bool
    rows: list[LatencyRow]
    round_trips_per_checkout: float
    counted_checkouts: int
    connections_opened: int
    read_round_trips_out: dict[str, int]  # per region: round trips leaving it during reads
    catalog_reads: int

    @property
    def ok(self) -> bool:
        """The budget holds: round trips counted, no read left its region."""
        return self.round_trips_per_checkout <= MAX_REMOTE_ROUND_TRIPS and not any(
            self.read_round_trips_out.values()
        )

    def remote_p99_ms(self, rtt_ms: float) -> float | None:
        return next((r.p99_ms for r in self.rows if r.remote and r.rtt_ms == rtt_ms), None)

    def table(self) -> str:
        lines = [
            f"latency drill: primary {self.primary}, {self.remote_region} writes across the "
            f"proxy, {_replication(self.delayed_replication)}",
            f"  {'region':14}{'RTT ms':>6}{'p50 ms':>9}{'p99 ms':>9}{'checkouts':>11}",
        ]
        for r in self.rows:
            where = f"{r.region} ({'remote' if r.remote else 'primary'})"
            lines.append(
                f"  {where:14}{r.rtt_ms:>6g}{ms(r.p50_ms):>9}{ms(r.p99_ms):>9}{r.checkouts:>11}"
            )
        lines.append(
            f"  round trips to the primary per {self.remote_region} checkout: "
            f"{self.round_trips_per_checkout:.2f} (counted on the wire over "
            f"{self.counted_checkouts} checkouts; {self.connections_opened} connection(s) opened)"
        )
        reads = ", ".join(f"{r}: {n}" for r, n in self.read_round_trips_out.items())
        lines.append(
            f"  round trips leaving the region during {self.catalog_reads} catalog reads: {reads}"
        )
        worst = max(r.rtt_ms for r in self.rows)
        p99 = self.remote_p99_ms(worst)
        aim = "met" if p99 is not None and p99 <= P99_AIM_MS else "missed"
        lines.append(
            f"  budget: <= {MAX_REMOTE_ROUND_TRIPS} round trips "
            f"({'PASS' if self.ok else 'FAIL'}); remote p99 at {worst:g} ms RTT "
            f"{ms(p99)} ms, aim <= {P99_AIM_MS:g} ms ({aim})"
        )
        return "\n".join(lines)


def _timed_checkouts(stack: RegionStack, region: str, sku: str, count: int) -> list[float]:
    """`count` checkouts one after the other in `region`, each timed by the client."""
    samples = []
    with httpx.Client(timeout=30) as client:
        for _ in range(count):
            body = checkout_body(sku)
            started = time.perf_counter()
            response = client.post(
                f"{stack.api[region]}/v1/checkouts",
                json=body,
                headers={"Idempotency-Key": str(uuid.uuid4())},
            )
            elapsed = time.perf_counter() - started
            if response.status_code != 201:
                raise RuntimeError(f"checkout in {region}: {response.status_code} {response.text}")
            samples.append(elapsed)
    return samples


def _catalog_reads(stack: RegionStack, region: str, count: int) -> None:
    with httpx.Client(timeout=30) as client:
        for _ in range(count):
            page = client.get(f"{stack.api[region]}/v1/products", params={"limit": 5})
            page.raise_for_status()
            handle = page.json()["data"][0]["handle"]
            client.get(f"{stack.api[region]}/v1/products/{handle}").raise_for_status()


def latency(
    stack: RegionStack,
    *,
    checkouts: int = 100,
    rtt_ms: float | None = None,
    say: Callable[[str], None] = lambda _line: None,
) -> LatencyReport:
    assert stack.topology is not None
    rtt = stack.rtt_ms if rtt_ms is None else rtt_ms
    primary = stack.topology.primary
    remote = stack.topology.standby_region()
    engine = make_engine(stack.primary_url(), pool_size=2)
    try:
        skus, _scarce = _prepare_stock(engine, SCARCE_STOCK)
    finally:
        engine.dispose()
    sku = skus[0]
    rows = []
    for delay in (0.0, rtt):
        stack.set_rtt(delay)
        for region in stack.regions:
            _timed_checkouts(stack, region, sku, WARMUP_CHECKOUTS)
            say(f"{checkouts} checkouts in {region} at {delay:g} ms RTT")
            samples = _timed_checkouts(stack, region, sku, checkouts)
            rows.append(
                LatencyRow(
                    region,
                    region != primary,
                    delay,
                    len(samples),
                    percentile_ms(samples, 50),
                    percentile_ms(samples, 99),
                )
            )
    # The round trips one remote checkout makes to the primary: the proxy in front of the
    # primary counts the ReadyForQuery messages it carries back.
    stack.reset_proxy_stats()
    counted = max(10, checkouts // 5)
    _timed_checkouts(stack, remote, sku, counted)
    crossing = stack.proxy_stats(primary)
    # Catalog reads of each region, and what crossed the proxy in front of the other region's
    # database meanwhile (a read that left its region would show there).
    read_out = {}
    for region in stack.regions:
        stack.reset_proxy_stats()
        _catalog_reads(stack, region, CATALOG_READS)
        other = next(r for r in stack.regions if r != region)
        read_out[region] = int(stack.proxy_stats(other)["round_trips"])
    stack.set_rtt(stack.rtt_ms)
    return LatencyReport(
        primary=primary,
        remote_region=remote,
        delayed_replication=stack.delay_replication,
        rows=rows,
        round_trips_per_checkout=crossing["round_trips"] / counted,
        counted_checkouts=counted,
        connections_opened=int(crossing["connections"]),
        read_round_trips_out=read_out,
        catalog_reads=CATALOG_READS * 2,
    )
