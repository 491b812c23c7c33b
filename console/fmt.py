"""Money and tables the way finance reads them: amounts in the currency's own format, tables
sortable (st.dataframe sorts by the number, not its text) and exportable as CSV in minor units,
the form a spreadsheet or another system takes without rounding."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

import pandas as pd
import streamlit as st

# Stripe's zero-decimal currencies: the minor unit is the unit.
ZERO_DECIMAL = frozenset(
    [
        "bif",
        "clp",
        "djf",
        "gnf",
        "jpy",
        "kmf",
        "krw",
        "mga",
        "pyg",
        "rwf",
        "ugx",
        "vnd",
        "vuv",
        "xaf",
        "xof",
        "xpf",
    ]
)
# Stripe's three-decimal currencies.
THREE_DECIMAL = frozenset(["bhd", "jod", "kwd", "omr", "tnd"])
HIGHLIGHT = "background-color: rgba(255, 75, 75, 0.18)"
SYMBOLS = {"usd": "$", "eur": "€", "gbp": "£", "jpy": "¥", "cad": "CA$", "aud": "A$"}


def exponent(currency: str) -> int:
    currency = currency.lower()
    return 0 if currency in ZERO_DECIMAL else 3 if currency in THREE_DECIMAL else 2


def major(amount_minor: int, currency: str) -> Decimal:
    return Decimal(amount_minor).scaleb(-exponent(currency))


def money(amount_minor: int | None, currency: str | None) -> str:
    """`$1,234.50`, `-€3.00`, `¥1,200`, `12.500 KWD`; an empty string for no amount."""
    if amount_minor is None or not currency:
        return ""
    digits = exponent(currency)
    text = f"{abs(major(amount_minor, currency)):,.{digits}f}"
    sign = "-" if amount_minor < 0 else ""
    symbol = SYMBOLS.get(currency.lower())
    return f"{sign}{symbol}{text}" if symbol else f"{sign}{text} {currency.upper()}"


def majors(amounts: Iterable[Any], currencies: Iterable[Any]) -> list[float | None]:
    """Minor units to major units per row, for charts and sorting (floats only for display)."""
    return [
        float(major(int(a), c)) if pd.notna(a) and c else None
        for a, c in zip(amounts, currencies, strict=True)
    ]


def frame(rows: Iterable[Any]) -> pd.DataFrame:
    """A DataFrame of dataclass instances (or mappings), one column per field."""
    records = [dataclasses.asdict(r) if dataclasses.is_dataclass(r) else dict(r) for r in rows]
    return pd.DataFrame.from_records(records)


def show(
    df: pd.DataFrame,
    *,
    key: str,
    money_columns: Mapping[str, str] | None = None,
    highlight: str | None = None,
    height: int | str = "auto",
) -> None:
    """A sortable table with its CSV export. `money_columns` maps an amount column (minor
    units) to the column holding its currency: shown in major units, exported as stored.
    `highlight` names a boolean column: its true rows are shown in red."""
    shown = df.copy()
    config: dict[str, Any] = {}
    for amount, currency in (money_columns or {}).items():
        if amount in shown and len(shown):
            shown[amount] = majors(shown[amount], shown[currency])
        # Shown in major units, so the column is not labelled "..._minor" on screen.
        label = amount.removesuffix("_minor")
        label = f"{label} amount" if label != amount and label in shown else label
        config[amount] = st.column_config.NumberColumn(label, format="localized")
    data: Any = shown
    if highlight and len(shown):
        flagged = shown[highlight].fillna(False).astype(bool)
        data = shown.style.apply(
            lambda row: [HIGHLIGHT if flagged[row.name] else ""] * len(row), axis=1
        )
    st.dataframe(data, hide_index=True, column_config=config, key=key, height=height)
    st.download_button(
        "Download CSV",
        df.to_csv(index=False).encode(),
        file_name=f"{key}.csv",
        mime="text/csv",
        key=f"{key}-csv",
    )
