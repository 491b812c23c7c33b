"""`dotshop bench checkout`: one run, every arm side by side on the same parts and settings.

Order: the limit (pgbench, before the API holds connections), a warm-up, end to end (first, so
its pushes do not queue behind the Shopify holds of every later checkout; the arms after it wait
until its orders are pushed), the floor and the checkout in pairs (hot SKU, then SKUs spread
over SPREAD; per client count the floor, then the checkout at once), the reads, the open-model
arms at half the measured maximum, the oversell arm (one SKU with little stock, many clients);
then the correctness checks against the database. `--quick` (CI) runs each arm briefly with 8
clients: it proves every arm runs and nothing is oversold, never how fast.

The pairs run in ROUNDS rounds and the ratios are the median of the rounds' pairs: this machine
shares its host, whose load moves a single arm by ±20% within minutes, and an arm's ratio to a
floor measured minutes earlier carried that noise twice.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

from core import logs
from dotshop.bench import environment, flow, openloop, pgbench, report, verify, wrk
from dotshop.bench.environment import HOT_SKU, SELLOUT_SKU, SPREAD, SPREAD_PREFIX, BenchStack
from dotshop.bench.results import ArmResult
from dotshop.bench.wrk import Load

# Rounds of floor/checkout pairs in a full run (one in --quick).
ROUNDS = 3
# The open end-to-end arm runs this many times an arm's length: its confirm-to-paid p99 is a
# target (issue 10), and 10 s at ~20 flows/s made it the mean of the two slowest flows.
OPEN_FLOWS_LENGTH = 3


@dataclass(frozen=True)
class Plan:
    clients: tuple[int, ...]
    seconds: float
    flow_clients: int
    sellout_stock: int
    workers: int
    quick: bool
    rounds: int


def plan(*, quick: bool, seconds: float | None, workers: int) -> Plan:
    if quick:
        return Plan((8,), seconds or 1, 8, 20, workers, True, 1)
    return Plan((8, 32, 64), seconds or 10, 8, 500, workers, False, ROUNDS)


def _floor_load(email: str, skus: list[str]) -> Load:
    body = json.dumps({"email": email, "line": {"sku": "__SKU__", "quantity": 1}})
    return Load("POST", "/bench/floor", body, skus, keyed=True, expected=frozenset({201}))


def _checkout_load(email: str, skus: list[str], expected: frozenset[int]) -> Load:
    return Load("POST", "/v1/checkouts", flow.checkout_body(email, "__SKU__"), skus, True, expected)


class Run:
    """The arms of one run, in order, with progress on stderr."""

    def __init__(self, p: Plan, say: Callable[[str], None]) -> None:
        self.plan, self.say = p, say
        self.arms: list[ArmResult] = []
        self.emails: dict[int, str] = {}  # id(arm) -> the email on its orders
        self.started = time.monotonic()

    def add(self, arm: ArmResult, email: str | None = None) -> ArmResult:
        self.arms.append(arm)
        if email is not None:
            self.emails[id(arm)] = email
        clients = arm.clients or f"open {arm.extra.get('rate_per_s')}/s"
        self.say(
            f"[{time.monotonic() - self.started:6.1f} s] {arm.arm}/{arm.target} ({clients}): "
            f"{arm.rps:.1f}/s p50 {report.ms(arm.p50_ms)} ms p99 {report.ms(arm.p99_ms)} ms "
            f"errors {arm.errors}"
        )
        return arm

    def limit(self, stack: BenchStack) -> None:
        hot = pgbench.script(HOT_SKU, SPREAD_PREFIX, SPREAD)
        spread = pgbench.script(None, SPREAD_PREFIX, SPREAD)
        for target, sql in (("hot", hot), ("spread", spread)):
            for clients in self.plan.clients:
                self.add(
                    pgbench.run(
                        stack.database_url,
                        sql,
                        clients=clients,
                        seconds=self.plan.seconds,
                        workdir=stack.workdir,
                        target=target,
                    )
                )

    def closed(
        self, stack: BenchStack, arm: str, target: str, make: Callable, clients: int, n: int = 0
    ) -> None:
        email = f"{arm}-{target}-{clients}-r{n}@bench.example"
        result = wrk.run(
            stack.api,
            make(email),
            clients=clients,
            seconds=self.plan.seconds,
            workdir=stack.workdir,
            arm=arm,
            target=target,
        )
        result.round = n
        self.add(result, email if arm in ("floor", "checkout") else None)

    def pairs(self, stack: BenchStack) -> None:
        """The floor and the checkout back to back on the same load shape, in rounds."""
        created = frozenset({201})
        for n in range(self.plan.rounds):
            for target, skus in (("hot", [HOT_SKU]), ("spread", environment.spread_skus())):
                for clients in self.plan.clients:
                    floor = partial(_floor_load, skus=skus)
                    checkout = partial(_checkout_load, skus=skus, expected=created)
                    self.closed(stack, "floor", target, floor, clients, n)
                    self.closed(stack, "checkout", target, checkout, clients, n)

    def best(self, arm: str, target: str) -> float:
        return max((a.rps for a in self.arms if (a.arm, a.target) == (arm, target)), default=1.0)

    def http_arms(self, stack: BenchStack) -> None:
        created = frozenset({201})
        # Warm-up: every worker imports, connects and compiles its paths before measuring.
        for load in (
            _floor_load("warm@bench.example", [HOT_SKU]),
            _checkout_load("warm@bench.example", [HOT_SKU], created),
        ):
            wrk.run(
                stack.api,
                load,
                clients=4,
                seconds=1,
                workdir=stack.workdir,
                arm="warmup",
                target="hot",
            )
        self.end_to_end(stack)
        self.pairs(stack)
        product = Load("GET", f"/v1/products/{stack.product_handle}")
        listing = Load("GET", "/v1/products?limit=20")
        for clients in self.plan.clients:
            self.closed(stack, "read", "product", lambda _e: product, clients)
        for clients in self.plan.clients:
            self.closed(stack, "read", "list", lambda _e: listing, clients)
        for arm, make in (
            ("floor", lambda e: _floor_load(e, [HOT_SKU])),
            ("checkout", lambda e: _checkout_load(e, [HOT_SKU], created)),
        ):
            email = f"open-{arm}@bench.example"
            result = openloop.run(
                stack.api,
                make(email),
                rate=self.best(arm, "hot") / 2,
                seconds=self.plan.seconds,
                arm="open",
                target=f"{arm}-hot",
            )
            self.add(result, email)
        clients = max(self.plan.clients)
        email = f"oversell-{clients}@bench.example"
        load = _checkout_load(email, [SELLOUT_SKU], frozenset({201, 409}))
        self.add(
            wrk.run(
                stack.api,
                load,
                clients=clients,
                seconds=self.plan.seconds,
                workdir=stack.workdir,
                arm="oversell",
                target="sellout",
            ),
            email,
        )

    def end_to_end(self, stack: BenchStack) -> None:
        """First of the HTTP arms: every checkout of the later arms queues a Shopify hold,
        which the relay mirrors at Shopify's rate limit, and the pushes of paid orders would
        wait behind them."""
        flow.drain_webhooks(stack.stripe_base)
        self.say(f"end to end: {self.plan.flow_clients} clients for {self.plan.seconds:g} s")
        closed = self.add(
            flow.run(
                stack.api,
                stack.stripe_base,
                stack.engine,
                stack.flow_skus,
                clients=self.plan.flow_clients,
                seconds=self.plan.seconds,
            )
        )
        # The same flows falling due at half that rate: time to paid free of coordinated
        # omission, as the open arms measure the checkout. It too starts on a quiet stack.
        self.quiet(stack)
        self.add(
            flow.run_open(
                stack.api,
                stack.stripe_base,
                stack.engine,
                stack.flow_skus,
                rate=max(closed.rps / 2, 1.0),
                seconds=self.plan.seconds * OPEN_FLOWS_LENGTH,
            )
        )
        self.quiet(stack)

    @staticmethod
    def quiet(stack: BenchStack) -> None:
        """Wait until no webhook is queued and no paid order is left to push: the relay pushes
        at Shopify's rate limit, well after the flows end, and would share the next arm's
        cores."""
        flow.drain_webhooks(stack.stripe_base)
        flow.wait_pushed(stack.engine)


def main(*, quick: bool, seconds: float | None, workers: int, out_dir: Path) -> int:
    """Run the benchmark; print the table, write the JSON; 0 when every check holds."""

    def say(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    logs.configure("WARNING")  # the terminal shows progress and the table, not our logs
    p = plan(quick=quick, seconds=seconds, workers=workers)
    wrk.require_wrk()
    run = Run(p, say)
    with environment.running(
        workers=p.workers, sellout_stock=p.sellout_stock, say=say, before_api=run.limit
    ) as stack:
        say("API up; running the HTTP arms")
        run.http_arms(stack)
        checks = verify.check(
            stack.engine,
            run.arms,
            run.emails,
            sellout_sku=SELLOUT_SKU,
            sellout_stock=p.sellout_stock,
        )
    ratio = report.ratios(run.arms)
    data = report.record(run.arms, ratio, checks, asdict(p))
    print(report.table(run.arms, ratio))
    print()
    print(report.pairs_table(run.arms, ratio))
    for name, result in checks.items():
        print(f"{name}: {'ok' if result['ok'] else 'FAILED ' + json.dumps(result)}")
    path = report.write(out_dir, data, quick=quick)
    print(f"written to {path}")
    return 0 if data["ok"] else 1
