"""Start our real processes on loopback for tests, and stop them afterwards."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import httpx

STARTUP_TIMEOUT_SECONDS = 60


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Process:
    """A child process running a `dotshop` command, with where its output goes."""

    popen: subprocess.Popen
    log_path: str
    urls: dict[str, str] = field(default_factory=dict)

    def stop(self, timeout: float = 10) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGINT)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()

    def kill(self) -> None:
        self.popen.kill()
        self.popen.wait()

    def output(self) -> str:
        with open(self.log_path, errors="replace") as fh:
            return fh.read()


def start_dotshop(
    args: Sequence[str],
    health_urls: Sequence[str],
    log_path: str,
    env: dict[str, str] | None = None,
) -> Process:
    """Run `python -m dotshop <args>` and wait until every health URL answers 200."""
    full_env = {**os.environ, **(env or {})}
    with open(log_path, "w") as log:
        popen = subprocess.Popen(
            [sys.executable, "-m", "dotshop", *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=full_env,
            stdin=subprocess.DEVNULL,
        )
    proc = Process(popen, log_path)
    deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
    pending = list(health_urls)
    while pending:
        if popen.poll() is not None:
            raise RuntimeError(f"dotshop {' '.join(args)} exited early:\n{proc.output()}")
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"dotshop {' '.join(args)} not healthy in time:\n{proc.output()}")
        try:
            if httpx.get(pending[0], timeout=1).status_code == 200:
                pending.pop(0)
                continue
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    return proc


def start_sandbox(log_path: str, *extra_args: str, env: dict[str, str] | None = None) -> Process:
    """`dotshop sandbox` on two free ports; urls['stripe'] and urls['shopify'] are the bases."""
    stripe_port, shopify_port = free_port(), free_port()
    stripe, shopify = f"http://127.0.0.1:{stripe_port}", f"http://127.0.0.1:{shopify_port}"
    proc = start_dotshop(
        [
            "sandbox",
            "--stripe-port",
            str(stripe_port),
            "--shopify-port",
            str(shopify_port),
            *extra_args,
        ],
        [f"{stripe}/_sandbox/health", f"{shopify}/_sandbox/health"],
        log_path,
        env=env,
    )
    proc.urls = {"stripe": stripe, "shopify": shopify}
    return proc
