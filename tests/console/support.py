"""Open a console page as a signed-in operator, the way a person would: the sign-in form first."""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

import console
from tests.console.conftest import PASSWORDS

APP = Path(console.__file__).with_name("app.py")
VIEWS = APP.with_name("views")
# A first render builds the engine and the checks registry; later ones are quick.
TIMEOUT = 60


def signed_out() -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    at.run()
    return at


def sign_in(at: AppTest, name: str, password: str) -> AppTest:
    at.text_input(key="login_name").input(name)
    at.text_input(key="login_password").input(password)
    at.button[0].click()
    at.run()
    return at


def open_page(page: str, role: str = "admin") -> AppTest:
    at = sign_in(signed_out(), role, PASSWORDS[role])
    assert not at.exception, at.exception
    at.switch_page(str(VIEWS / f"{page}.py"))
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at
