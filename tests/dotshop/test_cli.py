"""The `dotshop` command: lists the contract's commands, refuses unknown drills and benchmarks,
hashes console passwords, migrates an empty external database, and refuses to start on bad
configuration (exit 2)."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from core import operators
from core.migrate import head_revision
from core.operators import Operator
from tests.conftest import _admin_url, _with_database, drop_database


def dotshop(
    *args: str, cwd: Path | None = None, input: str | None = None, **env: str
) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **env}
    return subprocess.run(
        [sys.executable, "-m", "dotshop", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=full_env,
        cwd=cwd,
        input=input,
        stdin=subprocess.DEVNULL if input is None else None,
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


def test_unknown_drills_are_refused_with_exit_2() -> None:
    out = dotshop("drill", "meteor")
    assert out.returncode == 2
    assert "No such command" in out.stderr and out.stdout == ""


def test_console_refuses_to_start_when_nobody_could_sign_in(tmp_path: Path) -> None:
    out = dotshop("console", cwd=tmp_path, DOTSHOP_HOME=str(tmp_path))
    assert out.returncode == 2
    assert "DOTSHOP_CONSOLE_USERS" in out.stderr and out.stdout == ""
    bad = dotshop(
        "console",
        cwd=tmp_path,
        DOTSHOP_HOME=str(tmp_path),
        DOTSHOP_CONSOLE_USERS='{"ada": {"role": "cto"}}',
    )
    assert bad.returncode == 2 and "argon2" in bad.stderr


def test_console_hash_password_makes_a_hash_the_console_accepts() -> None:
    out = dotshop("console", "--hash-password", input="correct horse\n")
    assert out.returncode == 0
    accounts = operators.parse_accounts(
        json.dumps({"ada": {"role": "oncall", "password_hash": out.stdout.strip()}})
    )
    assert operators.authenticate(accounts, "ada", "correct horse") == Operator("ada", "oncall")
    assert operators.authenticate(accounts, "ada", "correct horse ") is None
    assert "correct horse" not in out.stdout + out.stderr


def test_bench_names_its_benchmarks_and_refuses_unknown_ones() -> None:
    listed = dotshop("bench", "--help")
    assert listed.returncode == 0 and "checkout" in listed.stdout and "reconcile" in listed.stdout
    unknown = dotshop("bench", "nope")
    assert unknown.returncode == 2
    assert (
        "not built yet" in unknown.stderr
        and "benchmarks: checkout, console, reconcile" in unknown.stderr
    )


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


# x86-64 / arm64 system call number of pidfd_getfd (Linux >= 5.6): a copy of another process's
# file descriptor, so the test can read the options of the server's own accepted socket.
PIDFD_GETFD = 438


def _peer_fd_option(pid: int, fd: int, level: int, option: int) -> int:
    import ctypes
    import socket

    libc = ctypes.CDLL(None, use_errno=True)
    pidfd = os.pidfd_open(pid)
    try:
        copy = libc.syscall(PIDFD_GETFD, pidfd, fd, 0)
        if copy < 0:
            pytest.skip(f"pidfd_getfd refused: {os.strerror(ctypes.get_errno())}")
        with socket.socket(fileno=copy) as sock:
            return sock.getsockopt(level, option)
    finally:
        os.close(pidfd)


def _fds_of(pid: int, target: str) -> list[int]:
    """The descriptors of `pid` open on `target`; one closed while we look is skipped (a
    worker opens and closes descriptors all the time: database connections, its event loop)."""
    found = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                found.append(int(fd))
        except FileNotFoundError:
            continue
    return found


def _server_side(port: int, client_port: int) -> int:
    """The inode of the server's socket for our connection (from /proc/net/tcp)."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote = fields[1], fields[2]
        if local.endswith(f":{port:04X}") and remote.endswith(f":{client_port:04X}"):
            return int(fields[9])
    raise AssertionError("no server-side socket for our connection")


def _read_response(sock) -> bytes:
    """One whole HTTP/1.1 response (headers and body may come in separate segments)."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(4096)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(
        next(ln for ln in head.split(b"\r\n") if ln.lower().startswith(b"content-length")).split(
            b":"
        )[1]
    )
    while len(body) < length:
        body += sock.recv(4096)
    return data


def _children(pid: int) -> list[int]:
    tasks = os.listdir(f"/proc/{pid}/task")
    return [
        int(child)
        for task in tasks
        for child in Path(f"/proc/{pid}/task/{task}/children").read_text().split()
    ]


def test_api_workers_share_the_port_with_nagle_off(db_url: str, tmp_path) -> None:
    """`dotshop api --workers 2`: two worker processes serve one port, and the connection a
    worker accepted has TCP_NODELAY set. uvicorn's own --workers socket leaves Nagle on there,
    and a response written as headers then body waits for the client's delayed ACK (~40 ms per
    request, the stall issue 10 measured)."""
    import socket
    import uuid

    import httpx

    from tests.processes import free_port, start_dotshop

    port = free_port()
    api = start_dotshop(
        ["api", "--port", str(port), "--workers", "2"],
        [f"http://127.0.0.1:{port}/readyz"],
        str(tmp_path / "api.log"),
        env={"DATABASE_URL": db_url, "STRIPE_API_KEY": "sk_test_x"},
    )
    try:
        workers = _children(api.popen.pid)
        assert len([w for w in workers if "python" in Path(f"/proc/{w}/cmdline").read_text()]) >= 2
        with socket.create_connection(("127.0.0.1", port)) as client:
            for _ in range(2):  # keep-alive: the same accepted socket answers both
                client.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
                assert _read_response(client).startswith(b"HTTP/1.1 200")
            inode = _server_side(port, client.getsockname()[1])
            owner = [(pid, fd) for pid in workers for fd in _fds_of(pid, f"socket:[{inode}]")]
            assert owner, "no worker holds the accepted connection"
            pid, fd = owner[0]
            assert _peer_fd_option(pid, fd, socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        # The benchmark's floor route exists only with DOTSHOP_BENCH_FLOOR=1, never by default.
        floor = httpx.post(
            f"http://127.0.0.1:{port}/bench/floor",
            json={"email": "a@b.example", "line": {"sku": "X"}},
            headers={"Idempotency-Key": str(uuid.uuid4())},
        )
        assert floor.status_code in (404, 405)
    finally:
        api.stop()


def test_api_workers_stop_when_their_parent_is_killed(db_url: str, tmp_path) -> None:
    """A `dotshop api --workers 2` whose parent dies (SIGKILL: no chance to stop them) leaves
    no worker behind holding the port, so the supervisor's restart can bind it again."""
    from tests.e2e.conftest import wait_for
    from tests.processes import free_port, start_dotshop

    port = free_port()
    api = start_dotshop(
        ["api", "--port", str(port), "--workers", "2"],
        [f"http://127.0.0.1:{port}/readyz"],
        str(tmp_path / "api.log"),
        env={"DATABASE_URL": db_url, "STRIPE_API_KEY": "sk_test_x"},
    )
    workers = _children(api.popen.pid)
    assert workers
    api.kill()
    wait_for(lambda: not any(Path(f"/proc/{w}").exists() for w in workers), timeout=20)
