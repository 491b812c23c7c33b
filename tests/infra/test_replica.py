"""The local primary and its synchronous streaming replica (infra/local/replica.py), real
PostgreSQL servers on loopback: the standby follows, refuses writes, is synchronous, and once
the primary is killed and the standby promoted, every commit the primary acknowledged is there
and the new primary takes writes without waiting for a standby it no longer has."""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from infra.local import replica
from infra.local.delay_proxy import DelayProxy
from infra.local.regions import free_port

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pair() -> Iterator[replica.Pair]:
    workdir = Path(tempfile.mkdtemp(prefix="dsq"))  # short: PostgreSQL's socket path limit
    workdir.chmod(0o755)
    pair = replica.start_pair(workdir, free_port(), free_port())
    try:
        yield pair
    finally:
        pair.standby.stop()
        pair.primary.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def test_the_standby_streams_synchronously_and_refuses_writes(pair: replica.Pair) -> None:
    assert replica.is_standby(pair.standby) and not replica.is_standby(pair.primary)
    assert pair.primary.execute("SELECT sync_state FROM pg_stat_replication") == [("sync",)]
    pair.primary.execute("CREATE TABLE acked (n int PRIMARY KEY)")
    replica.replay_caught_up(pair.primary, pair.standby)
    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        pair.standby.execute("INSERT INTO acked VALUES (0)")


def test_streaming_across_the_distance_makes_every_commit_wait_one_rtt(
    pair: replica.Pair,
) -> None:
    with DelayProxy(free_port(), pair.primary.port, rtt_ms=100) as proxy:
        replica.stream_through(pair.standby, proxy.proxy.listen_port)
        with psycopg.connect(pair.primary.libpq_url(), autocommit=True) as conn:
            started = time.perf_counter()
            for n in range(1001, 1004):
                conn.execute("INSERT INTO acked VALUES (%s)", (n,))
            per_commit = (time.perf_counter() - started) / 3
            conn.execute("DELETE FROM acked WHERE n > 1000")
        assert 0.100 <= per_commit < 0.180, per_commit
        replica.stream_through(pair.standby, pair.primary.port)  # back to the direct link
    assert pair.primary.execute("SELECT sync_state FROM pg_stat_replication") == [("sync",)]


def test_every_acknowledged_commit_survives_the_primary_and_the_new_one_writes(
    pair: replica.Pair,
) -> None:
    acknowledged = 0
    with psycopg.connect(pair.primary.libpq_url(), autocommit=True) as conn:
        for n in range(1, 301):
            conn.execute("INSERT INTO acked VALUES (%s)", (n,))
            acknowledged = n  # the COMMIT returned: the standby has flushed it
    pair.primary.kill()
    assert not pair.primary.running()
    pair.standby.promote()
    assert not replica.is_standby(pair.standby)
    assert pair.standby.execute("SELECT count(*) FROM acked") == [(acknowledged,)]
    # Alone now, it must not wait for a synchronous standby on every commit.
    with psycopg.connect(pair.standby.libpq_url(), autocommit=True) as conn:
        conn.execute("SET statement_timeout = '5s'")
        conn.execute("INSERT INTO acked VALUES (0)")
    assert pair.standby.execute("SELECT count(*) FROM acked") == [(acknowledged + 1,)]
