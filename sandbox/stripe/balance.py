"""Balance transactions: the money movements finance reconciles against."""

from __future__ import annotations

from typing import Any

from sandbox.stripe.state import Clock, Store, new_id

# Stripe's standard US card pricing: 2.9% + 30 cents, in minor units.
FEE_PERCENT_BASIS_POINTS = 290
FEE_FIXED_MINOR = 30
# Stripe's dispute fee ($15); the sandbox returns it when the dispute is won.
DISPUTE_FEE_MINOR = 1500


def card_fee(amount: int) -> int:
    """2.9% + 30, rounded half up to a whole minor unit."""
    return (amount * FEE_PERCENT_BASIS_POINTS + 5000) // 10000 + FEE_FIXED_MINOR


def record(
    store: Store,
    clock: Clock,
    *,
    amount: int,
    fee: int,
    currency: str,
    source: str,
    type_: str,
    reporting_category: str,
    description: str | None,
    fee_description: str = "Stripe processing fees",
) -> dict[str, Any]:
    now = clock.now()
    txn = {
        "id": new_id("txn"),
        "object": "balance_transaction",
        "amount": amount,
        "available_on": now,
        "created": now,
        "currency": currency,
        "description": description,
        "exchange_rate": None,
        "fee": fee,
        "fee_details": (
            [
                {
                    "amount": fee,
                    "application": None,
                    "currency": currency,
                    "description": fee_description,
                    "type": "stripe_fee",
                }
            ]
            if fee
            else []
        ),
        "net": amount - fee,
        "reporting_category": reporting_category,
        "source": source,
        "status": "available",
        "type": type_,
    }
    return store.add("balance_transactions", txn)
