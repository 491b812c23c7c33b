"""Apply Stripe events to orders, stock and the ledger — idempotently and in any order.

Each event is applied inside the transaction that accepted it into the inbox, so an event is
either fully applied or not accepted at all (and Stripe redelivers it). Money is keyed by
Stripe's own ids (`payment:pi_...`, `refund:re_...`, `txn:txn_...` for a dispute's balance
transactions), so the same fact reported by two events, or replayed, posts once. An event that
needs a fact we have not seen yet (a refund before the payment) is kept `flagged` and re-applied
when the payment lands; one for a PaymentIntent we do not know is kept `flagged` too, until the
sweeper gives up on it (`MAX_FLAGGED_AGE`, `MAX_FLAGGED_ATTEMPTS`) and marks it `abandoned`.

Disputes: money moves only with a dispute's balance transactions, which Stripe reports with
`charge.dispute.funds_withdrawn` and `charge.dispute.funds_reinstated`; an inquiry
(`warning_needs_response`, `warning_under_review`, `warning_closed`) has none. The other
dispute events only move the order: `created` makes it `disputed`, `closed` as `won` or
`warning_closed` returns it to its settled status, `lost` keeps it `disputed`.

A payment whose amount or currency differs from its order is not a sale: the money goes to the
suspense account `liabilities:unmatched_payments` (in the charge's currency), the order is
cancelled as `payment_mismatch` with a flag and an audit record for a human, its hold is
released, and nothing is pushed to Shopify. Stripe's fee on it is still booked (it was taken).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from core import (
    audit,
    balance_txns,
    inbox,
    inventory,
    ledger,
    metrics,
    orders,
    outbox,
    payouts,
    refunds,
)
from core.errors import NotFound
from core.logs import get_logger
from core.models import Order, Refund
from core.orders import order_key as order_key
from core.refunds import REFUND as REFUND

log = get_logger("core.payments")

# Outbox topics this module writes; their handlers live in core.payment_effects (Stripe) and
# core.shopify_sync (the push, which reads the order's state and cancels or refunds the Shopify
# order to match).
CANCEL_PAYMENT_INTENT = "stripe.cancel_payment_intent"
BOOK_BALANCE = "stripe.book_balance_transactions"
PUSH_ORDER_TO_SHOPIFY = "shopify.push_order"

UNKNOWN_PAYMENT_INTENT = "unknown_payment_intent"
WAITING_FOR_PAYMENT = "waiting_for_payment"
OUT_OF_STOCK_AFTER_PAYMENT = "out_of_stock_after_payment"
STOCK_LOST_AFTER_FAILED_REFUND = "stock_lost_after_failed_refund"
PAYMENT_MISMATCH = orders.PAYMENT_MISMATCH

# Statuses of a dispute that is still open; `warning_*` ones are inquiries (no money moved).
DISPUTE_OPEN = ("warning_needs_response", "warning_under_review", "needs_response", "under_review")
# Closed in our favour, or an inquiry that never became a chargeback: the order is settled again.
DISPUTE_RELEASED = ("won", "warning_closed")
_DISPUTE_ENDED = ("dispute_won", "dispute_lost", "inquiry_closed")

# Giving up on a flagged event. Stripe redelivers an undelivered event for up to three days, so
# an event still waiting after that waits for something that will not come by webhook (or for
# a PaymentIntent of another integration sharing the account): alert and stop retrying.
MAX_FLAGGED_AGE = timedelta(days=3)
# The sweeper retries every flagged event about every 2 s: this is ~2.3 days of it, so age
# decides normally, and attempts bound the work one event costs if sweeps run much faster.
MAX_FLAGGED_ATTEMPTS = 100_000
ABANDONED_TOO_OLD = "abandoned_too_old"
ABANDONED_TOO_MANY_ATTEMPTS = "abandoned_too_many_attempts"


def balance_key(order_id: str) -> str:
    """Booking balance transactions (fees, conversions) has its own ordering key: a Stripe read
    outage must not hold back the order's Shopify push (which shares `order:<id>`)."""
    return f"balance:{order_id}"


