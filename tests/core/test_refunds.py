"""The refund table: requested and confirmed amounts kept apart (real PostgreSQL)."""

from __future__ import annotations

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from core import inbox, orders, payments, refunds
from core.db import transaction
from core.models import OutboxMessage, Refund
from tests.core.test_payments import (
    AMOUNT,
    QUANTITY,
    Sale,
    deliver,
    end_state,
    event,
    payment_intent,
    place_order,
    refund,
    seed_sku,
    stripe_id,
)


def paid_sale(engine: Engine) -> Sale:
    sale = place_order(engine, seed_sku(engine, QUANTITY))
    deliver(engine, event("payment_intent.succeeded", payment_intent(sale, "succeeded")))
    return sale


def request(engine: Engine, order_id: str, amount: int, key: str) -> str:
    with transaction(engine) as s:
        order = orders.lock(s, order_id)
        return refunds.request(
            s, order, amount=amount, refund_key=key, reason=None, actor="admin:test"
        ).id


def remaining(engine: Engine, order_id: str) -> int:
    with transaction(engine) as s:
        return refunds.remaining(s, orders.lock(s, order_id))


def test_a_requested_refund_is_reserved_but_not_refunded(clean_engine: Engine) -> None:
    sale = paid_sale(clean_engine)
    refund_id = request(clean_engine, sale.order_id, 700, "key-0001-requested")
    assert remaining(clean_engine, sale.order_id) == AMOUNT - 700
    end = end_state(clean_engine, sale, [])
    assert (end["status"], end["refunded"]) == (orders.PAID, 0)
    with Session(clean_engine) as s:
        message = s.scalar(select(OutboxMessage).where(OutboxMessage.topic == payments.REFUND))
        assert message.payload == {"order_id": sale.order_id, "refund_id": refund_id}
        assert message.ordering_key == f"order:{sale.order_id}"


def test_stripe_confirming_our_refund_updates_its_row_by_our_key(clean_engine: Engine) -> None:
    sale = paid_sale(clean_engine)
    refund_id = request(clean_engine, sale.order_id, 700, "key-0002-confirmed")
    re_id = stripe_id("re")
    confirmed = refund(sale, re_id, 700, metadata={"dotshop_refund": "key-0002-confirmed"})
    assert deliver(clean_engine, event("refund.created", confirmed)) == inbox.PROCESSED
    with Session(clean_engine) as s:
        rows = s.scalars(select(Refund).where(Refund.order_id == sale.order_id)).all()
        assert [(r.id, r.status, r.stripe_refund_id) for r in rows] == [
            (refund_id, refunds.SUCCEEDED, re_id)
        ]
    end = end_state(clean_engine, sale, [])
    assert (end["status"], end["refunded"]) == (orders.PARTIALLY_REFUNDED, 700)
    assert remaining(clean_engine, sale.order_id) == AMOUNT - 700


def test_a_dashboard_refund_gets_its_own_row(clean_engine: Engine) -> None:
    sale = paid_sale(clean_engine)
    re_id = stripe_id("re")
    deliver(clean_engine, event("refund.created", refund(sale, re_id, AMOUNT, "pending")))
    assert remaining(clean_engine, sale.order_id) == 0  # pending: not refundable again
    assert end_state(clean_engine, sale, [])["refunded"] == 0
    deliver(clean_engine, event("refund.updated", refund(sale, re_id, AMOUNT)))
    with Session(clean_engine) as s:
        row = s.scalar(select(Refund).where(Refund.stripe_refund_id == re_id))
        assert (row.status, row.refund_key, row.requested_by) == (
            refunds.SUCCEEDED,
            None,
            "stripe",
        )
    assert end_state(clean_engine, sale, [])["status"] == orders.REFUNDED


def test_a_refund_stripe_refused_frees_its_amount(clean_engine: Engine) -> None:
    sale = paid_sale(clean_engine)
    refund_id = request(clean_engine, sale.order_id, AMOUNT, "key-0003-refused")
    assert remaining(clean_engine, sale.order_id) == 0
    with transaction(clean_engine) as s:
        refunds.refused(s, refund_id, "charge_disputed")
    assert remaining(clean_engine, sale.order_id) == AMOUNT
    with Session(clean_engine) as s:
        assert s.get(Refund, refund_id).status == refunds.FAILED


def test_each_refund_change_of_a_paid_order_is_pushed_to_shopify(clean_engine: Engine) -> None:
    """The Shopify push is state-driven: every refund that changes a paid order (and a failure
    that undoes one) queues `shopify.push_order` on the order's key."""
    sale = paid_sale(clean_engine)
    re_id = stripe_id("re")

    def pushes() -> list[tuple[str, dict]]:
        with Session(clean_engine) as s:
            rows = s.execute(
                select(OutboxMessage.ordering_key, OutboxMessage.payload)
                .where(OutboxMessage.topic == payments.PUSH_ORDER_TO_SHOPIFY)
                .order_by(OutboxMessage.id)
            ).all()
        return [tuple(r) for r in rows]

    assert len(pushes()) == 1  # paid
    deliver(clean_engine, event("refund.created", refund(sale, re_id, 500)))
    deliver(clean_engine, event("refund.created", refund(sale, re_id, 500)))  # the same fact
    deliver(clean_engine, event("refund.failed", refund(sale, re_id, 500, "failed")))
    assert pushes() == [(f"order:{sale.order_id}", {"order_id": sale.order_id})] * 3
