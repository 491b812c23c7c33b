"""Outbox: side effects waiting, failing or dead-lettered, by topic and key, with the last error;
retry or discard a dead letter (confirmed, with a reason, audit-logged under the operator)."""

from __future__ import annotations

import streamlit as st

from console import auth, data, flash, fmt
from core import operator_actions, operators, outbox_report
from core.errors import DotshopError

STATUSES = ("dead", "failing", "pending", "discarded")
CACHE_SECONDS = 5

st.title("Outbox")
operator = auth.signed_in()
flash.show()


@st.cache_data(ttl=CACHE_SECONDS, show_spinner=False)
def _summary() -> list[outbox_report.TopicSummary]:
    return data.read(outbox_report.summary)


@st.cache_data(ttl=CACHE_SECONDS, show_spinner=False)
def _messages(status: str, topic: str | None, key_prefix: str | None) -> tuple[list, bool]:
    return data.read(
        outbox_report.messages, status=status, topic=topic, key_prefix=key_prefix, limit=500
    )


summary = _summary()
if summary:
    fmt.show(fmt.frame(summary), key="outbox-topics")
else:
    st.info("The outbox is empty.")

left, middle, right = st.columns(3)
status = left.selectbox("Status", STATUSES, key="outbox_status")
topic = middle.selectbox("Topic", [s.topic for s in summary], index=None, key="outbox_topic")
key_prefix = right.text_input("Ordering key starts with", key="outbox_key").strip() or None
try:
    messages, more = _messages(status, topic, key_prefix)
except DotshopError as exc:
    st.error(exc.message)
    st.stop()
st.caption(f"{len(messages)} {status} message(s){' (first 500)' if more else ''}")
if messages:
    fmt.show(fmt.frame(messages), key="outbox-messages")

if status != "dead" or not messages:
    st.stop()
st.subheader("Act on a dead letter")
if not operators.may(operator, "outbox.retry"):
    st.caption(f"The {operator.role} role can look, not act: retry and discard need on-call.")
    st.stop()
with st.form("outbox_action"):
    target = st.selectbox("Message", [m.id for m in messages], key="outbox_target")
    action = st.radio("Action", ["retry", "discard"], horizontal=True, key="outbox_action")
    reason = st.text_input("Reason (required to discard)", key="outbox_reason")
    confirmed = st.checkbox("I have read the last error and want to do this", key="outbox_ok")
    submitted = st.form_submit_button("Apply")
if submitted:
    if not confirmed:
        st.warning("Tick the confirmation first.")
        st.stop()
    try:
        if action == "retry":
            done = data.act(operator_actions.retry_message, operator, target, reason or None)
        else:
            done = data.act(operator_actions.discard_message, operator, target, reason)
    except DotshopError as exc:
        st.error(exc.message)
    else:
        if done:
            flash.after_rerun(
                "success", f"{target}: {action} recorded in the audit log as {operator.name}."
            )
        flash.after_rerun("warning", f"{target} is no longer dead (someone acted on it already).")
