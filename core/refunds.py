"""Refunds: what we asked Stripe to give back, and what Stripe says it gave back, kept apart.

A refund we start is a `requested` row first (its `refund_key` is our Stripe idempotency key),
sent to Stripe by the outbox (topic `stripe.refund`, handled in core.payment_effects). Stripe's
answer and its webhooks (`refund.created`, `refund.updated`, `refund.failed`,
`charge.refund.updated`, and `charge.refunded` when it lists its refunds) move the row along
requested -> pending -> succeeded -> failed | canceled, never back, so they converge in any
order. A refund made outside dotshop (in the Dashboard) gets its row from those webhooks.

`orders.refunded_minor` is the sum of `succeeded` rows; what remains refundable also subtracts
the open (`requested`, `pending`) ones; a `failed` or `canceled` refund counts for neither.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from core import audit, idempotency, orders, outbox
from core.errors import Conflict, RefundExceedsRemaining
from core.idempotency import Answer, KeyRecord, Response, encode
from core.ids import new_id
from core.models import Order, Refund
from core.settings import Settings

# Outbox topic of "send this refund row to Stripe".
REFUND = "stripe.refund"

REQUESTED, PENDING, SUCCEEDED, FAILED, CANCELED = (
    "requested",
    "pending",
    "succeeded",
    "failed",
    "canceled",
)
OPEN = (REQUESTED, PENDING)
# Stripe's refund statuses in ours: `requires_action` waits on the customer, like `pending`.
_FROM_STRIPE = {
    "pending": PENDING,
    "requires_action": PENDING,
    "succeeded": SUCCEEDED,
    "failed": FAILED,
    "canceled": CANCELED,
}
# A status only moves forward: a late `refund.created` (succeeded) never undoes a failure.
_RANK = {REQUESTED: 0, PENDING: 1, SUCCEEDED: 2, FAILED: 3, CANCELED: 3}


def confirmed(session: Session, order_id: str) -> int:
    """Minor units Stripe confirmed given back (succeeded refunds)."""
    return _sum(session, order_id, (SUCCEEDED,))


def remaining(session: Session, order: Order) -> int:
    """What may still be refunded: the amount minus succeeded and open refunds (the caller
    holds the order lock)."""
    return order.amount_minor - _sum(session, order.id, (SUCCEEDED, *OPEN))


def _sum(session: Session, order_id: str, statuses: tuple[str, ...]) -> int:
    total = session.scalar(
        select(func.coalesce(func.sum(Refund.amount_minor), 0)).where(
            Refund.order_id == order_id, Refund.status.in_(statuses)
        )
    )
    return int(total or 0)


def request(
    session: Session,
    order: Order,
    *,
    amount: int,
    refund_key: str,
    reason: str | None,
    actor: str,
) -> Refund:
    """Record a refund we want and queue it for Stripe (after commit), keyed by `refund_key`."""
    row = Refund(
        id=new_id("rfd"),
        order_id=order.id,
        amount_minor=amount,
        currency=order.currency,
        status=REQUESTED,
        refund_key=refund_key,
        reason=reason,
        requested_by=actor,
    )
    session.add(row)
    session.flush()
    orders.add_event(
        session,
        order.id,
        "refund_requested",
        {"refund_id": row.id, "amount": amount, "reason": reason, "by": actor},
    )
    outbox.enqueue(
        session,
        topic=REFUND,
        ordering_key=orders.order_key(order.id),
        payload={"order_id": order.id, "refund_id": row.id},
    )
    return row


def get(session: Session, refund_id: str) -> Refund | None:
    return session.get(Refund, refund_id)


def record(session: Session, order: Order, obj: dict[str, Any]) -> Refund:
    """Bring the row of Stripe refund `obj` up to Stripe's status; the row is found by Stripe's
    id, else by our key in its metadata, else created (a refund made outside dotshop)."""
    status = _FROM_STRIPE.get(obj.get("status") or "", PENDING)
    row = session.scalar(select(Refund).where(Refund.stripe_refund_id == obj["id"]))
    key = (obj.get("metadata") or {}).get("dotshop_refund")
    if row is None and key:
        row = session.scalar(select(Refund).where(Refund.refund_key == key))
    if row is None:
        row = Refund(
            id=new_id("rfd"),
            order_id=order.id,
            amount_minor=obj["amount"],
            currency=obj["currency"],
            status=status,
            reason=obj.get("reason"),
            requested_by="stripe",
        )
        session.add(row)
    row.stripe_refund_id = obj["id"]
    if _RANK[status] > _RANK[row.status]:
        row.status = status
        row.failure_reason = obj.get("failure_reason")
        row.updated_at = func.now()
    session.flush()
    return row


def refused(session: Session, refund_id: str, why: str) -> None:
    """Stripe refused to create the refund: it never happened, and its amount is free again."""
    row = session.get(Refund, refund_id, with_for_update=True)
    if row is not None and row.status == REQUESTED:
        row.status = FAILED
        row.failure_reason = why
        row.updated_at = func.now()
        orders.add_event(
            session, row.order_id, "refund_failed", {"refund_id": row.id, "reason": why}
        )


def request_refund(
    engine: Engine,
    settings: Settings,
    *,
    order_id: str,
    amount: int | None,
    reason: str | None,
    idempotency_key: str,
    body: bytes,
    actor: str,
) -> Answer:
    """Admin refund: checked against what remains (succeeded and open refunds subtracted), sent
    to Stripe through the outbox with a Stripe idempotency key derived from this request's key."""
    path = f"/admin/v1/orders/{order_id}/refunds"

    def refund(session: Session, key: KeyRecord) -> Response:
        order = orders.lock(session, order_id)
        if (
            order.status not in (orders.PAID, orders.PARTIALLY_REFUNDED)
            or not order.payment_intent_id
        ):
            raise Conflict(
                f"order is {order.status}; only paid orders can be refunded", status=order.status
            )
        left = remaining(session, order)
        value = left if amount is None else amount
        if value <= 0 or value > left:
            raise RefundExceedsRemaining(remaining=left)
        row = request(session, order, amount=value, refund_key=key.id, reason=reason, actor=actor)
        audit.record(
            session,
            actor=actor,
            action="refund.requested",
            subject=order.id,
            data={"refund_id": row.id, "amount": value, "reason": reason},
        )
        return Response(
            202,
            encode(
                {
                    "order_id": order.id,
                    "refund": {
                        "id": row.id,
                        "amount": value,
                        "currency": order.currency,
                        "status": "pending",
                    },
                }
            ),
        )

    return idempotency.answer_once(
        engine,
        settings,
        scope=f"admin:POST {path}",
        key=idempotency_key,
        path=path,
        body=body,
        step=refund,
    )
