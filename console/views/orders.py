"""Orders: find an order by its id, checkout, PaymentIntent, the customer's e-mail or a SKU it
bought; its whole timeline (events, ledger, outbox messages, webhooks, refunds, operators'
actions) is the audit trail."""

from __future__ import annotations

import json

import streamlit as st

from console import data, fmt, paging
from core import order_search
from core.errors import DotshopError

CACHE_SECONDS = 10
PAGE_ROWS = 50
SOURCE_ICONS = {
    "event": ":material/flag:",
    "ledger": ":material/account_balance:",
    "outbox": ":material/outbox:",
    "webhook": ":material/webhook:",
    "refund": ":material/undo:",
    "audit": ":material/person:",
}

st.title("Orders")


@st.cache_data(ttl=CACHE_SECONDS, show_spinner=False)
def _search(query: str, after: str | None) -> tuple[list[order_search.OrderHit], bool]:
    return data.read(order_search.search, query, limit=PAGE_ROWS, starting_after=after)


@st.cache_data(ttl=CACHE_SECONDS, show_spinner=False)
def _timeline(order_id: str) -> order_search.OrderTimeline | None:
    return data.read(order_search.timeline, order_id)


query = st.text_input(
    "Search", key="orders_query", placeholder="ord_…, chk_…, pi_…, an e-mail address or a SKU"
).strip()
if not query:
    st.caption("Search by order, checkout, PaymentIntent, customer e-mail or SKU.")
    st.stop()
after = paging.cursor("orders", query)
try:
    hits, more = _search(query, after)
except DotshopError as exc:
    st.error(exc.message)
    st.stop()
if not hits:
    st.info(f"No order matches {query!r}.")
    st.stop()
st.caption(f"{len(hits)} order(s), newest first, matched by {hits[0].matched_by}")
fmt.show(
    fmt.frame(hits),
    key="orders",
    money_columns={"amount": "currency", "refunded": "currency"},
)
paging.controls("orders", hits, more, lambda h: h.id)

chosen = st.selectbox(
    "Order", [h.id for h in hits], index=0 if len(hits) == 1 else None, key="orders_pick"
)
if not chosen:
    st.stop()
order = _timeline(chosen)
if order is None:
    st.warning(f"{chosen} is gone.")
    st.stop()
st.subheader(f"{order.id} · {order.status}")
a, b, c, d = st.columns(4)
a.metric("Amount", fmt.money(order.amount, order.currency))
b.metric("Refunded", fmt.money(order.refunded, order.currency))
c.metric("Region", order.region)
d.metric("Shopify order", str(order.shopify_order_id or "not yet"))
st.caption(
    f"{order.email} · checkout {order.checkout_id} · PaymentIntent {order.payment_intent_id} · "
    f"created {order.created_at:%Y-%m-%d %H:%M:%S} UTC"
)
if order.lines:
    lines = fmt.frame(order.lines).assign(currency=order.currency)
    fmt.show(lines, key="order-lines", money_columns={"unit_price_minor": "currency"})

st.subheader("Timeline")
trail = [
    {
        "at": e.at,
        "source": e.source,
        "kind": e.kind,
        "detail": json.dumps(e.detail, sort_keys=True, default=str),
    }
    for e in order.entries
]
fmt.show(fmt.frame(trail), key="order-timeline")
with st.expander("Read the timeline entry by entry"):
    for e in order.entries:
        icon = SOURCE_ICONS.get(e.source, "")
        st.markdown(f"{icon} `{e.at:%H:%M:%S.%f}` **{e.source}** {e.kind}")
        st.json(e.detail, expanded=False)