def enqueue_book_balance(session: Session, order_id: str, **source: str) -> None:
    """Queue the booking of the balance transaction(s) of a payment (`payment_intent_id`) or a
    refund (`refund_id`): Stripe's fee and currency conversion are known only there."""
    outbox.enqueue(
        session,
        topic=BOOK_BALANCE,
        ordering_key=balance_key(order_id),
        payload={"order_id": order_id, **source},
    )


class Deferred(Exception):
    """The event cannot be applied yet; keep it flagged with this reason."""


def enqueue_cancel_payment_intent(session: Session, order: Order) -> None:
    """Queue the cancel of the order's PaymentIntent (if it has one) for after commit."""
    if order.payment_intent_id:
        outbox.enqueue(
            session,
            topic=CANCEL_PAYMENT_INTENT,
            ordering_key=order_key(order.id),
            payload={"order_id": order.id, "payment_intent_id": order.payment_intent_id},
        )


def enqueue_push(session: Session, order: Order) -> None:
    """Queue the Shopify push of the order as it now stands."""
    outbox.enqueue(
        session,
        topic=PUSH_ORDER_TO_SHOPIFY,
        ordering_key=order_key(order.id),
        payload={"order_id": order.id},
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


def _payment_succeeded(session: Session, obj: dict[str, Any]) -> frozenset[int]:
    order = _order_for(session, obj)
    if order.paid_at is not None:
        return frozenset()  # the same fact, again
    amount, currency = obj["amount_received"] or obj["amount"], obj["currency"]
    order.paid_at = _at(obj)
    enqueue_book_balance(session, order.id, payment_intent_id=obj["id"])
    if (amount, currency.lower()) != (order.amount_minor, order.currency.lower()):
        _payment_mismatch(session, order, obj, amount, currency)
    elif order.status == orders.AWAITING_PAYMENT and (
        held := inventory.commit_holds(session, order.id)
    ):
        _paid(session, order, obj, amount)
        # The stock rows last (before the deferred events, which may give stock back): from
        # here to COMMIT every checkout of these SKUs waits for their lock.
        inventory.settle_committed(session, held)
    elif inventory.rereserve_and_commit(session, order.id):
        _paid(session, order, obj, amount)
    else:
        _book_payment(session, order, obj, amount, currency)
        orders.cancel(session, order, OUT_OF_STOCK_AFTER_PAYMENT)
        refunds.request(
            session,
            order,
            amount=refunds.remaining(session, order),
            refund_key=f"{order.id}-oos",
            reason="requested_by_customer",
            actor="dotshop",
        )
    return _apply_deferred(session, order)


def _book_payment(
    session: Session, order: Order, obj: dict[str, Any], amount: int, currency: str
) -> None:
    ledger.post(
        session,
        source=f"payment:{obj['id']}",
        kind="payment",
        postings=ledger.payment_postings(amount, currency),
        occurred_at=_at(obj),
        order_id=order.id,
        description=f"Stripe payment {obj['id']}",
    )


def _paid(session: Session, order: Order, obj: dict[str, Any], amount: int) -> None:
    _book_payment(session, order, obj, amount, obj["currency"])
    order.cancel_reason = None
    orders.transition(
        session, order, orders.PAID, "paid", {"payment_intent_id": obj["id"], "amount": amount}
    )
    enqueue_push(session, order)


def _payment_mismatch(
    session: Session, order: Order, obj: dict[str, Any], amount: int, currency: str
) -> None:
    """Stripe took another amount or currency than the order's: suspense, not revenue."""
    found = {
        "payment_intent_id": obj["id"],
        "expected_amount": order.amount_minor,
        "expected_currency": order.currency,
        "received_amount": amount,
        "received_currency": currency,
    }
    ledger.post(
        session,
        source=f"payment:{obj['id']}",
        kind="payment_mismatch",
        postings=ledger.unmatched_payment_postings(amount, currency),
        occurred_at=_at(obj),
        order_id=order.id,
        description=f"Stripe payment {obj['id']} does not match order {order.id}",
    )
    orders.flag(session, order.id, PAYMENT_MISMATCH, found)
    audit.record(session, actor="stripe", action="payment.mismatch", subject=order.id, data=found)
    orders.add_event(session, order.id, PAYMENT_MISMATCH, found)
    inventory.release(session, order.id)
    if order.status == orders.AWAITING_PAYMENT:
        orders.cancel(session, order, PAYMENT_MISMATCH)
    else:
        order.cancel_reason = PAYMENT_MISMATCH
    log.error("payment_mismatch", order_id=order.id, alert=True, **found)


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


# ------------------------------------------------------------------------------------ refunds


def _require_paid(order: Order) -> None:
    if order.paid_at is None:
        raise Deferred(WAITING_FOR_PAYMENT)


def apply_refund(session: Session, obj: dict[str, Any]) -> None:
    """A Stripe refund object (from a webhook or from our own refund call): its row, its money,
    and the order's refunded amount and status."""
    order = _order_for(session, obj)
    _require_paid(order)
    row = refunds.record(session, order, obj)
    _book_refund(session, order, row)
    _settle_refunds(session, order)


def _book_refund(session: Session, order: Order, row: Refund) -> None:
    """A refund Stripe carried out moved money; a failed one moved it and then moved it back
    (its failure balance transaction). Both are keyed by Stripe's refund id."""
    if row.status not in (refunds.SUCCEEDED, refunds.FAILED):
        return
    # A refund of a payment that never matched its order comes out of the suspense account.
    account = (
        ledger.UNMATCHED_PAYMENTS if order.cancel_reason == PAYMENT_MISMATCH else ledger.REFUNDS
    )
    common = {"order_id": order.id, "occurred_at": datetime.now(UTC)}
    booked = ledger.post(
        session,
        source=f"refund:{row.stripe_refund_id}",
        kind="refund",
        postings=ledger.refund_postings(row.amount_minor, row.currency, account),
        description=f"Stripe refund {row.stripe_refund_id}",
        **common,
    )
    if row.status == refunds.FAILED:
        booked = (
            ledger.post(
                session,
                source=f"refund_failed:{row.stripe_refund_id}",
                kind="refund_failed",
                postings=ledger.refund_failure_postings(row.amount_minor, row.currency, account),
                description=f"Stripe refund {row.stripe_refund_id} failed ({row.failure_reason})",
                **common,
            )
            or booked
        )
    if booked:  # first time this refund moved money: book its balance transaction(s) too
        enqueue_book_balance(session, order.id, refund_id=str(row.stripe_refund_id))


def _settle_refunds(session: Session, order: Order) -> None:
    """Order amounts and status follow the succeeded refunds; a change to an order that was
    paid is pushed to Shopify."""
    # An overpaid (mismatched) payment refunded in full gives back more than the order's amount:
    # the excess is the suspense account's business, the order counts at most its own amount.
    refunded = min(refunds.confirmed(session, order.id), order.amount_minor)
    delta = refunded - order.refunded_minor
    if delta == 0:
        return
    order.refunded_minor = refunded
    data = {"amount": delta, "total": refunded}
    kind = "refunded" if delta > 0 else "refund_failed"
    if order.status in orders.SETTLED:
        orders.transition(session, order, orders.settled_status(order), kind, data)
    else:
        orders.add_event(session, order.id, kind, data)
    if order.status != orders.CANCELLED:
        if order.refunded_minor >= order.amount_minor:
            inventory.release_committed(session, order.id)
        elif delta < 0:
            _retake_stock(session, order)
        enqueue_push(session, order)


def _retake_stock(session: Session, order: Order) -> None:
    """A full refund that failed made a paid order of a refunded one: the units its refund gave
    back (if it had not reached Shopify yet) are committed again, or, when they were sold
    meanwhile, the order is flagged for a human, never shipped from stock that is not there."""
    if inventory.rereserve_and_commit(session, order.id):
        return
    found = {"refunded": order.refunded_minor, "amount": order.amount_minor}
    orders.flag(session, order.id, STOCK_LOST_AFTER_FAILED_REFUND, found)
    orders.add_event(session, order.id, STOCK_LOST_AFTER_FAILED_REFUND, found)
    log.error("stock_lost_after_failed_refund", order_id=order.id, alert=True, **found)


def _charge_refunded(session: Session, charge: dict[str, Any]) -> None:
    """Current API versions send the charge without its refunds (the `refund.*` events carry
    them); when it lists them (older versions, or expanded), apply each."""
    listed = (charge.get("refunds") or {}).get("data") or []
    order = _order_for(session, charge)
    _require_paid(order)
    for refund in listed:
        apply_refund(session, {"payment_intent": charge.get("payment_intent"), **refund})


# ----------------------------------------------------------------------------------- disputes


def _dispute_money(session: Session, dispute: dict[str, Any]) -> None:
    """Book each balance transaction of the dispute once, by its id: the withdrawal when it
    opened, the reinstatement when it was won. An inquiry has none."""
    order = _order_for(session, dispute)
    _require_paid(order)
    for bt in dispute.get("balance_transactions") or []:
        if not (bt.get("amount") or bt.get("fee")):
            continue
        balance_txns.book(
            session,
            bt,
            source_amount=balance_txns.dispute_source_amount(bt, dispute),
            source_currency=dispute["currency"],
            order_id=order.id,
            description=f"Stripe dispute {dispute['id']}: {bt.get('reporting_category')}",
        )


def _dispute_created(session: Session, dispute: dict[str, Any]) -> None:
    order = _order_for(session, dispute)
    _require_paid(order)
    if orders.has_event(session, order.id, ("dispute_opened",), dispute_id=dispute["id"]):
        return
    data = {
        "dispute_id": dispute["id"],
        "amount": dispute["amount"],
        "reason": dispute.get("reason"),
    }
    ended = orders.has_event(session, order.id, _DISPUTE_ENDED, dispute_id=dispute["id"])
    if order.status in orders.SETTLED and not ended:  # `closed` came first: nothing to hold
        orders.transition(session, order, orders.DISPUTED, "dispute_opened", data)
    else:
        orders.add_event(session, order.id, "dispute_opened", data)


def _dispute_closed(session: Session, dispute: dict[str, Any]) -> None:
    order = _order_for(session, dispute)
    _require_paid(order)
    status = dispute.get("status")
    kind = {"won": "dispute_won", "lost": "dispute_lost", "warning_closed": "inquiry_closed"}.get(
        status or ""
    )
    if kind is None or orders.has_event(session, order.id, (kind,), dispute_id=dispute["id"]):
        return
    data = {"dispute_id": dispute["id"], "status": status}
    if status in DISPUTE_RELEASED and order.status == orders.DISPUTED:
        orders.transition(session, order, orders.settled_status(order), kind, data)
        # A push that found the order disputed skipped it; settled again, it may ship.
        enqueue_push(session, order)
    elif status == "lost" and order.status in orders.SETTLED:
        orders.transition(session, order, orders.DISPUTED, kind, data)
    else:
        orders.add_event(session, order.id, kind, data)


# A handler may return the inbox ids of other events it applied on the way (a payment applies
# the refunds and disputes that waited for it).
HANDLERS: dict[str, Callable[[Session, dict[str, Any]], frozenset[int] | None]] = {
    "payment_intent.succeeded": _payment_succeeded,
    "payment_intent.payment_failed": _payment_failed,
    "payment_intent.canceled": _payment_canceled,
    "payment_intent.requires_action": _requires_action,
    "charge.refunded": _charge_refunded,
    "charge.refund.updated": apply_refund,
    "refund.created": apply_refund,
    "refund.updated": apply_refund,
    "refund.failed": apply_refund,
    "charge.dispute.created": _dispute_created,
    "charge.dispute.funds_withdrawn": _dispute_money,
    "charge.dispute.funds_reinstated": _dispute_money,
    "charge.dispute.closed": _dispute_closed,
    # Payouts concern the balance, not an order: see core.payouts.
    "payout.paid": payouts.payout_paid,
    "payout.reconciliation_completed": payouts.payout_reconciled,
    "payout.failed": payouts.payout_failed,
}
# What our webhook endpoint subscribes to (its `enabled_events`): the events we apply. Stripe
# advises subscribing to no more than that; every other event (payment_intent.created for each
# checkout, charge.succeeded for each payment) would cost a delivery and an inbox row for
# nothing. The reconciler reads Stripe's event log itself and misses none of them.
WEBHOOK_EVENTS: tuple[str, ...] = tuple(HANDLERS)


@dataclass(frozen=True)
class Applied:
    """How applying one event ended, and which other (deferred) events it applied on the way."""

    status: str
    also_applied: frozenset[int] = frozenset()


def apply_event(session: Session, event: inbox.InboxEvent) -> Applied:
    """Apply one accepted Stripe event."""
    handler = HANDLERS.get(event.event_type)
    if handler is None:
        inbox.mark(session, event.id, inbox.PROCESSED, "ignored")
        metrics.PAYMENTS.labels(event.event_type, "ignored").inc()
        return Applied(inbox.PROCESSED)
    obj = event.payload["data"]["object"]
    try:
        with session.begin_nested():
            also = handler(session, obj) or frozenset()
    except Deferred as why:
        inbox.mark(session, event.id, inbox.FLAGGED, str(why))
        metrics.PAYMENTS.labels(event.event_type, "flagged").inc()
        log.warning(
            "stripe_event_flagged", event_id=event.event_id, type=event.event_type, reason=str(why)
        )
        return Applied(inbox.FLAGGED)
    inbox.mark(session, event.id, inbox.PROCESSED)
    metrics.PAYMENTS.labels(event.event_type, "applied").inc()
    return Applied(inbox.PROCESSED, frozenset(also))


def accept_and_apply(session: Session, payload: dict[str, Any]) -> str:
    """Inbox + apply in the caller's transaction; the inbox status, or 'duplicate' when seen
    before."""
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
    return apply_event(session, event).status


def _apply_deferred(session: Session, order: Order) -> frozenset[int]:
    """Re-apply events that waited for this order's payment (refunds/disputes seen first);
    returns the inbox ids of those now processed."""
    done = set()
    for event in inbox.flagged(session, provider="stripe", reason_prefix=WAITING_FOR_PAYMENT):
        obj = event.payload["data"]["object"]
        if (
            obj.get("payment_intent") == order.payment_intent_id
            and apply_event(session, event).status == inbox.PROCESSED
        ):
            done.add(event.id)
    return frozenset(done)


def _give_up_reason(event: inbox.InboxEvent, now: datetime) -> str | None:
    if event.received_at is not None and now - event.received_at > MAX_FLAGGED_AGE:
        return ABANDONED_TOO_OLD
    if event.attempts >= MAX_FLAGGED_ATTEMPTS:
        return ABANDONED_TOO_MANY_ATTEMPTS
    return None


def retry_flagged(session: Session, limit: int = 100, *, now: datetime | None = None) -> int:
    """Re-apply flagged events (e.g. an unknown PaymentIntent that a checkout recorded since);
    returns how many got processed. Each event runs in its own savepoint: one that raises is
    recorded on its row and the sweep goes on. Events past their age or attempts are
    abandoned with an alert."""
    now = now or datetime.now(UTC)
    batch = inbox.flagged(session, provider="stripe", limit=limit)
    processed: set[int] = set()
    for event in batch:
        if event.id in processed:
            continue  # a payment earlier in this batch applied it already
        reason = _give_up_reason(event, now)
        if reason is not None:
            inbox.mark(session, event.id, inbox.ABANDONED, f"{reason}: {event.error}")
            metrics.PAYMENTS.labels(event.event_type, "abandoned").inc()
            log.error(
                "stripe_event_abandoned",
                alert=True,
                event_id=event.event_id,
                type=event.event_type,
                reason=reason,
                waited_for=event.error,
                attempts=event.attempts,
            )
            continue
        try:
            with session.begin_nested():
                applied = apply_event(session, event)
        except Exception as exc:  # one broken event must not stop the sweep
            inbox.mark(
                session, event.id, inbox.FLAGGED, f"error: {type(exc).__name__}: {exc}"[:500]
            )
            log.exception("stripe_event_retry_failed", event_id=event.event_id)
            continue
        if applied.status == inbox.PROCESSED:
            processed.add(event.id)
        processed |= applied.also_applied
    return len(processed & {e.id for e in batch})
