"""Issue 12, item 1 (metrics audit): every long-running process serves /metrics, with its RED
and business series, and no label can carry an unbounded value.

`relay`, `sync`, `checks run` and `console` run as real `dotshop` processes with
DOTSHOP_METRICS_PORT on a free port, against the e2e stack (real sandboxes, real database);
each is scraped like Prometheus would. The API's database-read gauges are compared with SQL over
the same tables."""

from __future__ import annotations

import json
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

import checkout_api.app  # noqa: F401 - registers what the API process registers
import checks.runner  # noqa: F401 - and the checks process
import core.worker  # noqa: F401 - and the relay and sync processes
from core.errors import PortUnavailable
from core.metrics import API_ONLY_GAUGES, serve_metrics
from core.operators import hash_password
from tests.e2e.conftest import SHOP, Stack, wait_for
from tests.e2e.helpers import ADDRESS, checkout, order, skus_with_stock
from tests.processes import Process, free_port, start_dotshop

# Labels that would make a series per order, SKU, payment or customer (unbounded cardinality).
UNBOUNDED_LABELS = {
    "order_id",
    "order",
    "sku",
    "payment_intent",
    "payment_intent_id",
    "email",
    "customer",
    "checkout_id",
    "idempotency_key",
}


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a /metrics page: (name, sorted labels) -> value. Asserts 200."""
    response = httpx.get(url, timeout=10)
    assert response.status_code == 200, response.text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def value(samples: dict, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def names(samples: dict) -> set[str]:
    return {name for name, _ in samples}


def assert_bounded(samples: dict) -> None:
    for name, labels in samples:
        leaked = UNBOUNDED_LABELS & {k for k, _ in labels}
        assert not leaked, f"{name} carries unbounded label(s) {leaked}"


def assert_worker_registry(samples: dict) -> None:
    """This process's own registry: prometheus_client's default collectors (a merged
    multiprocess view has none), and none of the gauges only the API sets from the database
    (a worker would export them as a constant 0 beside the API's real value)."""
    assert {"process_cpu_seconds_total", "process_resident_memory_bytes"} <= names(samples)
    assert "python_info" in names(samples)
    assert not names(samples) & API_ONLY_GAUGES


def scraped_once(url: str, name: str, *, timeout: float, **labels: str) -> dict:
    """The samples of `url` once it has a sample `name` with `labels`, nonzero."""
    return wait_for(lambda: (s := scrape(url)) and value(s, name, **labels) and s, timeout=timeout)


def assert_headroom(samples: dict) -> None:
    """The throttleStatus of Shopify's last answer: what is left of the bucket, its size, and
    its restore rate (shopify.dev "GraphQL Admin API rate limits")."""
    maximum = value(samples, "dotshop_shopify_call_limit_maximum_points", shop=SHOP)
    available = value(samples, "dotshop_shopify_call_limit_available_points", shop=SHOP)
    rate = value(samples, "dotshop_shopify_call_limit_restore_rate_points_per_second", shop=SHOP)
    assert maximum > 0 and rate > 0 and 0 <= available <= maximum


@pytest.fixture
def metrics_port() -> int:
    return free_port()


def start_worker(stack: Stack, args: list[str], port: int, log: Path, **env: str) -> Process:
    return start_dotshop(
        args,
        [f"http://127.0.0.1:{port}/metrics"],
        str(log),
        env={**stack.api_env["us"], "DOTSHOP_METRICS_PORT": str(port), **env},
    )


def paid_checkout(stack: Stack, sku: str) -> dict:
    body = checkout(stack, [{"sku": sku, "quantity": 1}]).json()
    stack.stripe_client().v1.payment_intents.confirm(
        body["payment"]["payment_intent_id"], {"payment_method": "pm_card_visa"}
    )
    assert wait_for(lambda: order(stack, body["order_id"])["status"] == "paid")
    stack.wait_webhooks()
    return body


# ------------------------------------------------------------------------------ the API


def test_api_business_gauges_match_the_tables(stack: Stack) -> None:
    """Stock sums over every SKU (no per-SKU label) and outbox depth per topic, as the API's
    /metrics reads them, equal the same sums in SQL."""
    sku = skus_with_stock(stack, minimum=2)[0]
    paid_checkout(stack, sku)  # leaves a push_order and a fee lookup pending (no relay yet)
    checkout(stack, [{"sku": sku, "quantity": 1}])  # and a live hold
    samples = scrape(f"{stack.api['us']}/metrics")
    sellable, reserved, committed, sold_out = stack.sql(
        "SELECT sum(greatest(shopify_available - reserved - committed, 0)), sum(reserved),"
        "       sum(committed),"
        "       count(*) FILTER (WHERE greatest(shopify_available - reserved - committed, 0) = 0)"
        "  FROM stock"
    )[0]
    assert reserved >= 1 and sellable > 0
    assert value(samples, "dotshop_sellable_units") == sellable
    assert value(samples, "dotshop_reserved_units") == reserved
    assert value(samples, "dotshop_committed_units") == committed
    assert value(samples, "dotshop_sold_out_skus") == sold_out
    per_class = stack.sql(
        "SELECT coalesce(p.category, 'uncategorized'),"
        "       sum(greatest(s.shopify_available - s.reserved - s.committed, 0)),"
        "       sum(s.reserved), sum(s.committed)"
        "  FROM stock s JOIN variant v ON v.sku = s.sku JOIN product p ON p.id = v.product_id"
        " GROUP BY 1"
    )
    assert len(per_class) > 1  # the demo catalog has several categories
    for category, *units in per_class:
        for state, expected in zip(("sellable", "reserved", "committed"), units, strict=True):
            got = value(samples, "dotshop_stock_units", category=category, state=state)
            assert got == expected, (category, state)
    per_topic = stack.sql(
        "SELECT topic, count(*) FILTER (WHERE status = 'pending'),"
        "       count(*) FILTER (WHERE status = 'dead')"
        "  FROM outbox WHERE status IN ('pending', 'dead') GROUP BY topic"
    )
    assert "shopify.push_order" in {t for t, _, _ in per_topic}
    for topic, pending, dead in per_topic:
        assert value(samples, "dotshop_outbox_pending", topic=topic) == pending
        assert value(samples, "dotshop_outbox_dead", topic=topic) == dead
        assert value(samples, "dotshop_outbox_oldest_pending_age_seconds", topic=topic) >= 0
    assert_bounded(samples)


def outcomes(stack: Stack) -> dict[str, float]:
    samples = scrape(f"{stack.api['us']}/metrics")
    return {
        dict(labels)["outcome"]: v
        for (name, labels), v in samples.items()
        if name == "dotshop_checkouts_total" and dict(labels)["region"] == "us"
    }


def test_checkout_outcomes_count_requests_refused_before_an_answer(stack: Stack) -> None:
    """dotshop_checkouts_total counts every POST /v1/checkouts once: a body or key the API
    refuses (422 / 400) is `invalid`, where it used to go uncounted."""
    before = outcomes(stack)
    bad_body = httpx.post(
        f"{stack.api['us']}/v1/checkouts",
        json={"email": "ada@example.com", "lines": "nope", "shipping_address": ADDRESS},
        headers={"Idempotency-Key": str(uuid.uuid4())},
        timeout=30,
    )
    assert bad_body.status_code == 422, bad_body.text
    no_key = httpx.post(
        f"{stack.api['us']}/v1/checkouts",
        json={"email": "ada@example.com", "lines": [], "shipping_address": ADDRESS},
        timeout=30,
    )
    assert no_key.status_code == 400, no_key.text
    unknown = checkout(stack, [{"sku": "NO-SUCH-SKU", "quantity": 1}])
    assert unknown.status_code == 404
    after = outcomes(stack)
    assert after.get("invalid", 0) == before.get("invalid", 0) + 2
    assert after.get("unknown_sku", 0) == before.get("unknown_sku", 0) + 1


# ------------------------------------------------------------------------------ the workers


def test_relay_serves_its_own_registry(stack: Stack, metrics_port: int, tmp_path: Path) -> None:
    """The relay's /metrics: its loop passes, deliveries per topic, and Shopify's call-limit
    headroom after a push; a PROMETHEUS_MULTIPROC_DIR inherited from an API is not used."""
    multiproc = tmp_path / "api-multiproc"
    multiproc.mkdir()
    body = paid_checkout(stack, skus_with_stock(stack)[0])
    proc = start_worker(
        stack,
        ["relay"],
        metrics_port,
        tmp_path / "relay.log",
        PROMETHEUS_MULTIPROC_DIR=str(multiproc),
    )
    try:
        url = f"http://127.0.0.1:{metrics_port}/metrics"
        assert wait_for(
            lambda: stack.scalar(
                "SELECT shopify_order_id FROM orders WHERE id = :o", o=body["order_id"]
            ),
            timeout=60,
        )
        samples = scraped_once(
            url,
            "dotshop_outbox_deliveries_total",
            topic="shopify.push_order",
            result="sent",
            timeout=30,
        )
    finally:
        proc.stop()
    assert_worker_registry(samples)
    assert value(samples, "dotshop_worker_passes_total", loop="relay", outcome="ok") >= 1
    assert value(samples, "dotshop_worker_pass_duration_seconds_count", loop="relay") >= 1
    assert (
        value(samples, "dotshop_outbox_delivery_duration_seconds_count", topic="shopify.push_order")
        >= 1
    )
    assert_headroom(samples)
    assert list(multiproc.iterdir()) == []  # nothing went into the API's files
    assert_bounded(samples)


def test_sync_serves_loop_passes_and_shopify_headroom(
    stack: Stack, metrics_port: int, tmp_path: Path
) -> None:
    """`dotshop sync` repairs at start (Shopify calls): its /metrics shows the pass and the
    throttleStatus of Shopify's last answer (shopify.dev GraphQL Admin API rate limits)."""
    proc = start_worker(stack, ["sync"], metrics_port, tmp_path / "sync.log")
    try:
        url = f"http://127.0.0.1:{metrics_port}/metrics"
        samples = scraped_once(
            url, "dotshop_worker_passes_total", loop="sync", outcome="ok", timeout=60
        )
    finally:
        proc.stop()
    assert_worker_registry(samples)
    assert value(samples, "dotshop_worker_pass_duration_seconds_count", loop="sync") >= 1
    assert_headroom(samples)
    assert_bounded(samples)


def test_checks_scheduler_serves_reconciliation(
    stack: Stack, metrics_port: int, tmp_path: Path
) -> None:
    """`dotshop checks run` runs every check at start; unreconciled_payment's run sets the
    matched / unreconciled counts and money per currency, equal to what SQL says matched."""
    paid_checkout(stack, skus_with_stock(stack)[0])
    stack.settle()
    proc = start_worker(
        stack, ["checks", "run"], metrics_port, tmp_path / "checks.log", DOTSHOP_GRACE_SECONDS="0"
    )
    try:
        url = f"http://127.0.0.1:{metrics_port}/metrics"
        samples = scraped_once(
            url, "dotshop_worker_passes_total", loop="checks", outcome="ok", timeout=90
        )
    finally:
        proc.stop()
    assert_worker_registry(samples)
    matched, amount = stack.sql(
        "SELECT count(*), sum(amount_received) FROM stripe_payment sp"
        " WHERE status = 'succeeded' AND currency = 'usd'"
        "   AND NOT EXISTS (SELECT 1 FROM violation v WHERE v.check_name = 'unreconciled_payment'"
        "                     AND v.subject = sp.id AND v.resolved_at IS NULL)"
    )[0]
    assert matched >= 1
    assert value(samples, "dotshop_reconciliation_payments", currency="usd", status="matched") == (
        matched
    )
    assert (
        value(samples, "dotshop_reconciliation_amount_minor", currency="usd", status="matched")
        == amount
    )
    assert_bounded(samples)


def test_console_serves_metrics_from_its_first_run(
    stack: Stack, metrics_port: int, tmp_path: Path
) -> None:
    """The console (streamlit) starts its /metrics once per process, at its first script run:
    a browser opening the sign-in page."""
    from tests.console.browser import chromium

    port = free_port()
    console = f"http://127.0.0.1:{port}"
    users = {"oncall": {"role": "oncall", "password_hash": hash_password("a-long-password")}}
    proc = start_dotshop(
        ["console", "--port", str(port)],
        [f"{console}/_stcore/health"],
        str(tmp_path / "console.log"),
        env={
            "DATABASE_URL": stack.db_url,
            "DOTSHOP_CONSOLE_USERS": json.dumps(users),
            "DOTSHOP_METRICS_PORT": str(metrics_port),
        },
    )
    try:
        with chromium() as browser:
            page = browser.new_page()
            page.goto(console)
            page.get_by_label("Operator").wait_for(timeout=60_000)
            page.reload()  # a second run: the endpoint is already up, not started twice
            page.get_by_label("Operator").wait_for(timeout=60_000)
        samples = scrape(f"http://127.0.0.1:{metrics_port}/metrics")
    finally:
        proc.stop()
    assert_worker_registry(samples)
    assert "Traceback" not in proc.output()
    assert_bounded(samples)


# ------------------------------------------------------------------------------ in process


def test_no_metric_has_an_unbounded_label() -> None:
    """Issue 12: no order ids, SKUs, payments or e-mails as label values, in any metric any
    dotshop process registers."""
    for family in REGISTRY.collect():
        collector = REGISTRY._names_to_collectors.get(family.name)
        labelnames = set(getattr(collector, "_labelnames", ()))
        labelnames |= {k for s in family.samples for k in s.labels}
        assert not labelnames & UNBOUNDED_LABELS, f"{family.name}: {labelnames}"


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_serve_metrics_is_off_without_a_port_and_says_when_the_port_is_taken(
    taken_port: int,
) -> None:
    assert serve_metrics(None) is None
    with pytest.raises(PortUnavailable):
        serve_metrics(taken_port)
