"""Reconciliation, for finance: per day and currency what was sold, given back, disputed and
paid in fees, and how many payments matched Stripe; the payments that do not reconcile, each
with its Stripe objects and ledger entries side by side; and the payouts, each with what it is
made of and whether our books hold it (the view that ties a bank line to orders)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pandas as pd
import streamlit as st

from console import charts, data, fmt, paging
from core import finance
from core.errors import DotshopError
from core.settings import REGIONS

# A month of day rows reads every ledger entry of the month: a week by default, cached briefly
# (a payment shows within this long of being booked).
CACHE_SECONDS = 15
DEFAULT_DAYS = 7
PAGE_ROWS = 100
DAY_MONEY = {
    c: "currency"
    for c in (
        "gross_minor",
        "refunds_minor",
        "disputes_minor",
        "fees_minor",
        "net_minor",
        "converted_minor",
        "matched_minor",
        "unreconciled_minor",
    )
}

st.title("Reconciliation")


@st.cache_data(ttl=CACHE_SECONDS, show_spinner=False)
def _days(start: date, end: date, region: str | None, currency: str | None) -> list:
    return data.read(finance.daily_summary, start=start, end=end, region=region, currency=currency)


@st.cache_data(ttl=CACHE_SECONDS, show_spinner=False)
def _unreconciled(region: str | None, currency: str | None, after: str | None) -> tuple:
    return data.read(
        finance.unreconciled,
        region=region,
        currency=currency,
        limit=PAGE_ROWS,
        starting_after=after,
    )


@st.cache_data(ttl=CACHE_SECONDS, show_spinner=False)
def _detail(subject: str) -> finance.PaymentDetail | None:
    return data.read(finance.payment_detail, subject)


@st.cache_data(ttl=CACHE_SECONDS, show_spinner=False)
def _payouts(start: date, end: date, currency: str | None, after: str | None) -> tuple:
    return data.read(
        finance.payouts,
        start=start,
        end=end,
        currency=currency,
        limit=PAGE_ROWS,
        starting_after=after,
    )


@st.cache_data(ttl=CACHE_SECONDS, show_spinner=False)
def _payout_lines(payout_id: str) -> list[finance.PayoutLine]:
    return data.read(finance.payout_lines, payout_id)


today = datetime.now(UTC).date()
left, middle, right = st.columns([2, 1, 1])
picked = left.date_input(
    "Days (UTC)", (today - timedelta(days=DEFAULT_DAYS - 1), today), key="rec_days"
)
start, end = (picked[0], picked[-1]) if isinstance(picked, tuple) and picked else (today, today)
region = middle.selectbox("Region", sorted(REGIONS), index=None, key="rec_region")
currencies = sorted({r["currency"] for r in REGIONS.values()} | {"usd"})
currency = right.selectbox("Currency", currencies, index=None, key="rec_currency")

days_tab, open_tab, detail_tab, payouts_tab = st.tabs(
    ["Per day", "Unreconciled", "Payment drill-down", "Payouts"]
)

with days_tab:
    try:
        days = _days(start, end, region, currency)
    except DotshopError as exc:
        st.error(exc.message)
        days = []
    if not days:
        st.info("No money moved in these days.")
    else:
        table = fmt.frame(days)
        counts = ["payments", "matched", "unreconciled"]
        totals = table.groupby("currency")[[*DAY_MONEY, *counts]].sum().reset_index()
        for column, (_, t) in zip(st.columns(len(totals)), totals.iterrows(), strict=True):
            cur = str(t["currency"])
            with column.container(border=True):
                st.markdown(f"**{cur.upper()}**")
                st.metric("Net", fmt.money(int(t["net_minor"]), cur))
                st.caption(
                    f"gross {fmt.money(int(t['gross_minor']), cur)} · "
                    f"refunds {fmt.money(int(t['refunds_minor']), cur)} · "
                    f"disputes {fmt.money(int(t['disputes_minor']), cur)} · "
                    f"fees {fmt.money(int(t['fees_minor']), cur)}"
                )
                st.caption(
                    f"{int(t['matched'])} of {int(t['payments'])} payments matched · "
                    f"{int(t['unreconciled'])} unreconciled "
                    f"({fmt.money(int(t['unreconciled_minor']), cur)})"
                )
        chart = pd.DataFrame(
            {
                "day": table["day"].astype(str),
                "currency": table["currency"].str.upper(),
                "net": fmt.majors(table["net_minor"], table["currency"]),
            }
        )
        st.altair_chart(charts.net_per_day(chart), width="stretch")
        fmt.show(table, key="days", money_columns=DAY_MONEY)

with open_tab:
    after = paging.cursor("unreconciled", (region, currency))
    rows, more = _unreconciled(region, currency, after)
    if not rows:
        st.success("Every payment reconciles.")
    else:
        st.caption(f"{len(rows)} payment(s) that do not reconcile, oldest first")
        shown = fmt.frame(rows).drop(columns=["evidence"])
        fmt.show(shown, key="unreconciled", money_columns={"amount_minor": "currency"})
        paging.controls("unreconciled", rows, more, lambda r: r.id)

with detail_tab:
    choices = [r.subject for r in rows] if rows else []
    pick, typed = st.columns(2)
    chosen_open = pick.selectbox("An unreconciled payment", choices, index=None, key="rec_pick")
    typed_id = typed.text_input("or any PaymentIntent / order id", key="rec_subject").strip()
    subject = typed_id or chosen_open
    if subject:
        try:
            detail = _detail(subject)
        except DotshopError as exc:
            st.error(exc.message)
            detail = None
        if detail is None:
            st.info(f"Nothing is known about {subject}.")
        else:
            if detail.order:
                o = detail.order
                st.markdown(
                    f"**Order {o.id}** ({o.region}, {o.status}): "
                    f"{fmt.money(o.amount_minor, o.currency)}, refunded "
                    f"{fmt.money(o.refunded_minor, o.currency)} · {o.email}"
                )
            for v in detail.violations:
                st.warning(f"{v.reason}: {fmt.money(v.amount_minor, v.currency)} at stake")
            stripe_side, ledger_side = st.columns(2)
            with stripe_side:
                st.markdown("**Stripe**")
                for title, objects in (
                    ("PaymentIntents", detail.payments),
                    ("Refunds", detail.stripe_refunds),
                    ("Disputes", detail.disputes),
                    ("Balance transactions", detail.balance_txns),
                ):
                    if objects:
                        st.caption(title)
                        fmt.show(fmt.frame(objects), key=f"detail-{title.lower()}")
            with ledger_side:
                st.markdown("**Our ledger**")
                entries = [
                    {
                        "source": t.source,
                        "kind": t.kind,
                        "occurred_at": t.occurred_at,
                        "account": p.account,
                        "amount_minor": p.amount_minor,
                        "currency": p.currency,
                    }
                    for t in detail.transactions
                    for p in t.postings
                ]
                if entries:
                    fmt.show(
                        fmt.frame(entries),
                        key="detail-ledger",
                        money_columns={"amount_minor": "currency"},
                    )
                else:
                    st.caption("Nothing booked.")
                if detail.refunds:
                    st.caption("Our refunds")
                    fmt.show(fmt.frame(detail.refunds), key="detail-refunds")

with payouts_tab:
    after = paging.cursor("payouts", (start, end, currency))
    payouts, more = _payouts(start, end, currency, after)
    if not payouts:
        st.info("No payout in these days.")
    else:
        listed = fmt.frame(payouts).drop(columns=["categories"])
        listed["mismatched"] = listed["verification"] == finance.MISMATCHED
        fmt.show(
            listed,
            key="payouts",
            money_columns={
                "amount_minor": "currency",
                "stripe_total_minor": "currency",
                "ledger_total_minor": "currency",
                "difference_minor": "currency",
            },
            highlight="mismatched",
        )
        paging.controls("payouts", payouts, more, lambda p: p.id)
        by_id = {p.id: p for p in payouts}
        chosen = st.selectbox("Payout", list(by_id), index=0, key="rec_payout")
        payout = by_id[chosen]
        st.markdown(
            f"**{payout.id}**: {fmt.money(payout.amount_minor, payout.currency)}, {payout.status}, "
            f"verification **{payout.verification}**"
        )
        if payout.categories:
            parts = fmt.frame(payout.categories).assign(currency=payout.currency)
            fmt.show(
                parts,
                key="payout-categories",
                money_columns={
                    "stripe_minor": "currency",
                    "ledger_minor": "currency",
                    "difference_minor": "currency",
                },
            )
        lines = _payout_lines(chosen)
        if lines:
            st.caption("What the bank line pays, transaction by transaction")
            fmt.show(
                fmt.frame(lines),
                key="payout-lines",
                money_columns={
                    "net_minor": "currency",
                    "amount_minor": "currency",
                    "fee_minor": "currency",
                },
            )
