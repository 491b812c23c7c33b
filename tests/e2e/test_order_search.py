"""The console's Orders page reads (core.order_search) against the real stack: an order paid with
the stripe SDK and refunded through the admin API is found by each of its keys and no other
order is, and its timeline merges order events, ledger postings, outbox messages, Stripe
webhooks, refunds and audit records in time order. A push Shopify keeps refusing (sandbox
faults) is dead in the order's timeline and on the Outbox page (core.outbox_report)."""

from __future__ import annotations

import pickle
import uuid

import httpx
import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from core import order_search, outbox_report, relay
from core.errors import InvalidRequest, NotFound
from core.orders import order_key
from tests.e2e.conftest import Stack, wait_for
from tests.e2e.helpers import ADDRESS, admin, order, skus_with_stock


def checkout_as(stack: Stack, email: str, sku: str) -> dict:
    response = httpx.post(
        f"{stack.api['us']}/v1/checkouts",
        json={"email": email, "lines": [{"sku": sku, "quantity": 1}], "shipping_address": ADDRESS},
        headers={"Idempotency-Key": str(uuid.uuid4())},
        timeout=60,
    )
    assert response.status_code == 201, response.text
    return response.json()


def pay(stack: Stack, body: dict) -> None:
    stack.stripe_client().v1.payment_intents.confirm(
        body["payment"]["payment_intent_id"], {"payment_method": "pm_card_visa"}
    )
    stack.settle()


@pytest.fixture(scope="module")
def orders(stack: Stack) -> dict[str, dict]:
    """`refunded`: paid then refunded in full (admin API); `other`: another customer's paid
    order of another SKU; `waiting`: a later checkout of the first customer, not paid."""
    sku_a, sku_b = skus_with_stock(stack, minimum=3)[:2]
    email = f"Grace.{uuid.uuid4().hex[:8]}@Example.com"
    refunded = checkout_as(stack, email, sku_a)
    pay(stack, refunded)
    other = checkout_as(stack, f"other.{uuid.uuid4().hex[:8]}@example.com", sku_b)
    pay(stack, other)
    refund = admin(
        stack,
        "POST",
        f"/admin/v1/orders/{refunded['order_id']}/refunds",
        json={"reason": "requested_by_customer"},
        headers={"Idempotency-Key": str(uuid.uuid4()), "X-Dotshop-Actor": "ops:grace"},
    )
    assert refund.status_code == 202, refund.text
    stack.settle()  # the relay asks Stripe; its refund webhooks confirm it
    wait_for(lambda: order(stack, refunded["order_id"])["status"] == "refunded")
    stack.settle()
    waiting = checkout_as(stack, email, sku_b)
    return {
        "refunded": {**refunded, "email": email, "sku": sku_a},
        "other": {**other, "sku": sku_b},
        "waiting": waiting,
    }


def found(stack: Stack, query: str, **kwargs: object) -> list[str]:
    with Session(stack.engine) as session:
        hits, _ = order_search.search(session, query, **kwargs)  # type: ignore[arg-type]
    return [h.id for h in hits]


def test_an_order_is_found_by_each_of_its_keys_and_no_other_order_is(
    stack: Stack, orders: dict[str, dict]
) -> None:
    mine, other = orders["refunded"], orders["other"]
    pi = mine["payment"]["payment_intent_id"]
    for query, by in (
        (mine["order_id"], "order_id"),
        (f"  {mine['id']} ", "checkout_id"),
        (pi, "payment_intent_id"),
    ):
        with Session(stack.engine) as session:
            hits, more = order_search.search(session, query)
        assert [(h.id, h.matched_by) for h in hits] == [(mine["order_id"], by)] and not more
    with Session(stack.engine) as session:
        (hit,), _ = order_search.search(session, pi)
    assert (hit.status, hit.amount, hit.refunded, hit.currency) == (
        "refunded",
        mine["amount"],
        mine["amount"],
        "usd",
    )
    assert hit.paid_at is not None and hit.payment_intent_id == pi

    # An email, whatever its case: the customer's orders, newest first, nobody else's.
    by_email = found(stack, mine["email"].upper())
    assert by_email == [orders["waiting"]["order_id"], mine["order_id"]]
    assert other["order_id"] not in by_email
    by_sku = found(stack, mine["sku"])
    assert mine["order_id"] in by_sku and other["order_id"] not in by_sku
    assert found(stack, "ord_doesnotexist") == [] and found(stack, "NO-SUCH-SKU") == []


def test_search_is_keyset_paged_newest_first(stack: Stack, orders: dict[str, dict]) -> None:
    email = orders["refunded"]["email"]
    newest = checkout_as(stack, email, orders["other"]["sku"])
    with Session(stack.engine) as session:
        first, more = order_search.search(session, email, limit=2)
        assert more
        second, more = order_search.search(session, email, limit=2, starting_after=first[-1].id)
        assert not more
        with pytest.raises(NotFound):
            order_search.search(session, email, starting_after="ord_doesnotexist")
    assert [h.id for h in first + second] == [
        newest["order_id"],
        orders["waiting"]["order_id"],
        orders["refunded"]["order_id"],
    ]
    assert [h.created_at for h in first + second] == sorted(
        (h.created_at for h in first + second), reverse=True
    )


@pytest.mark.parametrize("query", ["", "   ", "x" * 321, "ord_\x00", None])
def test_blank_or_absurd_queries_are_invalid_requests(engine: Engine, query: str | None) -> None:
    with Session(engine) as session, pytest.raises(InvalidRequest):
        order_search.search(session, query)  # type: ignore[arg-type]


