"""Admin refunds: checked against what remains refundable, sent to Stripe through the outbox."""

from __future__ import annotations

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from core import audit, idempotency, orders
from core.errors import Conflict, RefundExceedsRemaining
from core.idempotency import KeyRecord, Response
from core.idempotent_request import Outcome, begin, encode, final_errors, run
from core.payments import enqueue_refund
from core.settings import Settings


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
) -> Outcome:
    """Admin refund: checked against what remains (minus refunds already requested), sent to
    Stripe through the outbox with a Stripe idempotency key derived from this request's key."""
    path = f"/admin/v1/orders/{order_id}/refunds"
    begun = begin(engine, settings, f"admin:POST {path}", idempotency_key, path, body)
    if isinstance(begun, Outcome):
        return begun

    def refund(session: Session, key: KeyRecord) -> Response:
        order = orders.lock(session, order_id)
        if (
            order.status not in (orders.PAID, orders.PARTIALLY_REFUNDED)
            or not order.payment_intent_id
        ):
            raise Conflict(
                f"order is {order.status}; only paid orders can be refunded", status=order.status
            )
        requested = orders.requested_refunds(session, order.id)
        remaining = order.amount_minor - max(requested, order.refunded_minor)
        value = remaining if amount is None else amount
        if value <= 0 or value > remaining:
            raise RefundExceedsRemaining(remaining=remaining)
        orders.add_event(
            session, order.id, "refund_requested", {"amount": value, "reason": reason, "by": actor}
        )
        enqueue_refund(session, order, amount=value, refund_key=key.id, reason=reason)
        audit.record(
            session,
            actor=actor,
            action="refund.requested",
            subject=order.id,
            data={"amount": value, "reason": reason},
        )
        return Response(
            202,
            encode(
                {
                    "order_id": order.id,
                    "refund": {"amount": value, "currency": order.currency, "status": "pending"},
                }
            ),
        )

    return run(engine, begun, {idempotency.STARTED: final_errors(refund)})
