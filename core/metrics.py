"""Prometheus metrics shared by every dotshop process (`/metrics` renders them with `render`).

Names follow Prometheus conventions: `_total` counters, `_seconds` histograms, base units.
An API running several worker processes (`dotshop api --workers N`) shares them through
prometheus_client's multiprocess mode (`PROMETHEUS_MULTIPROC_DIR`, set by checkout_api.server):
counters and histograms add up across workers; gauges read from the database keep the most
recent value any worker set (`multiprocess_mode="mostrecent"`)."""

from __future__ import annotations

import os

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

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
    "Checkout attempts by outcome (created, insufficient_stock, unknown_sku, replayed, "
    "provider_unavailable, ...).",
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
OUTBOX_PENDING = Gauge(
    "dotshop_outbox_pending",
    "Outbox messages waiting to be delivered.",
    multiprocess_mode="mostrecent",
)
OUTBOX_OLDEST_AGE = Gauge(
    "dotshop_outbox_oldest_pending_age_seconds",
    "Age of the oldest undelivered outbox message.",
    multiprocess_mode="mostrecent",
)
OUTBOX_DEAD = Gauge(
    "dotshop_outbox_dead", "Dead-lettered outbox messages.", multiprocess_mode="mostrecent"
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
