"""The console's access to the database: one engine per process, and read-only transactions.

Pages cache what they read with `st.cache_data` and an explicit TTL, keyed by their filters;
actions run in their own transaction (`act`) and clear those caches, so the page shows the
action's result at once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import streamlit as st
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from core.db import database_url, engine_for, transaction
from core.metrics import serve_metrics
from core.settings import Settings

T = TypeVar("T")


@st.cache_resource(show_spinner=False)
def settings() -> Settings:
    return Settings()


@st.cache_resource(show_spinner=False)
def serve_process_metrics() -> None:
    """/metrics on DOTSHOP_METRICS_PORT, once per process. Streamlit runs no code of ours before
    a browser connects, so the first script run (app.py) starts it."""
    serve_metrics(settings().metrics_port)


@st.cache_resource(show_spinner=False)
def _engine(url: str) -> Engine:
    return engine_for(url)


def engine() -> Engine:
    return _engine(database_url(settings()))


def read(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """`fn(session, *args, **kwargs)` in a read-only transaction."""
    with Session(engine(), expire_on_commit=False) as session, session.begin():
        session.connection().exec_driver_sql("SET TRANSACTION READ ONLY")
        return fn(session, *args, **kwargs)


def act(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """`fn(session, *args, **kwargs)` in a transaction that commits; then every cached read is
    dropped so the next render shows the change."""
    with transaction(engine()) as session:
        result = fn(session, *args, **kwargs)
    st.cache_data.clear()
    return result
