"""Apply Stripe events to orders, stock and the ledger — idempotently and in any order.

Each event is applied inside the transaction that accepted it into the inbox, so an event is
either fully applied or not accepted at all (and Stripe redelivers it). Business facts are
keyed by Stripe's own ids (`payment:pi_...`, `refund:ch_...:<cumulative>`, `dispute:dp_...`), so
the same fact reported by two different events, or replayed, posts once. An event that needs a
fact we have not seen yet (a refund before the payment) is kept `flagged` and re-applied when
the payment lands; one for a PaymentIntent we do not know is kept `flagged` too.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session

from core import inbox, inventory, ledger, metrics, orders, outbox
from core.errors import NotFound
from core.logs import get_logger
from core.models import Order

log = get_logger("core.payments")

# Outbox topics this module writes; their handlers live in core.payment_effects.
CANCEL_PAYMENT_INTENT = "stripe.cancel_payment_intent"
REFUND = "stripe.refund"
FETCH_FEES = "stripe.fetch_fees"
PUSH_ORDER_TO_SHOPIFY = "shopify.push_order"

UNKNOWN_PAYMENT_INTENT = "unknown_payment_intent"
WAITING_FOR_PAYMENT = "waiting_for_payment"
OUT_OF_STOCK_AFTER_PAYMENT = "out_of_stock_after_payment"


class Deferred(Exception):
    """The event cannot be applied yet; keep it flagged with this reason."""


def order_key(order_id: str) -> str:
    return f"order:{order_id}"


def enqueue_cancel_payment_intent(session: Session, order: Order) -> None:
    """Queue the cancel of the order's PaymentIntent (if it has one) for after commit."""
    if order.payment_intent_id:
        outbox.enqueue(
            session,
            topic=CANCEL_PAYMENT_INTENT,
            ordering_key=order_key(order.id),
            payload={"order_id": order.id, "payment_intent_id": order.payment_intent_id},
        )


def enqueue_refund(
    session: Session, order: Order, *, amount: int | None, refund_key: str, reason: str | None
) -> None:
    """Queue a refund (all that remains when amount is None) for after commit; `refund_key`
    becomes Stripe's idempotency key, so the refund happens once however often it is sent."""
    outbox.enqueue(
        session,
        topic=REFUND,
        ordering_key=order_key(order.id),
        payload={
            "order_id": order.id,
            "payment_intent_id": order.payment_intent_id,
            "amount": amount,
            "refund_key": refund_key,
            "reason": reason,
        },
    )


def _at(obj: dict[str, Any]) -> datetime:
    return datetime.fromtimestamp(obj.get("created") or datetime.now(UTC).timestamp(), UTC)


def _order_for(session: Session, obj: dict[str, Any]) -> Order:
    """The order an object is about: by our metadata, else by its PaymentIntent id."""
    pi_id = obj["id"] if obj.get("object") == "payment_intent" else obj.get("payment_intent")
    order_id = (
        (obj.get("metadata") or {}).get("order_id")
        if obj.get("object") == "payment_intent"
        else None
    )
    order = None
    if order_id:
        try:
            order = orders.lock(session, order_id)
        except NotFound:  # an unknown id in metadata is an unknown order
            order = None
        if order is not None and order.payment_intent_id is None and pi_id:
            # The checkout crashed between creating the PaymentIntent and recording it.
            order.payment_intent_id = pi_id
    if order is None and pi_id:
        order = orders.lock_by_payment_intent(session, pi_id)
    if order is None:
        raise Deferred(UNKNOWN_PAYMENT_INTENT)
    return order


# ----------------------------------------------------------------------------- payment intents


def _payment_succeeded(session: Session, obj: dict[str, Any]) -> None:
    order = _order_for(session, obj)
    if order.paid_at is not None:
        return  # the same fact, again
    amount, currency = obj["amount_received"] or obj["amount"], obj["currency"]
    if order.status == orders.AWAITING_PAYMENT and inventory.commit(session, order.id):
        stock_ok = True
    else:
        # The hold expired or was released before the money arrived: take the stock again
        # if it is there; never confirm stock that is not.
        stock_ok = inventory.rereserve_and_commit(session, order.id)
    order.paid_at = _at(obj)
    ledger.post(
        session,
        source=f"payment:{obj['id']}",
        kind="payment",
        postings=ledger.payment_postings(amount, currency),
        occurred_at=_at(obj),
        order_id=order.id,
        description=f"Stripe payment {obj['id']}",
    )
    outbox.enqueue(
        session,
        topic=FETCH_FEES,
        ordering_key=order_key(order.id),
        payload={"order_id": order.id, "payment_intent_id": obj["id"]},
    )
    if stock_ok:
        order.cancel_reason = None
        orders.transition(
            session, order, orders.PAID, "paid", {"payment_intent_id": obj["id"], "amount": amount}
        )
        outbox.enqueue(
            session,
            topic=PUSH_ORDER_TO_SHOPIFY,
            ordering_key=order_key(order.id),
            payload={"order_id": order.id},
        )
    else:
        orders.cancel(session, order, OUT_OF_STOCK_AFTER_PAYMENT)
        enqueue_refund(
            session,
            order,
            amount=None,
            refund_key=f"{order.id}-oos",
            reason="requested_by_customer",
        )
    _apply_deferred(session, order)


