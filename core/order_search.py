"""Read side of the console's Orders page: find orders by any key an operator has at hand, and
one order's whole audit trail as a single list in time order.

Every lookup is an index probe (migration 0008 and the unique keys), so both stay fast however
many orders there are.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import exists, func, select, text, tuple_
from sqlalchemy.orm import Session

from core.errors import InvalidRequest, NotFound
from core.models import Order, OrderLine
from core.orders import PricedLine, lines

MAX_PAGE = 200
# The longest thing worth looking up: an email (orders.email is at most 320 characters).
MAX_QUERY_CHARS = 320
# What a query is taken for, by its shape.
BY_ORDER, BY_CHECKOUT, BY_PAYMENT_INTENT, BY_EMAIL, BY_SKU = (
    "order_id",
    "checkout_id",
    "payment_intent_id",
    "email",
    "sku",
)
# Timeline sources, and their order among entries of the same instant (cause before effect:
# the webhook, then what it did to the order, its ledger posting, the messages it queued...).
SOURCES = ("webhook", "event", "ledger", "refund", "outbox", "audit")


@dataclass(frozen=True)
class OrderHit:
    """An order found by `search`; amounts in minor units of `currency`; `matched_by` says what
    the query was taken for (order_id, checkout_id, payment_intent_id, email or sku)."""

    id: str
    checkout_id: str
    status: str
    amount: int
    refunded: int
    currency: str
    region: str
    email: str
    payment_intent_id: str | None
    created_at: datetime
    paid_at: datetime | None
    matched_by: str


@dataclass(frozen=True)
class TimelineEntry:
    """One thing that happened to an order. source: `event` (order_event; kind is the event),
    `ledger` (a transaction; kind is its kind, detail has its postings), `outbox` (a message;
    kind is its topic, detail its status, attempts and last_error), `webhook` (a Stripe event
    received; kind is its type), `refund` (kind is the refund's status) or `audit` (an
    operator's or system's recorded action; kind is the action)."""

    at: datetime
    source: str
    kind: str
    detail: dict[str, Any]


@dataclass(frozen=True)
class OrderTimeline:
    """An order and everything that happened to it, oldest first. Amounts in minor units of
    `currency`; shopify_order_id once Shopify has the order."""

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
    shopify_order_id: int | None
    created_at: datetime
    paid_at: datetime | None
    lines: tuple[PricedLine, ...]
    entries: tuple[TimelineEntry, ...]


# -------------------------------------------------------------------------------------- search


def classify(query: str) -> tuple[str, str]:
    """What a search query is taken for, and the query trimmed; InvalidRequest when it is blank
    or too long."""
    q = (query or "").strip()
    if not q:
        raise InvalidRequest("type an order, checkout or PaymentIntent id, an email or a SKU")
    if len(q) > MAX_QUERY_CHARS or not q.isprintable():
        raise InvalidRequest(
            f"a search is at most {MAX_QUERY_CHARS} printable characters", param="query"
        )
    for prefix, by in (("ord_", BY_ORDER), ("chk_", BY_CHECKOUT), ("pi_", BY_PAYMENT_INTENT)):
        if q.startswith(prefix):
            return by, q
    return (BY_EMAIL if "@" in q else BY_SKU), q


def _matches(by: str, q: str) -> Any:
    """The predicate of each kind of key, written as its index is (migration 0008): the
    primary key, the unique checkout_id and payment_intent_id, lower(email) exactly, and
    order_line's sku (for a SKU in many orders the planner may instead walk
    ix_orders_created_at newest first and probe order_line's primary key)."""
    if by == BY_ORDER:
        return Order.id == q
    if by == BY_CHECKOUT:
        return Order.checkout_id == q
    if by == BY_PAYMENT_INTENT:
        return Order.payment_intent_id == q
    if by == BY_EMAIL:
        return func.lower(Order.email) == func.lower(q)
    return exists().where(OrderLine.order_id == Order.id, OrderLine.sku == q)


def search(
    session: Session, query: str, *, limit: int = 50, starting_after: str | None = None
) -> tuple[list[OrderHit], bool]:
    """Orders matching `query`, newest first, and whether more follow (pass the last hit's id as
    `starting_after`). The query is an order id (`ord_...`), a checkout id (`chk_...`), a
    PaymentIntent (`pi_...`), an email (has an @; case-insensitive, whole address) or else a
    SKU (exact). InvalidRequest for a blank or over-long query or a limit out of range;
    NotFound when `starting_after` names no order."""
    by, q = classify(query)
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidRequest(f"limit is between 1 and {MAX_PAGE}", param="limit")
    # search_orders: one key's orders, newest first, keyset-paged on (created_at, id).
    stmt = (
        select(
            Order.id,
            Order.checkout_id,
            Order.status,
            Order.amount_minor,
            Order.refunded_minor,
            Order.currency,
            Order.region,
            Order.email,
            Order.payment_intent_id,
            Order.created_at,
            Order.paid_at,
        )
        .where(_matches(by, q))
        .order_by(Order.created_at.desc(), Order.id.desc())
        .limit(limit + 1)
    )
    if starting_after is not None:
        after = session.scalar(select(Order.created_at).where(Order.id == starting_after))
        if after is None:
            raise NotFound("no such order", starting_after=starting_after)
        stmt = stmt.where(tuple_(Order.created_at, Order.id) < tuple_(after, starting_after))
    rows = session.execute(stmt).all()
    hits = [OrderHit(*row, matched_by=by) for row in rows[:limit]]
    return hits, len(rows) > limit


