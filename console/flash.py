"""An action's outcome, shown once after the rerun that makes the page show the action's
effect (otherwise the tables above the form would still show the state before it)."""

from __future__ import annotations

import streamlit as st

KEY = "_flash"


def after_rerun(kind: str, text: str) -> None:
    """Keep the message (`success`, `warning` or `error`) and rerun the page now."""
    st.session_state[KEY] = (kind, text)
    st.rerun()


def show() -> None:
    """The message kept by the last action, once."""
    if KEY in st.session_state:
        kind, text = st.session_state.pop(KEY)
        getattr(st, kind)(text)
