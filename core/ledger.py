"""The double-entry ledger finance reads: append-only, balanced, unique by source.

Amounts are signed integer minor units: debit positive, credit negative. Every transaction's
postings sum to 0 per currency; `post` checks that before touching the database, and a deferred
trigger (see the migration) refuses an unbalanced transaction at commit anyway. Each
transaction is unique by its `source` (`payment:pi_...`, `refund:re_...`, `txn:txn_...` for a
Stripe balance transaction, ...), so a replayed event posts nothing. Rows are never updated or
deleted (triggers refuse it): a mistake is corrected by a new, reversing transaction.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from core.errors import InvalidRequest, LedgerUnbalanced
from core.ids import new_id
from core.models import LedgerEntry, LedgerTransaction

# ------------------------------------------------------------------------- chart of accounts
# Money Stripe holds for us: charges in, refunds/disputes/fees out. Reconciles with Stripe's
# balance transactions.
STRIPE_BALANCE = "assets:stripe_balance"
# What customers paid for goods (credited when a payment succeeds).
REVENUE = "revenue:sales"
# Contra-revenue: money given back. Kept apart from sales so finance sees refund volume.
REFUNDS = "revenue:refunds"
# Stripe's processing fee on a charge.
STRIPE_FEES = "expenses:stripe_fees"
# Funds withdrawn by a dispute (chargeback); credited back if we win it.
DISPUTES = "expenses:disputes"
# Stripe's fee for handling a dispute (returned when the dispute is won).
DISPUTE_FEES = "expenses:dispute_fees"
# Suspense: money Stripe took that does not match its order (another amount or currency). Not
# revenue until a human settles it (refund it, or book it against the order); kept in the
# charge's own currency.
UNMATCHED_PAYMENTS = "liabilities:unmatched_payments"
# A Stripe payout on its way to the bank: cleared against the bank statement, since Stripe can
# still fail a payout it reported `paid` (see core.payouts).
PAYOUTS_IN_TRANSIT = "assets:payouts_in_transit"

# Currency trading: where money charged in one currency turns into the currency Stripe settles
# it in. Its balance per currency is our position; valued at today's rates, it is the
# conversion's gain or loss. It keeps `assets:stripe_balance` in the currencies Stripe holds.
FX_CONVERSION = "equity:currency_conversion"

# Ledger currencies are stored like Stripe writes them (and the CHECK demands): 'usd', 'eur'.
_CURRENCY = re.compile(r"^[a-z]{3}$")


@dataclass(frozen=True)
class Posting:
    """One leg of a transaction: debit (> 0) or credit (< 0) of an account, in minor units."""

    account: str
    amount_minor: int
    currency: str


@dataclass(frozen=True)
class Transaction:
    """A posted transaction as read back, with its postings."""

    id: str
    source: str
    kind: str
    order_id: str | None
    description: str | None
    occurred_at: datetime
    postings: tuple[Posting, ...]


def check_balanced(postings: Sequence[Posting]) -> None:
    """Raise unless the postings form a valid transaction: at least two legs, no zero or
    malformed leg, and a zero sum per currency."""
    if len(postings) < 2:
        raise LedgerUnbalanced("a transaction needs at least two postings")
    sums: dict[str, int] = defaultdict(int)
    for p in postings:
        if not p.account:
            raise InvalidRequest("a posting needs an account")
        if not _CURRENCY.match(p.currency):
            raise InvalidRequest("currency must be a lowercase ISO code", currency=p.currency)
        if not isinstance(p.amount_minor, int) or p.amount_minor == 0:
            raise InvalidRequest("a posting amount is a nonzero integer", account=p.account)
        sums[p.currency] += p.amount_minor
    off = {cur: total for cur, total in sums.items() if total != 0}
    if off:
        raise LedgerUnbalanced(unbalanced=off)


def post(
    session: Session,
    *,
    source: str,
    kind: str,
    postings: Sequence[Posting],
    occurred_at: datetime,
    order_id: str | None = None,
    description: str | None = None,
) -> str | None:
    """Post a balanced transaction once per `source`; returns its `led_` id, or None when that
    source was already posted (a replay posts nothing).

    A concurrent post of the same source waits for the first one's transaction and then
    inserts nothing (INSERT ... ON CONFLICT DO NOTHING)."""
    check_balanced(postings)
    if not source:
        raise InvalidRequest("a ledger transaction needs a source")
    txn_id = session.execute(
        insert(LedgerTransaction)
        .values(
            id=new_id("led"),
            source=source,
            kind=kind,
            order_id=order_id,
            description=description,
            occurred_at=occurred_at,
        )
        .on_conflict_do_nothing(index_elements=[LedgerTransaction.source])
        .returning(LedgerTransaction.id)
    ).scalar_one_or_none()
    if txn_id is None:
        return None
    session.execute(
        insert(LedgerEntry),
        [
            {
                "txn_id": txn_id,
                "account": p.account,
                "currency": p.currency,
                "amount_minor": p.amount_minor,
            }
            for p in postings
        ],
    )
    return txn_id


# ------------------------------------------------------------------------------------- reads


def balances(session: Session, *, account_prefix: str | None = None) -> dict[tuple[str, str], int]:
    """Balance per (account, currency), optionally for accounts starting with a prefix."""
    stmt = select(
        LedgerEntry.account, LedgerEntry.currency, func.sum(LedgerEntry.amount_minor)
    ).group_by(LedgerEntry.account, LedgerEntry.currency)
    if account_prefix:
        stmt = stmt.where(LedgerEntry.account.startswith(account_prefix, autoescape=True))
    return {(acct, cur): int(total) for acct, cur, total in session.execute(stmt).all()}


def account_balance(session: Session, account: str, currency: str) -> int:
    total = session.scalar(
        select(func.coalesce(func.sum(LedgerEntry.amount_minor), 0)).where(
            LedgerEntry.account == account, LedgerEntry.currency == currency
        )
    )
    return int(total or 0)


def trial_balance(session: Session) -> dict[str, int]:
    """Sum of all entries per currency: every value is 0 in a sound ledger."""
    rows = session.execute(
        select(LedgerEntry.currency, func.sum(LedgerEntry.amount_minor)).group_by(
            LedgerEntry.currency
        )
    ).all()
    return {cur: int(total) for cur, total in rows}


def transactions_for_order(session: Session, order_id: str) -> list[Transaction]:
    """The order's transactions, oldest first, each with its postings in entry order."""
    txns = session.execute(
        select(LedgerTransaction)
        .where(LedgerTransaction.order_id == order_id)
        .order_by(LedgerTransaction.occurred_at, LedgerTransaction.created_at)
    ).scalars()
    txns = list(txns)
    legs: dict[str, list[Posting]] = defaultdict(list)
    if txns:
        entries = session.execute(
            select(LedgerEntry)
            .where(LedgerEntry.txn_id.in_([t.id for t in txns]))
            .order_by(LedgerEntry.id)
        ).scalars()
        for e in entries:
            legs[e.txn_id].append(Posting(e.account, e.amount_minor, e.currency))
    return [
        Transaction(
            t.id, t.source, t.kind, t.order_id, t.description, t.occurred_at, tuple(legs[t.id])
        )
        for t in txns
    ]


