"""Overview: the three promises as traffic lights, the money open violations put at stake,
checkout traffic, and the last check run. Refreshes itself."""

from __future__ import annotations

import streamlit as st

from console import data, fmt
from core import overview, violations

REFRESH_SECONDS = 10
# Material icons ship with Streamlit: they render where no emoji font is installed.
LIGHTS = {
    overview.GREEN: ":green[:material/check_circle:]",
    overview.AMBER: ":orange[:material/help:]",
    overview.RED: ":red[:material/error:]",
}
MEANING = {
    overview.GREEN: "kept",
    overview.AMBER: "unknown: the checks have not run recently",
    overview.RED: "broken",
}
TOP_VIOLATIONS = 20

st.title("Overview")


@st.fragment(run_every=REFRESH_SECONDS)
def live() -> None:
    now = data.read(overview.overview)
    for column, promise in zip(st.columns(len(now.promises)), now.promises, strict=True):
        with column.container(border=True):
            st.subheader(f"{LIGHTS[promise.light]} {promise.name}")
            st.caption(f"{MEANING[promise.light]} · {promise.open_violations} open violation(s)")

    left, right = st.columns(2)
    with left.container(border=True):
        st.markdown("**Money at stake in open violations**")
        if not now.at_stake:
            st.write("None.")
        for stake in now.at_stake:
            st.metric(
                f"{stake.currency.upper()} ({stake.violations} violation(s))",
                fmt.money(stake.amount_minor, stake.currency),
            )
    with right.container(border=True):
        traffic = now.traffic
        st.markdown(f"**Checkout, last {traffic.window_minutes} minutes**")
        a, b, c = st.columns(3)
        a.metric("Checkouts / min", f"{traffic.per_minute:.1f}")
        b.metric("Error rate (5xx)", f"{traffic.error_rate:.1%}")
        c.metric("Refused (4xx)", traffic.refusals)

    run = now.last_run
    if run is None:
        st.warning("No check run yet: is `dotshop checks run` (part of `dotshop up`) running?")
    else:
        finished = run.finished_at.strftime("%Y-%m-%d %H:%M:%S UTC") if run.finished_at else "-"
        st.caption(f"Last check run {run.id}: **{run.status}**, finished {finished}")

    open_now = data.read(violations.listing, status=violations.OPEN, limit=TOP_VIOLATIONS)
    st.subheader("Open violations")
    if not open_now:
        st.success("No open violations.")
        return
    rows = [
        {
            "check": v.check_name,
            "subject": v.subject,
            "amount_minor": v.amount_minor,
            "currency": v.currency,
            "first_seen": v.first_seen,
            "acknowledged_by": v.acknowledged_by,
        }
        for v in open_now
    ]
    fmt.show(fmt.frame(rows), key="overview-open", money_columns={"amount_minor": "currency"})


live()
