"""Balance transactions: the money movements finance reconciles against."""

from __future__ import annotations

from typing import Any

from sandbox.stripe.state import Clock, Store, new_id

# Stripe's standard US card pricing: 2.9% + 30 cents, in minor units.
FEE_PERCENT_BASIS_POINTS = 290
FEE_FIXED_MINOR = 30
# Stripe's dispute fee ($15); the sandbox returns it when the dispute is won.
DISPUTE_FEE_MINOR = 1500
# Stripe's standard US settlement timing: incoming funds stay `pending` for two days before they
# become `available` (and can be paid out); money leaving the balance is deducted at once.
SETTLEMENT_SECONDS = 2 * 86400


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
    net = amount - fee
    available_on = now + SETTLEMENT_SECONDS if net > 0 else now
    txn = {
        "id": new_id("txn"),
        "object": "balance_transaction",
        "amount": amount,
        "available_on": available_on,
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
        "net": net,
        "reporting_category": reporting_category,
        "source": source,
        "status": "pending" if available_on > now else "available",
        "type": type_,
        # The automatic payout that swept this transaction (the list's `payout` filter).
        "_payout": None,
    }
    return store.add("balance_transactions", txn)


def settle(store: Store, clock: Clock) -> None:
    """Make every transaction whose `available_on` has come `available`."""
    now = clock.now()
    with store.lock:
        for txn in store.tables["balance_transactions"].values():
            if txn["status"] == "pending" and txn["available_on"] <= now:
                txn["status"] = "available"


def totals(store: Store, clock: Clock) -> dict[str, dict[str, int]]:
    """Net per status (`available`, `pending`) and currency: the Balance object's two lists."""
    settle(store, clock)
    sums: dict[str, dict[str, int]] = {"available": {}, "pending": {}}
    with store.lock:
        for txn in store.tables["balance_transactions"].values():
            by_currency = sums[txn["status"]]
            by_currency[txn["currency"]] = by_currency.get(txn["currency"], 0) + txn["net"]
    return sums
