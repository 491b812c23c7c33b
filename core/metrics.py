"""Prometheus metrics shared by every dotshop process (`/metrics` renders them with `render`).

Names follow Prometheus conventions: `_total` counters, `_seconds` histograms, base units.
An API running several worker processes (`dotshop api --workers N`) shares them through
prometheus_client's multiprocess mode (`PROMETHEUS_MULTIPROC_DIR`, set by checkout_api.server):
counters and histograms add up across workers; gauges read from the database keep the most
recent value any worker set (`multiprocess_mode="mostrecent"`).

Every other long-running process (`relay`, `sync`, `checks run`, `console`) keeps its own
registry and serves it with `serve_metrics` on DOTSHOP_METRICS_PORT. Gauges read from the
database are set by the API's scrape only (core.observe), so no series is counted twice; a
worker's own series (its loop passes, deliveries, Shopify headroom, reconciliation) come from
the work it does. Labels are bounded: regions, topics, checks, loops, currencies, outcome and
reason codes, never an order, payment, SKU or customer."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    start_http_server,
    values,
)
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from core.errors import DotshopError, PortUnavailable

MULTIPROC_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"

HTTP_REQUESTS = Counter(
    "dotshop_http_requests_total",
    "HTTP requests handled, by region, route template, method and status code.",
    ["service", "region", "route", "method", "status"],
)
HTTP_ERRORS = Counter(
    "dotshop_http_errors_total",
    "HTTP requests answered with a 5xx status, by region and route template.",
    ["service", "region", "route", "method"],
)
HTTP_DURATION = Histogram(
    "dotshop_http_request_duration_seconds",
    "Time to answer an HTTP request, by region, route template and method.",
    ["service", "region", "route", "method"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
CHECKOUTS = Counter(
    "dotshop_checkouts_total",
    "Checkout attempts (POST /v1/checkouts) by region and outcome: created, replayed, the error "
    "code of a stored answer (insufficient_stock, unknown_sku, provider_unavailable, ...), or "
    "for a request refused before that: invalid, conflict, error.",
    ["region", "outcome"],
)
PAYMENTS = Counter(
    "dotshop_payment_events_total",
    "Stripe payment events applied, by event type and result.",
    ["type", "result"],
)
RESERVED_UNITS = Gauge(
    "dotshop_reserved_units",
    "Units held by live checkouts (sum of stock.reserved).",
    multiprocess_mode="mostrecent",
)
COMMITTED_UNITS = Gauge(
    "dotshop_committed_units",
    "Units paid but not yet acknowledged by Shopify.",
    multiprocess_mode="mostrecent",
)
ACTIVE_RESERVATIONS = Gauge(
    "dotshop_active_reservations", "Reservations in status held.", multiprocess_mode="mostrecent"
)
SELLABLE_UNITS = Gauge(
    "dotshop_sellable_units",
    "Units we can sell now, summed over every SKU (shopify_available - reserved - committed, "
    "0 for a SKU in shortfall).",
    multiprocess_mode="mostrecent",
)
STOCK_UNITS = Gauge(
    "dotshop_stock_units",
    "Units per SKU class (the product's category in the catalog, a bounded set; "
    "'uncategorized' when it has none) and state: sellable, reserved, committed.",
    ["category", "state"],
    multiprocess_mode="mostrecent",
)
SOLD_OUT_SKUS = Gauge(
    "dotshop_sold_out_skus",
    "SKUs with nothing left to sell (sold out: sellable units 0).",
    multiprocess_mode="mostrecent",
)
OUTBOX_PENDING = Gauge(
    "dotshop_outbox_pending",
    "Outbox messages waiting to be delivered, per topic.",
    ["topic"],
    multiprocess_mode="mostrecent",
)
OUTBOX_OLDEST_AGE = Gauge(
    "dotshop_outbox_oldest_pending_age_seconds",
    "Age of the oldest undelivered outbox message, per topic.",
    ["topic"],
    multiprocess_mode="mostrecent",
)
OUTBOX_DEAD = Gauge(
    "dotshop_outbox_dead",
    "Dead-lettered outbox messages, per topic.",
    ["topic"],
    multiprocess_mode="mostrecent",
)
OUTBOX_DELIVERIES = Counter(
    "dotshop_outbox_deliveries_total",
    "Outbox delivery attempts by the relay, per topic and result (sent, retry, dead).",
    ["topic", "result"],
)
OUTBOX_DELIVERY_DURATION = Histogram(
    "dotshop_outbox_delivery_duration_seconds",
    "Time an outbox handler took (the provider call included), per topic.",
    ["topic"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
WORKER_PASSES = Counter(
    "dotshop_worker_passes_total",
    "Passes of a background loop (relay, sweeper, completer, sync, checks) by outcome (ok, error).",
    ["loop", "outcome"],
)
WORKER_PASS_DURATION = Histogram(
    "dotshop_worker_pass_duration_seconds",
    "Time one pass of a background loop took, per loop.",
    ["loop"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
VIOLATIONS_OPEN = Gauge(
    "dotshop_violations_open",
    "Open business-invariant violations, per check.",
    ["check"],
    multiprocess_mode="mostrecent",
)
VIOLATION_AMOUNT = Gauge(
    "dotshop_violation_amount_minor",
    "Money at stake in open violations (minor units), per check and currency.",
    ["check", "currency"],
    multiprocess_mode="mostrecent",
)
ALERT_NOTIFICATIONS = Counter(
    "dotshop_alert_notifications_total",
    "Alert notifications (firing, re-sent or resolved) per sink and outcome (sent, failed).",
    ["sink", "outcome"],
)
SHOPIFY_THROTTLED = Counter(
    "dotshop_shopify_throttled_total",
    "GraphQL Admin API calls Shopify answered THROTTLED (each waited out, then retried).",
)
SHOPIFY_CALL_LIMIT_AVAILABLE = Gauge(
    "dotshop_shopify_call_limit_available_points",
    "Query cost points left in Shopify's GraphQL bucket at the last answer "
    "(throttleStatus.currentlyAvailable).",
    ["shop"],
    multiprocess_mode="mostrecent",
)
SHOPIFY_CALL_LIMIT_MAXIMUM = Gauge(
    "dotshop_shopify_call_limit_maximum_points",
    "Size of Shopify's GraphQL bucket (throttleStatus.maximumAvailable).",
    ["shop"],
    multiprocess_mode="mostrecent",
)
SHOPIFY_CALL_LIMIT_RESTORE_RATE = Gauge(
    "dotshop_shopify_call_limit_restore_rate_points_per_second",
    "Points Shopify's GraphQL bucket refills each second (throttleStatus.restoreRate).",
    ["shop"],
    multiprocess_mode="mostrecent",
)
RECONCILIATION_PAYMENTS = Gauge(
    "dotshop_reconciliation_payments",
    "Payments at the last reconciliation run, per currency and status (matched, "
    "unreconciled: a PaymentIntent or a paid order that does not reconcile).",
    ["currency", "status"],
    multiprocess_mode="mostrecent",
)
RECONCILIATION_AMOUNT = Gauge(
    "dotshop_reconciliation_amount_minor",
    "Money at the last reconciliation run (minor units), per currency and status: what matched "
    "payments took, and what is at stake in the unreconciled ones.",
    ["currency", "status"],
    multiprocess_mode="mostrecent",
)
SYNC_LAG = Histogram(
    "dotshop_sync_lag_seconds",
    "Shopify sync lag per direction: inbound = our apply time - Shopify's trigger/updatedAt; "
    "outbound = Shopify's acknowledgement - the event that caused the push (e.g. order paid).",
    ["direction"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 3600),
)
SYNC_OUTBOUND_OLDEST_AGE = Gauge(
    "dotshop_sync_outbound_oldest_unacknowledged_seconds",
    "Age of the oldest paid order Shopify has not acknowledged yet (0 when none).",
    multiprocess_mode="mostrecent",
)


def render() -> bytes:
    """The exposition of this process, or of every worker of a multiprocess API."""
    if os.environ.get(MULTIPROC_DIR_ENV):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)
    return generate_latest(REGISTRY)


# Gauges only the API sets, from the database at each scrape (core.observe, core.sync_lag): a
# worker's view of the registry leaves them out rather than export each as a constant 0.
API_ONLY_GAUGES = frozenset(
    g._name
    for g in (
        SELLABLE_UNITS,
        RESERVED_UNITS,
        COMMITTED_UNITS,
        STOCK_UNITS,
        SOLD_OUT_SKUS,
        ACTIVE_RESERVATIONS,
        OUTBOX_PENDING,
        OUTBOX_OLDEST_AGE,
        OUTBOX_DEAD,
        VIOLATIONS_OPEN,
        VIOLATION_AMOUNT,
        SYNC_OUTBOUND_OLDEST_AGE,
    )
)


class _WorkerView(Collector):
    def collect(self) -> Iterator[Metric]:
        return (m for m in REGISTRY.collect() if m.name not in API_ONLY_GAUGES)


def worker_registry() -> CollectorRegistry:
    """What a worker serves: the process registry (process_* and python_* included) without
    the API's database gauges."""
    view = CollectorRegistry(auto_describe=False)
    view.register(_WorkerView())
    return view


