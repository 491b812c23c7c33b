"""Engines and sessions (SQLAlchemy 2 + psycopg 3), and where the database is.

`database_url()` is the one place that decides: DATABASE_URL (or a running stack's), else the
embedded server under `.dotshop/pg`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache

from sqlalchemy import Engine, create_engine
from sqlalchemy.orm import Session

from core.settings import Settings, get_settings, home_dir

# Enough for the API's thread pool plus the relay and sweeper threads of one process.
POOL_SIZE = 20


def normalize_url(url: str) -> str:
    """Accept plain `postgresql://` URLs (as psql and Heroku write them) and use psycopg 3."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def database_url(settings: Settings | None = None) -> str:
    settings = settings or get_settings()
    if settings.database_url:
        return normalize_url(settings.database_url)
    from core import embedded_pg

    return embedded_pg.ensure_running(home_dir() / "pg")


def connection_guards(settings: Settings | None = None) -> str:
    """libpq `options` that set our timeouts on every connection (server-side, so they hold
    for every statement whatever the code path)."""
    settings = settings or get_settings()
    guards = {
        "statement_timeout": settings.db_statement_timeout_ms,
        "lock_timeout": settings.db_lock_timeout_ms,
        "idle_in_transaction_session_timeout": settings.db_idle_in_transaction_timeout_ms,
    }
    return " ".join(f"-c {name}={ms}" for name, ms in guards.items())


def make_engine(
    url: str, *, pool_size: int = POOL_SIZE, settings: Settings | None = None
) -> Engine:
    return create_engine(
        normalize_url(url),
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        connect_args={"options": connection_guards(settings)},
    )


@lru_cache(maxsize=8)
def engine_for(url: str) -> Engine:
    """One engine (one pool) per URL per process."""
    return make_engine(url)


@contextmanager
def transaction(engine: Engine) -> Iterator[Session]:
    """A session inside one transaction: committed on success, rolled back on error."""
    with Session(engine, expire_on_commit=False) as session, session.begin():
        yield session