def _payment_ended(session: Session, obj: dict[str, Any], reason: str) -> None:
    order = _order_for(session, obj)
    if order.status != orders.AWAITING_PAYMENT:
        if reason == "payment_failed":
            orders.add_event(session, order.id, "payment_failed", _failure(obj))
        return
    inventory.release(session, order.id)
    orders.cancel(session, order, reason, **_failure(obj))


def _failure(obj: dict[str, Any]) -> dict[str, Any]:
    error = obj.get("last_payment_error") or {}
    return {k: error[k] for k in ("code", "decline_code") if error.get(k)}


def _payment_failed(session: Session, obj: dict[str, Any]) -> None:
    _payment_ended(session, obj, "payment_failed")


def _payment_canceled(session: Session, obj: dict[str, Any]) -> None:
    _payment_ended(session, obj, obj.get("cancellation_reason") or "payment_canceled")


def _requires_action(session: Session, obj: dict[str, Any]) -> None:
    order = _order_for(session, obj)
    orders.add_event(session, order.id, "requires_action", {"payment_intent_id": obj["id"]})


# ---------------------------------------------------------------------- refunds and disputes


def _require_paid(order: Order) -> None:
    if order.paid_at is None:
        raise Deferred(WAITING_FOR_PAYMENT)


def _settled_status(order: Order) -> str:
    if order.refunded_minor >= order.amount_minor:
        return orders.REFUNDED
    return orders.PARTIALLY_REFUNDED if order.refunded_minor else orders.PAID


def apply_charge_refunded(session: Session, charge: dict[str, Any]) -> None:
    """Bring the order and ledger up to the charge's cumulative refunded amount."""
    order = _order_for(session, charge)
    _require_paid(order)
    refunded = min(charge["amount_refunded"], order.amount_minor)
    delta = refunded - order.refunded_minor
    if delta <= 0:
        return  # already known, or a stale (reordered) snapshot
    ledger.post(
        session,
        source=f"refund:{charge['id']}:{refunded}",
        kind="refund",
        postings=ledger.refund_postings(delta, charge["currency"]),
        occurred_at=datetime.now(UTC),
        order_id=order.id,
        description=f"Stripe refund on {charge['id']}",
    )
    order.refunded_minor = refunded
    if order.status in (orders.PAID, orders.PARTIALLY_REFUNDED, orders.REFUNDED):
        orders.transition(
            session, order, _settled_status(order), "refunded", {"amount": delta, "total": refunded}
        )
    else:
        orders.add_event(session, order.id, "refunded", {"amount": delta, "total": refunded})
    if order.refunded_minor >= order.amount_minor and order.status != orders.CANCELLED:
        inventory.release_committed(session, order.id)


def _dispute_fees(dispute: dict[str, Any]) -> tuple[int, int]:
    """(fee withdrawn when the dispute opened, fee returned when it was won).

    A closed dispute also carries the reinstatement (amount > 0, fee < 0): summing every fee
    would post a fee of 0 when `closed` is applied before `created`, and counting none back
    on a win would keep a fee Stripe returned, so the ledger would depend on delivery order."""
    bts = dispute.get("balance_transactions") or []
    withdrawn = sum(bt.get("fee", 0) for bt in bts if bt.get("amount", 0) < 0)
    returned = -sum(bt.get("fee", 0) for bt in bts if bt.get("amount", 0) > 0)
    return withdrawn, max(returned, 0)


