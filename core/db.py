"""Engines and sessions (SQLAlchemy 2 + psycopg 3), and where the database is.

`database_url()` is the one place that decides: DATABASE_URL (or a running stack's), else the
embedded server under `.dotshop/pg`.
"""

from __future__ import annotations

import select
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Any

import psycopg
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.exc import DisconnectionError
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


def read_engine(settings: Settings, write_engine: Engine) -> Engine:
    """Where this region reads what may be slightly stale (the catalog): the region's own
    database (DOTSHOP_READ_DATABASE_URL, a replica), so such reads never cross to a remote
    primary; without one, `write_engine`."""
    if not settings.read_database_url:
        return write_engine
    return engine_for(normalize_url(settings.read_database_url))


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


def _discard_dead(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
    """Pool checkout: refuse a connection the server has already hung up on, for free.

    An idle connection in the pool has nothing to read unless the server sent something
    unasked: when PostgreSQL shuts down or restarts it tells every backend's client so (FATAL
    57P01) and closes the socket. One non-blocking poll of the socket sees that without a round
    trip, where `pool_pre_ping` would spend one on every checkout. The pool then opens a fresh
    connection. A connection that breaks while in use is recycled by SQLAlchemy on the error
    (a disconnect invalidates every pooled connection as old as it), so the caller gets one
    error (503 `database_unavailable`) and the next request a working connection."""
    poller = select.poll()  # not select.select: it fails on descriptors above 1023
    try:
        poller.register(dbapi_connection.pgconn.socket, select.POLLIN)
    except (psycopg.OperationalError, OSError) as exc:  # libpq already knows it is gone
        raise DisconnectionError("this pooled connection is closed") from exc
    if poller.poll(0):
        raise DisconnectionError("the server closed this pooled connection")


def make_engine(
    url: str, *, pool_size: int = POOL_SIZE, settings: Settings | None = None
) -> Engine:
    engine = create_engine(
        normalize_url(url),
        pool_size=pool_size,
        max_overflow=pool_size,
        connect_args={"options": connection_guards(settings)},
    )
    event.listen(engine, "checkout", _discard_dead)
    return engine


@lru_cache(maxsize=8)
def engine_for(url: str) -> Engine:
    """One engine (one pool) per URL per process."""
    return make_engine(url)


@contextmanager
def autocommit(engine: Engine) -> Iterator[Connection]:
    """A connection whose every statement is its own transaction: one round trip each, with no
    BEGIN or COMMIT around it. For single statements (and server-side functions) that are a
    whole unit of work by themselves."""
    with engine.connect() as conn:
        yield conn.execution_options(isolation_level="AUTOCOMMIT")


@contextmanager
def transaction(engine: Engine) -> Iterator[Session]:
    """A session inside one transaction: committed on success, rolled back on error."""
    with Session(engine, expire_on_commit=False) as session, session.begin():
        yield session
