"""Keeps the parts of `dotshop up` running: starts them in order (each healthy before the next),
then restarts any that exits, with backoff, and says so (its log and stderr): a part is never
silently gone. Stopping it (SIGINT/SIGTERM) stops every part, last started first.

`dotshop up` runs it in the foreground; `dotshop up --detach` runs the same code in a detached
process, which `dotshop down` stops.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

import httpx

from core.errors import DotshopError

# Cold start of a part (imports, migrations checked, catalog loaded) fits well inside this.
HEALTH_TIMEOUT_SECONDS = 90
# Parts get this long to stop after SIGTERM before they are killed.
STOP_TIMEOUT_SECONDS = 10
# Restart pauses: the first restart is quick (a one-off crash), repeated crashes back off so a
# part that cannot start does not spin; one that stayed up this long counts as healthy again.
RESTART_FIRST_SECONDS = 1.0
RESTART_CAP_SECONDS = 60.0
STABLE_AFTER_SECONDS = 60.0
# How often the supervisor looks at its parts.
WATCH_INTERVAL_SECONDS = 0.5


class StackError(DotshopError):
    """The stack could not start."""

    code = "stack_error"


def free_port() -> int:
    """A loopback port nobody listens on now, for a part started on a private stack."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass(frozen=True)
class Child:
    name: str
    args: list[str]
    env: dict[str, str]
    health_url: str | None
    # What `args` are given to: a `dotshop` subcommand, or another program (Prometheus).
    program: tuple[str, ...] = (sys.executable, "-m", "dotshop")


@dataclass
class _Running:
    child: Child
    popen: subprocess.Popen
    started: float = field(default_factory=time.monotonic)
    crashes: int = 0
    restart_at: float | None = None


def open_private_log(path: Path) -> IO[bytes]:
    """Open a log for appending, readable by its owner only (logs may quote credentials that a
    library printed)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.fchmod(fd, 0o600)  # a log created before by an older version
    return os.fdopen(fd, "ab")


def alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie nobody reaped does not count)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    return True


def stop_pids(pids: list[int]) -> None:
    """SIGTERM each process group (last first), wait, then SIGKILL what is left."""
    for pid in reversed(pids):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
    for pid in pids:
        while alive(pid) and time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            time.sleep(0.1)
        if alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)


class Supervisor:
    """Starts, watches and stops the parts. `on_change(pids)` is told every part's pid whenever
    one starts (for pids.json); `say` writes one line to the supervisor's log and stderr."""

    def __init__(
        self,
        children: list[Child],
        logs: Path,
        *,
        say: Callable[[str], None],
        on_change: Callable[[dict[str, int]], None],
        env: dict[str, str] | None = None,
    ) -> None:
        self._children = children
        self._logs = logs
        self._say = say
        self._on_change = on_change
        self._env = env or {}
        self._running: dict[str, _Running] = {}
        self.stopping = threading.Event()

    def pids(self) -> dict[str, int]:
        return {name: r.popen.pid for name, r in self._running.items()}

    def _spawn(self, child: Child) -> subprocess.Popen:
        with open_private_log(self._logs / f"{child.name}.log") as log:
            return subprocess.Popen(
                [*child.program, *child.args],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **self._env, **child.env},
                start_new_session=True,  # our signals are ours; we stop parts in order
            )

    def start(self, after_start: Callable[[Child], None] = lambda _child: None) -> None:
        """Start every part in order, each healthy before the next; a part that fails to start
        fails the whole start (StackError, with the end of its log)."""
        for child in self._children:
            if self.stopping.is_set():
                return
            self._running[child.name] = _Running(child, self._spawn(child))
            self._on_change(self.pids())
            if child.health_url:
                self._wait_healthy(child)
            after_start(child)

    def _wait_healthy(self, child: Child) -> None:
        proc = self._running[child.name].popen
        deadline = time.monotonic() + HEALTH_TIMEOUT_SECONDS
        while time.monotonic() < deadline and not self.stopping.is_set():
            if proc.poll() is not None:
                log = (self._logs / f"{child.name}.log").read_text(errors="replace")[-2000:]
                raise StackError(f"{child.name} exited with {proc.returncode}:\n{log}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(child.health_url, timeout=2).status_code == 200:
                    return
            time.sleep(0.2)
        if not self.stopping.is_set():
            raise StackError(f"{child.name} did not become healthy at {child.health_url}")

    def watch(self) -> None:
        """Restart any part that exits, until `stopping` is set."""
        while not self.stopping.wait(WATCH_INTERVAL_SECONDS):
            for running in self._running.values():
                self._check(running)

    def _check(self, running: _Running) -> None:
        now = time.monotonic()
        if running.restart_at is not None:
            if now >= running.restart_at:
                running.popen = self._spawn(running.child)
                running.started, running.restart_at = now, None
                self._say(f"{running.child.name} restarted (pid {running.popen.pid})")
                self._on_change(self.pids())
            return
        code = running.popen.poll()
        if code is None:
            return
        if now - running.started >= STABLE_AFTER_SECONDS:
            running.crashes = 0
        running.crashes += 1
        pause = min(RESTART_CAP_SECONDS, RESTART_FIRST_SECONDS * 2 ** (running.crashes - 1))
        running.restart_at = now + pause
        self._say(
            f"{running.child.name} exited with {code}; restarting in {pause:g} s "
            f"(crash {running.crashes} in a row; see {self._logs / running.child.name}.log)"
        )

    def stop(self) -> None:
        """Stop every part, last started first."""
        self.stopping.set()
        stop_pids(list(self.pids().values()))


def stderr_and_file(path: Path, *, to_stderr: bool) -> Callable[[str], None]:
    """A `say` that appends timestamped lines to `path` (0600) and, if asked, to stderr."""

    def say(line: str) -> None:
        stamped = f"{datetime.now(UTC).isoformat(timespec='seconds')} supervisor: {line}\n"
        with open_private_log(path) as fh:
            fh.write(stamped.encode())
        if to_stderr:
            sys.stderr.write(stamped)
            sys.stderr.flush()

    return say