def _dispute_created(session: Session, dispute: dict[str, Any]) -> None:
    order = _order_for(session, dispute)
    _require_paid(order)
    fee, _ = _dispute_fees(dispute)
    posted = ledger.post(
        session,
        source=f"dispute:{dispute['id']}",
        kind="dispute",
        postings=ledger.dispute_postings(dispute["amount"], dispute["currency"], fee),
        occurred_at=_at(dispute),
        order_id=order.id,
        description=f"Stripe dispute {dispute['id']} ({dispute.get('reason')})",
    )
    if posted is not None:
        orders.transition(
            session,
            order,
            orders.DISPUTED,
            "dispute_opened",
            {
                "dispute_id": dispute["id"],
                "amount": dispute["amount"],
                "reason": dispute.get("reason"),
            },
        )


def _dispute_closed(session: Session, dispute: dict[str, Any]) -> None:
    _dispute_created(session, dispute)  # closing implies it was opened, even if reordered
    order = _order_for(session, dispute)
    outcome = dispute.get("status")
    if outcome == "won":
        posted = ledger.post(
            session,
            source=f"dispute_won:{dispute['id']}",
            kind="dispute_won",
            postings=ledger.dispute_won_postings(
                dispute["amount"], dispute["currency"], _dispute_fees(dispute)[1]
            ),
            occurred_at=datetime.now(UTC),
            order_id=order.id,
            description=f"Stripe dispute {dispute['id']} won",
        )
        if posted is not None:
            orders.transition(
                session, order, _settled_status(order), "dispute_won", {"dispute_id": dispute["id"]}
            )
    elif outcome == "lost":
        orders.add_event(session, order.id, "dispute_lost", {"dispute_id": dispute["id"]})


HANDLERS: dict[str, Callable[[Session, dict[str, Any]], None]] = {
    "payment_intent.succeeded": _payment_succeeded,
    "payment_intent.payment_failed": _payment_failed,
    "payment_intent.canceled": _payment_canceled,
    "payment_intent.requires_action": _requires_action,
    "charge.refunded": apply_charge_refunded,
    "charge.dispute.created": _dispute_created,
    "charge.dispute.closed": _dispute_closed,
}


def apply_event(session: Session, event: inbox.InboxEvent) -> str:
    """Apply one accepted Stripe event; returns the inbox status it ends in."""
    handler = HANDLERS.get(event.event_type)
    if handler is None:
        inbox.mark(session, event.id, inbox.PROCESSED, "ignored")
        metrics.PAYMENTS.labels(event.event_type, "ignored").inc()
        return inbox.PROCESSED
    obj = event.payload["data"]["object"]
    try:
        with session.begin_nested():
            handler(session, obj)
    except Deferred as why:
        inbox.mark(session, event.id, inbox.FLAGGED, str(why))
        metrics.PAYMENTS.labels(event.event_type, "flagged").inc()
        log.warning(
            "stripe_event_flagged", event_id=event.event_id, type=event.event_type, reason=str(why)
        )
        return inbox.FLAGGED
    inbox.mark(session, event.id, inbox.PROCESSED)
    metrics.PAYMENTS.labels(event.event_type, "applied").inc()
    return inbox.PROCESSED


def accept_and_apply(session: Session, payload: dict[str, Any]) -> str:
    """Inbox + apply in the caller's transaction; 'duplicate' when seen before."""
    event = inbox.accept(
        session,
        provider="stripe",
        event_id=payload["id"],
        event_type=payload["type"],
        payload=payload,
    )
    if event is None:
        metrics.PAYMENTS.labels(payload["type"], "duplicate").inc()
        return "duplicate"
    return apply_event(session, event)


def _apply_deferred(session: Session, order: Order) -> None:
    """Re-apply events that waited for this order's payment (refunds/disputes seen first)."""
    for event in inbox.flagged(session, provider="stripe", reason_prefix=WAITING_FOR_PAYMENT):
        obj = event.payload["data"]["object"]
        if obj.get("payment_intent") == order.payment_intent_id:
            apply_event(session, event)


def retry_flagged(session: Session, limit: int = 100) -> int:
    """Re-apply flagged events (e.g. an unknown PaymentIntent that a checkout recorded since)."""
    batch = inbox.flagged(session, provider="stripe", limit=limit)
    for event in batch:
        # A payment applied earlier in this batch already applied the events that waited for
        # it (`_apply_deferred`); those must not be applied (and counted) a second time.
        if inbox.statuses(session, [event.id]).get(event.id) == inbox.FLAGGED:
            apply_event(session, event)
    done = inbox.statuses(session, [e.id for e in batch])
    return sum(1 for status in done.values() if status == inbox.PROCESSED)
