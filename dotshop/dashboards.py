"""Grafana dashboards as code: `dotshop dashboards build` writes dashboards/grafana/*.json.

Built with Grafana's own SDK (grafana-foundation-sdk), so the JSON is the schema Grafana
imports, not a hand-kept copy. Every panel queries a Prometheus datasource picked by the
`datasource` variable; the Checkout panels also filter by the `region` variable.

Queries reuse the recorded series of dashboards/prometheus/recording.rules.yml where one fits
(the SLO ratios, violations per check): the panel then shows the number the alert fires on.
Gauges read from the database arrive from every process that serves /metrics, so panels take
their `max`, as the recording rules do. Output is stable (sorted keys, fixed panel ids) so the
committed files can be checked against a fresh build in CI.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from grafana_foundation_sdk.builders import dashboard, prometheus, stat, timeseries
from grafana_foundation_sdk.cog.builder import Builder
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import (
    DataSourceRef,
    Threshold,
    ThresholdsMode,
    VariableRefresh,
    VariableSort,
)

DEFAULT_OUT = Path("dashboards/grafana")
DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
RATE = "$__rate_interval"
IN_REGION = 'region=~"$region"'
API = f'service="checkout_api", {IN_REGION}'
CHECKOUT = f'{API}, route="/v1/checkouts", method="POST"'
QUANTILES = (0.5, 0.95, 0.99)
# Checks (checks/registry.py) whose open violations put money or stock at risk, per dashboard.
MONEY_CHECKS = "unreconciled_payment|payout_mismatch|ledger_imbalance|order_flag"
STOCK_CHECKS = "oversell|inventory_drift"


def _query(expr: str, legend: str = "__auto", *, ref: str = "A") -> prometheus.Dataquery:
    return prometheus.Dataquery().expr(expr).legend_format(legend).ref_id(ref).range()


def _targets(panel: Builder, queries: list[tuple[str, str]]) -> None:
    for index, (expr, legend) in enumerate(queries):
        panel.with_target(_query(expr, legend, ref=chr(ord("A") + index)))


def _timeseries(
    title: str, description: str, unit: str, queries: list[tuple[str, str]], *, width: int = 12
) -> timeseries.Panel:
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit(unit)
        .min(0)
        .height(8)
        .span(width)
    )
    _targets(panel, queries)
    return panel


def _stat(
    title: str,
    description: str,
    unit: str,
    queries: list[tuple[str, str]],
    *,
    red_at: float | None = None,
    width: int = 6,
) -> stat.Panel:
    """A current value; with `red_at`, green below it and red from it on."""
    panel = (
        stat.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit(unit)
        .height(4)
        .span(width)
    )
    if red_at is not None:
        steps = [Threshold(value=None, color="green"), Threshold(value=red_at, color="red")]
        panel.thresholds(dashboard.ThresholdsConfig().mode(ThresholdsMode.ABSOLUTE).steps(steps))
    _targets(panel, queries)
    return panel


def _dashboard(uid: str, title: str, description: str) -> dashboard.Dashboard:
    return (
        dashboard.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(["dotshop"])
        .timezone("utc")
        .time("now-6h", "now")
        .refresh("1m")
        .with_variable(
            dashboard.DatasourceVariable("datasource").label("Prometheus").type("prometheus")
        )
    )


def _quantiles(bucket: str, by: str, legend: str) -> list[tuple[str, str]]:
    return [
        (
            f"histogram_quantile({q}, sum by (le, {by}) (rate({bucket}[{RATE}])))",
            f"p{round(q * 100)} {legend}",
        )
        for q in QUANTILES
    ]


def checkout() -> dashboard.Dashboard:
    """Per region RED of the checkout API, the SLIs the burn-rate alerts use, and outcomes."""
    region = (
        dashboard.QueryVariable("region")
        .label("Region")
        .datasource(DATASOURCE)
        .query("label_values(dotshop_http_requests_total, region)")
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        .allow_custom_value(False)
    )
    return (
        _dashboard(
            "dotshop-checkout",
            "dotshop / Checkout",
            "Checkout API per region: request rate, errors, latency, outcomes. "
            "Runbooks: dashboards/runbooks/checkout_availability.md, checkout_latency.md.",
        )
        .with_variable(region)
        .with_row(dashboard.Row("SLIs (POST /v1/checkouts)"))
        .with_panel(
            _stat(
                "Availability, 1h",
                "Share of checkouts answered without a 5xx (recorded SLI; objective 99.9%).",
                "percentunit",
                [
                    (
                        'region:dotshop_checkout_availability:ratio_rate1h{region=~"$region"}',
                        "{{region}}",
                    )
                ],
                width=12,
            )
        )
        .with_panel(
            _stat(
                "Under 1 s, 1h",
                "Share of checkouts answered within 1 second (recorded SLI).",
                "percentunit",
                [
                    (
                        'region:dotshop_checkout_under_1s:ratio_rate1h{region=~"$region"}',
                        "{{region}}",
                    )
                ],
                width=12,
            )
        )
        .with_panel(
            _timeseries(
                "Availability and latency SLIs, 5m",
                "The 5-minute recorded SLIs the fast-burn alerts compare with the objective.",
                "percentunit",
                [
                    (
                        'region:dotshop_checkout_availability:ratio_rate5m{region=~"$region"}',
                        "available {{region}}",
                    ),
                    (
                        'region:dotshop_checkout_under_1s:ratio_rate5m{region=~"$region"}',
                        "under 1 s {{region}}",
                    ),
                ],
                width=24,
            )
        )
        .with_row(dashboard.Row("Requests, errors, duration"))
        .with_panel(
            _timeseries(
                "Request rate by route",
                "Requests per second per route template and region.",
                "reqps",
                [
                    (
                        f"sum by (region, route) (rate(dotshop_http_requests_total{{{API}}}"
                        f"[{RATE}]))",
                        "{{region}} {{route}}",
                    )
                ],
            )
        )
        .with_panel(
            _timeseries(
                "5xx ratio by route",
                "Share of requests answered with a 5xx, per route template and region.",
                "percentunit",
                [
                    (
                        f"sum by (region, route) (rate(dotshop_http_requests_total"
                        f'{{{API}, status=~"5.."}}[{RATE}]))'
                        f" / sum by (region, route) (rate(dotshop_http_requests_total{{{API}}}"
                        f"[{RATE}]))",
                        "{{region}} {{route}}",
                    )
                ],
            )
        )
        .with_panel(
            _timeseries(
                "Checkout latency p50 / p95 / p99",
                "POST /v1/checkouts duration quantiles from the histogram, per region.",
                "s",
                _quantiles(
                    f"dotshop_http_request_duration_seconds_bucket{{{CHECKOUT}}}",
                    "region",
                    "{{region}}",
                ),
            )
        )
        .with_panel(
            _timeseries(
                "p99 latency by route",
                "Slowest routes first to look at when the checkout is slow.",
                "s",
                [
                    (
                        f"histogram_quantile(0.99, sum by (le, region, route) (rate("
                        f"dotshop_http_request_duration_seconds_bucket{{{API}}}[{RATE}])))",
                        "{{region}} {{route}}",
                    )
                ],
            )
        )
        .with_row(dashboard.Row("Outcomes"))
        .with_panel(
            _timeseries(
                "Checkout outcomes by reason",
                "Checkout attempts per second by outcome (created, insufficient_stock, "
                "unknown_sku, replayed, provider_unavailable, ...).",
                "reqps",
                [
                    (
                        f"sum by (region, outcome) (rate(dotshop_checkouts_total{{{IN_REGION}}}"
                        f"[{RATE}]))",
                        "{{region}} {{outcome}}",
                    )
                ],
                width=24,
            )
        )
    )


def sync() -> dashboard.Dashboard:
    """Shopify sync lag per direction, the outbox that carries pushes, and Shopify throttling."""
    return (
        _dashboard(
            "dotshop-sync",
            "dotshop / Sync",
            "Shopify sync lag per direction, outbox depth and dead letters, Shopify rate limit. "
            "Runbooks: dashboards/runbooks/sync_lag.md, stuck_outbox.md, dead_letters.md, "
            "shopify_throttled.md.",
        )
        .with_row(dashboard.Row("Sync lag"))
        .with_panel(
            _timeseries(
                "Sync lag p50 / p95 / p99 by direction",
                "inbound: Shopify's change to our apply; outbound: the paid order to Shopify's "
                "acknowledgement.",
                "s",
                _quantiles("dotshop_sync_lag_seconds_bucket", "direction", "{{direction}}"),
            )
        )
        .with_panel(
            _timeseries(
                "Syncs within the lag objective, 30m",
                "Recorded SLI: inbound within 5 minutes, outbound within 15 minutes.",
                "percentunit",
                [("direction:dotshop_sync_lag_within_slo:ratio_rate30m", "{{direction}}")],
            )
        )
        .with_panel(
            _stat(
                "Oldest unacknowledged paid order",
                "Age of the oldest paid order Shopify has not acknowledged (objective 15 min).",
                "s",
                [("max(dotshop_sync_outbound_oldest_unacknowledged_seconds)", "age")],
                red_at=900,
                width=24,
            )
        )
        .with_row(dashboard.Row("Outbox"))
        .with_panel(
            _stat(
                "Pending",
                "Outbox messages waiting for delivery, all topics.",
                "none",
                [("sum(max by (topic) (dotshop_outbox_pending))", "pending")],
                width=8,
            )
        )
        .with_panel(
            _stat(
                "Oldest pending age",
                "Age of the oldest undelivered outbox message.",
                "s",
                [("max(dotshop_outbox_oldest_pending_age_seconds)", "age")],
                red_at=900,
                width=8,
            )
        )
        .with_panel(
            _stat(
                "Dead letters",
                "Dead-lettered messages, all topics: `dotshop outbox list` shows them.",
                "none",
                [("sum(max by (topic) (dotshop_outbox_dead))", "dead")],
                red_at=1,
                width=8,
            )
        )
        .with_panel(
            _timeseries(
                "Outbox depth per topic",
                "Pending and dead-lettered messages over time, per topic.",
                "none",
                [
                    ("max by (topic) (dotshop_outbox_pending)", "{{topic}} pending"),
                    ("max by (topic) (dotshop_outbox_dead)", "{{topic}} dead"),
                ],
            )
        )
        .with_panel(
            _timeseries(
                "Oldest pending age per topic",
                "A rising line is a stuck ordering key or a relay that stopped.",
                "s",
                [("max by (topic) (dotshop_outbox_oldest_pending_age_seconds)", "{{topic}}")],
            )
        )
        .with_row(dashboard.Row("Shopify rate limit"))
        .with_panel(
            _timeseries(
                "Shopify THROTTLED answers",
                "GraphQL Admin API calls Shopify answered THROTTLED, per second (each waited "
                "out and retried).",
                "reqps",
                [(f"sum(rate(dotshop_shopify_throttled_total[{RATE}]))", "throttled")],
            )
        )
        .with_panel(
            _timeseries(
                "Shopify call-limit headroom",
                "Query cost points left in Shopify's GraphQL bucket at the last answer, and the "
                "bucket's size (throttleStatus), as the sync and relay processes saw them.",
                "none",
                [
                    ("max by (shop) (dotshop_shopify_call_limit_available_points)", "available"),
                    ("max by (shop) (dotshop_shopify_call_limit_maximum_points)", "maximum"),
                ],
            )
        )
    )


def payments() -> dashboard.Dashboard:
    """Reconciliation violations and the money they hold, payment, refund and dispute events."""
    events = "dotshop_payment_events_total"
    return (
        _dashboard(
            "dotshop-payments",
            "dotshop / Payments",
            "Reconciliation: open violations and money at stake per check, Stripe payment, "
            "refund and dispute events. Runbooks: dashboards/runbooks/unreconciled_payment.md, "
            "payout_mismatch.md, ledger_imbalance.md, order_flag.md.",
        )
        .with_row(dashboard.Row("Reconciliation"))
        .with_panel(
            _stat(
                "Unreconciled payments",
                "Open unreconciled_payment violations: Stripe and our ledger disagree.",
                "none",
                [('check:dotshop_violations_open:max{check="unreconciled_payment"}', "open")],
                red_at=1,
            )
        )
        .with_panel(
            _stat(
                "Unreconciled money",
                "Money at stake in open unreconciled_payment violations, per currency "
                "(major units).",
                "none",
                [
                    (
                        'check_currency:dotshop_violation_amount:max{check="unreconciled_payment"}',
                        "{{currency}}",
                    )
                ],
                red_at=0.01,
                width=18,
            )
        )
        .with_panel(
            _timeseries(
                "Open violations per check",
                "Open violations of the money checks (recorded per check).",
                "none",
                [(f'check:dotshop_violations_open:max{{check=~"{MONEY_CHECKS}"}}', "{{check}}")],
            )
        )
        .with_panel(
            _timeseries(
                "Money at stake per check",
                "Money held by open violations, per check and currency (major units).",
                "none",
                [
                    (
                        f'check_currency:dotshop_violation_amount:max{{check=~"{MONEY_CHECKS}"}}',
                        "{{check}} {{currency}}",
                    )
                ],
            )
        )
        .with_panel(
            _timeseries(
                "Payments at the last reconciliation",
                "PaymentIntents that matched our books, and payments (or paid orders) that did "
                "not, per currency, as the unreconciled_payment check counted them.",
                "none",
                [
                    (
                        "max by (currency, status) (dotshop_reconciliation_payments)",
                        "{{currency}} {{status}}",
                    )
                ],
                width=24,
            )
        )
        .with_row(dashboard.Row("Stripe events"))
        .with_panel(
            _timeseries(
                "Payment outcomes",
                "payment_intent events applied per second, by type and result.",
                "ops",
                [
                    (
                        f'sum by (type, result) (rate({events}{{type=~"payment_intent\\\\..*"}}'
                        f"[{RATE}]))",
                        "{{type}} {{result}}",
                    )
                ],
            )
        )
        .with_panel(
            _timeseries(
                "Events not applied",
                "Events flagged (waiting for a fact), duplicate, ignored or abandoned: "
                "a dropped or duplicated payment shows here first.",
                "ops",
                [
                    (
                        f'sum by (type, result) (rate({events}{{result!="applied"}}[{RATE}]))',
                        "{{type}} {{result}}",
                    )
                ],
            )
        )
        .with_panel(
            _timeseries(
                "Refunds",
                "Refund events per second, by type and result.",
                "ops",
                [
                    (
                        f'sum by (type, result) (rate({events}{{type=~"(charge\\\\.)?refund'
                        f'(ed|\\\\..*)"}}[{RATE}]))',
                        "{{type}} {{result}}",
                    )
                ],
            )
        )
        .with_panel(
            _timeseries(
                "Disputes",
                "Dispute events per second, by type and result.",
                "ops",
                [
                    (
                        f'sum by (type, result) (rate({events}{{type=~"charge\\\\.dispute\\\\..*"}}'
                        f"[{RATE}]))",
                        "{{type}} {{result}}",
                    )
                ],
            )
        )
        .with_row(dashboard.Row("Business alerts"))
        .with_panel(
            _timeseries(
                "Alert notifications",
                "Business alert notifications per sink and outcome; failed means nobody was told.",
                "ops",
                [
                    (
                        f"sum by (sink, outcome) (rate(dotshop_alert_notifications_total[{RATE}]))",
                        "{{sink}} {{outcome}}",
                    )
                ],
                width=24,
            )
        )
    )


def inventory() -> dashboard.Dashboard:
    """Stock held and committed, live holds, and the oversell and drift violations."""
    return (
        _dashboard(
            "dotshop-inventory",
            "dotshop / Inventory",
            "Oversell risk, drift with Shopify, holds. Runbooks: dashboards/runbooks/oversell.md, "
            "inventory_drift.md.",
        )
        .with_row(dashboard.Row("Violations"))
        .with_panel(
            _stat(
                "Oversell",
                "Open oversell violations: more units sold than we had.",
                "none",
                [('check:dotshop_violations_open:max{check="oversell"}', "open")],
                red_at=1,
                width=12,
            )
        )
        .with_panel(
            _stat(
                "Drift",
                "Open inventory_drift violations: our stock and Shopify's disagree.",
                "none",
                [('check:dotshop_violations_open:max{check="inventory_drift"}', "open")],
                red_at=1,
                width=12,
            )
        )
        .with_panel(
            _timeseries(
                "Money at stake",
                "Money held by open oversell and drift violations, per currency (major units).",
                "none",
                [
                    (
                        f'check_currency:dotshop_violation_amount:max{{check=~"{STOCK_CHECKS}"}}',
                        "{{check}} {{currency}}",
                    )
                ],
            )
        )
        .with_panel(
            _timeseries(
                "Open violations over time",
                "Oversell and drift violations per check.",
                "none",
                [(f'check:dotshop_violations_open:max{{check=~"{STOCK_CHECKS}"}}', "{{check}}")],
            )
        )
        .with_row(dashboard.Row("Stock"))
        .with_panel(
            _timeseries(
                "Sellable, reserved and committed units",
                "Summed over every SKU. sellable: what we can still sell; reserved: held by live "
                "checkouts; committed: paid, not yet acknowledged by Shopify.",
                "none",
                [
                    ("max(dotshop_sellable_units)", "sellable"),
                    ("max(dotshop_reserved_units)", "reserved"),
                    ("max(dotshop_committed_units)", "committed"),
                ],
            )
        )
        .with_panel(
            _timeseries(
                "Units per SKU class",
                "Sellable, reserved and committed units per product category.",
                "none",
                [("max by (category, state) (dotshop_stock_units)", "{{category}} {{state}}")],
            )
        )
        .with_panel(
            _timeseries(
                "Holds and sold-out SKUs",
                "Reservations in status held (live checkouts holding stock), and SKUs with "
                "nothing left to sell.",
                "none",
                [
                    ("max(dotshop_active_reservations)", "holds"),
                    ("max(dotshop_sold_out_skus)", "sold out"),
                ],
            )
        )
    )


DASHBOARDS: dict[str, Callable[[], dashboard.Dashboard]] = {
    "checkout": checkout,
    "sync": sync,
    "payments": payments,
    "inventory": inventory,
}


def render(builder: dashboard.Dashboard) -> str:
    """The dashboard's JSON as committed: sorted keys, fixed panel ids, trailing newline."""
    built = builder.build()
    for number, panel in enumerate(built.panels or [], start=1):
        panel.id_val = number
    return json.dumps(built, cls=JSONEncoder, sort_keys=True, indent=2) + "\n"


def build(out_dir: Path = DEFAULT_OUT) -> list[Path]:
    """Write every dashboard into `out_dir` and return the files written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, make in DASHBOARDS.items():
        path = out_dir / f"{name}.json"
        path.write_text(render(make()))
        written.append(path)
    return written


def stale(out_dir: Path = DEFAULT_OUT) -> list[Path]:
    """The dashboard files in `out_dir` that are missing or differ from a fresh build."""
    paths = [(out_dir / f"{name}.json", make) for name, make in DASHBOARDS.items()]
    return [p for p, make in paths if not p.is_file() or p.read_text() != render(make())]
