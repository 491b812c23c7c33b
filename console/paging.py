"""Keyset paging for the console's tables (the core query functions take `starting_after` and
say whether more follow, like Stripe's lists): the cursor lives in the session state, under the
table's key, and a change of filters starts again at the first page."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import Any

import streamlit as st


def cursor(key: str, filters: Hashable) -> str | None:
    """Where this table's page starts; None (the first page) after the filters change."""
    if st.session_state.get(f"{key}_filters") != filters:
        st.session_state[f"{key}_filters"] = filters
        st.session_state.pop(f"{key}_after", None)
    return st.session_state.get(f"{key}_after")


def controls(key: str, rows: Sequence[Any], more: bool, id_of: Callable[[Any], str]) -> None:
    """'Next page' when more follow; 'First page' when this is not the first."""
    left, right = st.columns([1, 6])
    if st.session_state.get(f"{key}_after") and left.button("First page", key=f"{key}_first"):
        st.session_state.pop(f"{key}_after")
        st.rerun()
    if more and rows and right.button("Next page", key=f"{key}_next"):
        st.session_state[f"{key}_after"] = id_of(rows[-1])
        st.rerun()
