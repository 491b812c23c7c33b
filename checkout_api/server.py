"""`dotshop api`: run the checkout API for DOTSHOP_REGION under uvicorn, in N worker processes
sharing one listening socket (default: one per core).

We bind that socket ourselves, with TCP_NODELAY on it (Linux copies it to every accepted
connection). uvicorn's own `--workers` socket is created without the TCP protocol number, so
asyncio skips its TCP_NODELAY on the accepted connections: a response written as headers then
body waits for the client's delayed ACK and every request takes ~44 ms (measured on 2 cores,
one connection, GET /healthz: `uvicorn --workers 2` p50 44.0 ms, 23 req/s; `dotshop api
--workers 2` p50 0.26 ms, 3,055 req/s).
"""

from __future__ import annotations

import ctypes
import errno
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from typing import Any

import uvicorn

from checkout_api.app import create_app
from core import logs, migrate
from core.db import database_url, engine_for
from core.errors import PortUnavailable
from core.gc_pauses import freeze_startup_heap
from core.metrics import MULTIPROC_DIR_ENV
from core.settings import get_settings
from core.stripe_gateway import StripeGateway

# Pending connections the kernel queues per socket: a burst of clients (the benches open 64 at
# once) must not be refused while workers start.
BACKLOG = 2048
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
# A restart right after a crash waits this long for the dead API's workers to free the port.
BIND_PATIENCE_SECONDS = 5.0


def default_workers() -> int:
    """One worker per core: one region uses the whole machine."""
    return os.cpu_count() or 1


def listening_socket(host: str, port: int) -> socket.socket:
    """A bound TCP socket whose accepted connections have Nagle's algorithm off."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    deadline = time.monotonic() + BIND_PATIENCE_SECONDS
    while True:
        try:
            sock.bind(address)
            break
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE or time.monotonic() > deadline:
                sock.close()
                raise
            time.sleep(0.1)
    sock.set_inheritable(True)
    return sock


def _die_with_parent() -> None:
    """In a worker process: die with the process that started it, so no orphan keeps the port
    from the API started in its place. SIGKILL: an API killed outright dies outright, workers
    included, in-flight requests too (what crash recovery is built and tested for)."""
    if multiprocessing.parent_process() is None or not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if multiprocessing.parent_process().pid != os.getppid():  # it died before prctl
        os.kill(os.getpid(), signal.SIGKILL)


def build_app() -> Any:
    """The app of one worker process: its own settings, engine (pool) and Stripe gateway."""
    _die_with_parent()
    settings = get_settings()
    logs.configure(settings.log_level)
    engine = engine_for(database_url(settings))
    app = create_app(settings, engine, StripeGateway.from_settings(settings))
    freeze_startup_heap()
    return app


def serve(*, host: str = "127.0.0.1", port: int = 8000, workers: int | None = None) -> None:
    settings = get_settings()  # an unknown DOTSHOP_REGION fails here, at start-up
    logs.configure(settings.log_level)
    migrate.require_current(engine_for(database_url(settings)))  # refuse an unmigrated database
    try:
        sock = listening_socket(host, port)
    except OSError as exc:
        raise PortUnavailable(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    count = workers or default_workers()
    if count > 1:  # each worker counts its own requests: /metrics adds them up (core.metrics)
        os.environ[MULTIPROC_DIR_ENV] = tempfile.mkdtemp(prefix="dotshop-metrics-")
    try:
        # Passed by descriptor: uvicorn serves it as it is, in each worker process.
        uvicorn.run(
            "checkout_api.server:build_app",
            factory=True,
            fd=sock.fileno(),
            workers=count,
            backlog=BACKLOG,
            http="httptools",  # not h11's pure Python (pyproject.toml)
            loop="uvloop",
            log_level="warning",
            access_log=False,
        )
    finally:
        sock.close()
        if count > 1:
            shutil.rmtree(os.environ.pop(MULTIPROC_DIR_ENV), ignore_errors=True)
