"""Inventory & sync: per SKU what is sellable, held, committed and what Shopify has, drift in
red; the Shopify sync's lag per direction over time, its oldest unacknowledged push and its
last full repair."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd
import streamlit as st

from console import charts, data, fmt, paging
from core import stock_report
from core.errors import DotshopError

CACHE_SECONDS = 15
PAGE_ROWS = 200
# Lag chart windows, each with a bucket that keeps it to a readable number of points.
WINDOWS = {
    "last hour": (timedelta(hours=1), timedelta(minutes=1)),
    "last 6 hours": (timedelta(hours=6), timedelta(minutes=5)),
    "last 24 hours": (timedelta(hours=24), timedelta(minutes=20)),
}
STOCK_COLUMNS = [
    "sku",
    "product_title",
    "sellable",
    "shopify_available",
    "reserved",
    "committed",
    "shopify_level",
    "drift",
    "drift_violation_since",
    "drift_violation_difference",
    "shortfall_since",
    "last_inbound_at",
    "last_outbound_at",
    "drifting",
]

st.title("Inventory & sync")


@st.cache_data(ttl=CACHE_SECONDS, show_spinner=False)
def _stock(drift_only: bool, prefix: str | None, after: str | None) -> tuple[list, bool]:
    settings = data.settings()
    return data.read(
        stock_report.stock_rows,
        drift_only=drift_only,
        sku_prefix=prefix,
        limit=PAGE_ROWS,
        starting_after=after,
        tolerance=settings.drift_tolerance,
        locations=settings.selling_locations,
    )


@st.cache_data(ttl=CACHE_SECONDS, show_spinner=False)
def _health() -> stock_report.SyncHealth:
    return data.read(stock_report.sync_health)


@st.cache_data(ttl=CACHE_SECONDS, show_spinner=False)
def _lag(window: str) -> list[stock_report.LagPoint]:
    span, bucket = WINDOWS[window]
    since = datetime.now(UTC).replace(second=0, microsecond=0) - span
    return data.read(stock_report.lag_series, since=since, bucket=bucket)


health = _health()
a, b, c, d = st.columns(4)
a.metric("Oldest unacknowledged push", f"{health.oldest_unacknowledged_seconds:.0f} s")
b.metric(
    "Last full repair",
    health.last_repair_at.strftime("%m-%d %H:%M UTC") if health.last_repair_at else "never",
    help=f"mode: {health.last_repair_mode}" if health.last_repair_mode else None,
)
recent = {lag.direction: lag for lag in health.recent}
for column, direction in ((c, "inbound"), (d, "outbound")):
    lag = recent.get(direction)
    column.metric(
        f"{direction.capitalize()} lag p50 / p99 (last hour)",
        f"{lag.p50_seconds:.2f} / {lag.p99_seconds:.2f} s" if lag else "no samples",
    )

st.subheader("Sync lag")
window = st.segmented_control("Window", list(WINDOWS), default="last 6 hours", key="lag_window")
points = _lag(window or "last 6 hours")
if not points:
    st.caption("No sync in this window.")
else:
    lag = fmt.frame(points)
    for column, direction in zip(st.columns(2), ("inbound", "outbound"), strict=True):
        one = lag[lag["direction"] == direction]
        column.markdown(f"**{direction.capitalize()}** (seconds)")
        if one.empty:
            column.caption("no samples")
            continue
        column.altair_chart(charts.lag_percentiles(one), width="stretch")

st.subheader("Stock per SKU")
left, right = st.columns([1, 2])
drift_only = left.toggle("Drift only", key="stock_drift_only")
prefix = right.text_input("SKU starts with", key="stock_prefix").strip() or None
after = paging.cursor("stock", (drift_only, prefix))
try:
    rows, more = _stock(drift_only, prefix, after)
except DotshopError as exc:
    st.error(exc.message)
    st.stop()
if not rows:
    st.info("No SKU matches." if (drift_only or prefix) else "No SKU yet.")
else:
    table = pd.DataFrame([{**vars(r), "drifting": r.drifting} for r in rows], columns=STOCK_COLUMNS)
    drifting = int(table["drifting"].sum())
    st.caption(f"{len(rows)} SKU(s) on this page, {drifting} drifting (in red)")
    fmt.show(table, key="stock", highlight="drifting")
    paging.controls("stock", rows, more, lambda r: r.sku)
