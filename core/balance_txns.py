"""Stripe's balance transactions in our books.

Every movement of our Stripe balance is a balance transaction (`txn_...`): a charge, a refund
or its failure, a dispute's withdrawal or reinstatement, a payout or its return. Each is
recorded once in `balance_txn` as Stripe reports it (amount, fee and net in the settlement
currency, the exchange rate from the charge's currency, when it becomes available), with the
ledger transactions that hold its money, so finance can tie any `txn_` to our books and tell
pending funds from available ones.

The business event books the money in the charge's own currency (`payment:pi_...`,
`refund:re_...`); the balance transaction adds what only Stripe knows, under `txn:txn_...`:
Stripe's fee, and the conversion when the account settles in another currency. So the ledger's
Stripe balance per currency is what Stripe's Balance says, and an EUR charge settled in USD
leaves no EUR behind in it.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from core import ledger
from core.ledger import Posting
from core.models import BalanceTxn

# Stripe's reporting categories that we book (the rest shows up as a difference in a payout).
CHARGE = "charge"
REFUND = "refund"
REFUND_FAILURE = "refund_failure"
DISPUTE = "dispute"
DISPUTE_REVERSAL = "dispute_reversal"
PAYOUT = "payout"
PAYOUT_REVERSAL = "payout_reversal"
PAYOUT_CATEGORIES = (PAYOUT, PAYOUT_REVERSAL)
# The account each category's Stripe fee is an expense of.
FEE_ACCOUNTS = {
    CHARGE: ledger.STRIPE_FEES,
    DISPUTE: ledger.DISPUTE_FEES,
    DISPUTE_REVERSAL: ledger.DISPUTE_FEES,
}


def own_source(txn_id: str) -> str:
    """The ledger source of what a balance transaction adds itself (fee, conversion)."""
    return f"txn:{txn_id}"


def _source_id(bt: dict[str, Any]) -> str | None:
    source = bt.get("source")
    return source.get("id") if isinstance(source, dict) else source


def _payment_intent_of(bt: dict[str, Any]) -> str | None:
    source = bt.get("source")
    return source.get("payment_intent") if isinstance(source, dict) else None


def ledger_sources(bt: dict[str, Any], payment_intent_id: str | None = None) -> list[str]:
    """Our ledger keys that together hold the money of one balance transaction: what the
    business event booked plus the transaction's own fee/conversion (none: not booked by us,
    so it shows up as a difference)."""
    category, source, own = bt["reporting_category"], _source_id(bt), own_source(bt["id"])
    if category == CHARGE:
        pi = payment_intent_id or _payment_intent_of(bt)
        return ([f"payment:{pi}"] if pi else []) + [own]
    if category == REFUND:
        return [f"refund:{source}", own]
    if category == REFUND_FAILURE:
        return [f"refund_failed:{source}", own]
    if category in (DISPUTE, DISPUTE_REVERSAL):
        return [own]
    if category == PAYOUT:
        return [f"payout:{source}"]
    if category == PAYOUT_REVERSAL:
        return [f"payout_failed:{source}"]
    return []


def dispute_source_amount(bt: dict[str, Any], dispute: dict[str, Any]) -> int:
    """What a dispute's balance transaction moved in the dispute's own currency: Stripe
    withdraws, and reinstates, the whole disputed amount."""
    if bt["currency"].lower() == dispute["currency"].lower():
        return int(bt["amount"])
    return -int(dispute["amount"]) if bt["amount"] < 0 else int(dispute["amount"])


def own_postings(bt: dict[str, Any], source_amount: int, source_currency: str) -> list[Posting]:
    """What the balance transaction adds to the business event's booking: the conversion
    from `source_amount` of `source_currency` (signed like the transaction), and Stripe's fee.
    A dispute books its own business legs here too (disputes are known only by their balance
    transactions)."""
    category, cur = bt["reporting_category"], bt["currency"].lower()
    legs: list[Posting] = []
    if category in (DISPUTE, DISPUTE_REVERSAL) and source_amount:
        src = source_currency.lower()
        legs += [
            Posting(ledger.DISPUTES, -source_amount, src),
            Posting(ledger.STRIPE_BALANCE, source_amount, src),
        ]
    if bt["amount"]:
        legs += ledger.conversion_postings(source_amount, source_currency, bt["amount"], cur)
    fee = int(bt.get("fee") or 0)
    if fee:
        legs += [
            Posting(FEE_ACCOUNTS.get(category, ledger.STRIPE_FEES), fee, cur),
            Posting(ledger.STRIPE_BALANCE, -fee, cur),
        ]
    return ledger.merged(legs)


def _at(epoch: int | float | None) -> datetime:
    return datetime.fromtimestamp(epoch or 0, UTC)


def book(
    session: Session,
    bt: dict[str, Any],
    *,
    source_amount: int,
    source_currency: str,
    order_id: str | None,
    payment_intent_id: str | None = None,
    description: str | None = None,
) -> None:
    """Book a balance transaction once: its own postings (if it adds any) and its record.
    Replays, from a webhook, a retried job or a repair, change nothing."""
    postings = own_postings(bt, source_amount, source_currency)
    if postings:
        ledger.post(
            session,
            source=own_source(bt["id"]),
            kind=DISPUTE if bt["reporting_category"].startswith(DISPUTE) else "stripe_settlement",
            postings=postings,
            occurred_at=_at(bt.get("created")),
            order_id=order_id,
            description=description or f"Stripe {bt['reporting_category']} {bt['id']}",
        )
    record(
        session,
        bt,
        order_id=order_id,
        source_amount=source_amount,
        source_currency=source_currency,
        sources=ledger_sources(bt, payment_intent_id),
    )


def record(
    session: Session,
    bt: dict[str, Any],
    *,
    order_id: str | None,
    source_amount: int | None,
    source_currency: str | None,
    sources: list[str],
) -> None:
    """Keep the balance transaction as Stripe reported it (first report wins: Stripe never
    changes one)."""
    rate = bt.get("exchange_rate")
    session.execute(
        insert(BalanceTxn)
        .values(
            id=bt["id"],
            type=bt["type"],
            reporting_category=bt["reporting_category"],
            source_id=_source_id(bt),
            order_id=order_id,
            amount_minor=bt["amount"],
            fee_minor=bt.get("fee") or 0,
            net_minor=bt["net"],
            currency=bt["currency"].lower(),
            exchange_rate=Decimal(str(rate)) if rate is not None else None,
            source_amount_minor=source_amount,
            source_currency=source_currency.lower() if source_currency else None,
            available_on=_at(bt["available_on"]),
            created=_at(bt["created"]),
            ledger_sources=sources,
        )
        .on_conflict_do_nothing(index_elements=[BalanceTxn.id])
    )


def funds(session: Session, now: datetime) -> dict[str, dict[str, int]]:
    """Net of the recorded balance transactions per currency, `pending` (not yet available for
    payout) and `available`: the two lists of Stripe's Balance object."""
    pending = BalanceTxn.available_on > now
    rows = session.execute(
        select(
            BalanceTxn.currency,
            func.sum(case((pending, BalanceTxn.net_minor), else_=0)),
            func.sum(case((pending, 0), else_=BalanceTxn.net_minor)),
        ).group_by(BalanceTxn.currency)
    ).all()
    out: dict[str, dict[str, int]] = defaultdict(dict)
    for currency, in_transit, available in rows:
        out[currency] = {"pending": int(in_transit), "available": int(available)}
    return dict(out)