# ------------------------------------------------------------------------------------ timeline

TIMELINE_SQL = text(
    """
-- order_timeline --
-- Everything recorded about one order, each row as (at, source, kind, detail, seq), seq
-- ordering rows of one source that share an instant; `at` is when we recorded it (a ledger
-- transaction's business time, often Stripe's, is its detail's occurred_at). Each part is an
-- index probe: order_event, ledger_txn (its entries by txn_id) and refund by order_id;
-- outbox by ix_outbox_payload_order_id (payload ->> 'order_id', exactly); Stripe webhooks by
-- ix_webhook_inbox_payment_intent (the coalesce expression, exactly: the event's object is
-- the PaymentIntent or names it). audit_log rows
-- whose subject is the order, one of its refunds or one of its outbox messages; audit_log has
-- no index on subject, so that part reads the whole (small, operator-sized) table.
SELECT e.created_at AS at, 'event' AS source, e.kind, e.data AS detail, e.id AS seq
  FROM order_event e
 WHERE e.order_id = :order_id
UNION ALL
SELECT m.created_at, 'outbox', m.topic,
       jsonb_build_object('id', m.public_id, 'ordering_key', m.ordering_key,
                          'status', m.status, 'attempts', m.attempts,
                          'last_error', m.last_error, 'next_attempt_at', m.next_attempt_at,
                          'sent_at', m.sent_at, 'dead_at', m.dead_at,
                          'discarded_at', m.discarded_at),
       m.id
  FROM outbox m
 WHERE (m.payload ->> 'order_id') = :order_id
UNION ALL
SELECT w.received_at, 'webhook', w.event_type,
       jsonb_build_object('provider', w.provider, 'event_id', w.event_id,
                          'status', w.status, 'error', w.error, 'attempts', w.attempts,
                          'processed_at', w.processed_at),
       w.id
  FROM webhook_inbox w
 WHERE (coalesce(w.payload #>> '{data,object,payment_intent}', w.payload #>> '{data,object,id}'))
       = :payment_intent_id
   AND w.provider = 'stripe'
UNION ALL
SELECT t.created_at, 'ledger', t.kind,
       jsonb_build_object('id', t.id, 'source', t.source, 'description', t.description,
                          'occurred_at', t.occurred_at,
                          'postings', (SELECT jsonb_agg(jsonb_build_object(
                                                 'account', le.account,
                                                 'amount', le.amount_minor,
                                                 'currency', le.currency) ORDER BY le.id)
                                         FROM ledger_entry le
                                        WHERE le.txn_id = t.id)),
       0
  FROM ledger_txn t
 WHERE t.order_id = :order_id
UNION ALL
SELECT r.created_at, 'refund', r.status,
       jsonb_build_object('id', r.id, 'amount', r.amount_minor, 'currency', r.currency,
                          'status', r.status, 'reason', r.reason,
                          'failure_reason', r.failure_reason,
                          'stripe_refund_id', r.stripe_refund_id,
                          'requested_by', r.requested_by, 'updated_at', r.updated_at),
       0
  FROM refund r
 WHERE r.order_id = :order_id
UNION ALL
SELECT a.at, 'audit', a.action,
       jsonb_build_object('id', a.id, 'actor', a.actor, 'subject', a.subject, 'data', a.data),
       0
  FROM audit_log a
 WHERE a.subject = :order_id
    OR a.subject IN (SELECT r.id FROM refund r WHERE r.order_id = :order_id)
    OR a.subject IN (SELECT m.public_id FROM outbox m WHERE (m.payload ->> 'order_id') = :order_id)
"""
)


def timeline(session: Session, order_id: str) -> OrderTimeline | None:
    """The order with its lines and one list of everything recorded about it, oldest first
    (ties: webhook, event, ledger, refund, outbox, audit); None when there is no such order.
    Shopify's webhooks about the order (orders/create...) are not included: nothing indexes
    them by order."""
    order = session.get(Order, order_id, populate_existing=True)
    if order is None:
        return None
    rows = session.execute(
        TIMELINE_SQL, {"order_id": order_id, "payment_intent_id": order.payment_intent_id}
    ).all()
    merged = sorted(rows, key=lambda r: (r.at, SOURCES.index(r.source), r.seq))
    return OrderTimeline(
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
        shopify_order_id=order.shopify_order_id,
        created_at=order.created_at,
        paid_at=order.paid_at,
        lines=tuple(lines(session, order_id)),
        entries=tuple(
            TimelineEntry(at, src, kind, dict(detail)) for at, src, kind, detail, _ in merged
        ),
    )
