"""The `dotshop` command: lists the contract's commands, says plainly what is not built yet,
migrates an empty external database, and refuses to start on bad configuration (exit 2)."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys

import psycopg
import pytest

from core.migrate import head_revision
from tests.conftest import _admin_url, _with_database, drop_database


def dotshop(*args: str, **env: str) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **env}
    return subprocess.run(
        [sys.executable, "-m", "dotshop", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=full_env,
        stdin=subprocess.DEVNULL,
    )


def test_help_lists_every_contract_command() -> None:
    out = dotshop("--help")
    assert out.returncode == 0
    for command in (
        "up",
        "down",
        "api",
        "relay",
        "sync",
        "checks",
        "console",
        "sandbox",
        "migrate",
        "bench",
        "drill",
    ):
        assert f" {command} " in out.stdout


@pytest.mark.parametrize(
    "args",
    [("console",), ("bench", "checkout"), ("drill", "failover")],
)
def test_parts_not_built_yet_say_so_and_exit_2(args: tuple[str, ...]) -> None:
    out = dotshop(*args)
    assert out.returncode == 2
    assert "not built yet" in out.stderr and out.stdout == ""


@pytest.fixture
def empty_database(pg_server_url: str, template_url: str):
    name = f"t_cli_{secrets.token_hex(3)}"
    with psycopg.connect(_admin_url(pg_server_url), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield _with_database(pg_server_url, name)
    drop_database(template_url, name)


def test_api_refuses_an_unmigrated_database_then_migrate_fixes_it(empty_database: str) -> None:
    refused = dotshop("api", "--port", "1", DATABASE_URL=empty_database, STRIPE_API_KEY="sk_test_x")
    assert refused.returncode == 2
    assert "run `dotshop migrate`" in refused.stderr
    migrated = dotshop("migrate", DATABASE_URL=empty_database)
    assert migrated.returncode == 0, migrated.stderr
    assert f"database migrated to {head_revision()}" in migrated.stdout
    again = dotshop("migrate", DATABASE_URL=empty_database)
    assert again.returncode == 0


def test_unknown_region_fails_at_start_up() -> None:
    out = dotshop("api", DOTSHOP_REGION="mars")
    assert out.returncode == 2
    assert "unknown region 'mars'" in out.stderr


def test_settings_and_logs_never_show_secrets(capsys: pytest.CaptureFixture[str]) -> None:
    from core import logs
    from core.settings import Settings

    settings = Settings(stripe_api_key="sk_test_supersecret", admin_token="adm-supersecret")
    assert "supersecret" not in repr(settings) and "supersecret" not in str(settings.model_dump())
    logs.configure()
    logs.get_logger("t").info(
        "calling", api_key="sk_test_supersecret", authorization="Bearer x", sku="A"
    )
    err = capsys.readouterr().err
    assert "supersecret" not in err and '"sku": "A"' in err and "[redacted]" in err


def test_readyz_follows_the_database_schema(empty_database: str, tmp_path) -> None:
    from alembic import command

    from core.migrate import alembic_config, upgrade
    from tests.processes import free_port, start_dotshop

    upgrade(empty_database)
    port = free_port()
    api = start_dotshop(
        ["api", "--port", str(port)],
        [f"http://127.0.0.1:{port}/readyz"],
        str(tmp_path / "api.log"),
        env={"DATABASE_URL": empty_database, "STRIPE_API_KEY": "sk_test_x"},
    )
    try:
        import httpx

        assert httpx.get(f"http://127.0.0.1:{port}/readyz").json()["status"] == "ready"
        command.downgrade(alembic_config(empty_database), "base")
        not_ready = httpx.get(f"http://127.0.0.1:{port}/readyz")
        assert not_ready.status_code == 503 and "dotshop migrate" in not_ready.json()["reason"]
        assert httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
    finally:
        api.stop()
