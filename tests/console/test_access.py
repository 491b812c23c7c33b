"""No page renders without sign-in; a wrong password or an unknown operator is refused the same
way; roles decide who may act (core.operators), checked in the action itself."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from core import operator_actions, operators
from core.db import transaction
from core.errors import Forbidden, InvalidRequest
from core.operators import Operator
from tests.console.conftest import PASSWORDS
from tests.console.demo import Demo
from tests.console.support import APP, open_page, sign_in, signed_out
from tests.e2e.conftest import Stack

pytestmark = pytest.mark.slow


def test_nothing_renders_before_sign_in(console_env: dict) -> None:
    at = signed_out()
    assert not at.exception
    assert [t.value for t in at.title] == ["dotshop console"]
    assert len(at.text_input) == 2 and not at.dataframe and not at.metric


@pytest.mark.parametrize(
    ("name", "password"),
    [("admin", "wrong-password"), ("nobody", PASSWORDS["admin"]), ("", "")],
)
def test_wrong_credentials_are_refused_without_saying_which(
    console_env: dict, name: str, password: str
) -> None:
    at = sign_in(signed_out(), name, password)
    assert [e.value for e in at.error] == ["Unknown operator or wrong password."]
    assert "operator" not in at.session_state
    assert not at.dataframe


def test_sign_in_then_sign_out(console_env: dict) -> None:
    at = open_page("overview", "finance")
    assert "Signed in as **finance** (finance)" in [c.value for c in at.sidebar.caption]
    at.sidebar.button(key="sign_out").click().run()
    assert "operator" not in at.session_state
    assert len(at.text_input) == 2


def test_roles_are_enforced_by_the_action_not_the_button(stack: Stack, demo: Demo) -> None:
    """A finance operator calling the action directly (as a page that forgot to hide the
    button would) is refused, and nothing changes."""
    finance = Operator("finance", "finance")
    with transaction(stack.engine) as session:
        with pytest.raises(Forbidden):
            operator_actions.retry_message(session, finance, demo.dead_letter)
        with pytest.raises(Forbidden):
            operator_actions.discard_message(session, finance, demo.dead_letter, "no")
    assert (
        stack.scalar("SELECT status FROM outbox WHERE public_id = :p", p=demo.dead_letter) == "dead"
    )
    assert not stack.sql("SELECT 1 FROM audit_log WHERE subject = :p", p=demo.dead_letter)


def test_with_oidc_configured_only_the_identity_provider_signs_in(console_env: dict) -> None:
    """Streamlit's st.login: with an [auth] section in secrets, the console offers the identity
    provider's sign-in and no password form (local accounts cannot be used around it)."""
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.secrets["auth"] = {
        "redirect_uri": "http://127.0.0.1:8501/oauth2callback",
        "cookie_secret": "a-long-random-cookie-secret-for-tests",
        "client_id": "dotshop-console",
        "client_secret": "client-secret",
        "server_metadata_url": "http://127.0.0.1:1/.well-known/openid-configuration",
    }
    at.run()
    assert not at.exception
    assert [b.label for b in at.button] == ["Sign in with your identity provider"]
    assert not at.text_input and not at.dataframe


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("not json", "console users are not JSON"),
        ("[1]", "console users are a JSON object"),
        ('{"ada": {"role": "finance", "password_hash": "plain"}}', "argon2 password_hash"),
        ('{"ada": {"role": "cto", "password_hash": "$argon2id$x"}}', "role must be one of"),
    ],
)
def test_bad_account_configuration_is_refused_clearly(raw: str, message: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        operators.parse_accounts(raw)
    assert message in refused.value.message


def test_oidc_roles_match_addresses_case_insensitively() -> None:
    roles = operators.parse_oidc_roles('{"Ada@Example.com": "oncall"}')
    ada = operators.oidc_operator(roles, "ada@example.COM")
    assert ada == Operator("ada@example.COM", "oncall")
    assert operators.oidc_operator(roles, "eve@example.com") is None
    assert operators.oidc_operator(roles, None) is None
