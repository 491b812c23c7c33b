"""Orders: creation, status transitions, the append-only timeline and flags for humans.

Statuses: awaiting_payment -> paid -> (partially_refunded | refunded | disputed);
awaiting_payment -> cancelled. Every transition writes an order_event in the same transaction;
the database refuses any move not in the migration's ORDER_TRANSITIONS.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from core.errors import NotFound
from core.models import Order, OrderEvent, OrderFlag, OrderLine

AWAITING_PAYMENT = "awaiting_payment"
PAID = "paid"
CANCELLED = "cancelled"
REFUNDED = "refunded"
PARTIALLY_REFUNDED = "partially_refunded"
DISPUTED = "disputed"
# Where a paid order rests when no dispute holds it: what its confirmed refunds make it.
SETTLED = (PAID, PARTIALLY_REFUNDED, REFUNDED)
# Flag: Stripe took another amount or currency than the order's.
PAYMENT_MISMATCH = "payment_mismatch"


def order_key(order_id: str) -> str:
    """The outbox ordering key of an order's messages that must keep their order."""
    return f"order:{order_id}"


@dataclass(frozen=True)
class PricedLine:
    sku: str
    quantity: int
    unit_price_minor: int


@dataclass(frozen=True)
class OrderView:
    id: str
    checkout_id: str
    status: str
    cancel_reason: str | None
    amount: int
    refunded: int
    currency: str
    region: str
    email: str
    payment_intent_id: str | None
    expires_at: datetime
    created_at: datetime
    lines: list[PricedLine] = field(default_factory=list)
    timeline: list[tuple[datetime, str, dict[str, Any]]] = field(default_factory=list)


def add_event(
    session: Session, order_id: str, kind: str, data: dict[str, Any] | None = None
) -> None:
    session.add(OrderEvent(order_id=order_id, kind=kind, data=data or {}))


def create(
    session: Session,
    *,
    order_id: str,
    checkout_id: str,
    region: str,
    currency: str,
    email: str,
    shipping_address: dict[str, Any],
    lines: Sequence[PricedLine],
    expires_at: datetime,
) -> Order:
    amount = sum(line.quantity * line.unit_price_minor for line in lines)
    order = Order(
        id=order_id,
        checkout_id=checkout_id,
        region=region,
        currency=currency,
        email=email,
        shipping_address=shipping_address,
        amount_minor=amount,
        expires_at=expires_at,
        status=AWAITING_PAYMENT,
        refunded_minor=0,
    )
    session.add(order)
    session.flush()
    session.add_all(
        OrderLine(
            order_id=order_id,
            sku=ln.sku,
            quantity=ln.quantity,
            unit_price_minor=ln.unit_price_minor,
        )
        for ln in lines
    )
    add_event(session, order_id, "created", {"amount": amount, "currency": currency})
    return order


def lock(session: Session, order_id: str) -> Order:
    """The order row, locked for this transaction (status transitions serialize on it)."""
    order = session.scalar(select(Order).where(Order.id == order_id).with_for_update())
    if order is None:
        raise NotFound(f"no order {order_id}", param="order_id")
    return order


def lock_by_payment_intent(session: Session, payment_intent_id: str) -> Order | None:
    return session.scalar(
        select(Order).where(Order.payment_intent_id == payment_intent_id).with_for_update()
    )


def transition(
    session: Session, order: Order, status: str, kind: str, data: dict[str, Any] | None = None
) -> None:
    order.status = status
    order.updated_at = func.now()
    add_event(session, order.id, kind, data)


def cancel(session: Session, order: Order, reason: str, **data: Any) -> None:
    """awaiting_payment (or a paid order we cannot fulfil) -> cancelled, with the reason."""
    order.cancel_reason = reason
    transition(session, order, CANCELLED, "cancelled", {"reason": reason, **data})


def lines(session: Session, order_id: str) -> list[PricedLine]:
    rows = session.scalars(
        select(OrderLine).where(OrderLine.order_id == order_id).order_by(OrderLine.sku)
    )
    return [PricedLine(r.sku, r.quantity, r.unit_price_minor) for r in rows]


def view(session: Session, order_id: str) -> OrderView:
    order = session.get(Order, order_id)
    if order is None:
        raise NotFound(f"no order {order_id}", param="order_id")
    events = session.scalars(
        select(OrderEvent).where(OrderEvent.order_id == order_id).order_by(OrderEvent.id)
    )
    return OrderView(
        id=order.id,
        checkout_id=order.checkout_id,
        status=order.status,
        cancel_reason=order.cancel_reason,
        amount=order.amount_minor,
        refunded=order.refunded_minor,
        currency=order.currency,
        region=order.region,
        email=order.email,
        payment_intent_id=order.payment_intent_id,
        expires_at=order.expires_at,
        created_at=order.created_at,
        lines=lines(session, order_id),
        timeline=[(e.created_at, e.kind, e.data) for e in events],
    )


def settled_status(order: Order) -> str:
    """The status a paid order has by its confirmed refunds alone."""
    if order.refunded_minor >= order.amount_minor:
        return REFUNDED
    return PARTIALLY_REFUNDED if order.refunded_minor else PAID


def has_event(session: Session, order_id: str, kinds: Sequence[str], **data: Any) -> bool:
    """Whether the timeline holds an event of one of these kinds whose data has these values
    (JSON containment, so numbers compare as numbers)."""
    query = select(OrderEvent.id).where(OrderEvent.order_id == order_id, OrderEvent.kind.in_(kinds))
    if data:
        query = query.where(OrderEvent.data.contains(data))
    return session.scalar(query.limit(1)) is not None


def flag(session: Session, order_id: str, kind: str, data: dict[str, Any]) -> bool:
    """Raise a flag for a human (kept until resolved); False when it was raised already."""
    row = session.execute(
        insert(OrderFlag)
        .values(order_id=order_id, kind=kind, data=data)
        .on_conflict_do_nothing(index_elements=[OrderFlag.order_id, OrderFlag.kind])
        .returning(OrderFlag.kind)
    ).scalar_one_or_none()
    return row is not None
