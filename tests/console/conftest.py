"""Console tests run the real console script (AppTest, or `dotshop console` for the browser)
against a database the real stack filled (tests/console/demo.py)."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator

import pytest
import streamlit as st

from core.operators import hash_password
from tests.console.demo import Demo, seed
from tests.e2e.conftest import Stack, stack  # noqa: F401 - the e2e stack, as a fixture here

# One operator per role; the password is the name backwards, long enough to look real.
ROLES = ("finance", "oncall", "admin")
PASSWORDS = {role: f"{role[::-1]}-console-test" for role in ROLES}


def console_users() -> str:
    return json.dumps(
        {role: {"role": role, "password_hash": hash_password(PASSWORDS[role])} for role in ROLES}
    )


@pytest.fixture(autouse=True)
def _keep_main_module() -> Iterator[None]:
    """AppTest runs the script as `__main__` and leaves it there; multiprocessing's spawn (used
    by later tests) would then re-run the console in every child it starts."""
    main = sys.modules["__main__"]
    yield
    sys.modules["__main__"] = main


@pytest.fixture(scope="module")
def demo(stack: Stack) -> Demo:  # noqa: F811
    return seed(stack)


@pytest.fixture(scope="module")
def console_env(stack: Stack, demo: Demo) -> Iterator[dict[str, str]]:  # noqa: F811
    """The environment the console reads, set for the AppTests of this module; the console's
    process-wide caches are dropped so no earlier module's database leaks in."""
    env = {"DATABASE_URL": stack.db_url, "DOTSHOP_CONSOLE_USERS": console_users()}
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        st.cache_resource.clear()
        st.cache_data.clear()
        yield env
    st.cache_resource.clear()
    st.cache_data.clear()
