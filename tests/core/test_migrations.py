"""Migrations own the schema: they must produce exactly the models, and go down and up again."""

from __future__ import annotations

import secrets

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import DBAPIError

from core.errors import DatabaseNotMigrated
from core.migrate import alembic_config, head_revision, require_current, upgrade
from core.models import Base
from tests.conftest import _admin_url, _with_database, drop_database


def test_migrations_match_models(engine: Engine) -> None:
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


def test_require_current_refuses_unmigrated_database(pg_server_url: str, template_url: str) -> None:
    import psycopg

    name = f"t_empty_{secrets.token_hex(3)}"
    with psycopg.connect(_admin_url(pg_server_url), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = _with_database(pg_server_url, name)
    eng = create_engine(url)
    try:
        with pytest.raises(DatabaseNotMigrated, match="dotshop migrate"):
            require_current(eng)
        upgrade(url)  # an empty external database migrates from nothing
        require_current(eng)
        from alembic import command

        command.downgrade(alembic_config(url), "base")
        with pytest.raises(DatabaseNotMigrated):
            require_current(eng)
        upgrade(url)
        require_current(eng)
    finally:
        eng.dispose()
        drop_database(template_url, name)
    assert head_revision() is not None


def test_append_only_tables_refuse_updates(clean_engine: Engine) -> None:
    with clean_engine.begin() as conn:
        conn.execute(
            text("INSERT INTO audit_log (id, actor, action, subject) VALUES ('aud_1','t','a','s')")
        )
    with pytest.raises(DBAPIError, match="append-only"), clean_engine.begin() as conn:
        conn.execute(text("UPDATE audit_log SET actor = 'x'"))
    with pytest.raises(DBAPIError, match="append-only"), clean_engine.begin() as conn:
        conn.execute(text("DELETE FROM audit_log"))