def serve_metrics(port: int | None, host: str = "127.0.0.1") -> Any:
    """Serve `worker_registry()` at http://host:port/metrics from a daemon thread; nothing
    when `port` is None. Returns the server (its `shutdown()` stops it)."""
    if port is None:
        return None
    if values.ValueClass is not values.MutexValue:
        # prometheus_client chose file-backed values at import: this process's samples would
        # land in an API's PROMETHEUS_MULTIPROC_DIR, and its own registry would read 0.
        raise DotshopError(
            f"{MULTIPROC_DIR_ENV} is set: a worker serves its own registry; unset it "
            "(only the API's worker processes share one)"
        )
    try:
        server, _ = start_http_server(port, addr=host, registry=worker_registry())
    except OSError as exc:
        raise PortUnavailable(f"cannot serve metrics on {host}:{port}: {exc.strerror}") from exc
    return server


def shopify_call_limit(shop: str, cost: dict[str, Any] | None) -> None:
    """Record the throttleStatus of a GraphQL answer's `extensions.cost` (headroom gauges)."""
    status = (cost or {}).get("throttleStatus") or {}
    for gauge, field in (
        (SHOPIFY_CALL_LIMIT_AVAILABLE, "currentlyAvailable"),
        (SHOPIFY_CALL_LIMIT_MAXIMUM, "maximumAvailable"),
        (SHOPIFY_CALL_LIMIT_RESTORE_RATE, "restoreRate"),
    ):
        if status.get(field) is not None:
            gauge.labels(shop=shop).set(float(status[field]))
