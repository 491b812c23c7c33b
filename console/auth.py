"""Sign-in for the console: nothing renders before it. OIDC through Streamlit's `st.login` when
`.streamlit/secrets.toml` has an `[auth]` section; otherwise the local operator accounts of
DOTSHOP_CONSOLE_USERS (core.operators). The signed-in operator lives in the session state of
this browser tab only."""

from __future__ import annotations

from typing import Any

import streamlit as st

from console.data import settings
from core import operators
from core.errors import InvalidRequest
from core.operators import Operator

SESSION_KEY = "operator"


def _oidc_configured() -> bool:
    try:
        return "auth" in st.secrets
    except Exception:  # no secrets.toml at all: Streamlit raises rather than answer False
        return False


@st.cache_resource(show_spinner=False)
def _accounts(raw: str | None) -> dict[str, operators.Account]:
    return operators.parse_accounts(raw)


def _configured_accounts() -> dict[str, operators.Account]:
    secret = settings().console_users
    return _accounts(secret.get_secret_value() if secret else None)


def _password_form() -> Operator | None:
    try:
        accounts = _configured_accounts()
    except InvalidRequest as exc:
        st.error(f"DOTSHOP_CONSOLE_USERS is not valid: {exc.message}")
        return None
    if not accounts:
        st.error("No operator accounts are configured (DOTSHOP_CONSOLE_USERS).")
        return None
    with st.form("login"):
        name = st.text_input("Operator", key="login_name")
        password = st.text_input("Password", type="password", key="login_password")
        submitted = st.form_submit_button("Sign in")
    if not submitted:
        return None
    operator = operators.authenticate(accounts, name.strip(), password)
    if operator is None:
        st.error("Unknown operator or wrong password.")
    return operator


def _oidc() -> Operator | None:
    user: Any = st.user
    if not getattr(user, "is_logged_in", False):  # absent until a provider answered
        st.button("Sign in with your identity provider", on_click=st.login)
        return None
    roles = operators.parse_oidc_roles(settings().console_oidc_roles)
    operator = operators.oidc_operator(roles, user.get("email"))
    if operator is None:
        st.error(f"{user.get('email')} has no console role (DOTSHOP_CONSOLE_OIDC_ROLES).")
        st.button("Sign out", on_click=st.logout)
    return operator


def signed_in() -> Operator:
    """The signed-in operator; otherwise the sign-in form, and the script stops here."""
    operator = st.session_state.get(SESSION_KEY)
    if operator is None:
        st.title("dotshop console")
        operator = _oidc() if _oidc_configured() else _password_form()
        if operator is None:
            st.stop()
        st.session_state[SESSION_KEY] = operator
        st.rerun()
    return operator


def sign_out() -> None:
    st.session_state.pop(SESSION_KEY, None)
    if _oidc_configured():
        st.logout()
