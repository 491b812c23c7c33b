"""Issue 13's two-region drill end to end, at CI size, on real processes on loopback: a primary
PostgreSQL and its synchronous standby, the delay proxies (80 ms RTT), the sandbox Stripe and
Shopify, and an API per region, all on free ports in a private folder.

The latency drill first (on the stack as it starts): a remote-region checkout makes at most 2
round trips to the primary, counted on the wire, and catalog reads never leave their region.
Then the failover drill on the same stack: shoppers in both regions, the primary killed, the
standby promoted, the APIs re-pointed: no acknowledged order lost, paid orders equal succeeded
PaymentIntents, nothing oversold, and writes came back."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest

from infra.local import drill, regions
from infra.local.regions import RegionStack

pytestmark = pytest.mark.slow

RTT_MS = 80.0


@pytest.fixture(scope="module")
def stack() -> Iterator[RegionStack]:
    with regions.running(("us", "eu"), rtt_ms=RTT_MS, say=print) as stack:
        yield stack


def test_a_remote_checkout_costs_two_round_trips_and_reads_stay_in_region(
    stack: RegionStack,
) -> None:
    report = drill.latency(stack, checkouts=20)
    print(report.table())
    assert report.remote_region == "eu"
    # Counted on the wire by the proxy in front of the primary, with a warm pool.
    assert report.connections_opened == 0
    assert report.round_trips_per_checkout == drill.MAX_REMOTE_ROUND_TRIPS
    assert report.read_round_trips_out == {"us": 0, "eu": 0}
    assert report.ok
    # The proxy is really in the way: two round trips cost at least two RTTs...
    eu_far = next(r for r in report.rows if r.region == "eu" and r.rtt_ms == RTT_MS)
    assert eu_far.p50_ms is not None and eu_far.p50_ms >= 2 * RTT_MS
    # ...and nothing more than that budget plus the work: far under what the business refuses.
    assert eu_far.p99_ms is not None and eu_far.p99_ms < 800


def test_failover_loses_no_acknowledged_order_and_oversells_nothing(stack: RegionStack) -> None:
    report = drill.failover(stack, shoppers_per_region=2, before_seconds=3, after_seconds=3)
    print(report.table())
    assert report.acked_before_kill > 0
    assert report.lost == 0
    assert report.found_total == report.acked_total
    assert report.oversold_units == 0 and report.rows_below_zero == 0
    assert report.scarce_sold <= report.scarce_stock
    assert report.paid_orders == report.succeeded_intents == report.confirmed_payments > 0
    assert report.rto_seconds is not None
    assert report.ok
    # DOTSHOP_PRIMARY_REGION flipped: both regions now write to the promoted standby, eu
    # directly and us across the proxy, and us reads there too (its own database is gone).
    assert stack.topology is not None and stack.topology.primary == "eu"
    eu_database = stack.topology.databases["eu"]
    assert stack.topology.api_env("eu")["DATABASE_URL"] == eu_database.url()
    us = stack.topology.api_env("us")
    assert us["DATABASE_URL"] == eu_database.url(port=stack.ports.proxies["eu"])
    assert us["DOTSHOP_READ_DATABASE_URL"] == us["DATABASE_URL"]


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["failover", "--regions", "us,mars"], "unknown region"),
        (["failover", "--regions", "us"], "two different regions"),
        (["latency", "--rtt-ms", "-1"], "--rtt-ms"),
        (["latency", "--checkouts", "0"], "--checkouts"),
        (["nope"], "No such command"),
    ],
)
def test_bad_drill_input_is_a_clear_message_and_exit_2(args: list[str], says: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "dotshop", "drill", *args],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 2
    assert says in done.stderr and done.stdout == ""