# ------------------------------------------------------------------- postings per business event


def _positive(amount: int, what: str) -> None:
    if amount <= 0:
        raise InvalidRequest(f"{what} must be a positive amount of minor units", amount=amount)


def payment_postings(amount: int, currency: str) -> list[Posting]:
    """A charge succeeded: Stripe holds the money, it is a sale (in the charge's currency;
    Stripe's fee and any conversion come with its balance transaction, see core.balance_txns)."""
    _positive(amount, "payment")
    cur = currency.lower()
    return [Posting(STRIPE_BALANCE, amount, cur), Posting(REVENUE, -amount, cur)]


def unmatched_payment_postings(amount: int, currency: str) -> list[Posting]:
    """Stripe holds money that matches no order as it stands: a liability until settled."""
    _positive(amount, "payment")
    cur = currency.lower()
    return [Posting(STRIPE_BALANCE, amount, cur), Posting(UNMATCHED_PAYMENTS, -amount, cur)]


def refund_postings(amount: int, currency: str, account: str = REFUNDS) -> list[Posting]:
    """Money went back to the customer out of the Stripe balance (charged to `account`: refunds,
    or the suspense account for a payment that never matched its order)."""
    _positive(amount, "refund")
    cur = currency.lower()
    return [Posting(account, amount, cur), Posting(STRIPE_BALANCE, -amount, cur)]


def refund_failure_postings(amount: int, currency: str, account: str = REFUNDS) -> list[Posting]:
    """A refund failed: the money came back to the balance (the reverse of `refund_postings`)."""
    return [
        Posting(p.account, -p.amount_minor, p.currency)
        for p in refund_postings(amount, currency, account)
    ]


def merged(postings: Sequence[Posting]) -> list[Posting]:
    """One leg per account and currency, in first-seen order, zero legs dropped: the legs of
    several steps of one money movement, written as the movement."""
    sums: dict[tuple[str, str], int] = {}
    for p in postings:
        sums[(p.account, p.currency)] = sums.get((p.account, p.currency), 0) + p.amount_minor
    return [Posting(acct, amount, cur) for (acct, cur), amount in sums.items() if amount]


def conversion_postings(
    source_amount: int, source_currency: str, amount: int, currency: str
) -> list[Posting]:
    """Stripe converted `source_amount` of the charge's currency into `amount` of the
    settlement currency in our balance (both signed alike: > 0 into the balance). None when
    there was nothing to convert."""
    src, cur = source_currency.lower(), currency.lower()
    if src == cur:
        return []
    if source_amount == 0 or amount == 0 or (source_amount > 0) != (amount > 0):
        raise InvalidRequest("a conversion moves money one way", amount=amount)
    return [
        Posting(STRIPE_BALANCE, -source_amount, src),
        Posting(FX_CONVERSION, source_amount, src),
        Posting(FX_CONVERSION, -amount, cur),
        Posting(STRIPE_BALANCE, amount, cur),
    ]


def payout_postings(amount: int, currency: str) -> list[Posting]:
    """Stripe paid out part of the balance towards our bank account."""
    _positive(amount, "payout")
    cur = currency.lower()
    return [Posting(PAYOUTS_IN_TRANSIT, amount, cur), Posting(STRIPE_BALANCE, -amount, cur)]


def payout_failure_postings(amount: int, currency: str) -> list[Posting]:
    """A payout failed: the money is back in the Stripe balance (the reverse of the payout)."""
    return [
        Posting(p.account, -p.amount_minor, p.currency) for p in payout_postings(amount, currency)
    ]
