"""What finance reads: the day's money, the payments that do not reconcile, one payment on both
sides, and each Stripe payout against our books. Read-only queries for the operator console.

Every function takes a SQLAlchemy `Session` and returns frozen (picklable) dataclasses, so the
console can cache them. Money is integer minor units with its lowercase currency; days are UTC
days and times are UTC. Lists page like Stripe (`limit`, `starting_after`, and whether more
follow), by keyset on indexed columns, so a page does not slow down as the tables grow.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import select, text, tuple_
from sqlalchemy.orm import Session

from core import balance_txns, ledger
from core import payouts as payout_books
from core.errors import InvalidRequest, NotFound
from core.models import (
    BalanceTxn,
    Order,
    Refund,
    StripeDispute,
    StripePayment,
    StripeRefund,
    Violation,
)
from core.violations import fingerprint

# The check whose open violations are the unreconciled payments (checks.payments.CHECK; core
# imports no checks, so tests/core/test_finance.py pins that the two agree).
UNRECONCILED_CHECK = "unreconciled_payment"
MAX_PAGE = 1000

# Payout status, in Stripe's words, as far as our books know it: `paid` (Stripe reported the
# payout paid: the money is expected in the bank, and sits in assets:payouts_in_transit until
# the bank statement clears it) or `failed` (Stripe returned the funds to the balance). Payouts
# still `pending` / `in_transit` at Stripe are booked by nothing yet, so they are not listed.
PAID = "paid"
FAILED = "failed"

# Payout verification (core.payouts): how the payout compares with what it covers.
VERIFIED = "verified"  # Stripe's list of covered transactions adds up, and our books hold it
MISMATCHED = "mismatched"  # our books hold another amount (see the categories' differences)
AWAITING_CHECK = "awaiting_check"  # reconciled by Stripe; the payout_mismatch check fetches it
AWAITING_RECONCILIATION = "awaiting_reconciliation"  # no payout.reconciliation_completed yet
NOT_APPLICABLE = "not_applicable"  # a manual or failed payout: Stripe never says what it covers

# Reporting categories in the order finance reads a payout (others follow, alphabetically).
CATEGORY_ORDER = (
    balance_txns.CHARGE,
    balance_txns.REFUND,
    balance_txns.REFUND_FAILURE,
    balance_txns.DISPUTE,
    balance_txns.DISPUTE_REVERSAL,
)


def _page_limit(limit: int) -> None:
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidRequest(f"limit is between 1 and {MAX_PAGE}", param="limit")


def _currency(currency: str | None) -> str | None:
    return currency.lower() if currency else None


# An open end of a date range.
EARLIEST = datetime.min.replace(tzinfo=UTC)
LATEST = datetime.max.replace(tzinfo=UTC)


def _day_start(day: date) -> datetime:
    return datetime.combine(day, time.min, UTC)


# --------------------------------------------------------------------------------- day summary


@dataclass(frozen=True)
class DaySummary:
    """One UTC day in one currency.

    Money (from the ledger, by `ledger_txn.occurred_at`): `gross_minor` sales booked
    (revenue:sales), `refunds_minor` refunded (revenue:refunds, net of failed refunds),
    `disputes_minor` withdrawn by disputes net of reinstatements (expenses:disputes), `fees_minor`
    Stripe's processing and dispute fees in the currency Stripe charged them in
    (expenses:stripe_fees + expenses:dispute_fees, net of returned dispute fees), and
    `net_minor` = gross - refunds - disputes - fees. `converted_minor` is what Stripe converted
    into this currency (negative: out of it) when it settled a charge made in another one, so
    net + converted is the day's movement of our Stripe balance in this currency (payouts
    aside).

    Payments (the day's PaymentIntents that took money, by their creation): `unreconciled` /
    `unreconciled_minor` are the open `unreconciled_payment` violations (money at stake, as the
    check computed it); `matched` / `matched_minor` are the payments the ledger booked that
    day with no open violation (the amount booked); `payments` = matched + unreconciled.
    """

    day: date
    currency: str
    gross_minor: int
    refunds_minor: int
    disputes_minor: int
    fees_minor: int
    net_minor: int
    converted_minor: int
    payments: int
    matched: int
    matched_minor: int
    unreconciled: int
    unreconciled_minor: int


# The chart of accounts (core.ledger) the day's money is read from, bound by name.
DAY_ACCOUNTS = {
    "sales": ledger.REVENUE,
    "refunds": ledger.REFUNDS,
    "disputes": ledger.DISPUTES,
    "stripe_fees": ledger.STRIPE_FEES,
    "dispute_fees": ledger.DISPUTE_FEES,
    "conversion": ledger.FX_CONVERSION,
    "balance": ledger.STRIPE_BALANCE,
}

DAILY_SUMMARY_SQL = text(
    """
-- daily_summary --
-- Per UTC day and currency: the ledger's money by account, and the day's payments split into
-- matched and unreconciled. Range scans on ix_ledger_txn_occurred_at; orders by primary key.
WITH open_unreconciled AS (
    -- What the last unreconciled_payment run found (partial index ix_violation_check_open),
    -- dated like the payment: the booked ledger payment, else Stripe's or our payment time.
    SELECT v.currency, v.amount_minor, v.evidence ->> 'order_id' AS order_id,
           coalesce(booked.occurred_at,
                    (v.evidence #>> '{stripe,created}')::timestamptz,
                    (v.evidence #>> '{ours,paid_at}')::timestamptz,
                    v.first_seen) AS occurred_at,
           booked.source AS booked_source
      FROM violation v
      LEFT JOIN ledger_txn booked
             ON booked.source = 'payment:' || (v.evidence ->> 'payment_intent_id')
     WHERE v.check_name = :check AND v.resolved_at IS NULL
), day_txn AS (
    -- The range's ledger transactions in the region asked (through their order); a booked
    -- payment is matched unless a violation is open about it.
    SELECT t.id, (t.occurred_at AT TIME ZONE 'UTC')::date AS day,
           t.kind IN ('payment', 'payment_mismatch')
             AND NOT EXISTS (SELECT 1 FROM open_unreconciled u
                              WHERE u.booked_source = t.source) AS matched_payment
      FROM ledger_txn t
     WHERE t.occurred_at >= :since AND t.occurred_at < :until
       AND (CAST(:region AS text) IS NULL
            OR EXISTS (SELECT 1 FROM orders o WHERE o.id = t.order_id AND o.region = :region))
), money AS (
    SELECT t.day, e.currency,
           -coalesce(sum(e.amount_minor) FILTER (WHERE e.account = :sales), 0) AS gross,
           coalesce(sum(e.amount_minor) FILTER (WHERE e.account = :refunds), 0) AS refunds,
           coalesce(sum(e.amount_minor) FILTER (WHERE e.account = :disputes), 0) AS disputes,
           coalesce(sum(e.amount_minor)
                    FILTER (WHERE e.account IN (:stripe_fees, :dispute_fees)), 0) AS fees,
           -coalesce(sum(e.amount_minor) FILTER (WHERE e.account = :conversion), 0)
               AS converted,
           -- a booked payment's one Stripe balance leg: the amount it brought in
           count(*) FILTER (WHERE e.account = :balance) AS matched,
           coalesce(sum(e.amount_minor) FILTER (WHERE e.account = :balance), 0)
               AS matched_minor
      FROM day_txn t
      JOIN ledger_entry e ON e.txn_id = t.id
     WHERE (e.account IN (:sales, :refunds, :disputes, :stripe_fees, :dispute_fees, :conversion)
            OR (t.matched_payment AND e.account = :balance))
       AND (CAST(:currency AS text) IS NULL OR e.currency = :currency)
     GROUP BY t.day, e.currency
), unreconciled AS (
    SELECT (u.occurred_at AT TIME ZONE 'UTC')::date AS day, u.currency,
           count(*) AS n, coalesce(sum(u.amount_minor), 0) AS amount
      FROM open_unreconciled u
      LEFT JOIN orders o ON o.id = u.order_id
     WHERE u.occurred_at >= :since AND u.occurred_at < :until
       AND (CAST(:region AS text) IS NULL OR o.region = :region)
       AND (CAST(:currency AS text) IS NULL OR u.currency = :currency)
     GROUP BY 1, 2
)
SELECT coalesce(m.day, u.day) AS day, coalesce(m.currency, u.currency) AS currency,
       coalesce(m.gross, 0) AS gross, coalesce(m.refunds, 0) AS refunds,
       coalesce(m.disputes, 0) AS disputes, coalesce(m.fees, 0) AS fees,
       coalesce(m.converted, 0) AS converted,
       coalesce(m.matched, 0) AS matched, coalesce(m.matched_minor, 0) AS matched_minor,
       coalesce(u.n, 0) AS unreconciled, coalesce(u.amount, 0) AS unreconciled_minor
  FROM money m
  FULL JOIN unreconciled u ON u.day = m.day AND u.currency = m.currency
 ORDER BY 1, 2
"""
)


def daily_summary(
    session: Session,
    *,
    start: date,
    end: date,
    region: str | None = None,
    currency: str | None = None,
) -> list[DaySummary]:
    """One row per UTC day and currency in [start, end] that saw any money or payment (days
    without either have no row), oldest first; fields as `DaySummary` says.

    Choices: money is read from the ledger by the day its transaction occurred (the Stripe
    object's time for payments, balance transactions, disputes; the booking time for
    refunds), in the currency of each entry, so an EUR sale settled in USD is EUR gross and USD
    fees. `region` keeps the transactions whose order is of that region (fees and conversions
    of an order follow it; payouts and payments of no order of ours drop out), and the
    violations whose evidence names an order of that region. `currency` keeps entries and
    violations in that currency. Unmatched payments (suspense) are not gross: they are
    unreconciled until settled. Cost grows with the ledger rows in the range, not the table.
    """
    if end < start:
        raise InvalidRequest("end is before start", param="end")
    rows = session.execute(
        DAILY_SUMMARY_SQL,
        {
            "check": UNRECONCILED_CHECK,
            **DAY_ACCOUNTS,
            "since": _day_start(start),
            "until": _day_start(end + timedelta(days=1)),
            "region": region,
            "currency": _currency(currency),
        },
    ).all()
    return [
        DaySummary(
            day=r.day,
            currency=r.currency,
            gross_minor=int(r.gross),
            refunds_minor=int(r.refunds),
            disputes_minor=int(r.disputes),
            fees_minor=int(r.fees),
            net_minor=int(r.gross - r.refunds - r.disputes - r.fees),
            converted_minor=int(r.converted),
            payments=int(r.matched + r.unreconciled),
            matched=int(r.matched),
            matched_minor=int(r.matched_minor),
            unreconciled=int(r.unreconciled),
            unreconciled_minor=int(r.unreconciled_minor),
        )
        for r in rows
    ]


# ---------------------------------------------------------------------------- unreconciled


@dataclass(frozen=True)
class UnreconciledRow:
    """An open `unreconciled_payment` violation: about `subject` (a `pi_...`, or an `ord_...`
    for `missing_in_stripe`), why (`reason`, one of core.reconcile_match.REASONS), the order
    and PaymentIntent it names (None when unknown), its `region` (the order's), the money at
    stake, since when it is open and how long (`age_seconds`, at the `now` asked), who
    acknowledged it, and the check's `evidence` (Stripe's side and ours)."""

    id: str
    subject: str
    reason: str | None
    order_id: str | None
    payment_intent_id: str | None
    region: str | None
    amount_minor: int | None
    currency: str | None
    first_seen: datetime
    last_seen: datetime
    age_seconds: int
    acknowledged_by: str | None
    acknowledged_at: datetime | None
    evidence: dict[str, Any]


def _unreconciled_row(v: Violation, region: str | None, now: datetime) -> UnreconciledRow:
    return UnreconciledRow(
        id=v.id,
        subject=v.subject,
        reason=v.evidence.get("reason"),
        order_id=v.evidence.get("order_id"),
        payment_intent_id=v.evidence.get("payment_intent_id"),
        region=region,
        amount_minor=v.amount_minor,
        currency=v.currency,
        first_seen=v.first_seen,
        last_seen=v.last_seen,
        age_seconds=max(0, int((now - v.first_seen).total_seconds())),
        acknowledged_by=v.acknowledged_by,
        acknowledged_at=v.acknowledged_at,
        evidence=v.evidence,
    )


def unreconciled(
    session: Session,
    *,
    region: str | None = None,
    currency: str | None = None,
    limit: int = 100,
    starting_after: str | None = None,
    now: datetime | None = None,
) -> tuple[list[UnreconciledRow], bool]:
    """Open `unreconciled_payment` violations, oldest first (the work queue: what has waited
    longest comes first, and a page stays stable while new ones open); at most `limit`, after
    the violation `starting_after` (a `vio_` id); and whether more follow. `region` keeps those
    whose order is of that region (a payment of no order of ours has none)."""
    _page_limit(limit)
    now = now or datetime.now(UTC)
    # Open violations of the check (partial index ix_violation_check_open), with their order's
    # region, in first-seen order.
    query = (
        select(Violation, Order.region)
        .outerjoin(Order, Order.id == Violation.evidence["order_id"].astext)
        .where(Violation.check_name == UNRECONCILED_CHECK, Violation.resolved_at.is_(None))
        .order_by(Violation.first_seen, Violation.id)
        .limit(limit + 1)
    )
    if region is not None:
        query = query.where(Order.region == region)
    if currency is not None:
        query = query.where(Violation.currency == _currency(currency))
    if starting_after is not None:
        after = session.get(Violation, starting_after)
        if after is None:
            raise NotFound("no such violation", starting_after=starting_after)
        query = query.where(
            tuple_(Violation.first_seen, Violation.id) > tuple_(after.first_seen, after.id)
        )
    rows = session.execute(query).all()
    return [_unreconciled_row(v, r, now) for v, r in rows[:limit]], len(rows) > limit


# --------------------------------------------------------------------------- payment detail


@dataclass(frozen=True)
class OrderSide:
    """The order as we hold it (`refunded_minor`: succeeded refunds)."""

    id: str
    status: str
    amount_minor: int
    currency: str
    region: str
    email: str
    payment_intent_id: str | None
    created_at: datetime
    paid_at: datetime | None
    refunded_minor: int
    cancel_reason: str | None


@dataclass(frozen=True)
class StripePaymentSide:
    """A PaymentIntent as the reconciler staged it from Stripe."""

    id: str
    order_id: str | None
    amount: int
    amount_received: int
    currency: str
    status: str
    latest_charge: str | None
    created: datetime


@dataclass(frozen=True)
class StripeRefundSide:
    """A refund as staged from Stripe (ours or a Dashboard one)."""

    id: str
    payment_intent_id: str | None
    amount: int
    currency: str
    status: str
    created: datetime


@dataclass(frozen=True)
class StripeDisputeSide:
    """A dispute as staged from Stripe; `withdrawn`: taken from the balance net of
    reinstatements."""

    id: str
    payment_intent_id: str | None
    amount: int
    withdrawn: int
    currency: str
    status: str
    created: datetime


@dataclass(frozen=True)
class BalanceTxnSide:
    """A Stripe balance transaction as we recorded it: in the settlement `currency`, converted
    from `source_amount_minor` of `source_currency` at `exchange_rate` (a string, exact)."""

    id: str
    type: str
    reporting_category: str
    source_id: str | None
    amount_minor: int
    fee_minor: int
    net_minor: int
    currency: str
    exchange_rate: str | None
    source_amount_minor: int | None
    source_currency: str | None
    created: datetime
    available_on: datetime
    ledger_sources: tuple[str, ...]


@dataclass(frozen=True)
class OurRefund:
    """A refund in our books (`rfd_`), with Stripe's id once it has one."""

    id: str
    amount_minor: int
    currency: str
    status: str
    stripe_refund_id: str | None
    reason: str | None
    requested_by: str | None
    created_at: datetime


@dataclass(frozen=True)
class PaymentDetail:
    """One payment on both sides. `order` is None for a PaymentIntent of no order of ours.
    Stripe's side as staged by the reconciler (`payments`: the order's PaymentIntents, more than
    one for a duplicate charge; their `refunds` and `disputes`) and the order's
    `balance_txns`; our side: `refunds` we hold and the ledger `transactions` of the order
    (core.ledger.Transaction, each with its postings), oldest first; and the open
    `unreconciled_payment` violations about the order or its PaymentIntents."""

    subject: str
    order: OrderSide | None
    payments: tuple[StripePaymentSide, ...]
    stripe_refunds: tuple[StripeRefundSide, ...]
    disputes: tuple[StripeDisputeSide, ...]
    balance_txns: tuple[BalanceTxnSide, ...]
    refunds: tuple[OurRefund, ...]
    transactions: tuple[ledger.Transaction, ...]
    violations: tuple[UnreconciledRow, ...]


def _order_of(session: Session, subject: str) -> Order | None:
    """The order a subject names: itself, or the order of a PaymentIntent (ours, or the one
    Stripe's metadata names)."""
    if subject.startswith("ord_"):
        return session.get(Order, subject)
    order = session.scalars(select(Order).where(Order.payment_intent_id == subject)).first()
    if order is None:
        staged = session.get(StripePayment, subject)
        if staged is not None and staged.order_id:
            order = session.get(Order, staged.order_id)
    return order


def _order_side(o: Order) -> OrderSide:
    return OrderSide(
        o.id,
        o.status,
        o.amount_minor,
        o.currency,
        o.region,
        o.email,
        o.payment_intent_id,
        o.created_at,
        o.paid_at,
        o.refunded_minor,
        o.cancel_reason,
    )


def _balance_txn_side(b: BalanceTxn) -> BalanceTxnSide:
    return BalanceTxnSide(
        b.id,
        b.type,
        b.reporting_category,
        b.source_id,
        b.amount_minor,
        b.fee_minor,
        b.net_minor,
        b.currency,
        str(b.exchange_rate) if b.exchange_rate is not None else None,
        b.source_amount_minor,
        b.source_currency,
        b.created,
        b.available_on,
        tuple(b.ledger_sources),
    )


def payment_detail(
    session: Session, subject: str, *, now: datetime | None = None
) -> PaymentDetail | None:
    """A payment by `pi_...` or `ord_...`, both sides (see `PaymentDetail`); None when neither
    our orders nor Stripe's staged PaymentIntents know it. Every lookup is by primary key or an
    indexed column (orders.payment_intent_id, stripe_*.payment_intent_id,
    balance_txn.order_id, ledger_txn.order_id, violation.fingerprint)."""
    if not subject.startswith(("pi_", "ord_")):
        raise InvalidRequest("subject is a pi_ or ord_ id", param="subject")
    order = _order_of(session, subject)
    # The PaymentIntents of the payment: the one asked, the order's, any Stripe ties to it.
    staged_by = StripePayment.id == subject
    if order is not None:
        staged_by = staged_by | (StripePayment.order_id == order.id)
    payments = session.scalars(
        select(StripePayment).where(staged_by).order_by(StripePayment.created, StripePayment.id)
    ).all()
    if order is None and not payments:
        return None
    intents = {p.id for p in payments}
    if subject.startswith("pi_"):
        intents.add(subject)
    if order is not None and order.payment_intent_id:
        intents.add(order.payment_intent_id)
    stripe_refunds = session.scalars(
        select(StripeRefund)
        .where(StripeRefund.payment_intent_id.in_(intents))
        .order_by(StripeRefund.created, StripeRefund.id)
    ).all()
    disputes = session.scalars(
        select(StripeDispute)
        .where(StripeDispute.payment_intent_id.in_(intents))
        .order_by(StripeDispute.created, StripeDispute.id)
    ).all()
    balance: Sequence[BalanceTxn] = ()
    refunds: Sequence[Refund] = ()
    transactions: list[ledger.Transaction] = []
    if order is not None:
        balance = session.scalars(
            select(BalanceTxn)
            .where(BalanceTxn.order_id == order.id)
            .order_by(BalanceTxn.created, BalanceTxn.id)
        ).all()
        refunds = session.scalars(
            select(Refund).where(Refund.order_id == order.id).order_by(Refund.created_at)
        ).all()
        transactions = ledger.transactions_for_order(session, order.id)
    # Open violations by fingerprint (check + subject): the unique partial index.
    subjects = sorted(intents | ({order.id} if order else set()))
    prints = [fingerprint(UNRECONCILED_CHECK, s) for s in subjects]
    open_rows = session.execute(
        select(Violation)
        .where(Violation.fingerprint.in_(prints), Violation.resolved_at.is_(None))
        .order_by(Violation.first_seen, Violation.id)
    ).scalars()
    region = order.region if order else None
    at = now or datetime.now(UTC)
    return PaymentDetail(
        subject=subject,
        order=_order_side(order) if order else None,
        payments=tuple(
            StripePaymentSide(
                p.id,
                p.order_id,
                p.amount,
                p.amount_received,
                p.currency,
                p.status,
                p.latest_charge,
                p.created,
            )
            for p in payments
        ),
        stripe_refunds=tuple(
            StripeRefundSide(r.id, r.payment_intent_id, r.amount, r.currency, r.status, r.created)
            for r in stripe_refunds
        ),
        disputes=tuple(
            StripeDisputeSide(
                d.id, d.payment_intent_id, d.amount, d.withdrawn, d.currency, d.status, d.created
            )
            for d in disputes
        ),
        balance_txns=tuple(_balance_txn_side(b) for b in balance),
        refunds=tuple(
            OurRefund(
                r.id,
                r.amount_minor,
                r.currency,
                r.status,
                r.stripe_refund_id,
                r.reason,
                r.requested_by,
                r.created_at,
            )
            for r in refunds
        ),
        transactions=tuple(transactions),
        violations=tuple(_unreconciled_row(v, region, at) for v in open_rows),
    )


# -------------------------------------------------------------------------------------- payouts


@dataclass(frozen=True)
class PayoutCategory:
    """A payout's covered transactions of one Stripe reporting category: how many, their net
    as Stripe lists it, what our ledger's Stripe balance holds under their keys, and the
    difference (Stripe - ours)."""

    category: str
    count: int
    stripe_minor: int
    ledger_minor: int
    difference_minor: int


@dataclass(frozen=True)
class PayoutRow:
    """A Stripe payout we know (booked `payout:po_...`).

    `status`: `paid` or `failed` (see the module's constants); `created` is Stripe's, `failed_at`
    when Stripe returned it. From Stripe's payout object in the newest payout webhook we
    received (all None when only the reconciler's pull booked it): `arrival_date`, `automatic`,
    `failure_code` and `balance_txn_id` (the payout's own balance transaction).
    `verification`: `verified`, `mismatched`, `awaiting_check`, `awaiting_reconciliation` or
    `not_applicable` (constants above); `reconciled_at` when Stripe reported it reconciled.
    With Stripe's list known: `categories` (its composition), `stripe_total_minor` (their net,
    which is the payout's amount when Stripe is consistent), `ledger_total_minor` and
    `difference_minor` = amount - ledger total (core.payouts.Verification.difference);
    otherwise empty and None."""

    id: str
    amount_minor: int
    currency: str
    created: datetime
    status: str
    failed_at: datetime | None
    arrival_date: datetime | None
    automatic: bool | None
    failure_code: str | None
    balance_txn_id: str | None
    verification: str
    reconciled_at: datetime | None
    categories: tuple[PayoutCategory, ...]
    stripe_total_minor: int | None
    ledger_total_minor: int | None
    difference_minor: int | None


PAYOUTS_SQL = text(
    """
-- payouts --
-- Payouts we booked, newest first: one page of `payout:po_...` transactions (every paid,
-- reconciled or failed payout has one), then for those only: the amount in transit, the
-- failure, the verification record and the newest webhook (Stripe's payout object).
WITH page AS (
    SELECT t.id, t.source, substr(t.source, length('payout:') + 1) AS payout_id, t.occurred_at
      FROM ledger_txn t
     WHERE t.kind = 'payout'
       AND t.occurred_at >= :since AND t.occurred_at < :until
       AND (CAST(:after_at AS timestamptz) IS NULL
            OR (t.occurred_at, t.source) < (CAST(:after_at AS timestamptz), :after_source))
       AND (CAST(:currency AS text) IS NULL OR EXISTS (
            SELECT 1 FROM ledger_entry e
             WHERE e.txn_id = t.id AND e.account = :in_transit
               AND e.currency = :currency))
     ORDER BY t.occurred_at DESC, t.source DESC
     LIMIT :limit
)
SELECT p.payout_id, p.occurred_at AS created, e.amount_minor, e.currency,
       failed.occurred_at AS failed_at, c.value AS record, hook.object AS webhook_object
  FROM page p
  JOIN ledger_entry e ON e.txn_id = p.id AND e.account = :in_transit
  LEFT JOIN ledger_txn failed ON failed.source = 'payout_failed:' || p.payout_id
  -- core.payouts keys its verification record like the ledger: 'payout:po_...'
  LEFT JOIN sync_cursor c ON c.name = p.source
  LEFT JOIN LATERAL (
      -- ix_webhook_inbox_payment_intent: a payout event's object id is the payout
      SELECT w.payload #> '{data,object}' AS object FROM webhook_inbox w
       WHERE coalesce(w.payload #>> '{data,object,payment_intent}',
                      w.payload #>> '{data,object,id}') = p.payout_id
         AND w.provider = 'stripe'
       ORDER BY w.id DESC
       LIMIT 1) hook ON true
 ORDER BY p.occurred_at DESC, p.source DESC
"""
)


def _categories(v: payout_books.Verification, record: dict[str, Any]) -> tuple[PayoutCategory, ...]:
    counts: dict[str, int] = {}
    for t in record["stripe"]:
        counts[t["category"]] = counts.get(t["category"], 0) + 1

    def rank(category: str) -> tuple[int, str]:
        known = category in CATEGORY_ORDER
        return (CATEGORY_ORDER.index(category) if known else len(CATEGORY_ORDER), category)

    return tuple(
        PayoutCategory(
            c,
            counts[c],
            v.stripe.get(c, 0),
            v.ledger.get(c, 0),
            v.stripe.get(c, 0) - v.ledger.get(c, 0),
        )
        for c in sorted(counts, key=rank)
    )


def _at(epoch: Any) -> datetime | None:
    return datetime.fromtimestamp(epoch, UTC) if isinstance(epoch, int | float) else None


def _payout_row(session: Session, r: Any) -> PayoutRow:
    hook = r.webhook_object or {}
    record = r.record
    status = FAILED if r.failed_at is not None else PAID
    verification, categories, totals = AWAITING_RECONCILIATION, (), (None, None, None)
    if record is not None and record.get("stripe") is not None:
        v = payout_books.verify(session, r.payout_id, record)
        verification = VERIFIED if v.matches else MISMATCHED
        categories = _categories(v, record)
        totals = (sum(v.stripe.values()), sum(v.ledger.values()), v.difference)
    elif record is not None:
        verification = AWAITING_CHECK
    elif status == FAILED or hook.get("automatic") is False:
        verification = NOT_APPLICABLE
    return PayoutRow(
        id=r.payout_id,
        amount_minor=int(r.amount_minor),
        currency=r.currency,
        created=r.created,
        status=status,
        failed_at=r.failed_at,
        arrival_date=_at(hook.get("arrival_date")),
        automatic=hook.get("automatic"),
        failure_code=hook.get("failure_code"),
        balance_txn_id=hook.get("balance_transaction"),
        verification=verification,
        reconciled_at=datetime.fromisoformat(record["queued_at"]) if record else None,
        categories=categories,
        stripe_total_minor=totals[0],
        ledger_total_minor=totals[1],
        difference_minor=totals[2],
    )


def payouts(
    session: Session,
    *,
    start: date | None = None,
    end: date | None = None,
    currency: str | None = None,
    limit: int = 100,
    starting_after: str | None = None,
) -> tuple[list[PayoutRow], bool]:
    """Stripe payouts we know, newest first (by Stripe's `created`), created in the UTC days
    [start, end] (either open), in `currency`; at most `limit` after the payout
    `starting_after` (a `po_` id), and whether more follow. Each row is verified now, against
    the ledger as it stands (core.payouts.verify: one statement per payout on the page, over
    the keys of the transactions it covers), so it can say `verified` before the
    payout_mismatch check's grace period is over."""
    _page_limit(limit)
    after_at = after_source = None
    if starting_after is not None:
        after_source = f"{payout_books.CURSOR_PREFIX}{starting_after}"
        after_at = session.scalar(
            text("SELECT occurred_at FROM ledger_txn WHERE source = :s AND kind = 'payout'"),
            {"s": after_source},
        )
        if after_at is None:
            raise NotFound("no such payout", starting_after=starting_after)
    rows = session.execute(
        PAYOUTS_SQL,
        {
            "since": _day_start(start) if start else datetime.min.replace(tzinfo=UTC),
            "until": _day_start(end + timedelta(days=1))
            if end
            else datetime.max.replace(tzinfo=UTC),
            "currency": _currency(currency),
            "after_at": after_at,
            "after_source": after_source,
            "in_transit": ledger.PAYOUTS_IN_TRANSIT,
            "limit": limit + 1,
        },
    ).all()
    return [_payout_row(session, r) for r in rows[:limit]], len(rows) > limit


@dataclass(frozen=True)
class PayoutLine:
    """One balance transaction a payout covers, as Stripe listed it (`net_minor` in the
    payout's currency), with what we recorded of it (`recorded`; amount, fee, source object and
    creation are None when we never did), the PaymentIntent of a charge or refund, and the order
    it belongs to (through our record, else the PaymentIntent's order as staged from Stripe; a
    dispute we never booked has none)."""

    balance_txn_id: str
    category: str
    net_minor: int
    currency: str
    recorded: bool
    amount_minor: int | None
    fee_minor: int | None
    source_id: str | None
    created: datetime | None
    payment_intent_id: str | None
    order_id: str | None


PAYOUT_LINES_SQL = text(
    """
-- payout_lines --
-- The transactions Stripe says a payout covers (kept in its verification record, in Stripe's
-- order), each with our balance_txn record (primary key) and its order.
SELECT line.t ->> 'id' AS id, line.t ->> 'category' AS category,
       (line.t ->> 'net')::bigint AS net, c.value ->> 'currency' AS currency,
       b.id IS NOT NULL AS recorded, b.amount_minor, b.fee_minor, b.source_id, b.created,
       coalesce(obj.pi, sr.payment_intent_id) AS payment_intent_id,
       coalesce(b.order_id, sp.order_id) AS order_id
  FROM sync_cursor c
 CROSS JOIN LATERAL jsonb_array_elements(c.value -> 'stripe') WITH ORDINALITY AS line(t, n)
  LEFT JOIN balance_txn b ON b.id = line.t ->> 'id'
  -- The line's Stripe object, from our ledger keys for it (core.balance_txns.ledger_sources):
  -- a charge's PaymentIntent (`payment:pi_...`) or a refund (`refund:re_...`, and
  -- `refund_failed:re_...`).
  LEFT JOIN LATERAL (
      SELECT CASE split_part(s, ':', 1) WHEN 'payment' THEN split_part(s, ':', 2) END AS pi,
             CASE split_part(s, ':', 1) WHEN 'payment' THEN NULL ELSE split_part(s, ':', 2) END
                 AS refund
        FROM jsonb_array_elements_text(line.t -> 'sources') AS s
       WHERE split_part(s, ':', 1) IN ('payment', 'refund', 'refund_failed')
       LIMIT 1) obj ON true
  LEFT JOIN stripe_refund sr ON sr.id = obj.refund
  LEFT JOIN stripe_payment sp ON sp.id = coalesce(obj.pi, sr.payment_intent_id)
 WHERE c.name = :name AND jsonb_typeof(c.value -> 'stripe') = 'array'
 ORDER BY line.n
"""
)


def payout_lines(session: Session, payout_id: str) -> list[PayoutLine]:
    """The balance transactions a payout covers, each with its order: the view that ties a bank
    line to orders. Empty until Stripe's list is known (`verification` not `verified` or
    `mismatched`), and for payouts Stripe never reconciles (manual, failed)."""
    rows = session.execute(
        PAYOUT_LINES_SQL, {"name": f"{payout_books.CURSOR_PREFIX}{payout_id}"}
    ).all()
    return [
        PayoutLine(
            balance_txn_id=r.id,
            category=r.category,
            net_minor=int(r.net),
            currency=r.currency,
            recorded=r.recorded,
            amount_minor=r.amount_minor,
            fee_minor=r.fee_minor,
            source_id=r.source_id,
            created=r.created,
            payment_intent_id=r.payment_intent_id,
            order_id=r.order_id,
        )
        for r in rows
    ]
