"""Alerts & runbooks: every violation the checks recorded, acknowledging one, and the runbook
of each check rendered in place."""

from __future__ import annotations

import streamlit as st

from console import auth, data, flash, fmt, paging, runbooks
from core import operator_actions, operators, violations
from core.errors import DotshopError

PAGE_SIZES = (50, 200, 1000)

st.title("Alerts & runbooks")
operator = auth.signed_in()
names = sorted(runbooks.registry())
flash.show()

left, middle, right = st.columns(3)
status = left.selectbox("Status", ["open", "resolved", "all"], key="alerts_status")
chosen = middle.multiselect("Checks", names, key="alerts_checks")
limit = right.selectbox("Rows", PAGE_SIZES, key="alerts_limit")

after = paging.cursor("violations", (status, tuple(chosen), limit))
fetched = data.read(
    violations.listing,
    status=None if status == "all" else status,
    checks=chosen or None,
    limit=limit + 1,  # one more than shown: whether a next page exists
    starting_after=after,
)
history, more = fetched[:limit], len(fetched) > limit
rows = [
    {
        "id": v.id,
        "check": v.check_name,
        "subject": v.subject,
        "amount_minor": v.amount_minor,
        "currency": v.currency,
        "first_seen": v.first_seen,
        "last_seen": v.last_seen,
        "resolved_at": v.resolved_at,
        "acknowledged_by": v.acknowledged_by,
    }
    for v in history
]
st.caption(f"{len(rows)} violation(s), newest first")
if rows:
    fmt.show(fmt.frame(rows), key="violations", money_columns={"amount_minor": "currency"})
    paging.controls("violations", history, more, lambda v: v.id)

by_id = {v.id: v for v in history}
picked = st.selectbox("Violation", list(by_id), index=None, key="alerts_pick")
if picked:
    v = by_id[picked]
    st.markdown(f"**{v.check_name}** on `{v.subject}`: {fmt.money(v.amount_minor, v.currency)}")
    st.json(v.evidence, expanded=False)
    if v.resolved_at is None and v.acknowledged_at is None:
        if operators.may(operator, "violation.acknowledge"):
            if st.button("Acknowledge", key="alerts_ack"):
                try:
                    done = data.act(operator_actions.acknowledge_violation, operator, v.id)
                except DotshopError as exc:
                    st.error(exc.message)
                else:
                    if done:
                        flash.after_rerun("success", f"{v.id} acknowledged by {operator.name}.")
                    flash.after_rerun("warning", f"{v.id} was resolved or acknowledged meanwhile.")
        else:
            st.caption(f"The {operator.role} role cannot acknowledge violations.")
    elif v.acknowledged_by:
        st.caption(f"Acknowledged by {v.acknowledged_by} at {v.acknowledged_at}")

st.divider()
st.subheader("Runbook")
default = names.index(by_id[picked].check_name) if picked else 0
book = st.selectbox("Check", names, index=default, key="alerts_runbook")
st.markdown(runbooks.runbook(book))