def test_bad_limits_are_invalid_requests(engine: Engine) -> None:
    with Session(engine) as session:
        for limit in (0, 201):
            with pytest.raises(InvalidRequest):
                order_search.search(session, "a@b.c", limit=limit)


def test_the_timeline_merges_every_source_in_time_order(
    stack: Stack, orders: dict[str, dict]
) -> None:
    mine = orders["refunded"]
    with Session(stack.engine) as session:
        got = order_search.timeline(session, mine["order_id"])
        other = order_search.timeline(session, orders["other"]["order_id"])
        assert order_search.timeline(session, "ord_doesnotexist") is None
    assert got is not None and other is not None
    assert pickle.loads(pickle.dumps(got)) == got  # the console caches it
    assert (got.status, got.refunded, got.email) == ("refunded", mine["amount"], mine["email"])
    assert got.shopify_order_id is not None and got.paid_at is not None
    assert [(ln.sku, ln.quantity) for ln in got.lines] == [(mine["sku"], 1)]
    times = [e.at for e in got.entries]
    assert times == sorted(times)

    kinds = {(e.source, e.kind) for e in got.entries}
    expected = {
        ("event", "created"),
        ("event", "paid"),
        ("event", "pushed_to_shopify"),
        ("ledger", "payment"),
        ("ledger", "refund"),
        ("outbox", "shopify.push_order"),
        ("webhook", "payment_intent.succeeded"),
        ("refund", "succeeded"),
        ("audit", "refund.requested"),
    }
    assert expected <= kinds, expected - kinds

    def first(source: str, kind: str) -> int:
        return next(i for i, e in enumerate(got.entries) if (e.source, e.kind) == (source, kind))

    # Cause before effect: the checkout, the payment's webhook, its ledger posting, the refund.
    assert first("event", "created") < first("webhook", "payment_intent.succeeded")
    assert first("webhook", "payment_intent.succeeded") <= first("ledger", "payment")
    assert first("ledger", "payment") < first("audit", "refund.requested")
    assert first("audit", "refund.requested") < first("ledger", "refund")

    (refund,) = [e for e in got.entries if e.source == "refund"]
    assert refund.detail["amount"] == mine["amount"] and refund.detail["currency"] == "usd"
    (audit,) = [e for e in got.entries if e.source == "audit"]
    assert audit.detail["actor"] == "ops:grace"
    assert audit.detail["data"]["refund_id"] == refund.detail["id"]
    payment = next(e for e in got.entries if (e.source, e.kind) == ("ledger", "payment"))
    assert sum(p["amount"] for p in payment.detail["postings"]) == 0
    pushes = [e for e in got.entries if e.kind == "shopify.push_order"]
    assert pushes and {e.detail["status"] for e in pushes} == {"sent"}
    webhooks = [e for e in got.entries if e.source == "webhook"]
    assert all(e.detail["provider"] == "stripe" for e in webhooks)

    # Nothing of the other order leaks in.
    other_ids = {e.detail.get("id") for e in other.entries} - {None}
    assert not other_ids & {e.detail.get("id") for e in got.entries}
    assert all(e.kind != "refund.requested" for e in other.entries)


def test_a_push_shopify_keeps_refusing_is_dead_in_the_timeline_and_on_the_outbox_page(
    stack: Stack,
) -> None:
    sku = skus_with_stock(stack, minimum=3)[5]
    stack.faults("shopify", error_rate=1.0, error_status=503, path_prefix="/admin/api")
    try:
        body = checkout_as(stack, f"dead.{uuid.uuid4().hex[:8]}@example.com", sku)
        pay(stack, body)  # the relay's retries (5 in the tests) all fail: dead letters
    finally:
        stack.clear_faults()
    order_id = body["order_id"]
    with Session(stack.engine) as session:
        topics = {s.topic: s for s in outbox_report.summary(session)}
        dead, more = outbox_report.messages(session, status="dead", key_prefix=order_key(order_id))
        timeline = order_search.timeline(session, order_id)
    assert topics["shopify.push_order"].dead >= 1 and not more
    (push,) = dead
    assert (push.topic, push.status, push.attempts) == ("shopify.push_order", "dead", 5)
    assert push.last_error
    assert timeline is not None
    (entry,) = [e for e in timeline.entries if e.detail.get("id") == push.id]
    assert (entry.source, entry.detail["status"]) == ("outbox", "dead")
    assert entry.detail["last_error"] == push.last_error

    # The operator retries it (audit-logged on the message): the timeline shows that too, and
    # the push goes through now that Shopify answers.
    with Session(stack.engine) as session, session.begin():
        for message in outbox_report.messages(session, status="dead")[0]:
            relay.retry_dead(session, message.id, actor="ops:grace", reason="Shopify is back")
    stack.settle()
    with Session(stack.engine) as session:
        after = order_search.timeline(session, order_id)
    assert after is not None and after.shopify_order_id is not None
    # The order's hold message (dead too: Shopify refused every move) is the order's as well.
    retried = {e.detail["subject"] for e in after.entries if e.kind == "outbox.retry"}
    assert push.id in retried
    assert all(e.detail["actor"] == "ops:grace" for e in after.entries if e.source == "audit")
    assert next(e for e in after.entries if e.detail.get("id") == push.id).detail["status"] == (
        "sent"
    )
