"""Currency conversion into the account's balance, as Stripe does it.

A charge in a currency the account cannot settle in (it has no bank account in it) is
converted into the account's default currency: its balance transaction carries the converted
`amount`, the settlement `currency` and the `exchange_rate` such that the charge's amount times
the rate is the balance transaction's amount. Refunds, dispute withdrawals and reinstatements of
that charge convert the same way, at the rate of their own day. The sandbox's rates are fixed
(Stripe's include its conversion margin, these stand for them).
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

# Units of the settlement currency per unit of the presentment currency.
RATES: dict[tuple[str, str], Decimal] = {
    ("eur", "usd"): Decimal("1.0843"),
    ("gbp", "usd"): Decimal("1.2671"),
    ("usd", "eur"): Decimal("0.9122"),
    ("gbp", "eur"): Decimal("1.1558"),
}


def settlement_currency(currency: str, settlement_currencies: tuple[str, ...]) -> str:
    """Where money in `currency` lands: its own currency when the account settles in it, else
    the account's default (first) settlement currency."""
    return currency if currency in settlement_currencies else settlement_currencies[0]


def convert(amount: int, source: str, target: str) -> tuple[int, Decimal]:
    """`amount` minor units of `source` in `target`, rounded half away from zero, and the rate."""
    rate = RATES[(source, target)]
    converted = (Decimal(amount) * rate).quantize(Decimal(1), rounding=ROUND_HALF_UP)
    return int(converted), rate
