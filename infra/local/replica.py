"""A primary and its streaming replica on one machine: `pg_basebackup -R` from the primary,
the standby started on its own port and folder, then synchronous replication switched on.

Synchronous commit (`synchronous_commit = on` with `synchronous_standby_names = '*'`): the
primary acknowledges a COMMIT only once the standby has flushed its WAL, so an order the API
answered 201 for is on both servers and survives losing the primary. `on`, not `remote_apply`:
the standby has the commit on disk, and a read on it may lag by the replay (catalog reads may
be slightly stale, DESIGN.md), while each commit costs one flush on the standby, not a replay.

The setting is given to the primary after the base backup, so the promoted standby does not
inherit it: once the primary is gone there is no standby left to wait for, and a new primary
that waited for one would refuse every write. It runs alone until a new standby is built.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from infra.local.postgres import Server, hand_to_postgres, initialise, run_as_postgres

# Base backup plus the standby's start: seconds on a small database; this is "broken".
STANDBY_TIMEOUT_SECONDS = 60


@dataclass(frozen=True)
class Pair:
    primary: Server
    standby: Server


def start_primary(pgdata: Path, port: int) -> Server:
    server = initialise(pgdata, port)
    server.start()
    return server


def start_standby(primary: Server, pgdata: Path, port: int) -> Server:
    """Clone `primary` into `pgdata` with `pg_basebackup -R` (which writes the standby's
    primary_conninfo and standby.signal) and start it on `port`, streaming."""
    hand_to_postgres(pgdata)
    run_as_postgres(
        "pg_basebackup",
        "-h",
        "127.0.0.1",
        "-p",
        str(primary.port),
        "-U",
        "postgres",
        "-D",
        str(pgdata),
        "-R",  # the replication settings, so it starts as a standby of `primary`
        "-X",
        "stream",
        "-c",
        "fast",  # an immediate checkpoint: do not wait for the next scheduled one
    )
    standby = Server(pgdata, port)
    # The copied postgresql.conf still names the primary's port and socket folder.
    standby.configure(port=port, unix_socket_directories=str(pgdata))
    standby.start()
    return standby


def make_synchronous(primary: Server) -> None:
    """From now on a COMMIT on `primary` returns once a standby has flushed it."""
    primary.execute("ALTER SYSTEM SET synchronous_standby_names = '*'")
    primary.execute("ALTER SYSTEM SET synchronous_commit = 'on'")
    primary.execute("SELECT pg_reload_conf()")
    deadline = time.monotonic() + STANDBY_TIMEOUT_SECONDS
    while primary.execute("SELECT sync_state FROM pg_stat_replication") != [("sync",)]:
        if time.monotonic() > deadline:
            raise RuntimeError("the standby did not become synchronous")
        time.sleep(0.1)


def stream_through(standby: Server, port: int) -> None:
    """Point the standby's replication connection at 127.0.0.1:`port` (a delay proxy in front
    of its primary), as a standby in another region streams across the distance: each
    synchronous commit then waits one RTT for the standby's flush."""
    (conninfo,) = standby.execute("SHOW primary_conninfo")[0]
    moved = " ".join(
        f"port={port}" if part.startswith("port=") else part for part in conninfo.split()
    )
    quoted = moved.replace("'", "''")
    standby.execute(f"ALTER SYSTEM SET primary_conninfo = '{quoted}'")
    standby.execute("SELECT pg_reload_conf()")  # the WAL receiver reconnects with it
    deadline = time.monotonic() + STANDBY_TIMEOUT_SECONDS
    while standby.execute(
        "SELECT sender_port FROM pg_stat_wal_receiver WHERE status = 'streaming'"
    ) != [(port,)]:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the standby does not stream through port {port}")
        time.sleep(0.1)


def start_pair(workdir: Path, primary_port: int, standby_port: int) -> Pair:
    """A running primary under workdir/primary and its synchronous standby under
    workdir/standby. The caller creates its databases on the primary (they replicate)."""
    primary = start_primary(workdir / "primary", primary_port)
    standby = start_standby(primary, workdir / "standby", standby_port)
    make_synchronous(primary)
    return Pair(primary, standby)


def is_standby(server: Server) -> bool:
    return server.execute("SELECT pg_is_in_recovery()") == [(True,)]


def replay_caught_up(primary: Server, standby: Server, timeout: float = 30) -> None:
    """Wait until the standby has replayed everything the primary has written so far."""
    target = primary.execute("SELECT pg_current_wal_lsn()::text")[0][0]
    deadline = time.monotonic() + timeout
    while True:
        (done,) = standby.execute(f"SELECT pg_last_wal_replay_lsn() >= '{target}'::pg_lsn")[0]
        if done:
            return
        if time.monotonic() > deadline:
            raise RuntimeError("the standby did not catch up")
        time.sleep(0.05)
