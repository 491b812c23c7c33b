"""Balance transactions: the money movements finance reconciles against."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sandbox.stripe import fx
from sandbox.stripe.state import Clock, Store, new_id

if TYPE_CHECKING:
    from sandbox.stripe.account import Account

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
    acct: Account,
    *,
    amount: int,
    currency: str,
    source: str,
    type_: str,
    reporting_category: str,
    description: str | None,
    fee: Callable[[int], int] | int = 0,
    fee_description: str = "Stripe processing fees",
) -> dict[str, Any]:
    """Post a balance transaction for `amount` of `currency` (the charge's own currency),
    converted into the settlement currency when the account cannot settle in it. `fee` is in
    the settlement currency: a fixed amount, or a function of the settled amount."""
    now = acct.clock.now()
    settled_in = fx.settlement_currency(currency, acct.settlement_currencies)
    exchange_rate = None
    if settled_in != currency:
        amount, rate = fx.convert(amount, currency, settled_in)
        exchange_rate = float(rate)
        currency = settled_in
    fee = fee(amount) if callable(fee) else fee
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
        "exchange_rate": exchange_rate,
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
    return acct.store.add("balance_transactions", txn)


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
