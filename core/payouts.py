"""Stripe payouts in the ledger, and the check that each one pays out what our books hold.

A payout moves money from `assets:stripe_balance` to `assets:payouts_in_transit`, keyed
`payout:po_...`, when Stripe reports it `paid`. It goes to a clearing account, not to
`assets:bank`, because `paid` only means Stripe expects the money in the bank: a payout can
still fail days later (`payout.failed`), and only the bank statement proves the arrival, so
finance clears the account against the statement. A failure is booked as its own reversing
transaction, `payout_failed:po_...`; it posts the payout first if `paid` never came (Stripe
fails some payouts straight from `pending`), so the pair nets to zero in any order.

Verification (automatic payouts only: Stripe cannot say what a manual payout covers) starts on
`payout.reconciliation_completed`, the event after which Stripe documents that
`GET /v1/balance_transactions?payout=po_...` lists the payout's transactions. The handler only
marks the payout to verify (a `sync_cursor` row `payout:po_...`): the Stripe call runs in the
`payout_mismatch` check, never inside a webhook's database transaction. The set Stripe lists is
final once reconciled, so it is fetched once and kept in that row; our side is recomputed each
run, so a late webhook that fills the gap resolves the mismatch.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from core import balance_txns, ledger
from core.models import LedgerEntry, LedgerTransaction, SyncCursor

CURSOR_PREFIX = "payout:"


def _at(payout: dict[str, Any]) -> datetime:
    return datetime.fromtimestamp(payout.get("created") or datetime.now(UTC).timestamp(), UTC)


def _post_payout(session: Session, payout: dict[str, Any]) -> None:
    ledger.post(
        session,
        source=f"payout:{payout['id']}",
        kind="payout",
        postings=ledger.payout_postings(payout["amount"], payout["currency"]),
        occurred_at=_at(payout),
        description=f"Stripe payout {payout['id']}",
    )


def payout_paid(session: Session, payout: dict[str, Any]) -> None:
    """`payout.paid`: the money left the Stripe balance for the bank."""
    _post_payout(session, payout)


def payout_reconciled(session: Session, payout: dict[str, Any]) -> None:
    """`payout.reconciliation_completed`: booked (if `paid` was lost) and queued for the check."""
    _post_payout(session, payout)
    if not payout.get("automatic"):
        return
    value = {
        "amount": payout["amount"],
        "currency": payout["currency"],
        "queued_at": datetime.now(UTC).isoformat(),
        "stripe": None,
    }
    session.execute(
        insert(SyncCursor)
        .values(name=f"{CURSOR_PREFIX}{payout['id']}", value=value)
        .on_conflict_do_nothing(index_elements=[SyncCursor.name])
    )


def payout_failed(session: Session, payout: dict[str, Any]) -> None:
    """`payout.failed`: the money came back to the Stripe balance."""
    _post_payout(session, payout)
    ledger.post(
        session,
        source=f"payout_failed:{payout['id']}",
        kind="payout_failed",
        postings=ledger.payout_failure_postings(payout["amount"], payout["currency"]),
        occurred_at=_at(payout),
        description=f"Stripe payout {payout['id']} failed: {payout.get('failure_code')}",
    )


# ------------------------------------------------------------------------------- verification


def stripe_side(txns: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """What we keep of the payout's transactions: category, net and our ledger keys."""
    return [
        {
            "id": t["id"],
            "category": t["reporting_category"],
            "net": t["net"],
            "sources": balance_txns.ledger_sources(t),
        }
        for t in txns
        # The payout's own transaction is the payout, not what it covers; a `payout_reversal`
        # (an earlier payout's funds returned) is covered like any other money.
        if t["reporting_category"] != balance_txns.PAYOUT
    ]


@dataclass(frozen=True)
class Verification:
    """A payout against its transactions and our books, per reporting category."""

    payout_id: str
    amount: int
    currency: str
    stripe: dict[str, int]
    ledger: dict[str, int]

    @property
    def difference(self) -> int:
        """What Stripe paid out that our books do not hold (negative: we hold more)."""
        return self.amount - sum(self.ledger.values())

    @property
    def matches(self) -> bool:
        return self.amount == sum(self.stripe.values()) and self.difference == 0


def _stripe_balance_by_source(
    session: Session, sources: list[str], currency: str
) -> dict[str, int]:
    rows = session.execute(
        select(LedgerTransaction.source, func.sum(LedgerEntry.amount_minor))
        .join(LedgerEntry, LedgerEntry.txn_id == LedgerTransaction.id)
        .where(
            LedgerTransaction.source.in_(sources),
            LedgerEntry.account == ledger.STRIPE_BALANCE,
            LedgerEntry.currency == currency,
        )
        .group_by(LedgerTransaction.source)
    ).all()
    return {source: int(total) for source, total in rows}


def verify(session: Session, payout_id: str, record: dict[str, Any]) -> Verification:
    """Compare a payout (its cursor record, with the Stripe side filled in) with our ledger: the
    Stripe balance movement booked under each transaction's keys."""
    txns = record["stripe"]
    currency = record["currency"]
    booked = _stripe_balance_by_source(session, [s for t in txns for s in t["sources"]], currency)
    stripe: dict[str, int] = defaultdict(int)
    ours: dict[str, int] = defaultdict(int)
    for t in txns:
        stripe[t["category"]] += t["net"]
        ours[t["category"]] += sum(booked.get(s, 0) for s in t["sources"])
    return Verification(payout_id, record["amount"], currency, dict(stripe), dict(ours))


def to_verify(session: Session) -> list[tuple[str, dict[str, Any], datetime]]:
    """Reconciled automatic payouts: (po_ id, cursor record, when it was queued)."""
    rows = session.execute(
        select(SyncCursor.name, SyncCursor.value)
        .where(SyncCursor.name.startswith(CURSOR_PREFIX, autoescape=True))
        .order_by(SyncCursor.name)
    ).all()
    return [
        (name.removeprefix(CURSOR_PREFIX), value, datetime.fromisoformat(value["queued_at"]))
        for name, value in rows
    ]


def keep_stripe_side(session: Session, payout_id: str, txns: list[dict[str, Any]]) -> None:
    """Store the payout's (final) Stripe transactions in its record."""
    row = session.get(SyncCursor, f"{CURSOR_PREFIX}{payout_id}", with_for_update=True)
    if row is not None and row.value.get("stripe") is None:
        row.value = {**row.value, "stripe": stripe_side(txns)}
    for t in txns:  # the payout's own balance transaction, among those it covers
        if t["reporting_category"] in balance_txns.PAYOUT_CATEGORIES:
            balance_txns.record(
                session,
                t,
                order_id=None,
                source_amount=None,
                source_currency=None,
                sources=balance_txns.ledger_sources(t),
            )
