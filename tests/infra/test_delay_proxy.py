"""The delay proxy (infra/local/delay_proxy.py) in front of a real PostgreSQL on loopback: it
counts round trips on the wire as libpq's trace does (one ReadyForQuery per Query), and each
request/answer exchange through it costs one RTT."""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from infra.local.delay_proxy import DelayProxy
from infra.local.postgres import Server, initialise
from infra.local.regions import free_port

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    workdir = Path(tempfile.mkdtemp(prefix="dsx"))  # short: PostgreSQL's socket path limit
    workdir.chmod(0o755)
    server = initialise(workdir / "pg", free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def proxy(server: Server) -> Iterator[DelayProxy]:
    with DelayProxy(free_port(), server.port) as proxy:
        yield proxy


def connect(proxy: DelayProxy, **options: str) -> psycopg.Connection:
    port = proxy.proxy.listen_port
    return psycopg.connect(
        f"host=127.0.0.1 port={port} user=postgres dbname=postgres", autocommit=True, **options
    )


def test_each_statement_is_one_round_trip_and_start_up_is_counted_apart(
    proxy: DelayProxy,
) -> None:
    # sslmode=prefer: the server's one-byte "no SSL" answer is not taken for a message.
    with connect(proxy, sslmode="prefer") as conn:
        assert proxy.counters.connections == 1
        start_up = proxy.counters.round_trips
        assert start_up == 1  # authentication ends with the first ReadyForQuery
        for _ in range(3):
            conn.execute("SELECT 1").fetchone()
        assert proxy.counters.round_trips - start_up == 3
        with conn.transaction():  # BEGIN, the statement, COMMIT: three
            conn.execute("SELECT repeat('x', 200000)").fetchone()  # an answer of many chunks
        assert proxy.counters.round_trips - start_up == 6


def test_a_round_trip_costs_one_rtt(proxy: DelayProxy) -> None:
    proxy.set_rtt(100)
    with connect(proxy, sslmode="disable") as conn:
        conn.execute("SELECT 1").fetchone()  # warm
        started = time.perf_counter()
        for _ in range(3):
            conn.execute("SELECT 1").fetchone()
        per_trip = (time.perf_counter() - started) / 3
    assert 0.100 <= per_trip < 0.160, per_trip


def test_a_dead_target_is_a_refused_session_not_a_hang(server: Server) -> None:
    with DelayProxy(free_port(), free_port()) as proxy:  # nobody listens on the target
        started = time.monotonic()
        with pytest.raises(psycopg.OperationalError):
            connect(proxy, sslmode="disable", connect_timeout="5")
        assert time.monotonic() - started < 2
        assert proxy.counters.connections == 0
