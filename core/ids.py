"""Prefixed, sortable-enough, unguessable ids: `ord_3kq...`. Every id we mint goes through here."""

from __future__ import annotations

import secrets

PREFIXES = frozenset(
    {
        "chk",
        "ord",
        "rsv",
        "led",
        "obx",
        "evt",
        "idk",
        "aud",
        "prd",
        "var",
        "run",
        "vio",
        "req",
        "rfd",
    }
)


def new_id(prefix: str) -> str:
    """A new id such as `ord_` + 24 url-safe characters (144 bits of randomness)."""
    if prefix not in PREFIXES:
        raise ValueError(f"unknown id prefix {prefix!r}")
    return f"{prefix}_{secrets.token_hex(12)}"
