"""The console's charts (Altair, which Streamlit renders natively). Time axes are UTC, like
every time the console shows; single points get markers so a one-bucket series is visible."""

from __future__ import annotations

import altair as alt
import pandas as pd


def lag_percentiles(points: pd.DataFrame) -> alt.Chart:
    """p50/p95/p99 seconds per bucket of one direction (columns of core.stock_report.LagPoint)."""
    long = points.melt(
        id_vars=["bucket_start"],
        value_vars=["p50_seconds", "p95_seconds", "p99_seconds"],
        var_name="percentile",
        value_name="seconds",
    )
    long["percentile"] = long["percentile"].str.removesuffix("_seconds")
    return (
        alt.Chart(long)
        .mark_line(point=True)
        .encode(
            x=alt.X("utcyearmonthdatehoursminutes(bucket_start):T", title="UTC"),
            y=alt.Y("seconds:Q", title="seconds"),
            color=alt.Color("percentile:N", sort=["p50", "p95", "p99"]),
            tooltip=["bucket_start:T", "percentile:N", alt.Tooltip("seconds:Q", format=".2f")],
        )
    )


def net_per_day(days: pd.DataFrame) -> alt.Chart:
    """Net per UTC day, one bar per currency side by side (columns: day, currency, net)."""
    return (
        alt.Chart(days)
        .mark_bar()
        .encode(
            x=alt.X("day:N", title="day (UTC)"),
            xOffset="currency:N",
            y=alt.Y("net:Q", title="net (major units)"),
            color="currency:N",
            tooltip=["day:N", "currency:N", alt.Tooltip("net:Q", format=",.2f")],
        )
    )
