"""The Inventory & sync, Orders and Outbox pages on the demo day: drift shown in red, the
orders found by every kind of key with their audit trail, the outbox by topic with the dead
letters on-call can act on and finance cannot."""

from __future__ import annotations

import pytest

from tests.console.demo import Demo
from tests.console.support import open_page
from tests.e2e.conftest import Stack

pytestmark = pytest.mark.slow


def test_inventory_shows_stock_drift_and_sync(console_env: dict, stack: Stack, demo: Demo) -> None:
    at = open_page("inventory", "finance")
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Inbound lag p50 / p99 (last hour)"].endswith(" s")
    table = at.dataframe[0].value
    skus = int(stack.scalar("SELECT count(*) FROM stock"))
    assert len(table) == min(skus, 200)
    paid = table[table["sku"] == demo.paid_sku].iloc[0]
    assert paid["sellable"] == paid["shopify_available"] - paid["reserved"] - paid["committed"]
    # The SKU Shopify changed behind our back is the one drifting, once the check saw it.
    at.toggle(key="stock_drift_only").set_value(True).run()
    drifting = at.dataframe[0].value
    assert demo.drift_sku in set(drifting["sku"]) and drifting["drifting"].all()
    at.text_input(key="stock_prefix").input("NO-SUCH-").run()
    assert [i.value for i in at.info] == ["No SKU matches."]


def test_orders_search_by_each_key_and_timeline(console_env: dict, demo: Demo) -> None:
    at = open_page("orders", "finance")
    for query, expected in (
        (demo.paid_order, "order_id"),
        (demo.payment_intent, "payment_intent_id"),
        (demo.paid_email.upper(), "email"),
        (demo.paid_sku, "sku"),
    ):
        at.text_input(key="orders_query").input(query).run()
        assert not at.exception
        hits = at.dataframe[0].value
        assert demo.paid_order in set(hits["id"]), query
        assert set(hits["matched_by"]) == {expected}
    at.text_input(key="orders_query").input(demo.refunded_order).run()
    assert at.subheader[0].value == f"{demo.refunded_order} · partially_refunded"
    trail = at.dataframe[2].value  # results, lines, timeline
    sources = set(trail["source"])
    assert {"event", "ledger", "outbox", "webhook", "refund"} <= sources
    assert list(trail["at"]) == sorted(trail["at"])
    at.text_input(key="orders_query").input("x" * 400).run()
    assert at.error and not at.exception


def test_outbox_by_topic_and_who_may_act(console_env: dict, stack: Stack, demo: Demo) -> None:
    finance = open_page("outbox", "finance")
    topics = finance.dataframe[0].value
    assert topics["dead"].sum() >= 1
    dead = finance.dataframe[1].value
    assert demo.dead_letter in set(dead["id"]) and set(dead["status"]) == {"dead"}
    assert any("can look, not act" in c.value for c in finance.caption)
    assert not finance.get("form")

    oncall = open_page("outbox", "oncall")
    oncall.selectbox(key="outbox_target").select(demo.dead_letter)
    oncall.radio(key="outbox_action").set_value("discard")
    oncall.checkbox(key="outbox_ok").check()
    apply = next(b for b in oncall.button if b.label == "Apply")
    apply.click().run()  # discarding needs a reason: refused, nothing changes
    assert [e.value for e in oncall.error] == ["a reason is required"]
    assert (
        stack.scalar("SELECT status FROM outbox WHERE public_id = :p", p=demo.dead_letter) == "dead"
    )
    oncall.text_input(key="outbox_reason").input("order cancelled by phone")
    next(b for b in oncall.button if b.label == "Apply").click().run()
    assert any("discard recorded in the audit log as oncall" in s.value for s in oncall.success)
    assert stack.sql(
        "SELECT o.status, a.actor, a.data ->> 'reason' FROM outbox o JOIN audit_log a"
        " ON a.subject = o.public_id AND a.action = 'outbox.discard' WHERE o.public_id = :p",
        p=demo.dead_letter,
    ) == [("discarded", "oncall", "order cancelled by phone")]
