"""Payout events in the ledger (core/payouts.py), applied through core.payments like Stripe
delivers them: in any order, any number of times."""

from __future__ import annotations

import itertools
import secrets
from typing import Any

from sqlalchemy import Engine

from core import ledger, payments
from core.db import transaction


def _event(event_type: str, payout: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": f"evt_{secrets.token_hex(8)}",
        "type": event_type,
        "data": {"object": payout},
    }


def _payout(status: str) -> dict[str, Any]:
    return {
        "id": "po_test",
        "object": "payout",
        "amount": 4200,
        "currency": "usd",
        "automatic": True,
        "created": 1_790_000_000,
        "status": status,
        "failure_code": "account_closed" if status == "failed" else None,
    }


def test_a_failed_payout_nets_to_zero_in_any_order_and_redelivery(clean_engine: Engine) -> None:
    """Stripe: a payout can fail after `payout.paid`, or straight from pending; events arrive in
    any order and may repeat. The payout posts once, its reversal once, and the Stripe balance
    ends where it started whatever the order."""
    events = [("payout.paid", "paid"), ("payout.failed", "failed")]
    for n, order in enumerate(itertools.permutations(events + events[:1])):
        with transaction(clean_engine) as session:
            for event_type, status in order:
                payout = {**_payout(status), "id": f"po_order{n}"}
                payments.accept_and_apply(session, _event(event_type, payout))
            assert ledger.account_balance(session, ledger.STRIPE_BALANCE, "usd") == 0
            assert ledger.account_balance(session, ledger.PAYOUTS_IN_TRANSIT, "usd") == 0


def test_payout_paid_moves_the_balance_to_in_transit_once(clean_engine: Engine) -> None:
    """`payout.paid` redelivered, then `reconciliation_completed`: booked once."""
    with transaction(clean_engine) as session:
        for event_type in ("payout.paid", "payout.paid", "payout.reconciliation_completed"):
            payments.accept_and_apply(session, _event(event_type, _payout("paid")))
        assert ledger.account_balance(session, ledger.PAYOUTS_IN_TRANSIT, "usd") == 4200
        assert ledger.account_balance(session, ledger.STRIPE_BALANCE, "usd") == -4200
