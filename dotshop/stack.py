"""`dotshop up` / `dotshop down`: the whole stack on one machine with embedded defaults.

Every part is a child process running one `dotshop` subcommand, logging to `.dotshop/logs/`.
`up` writes `.dotshop/stack.json` (CONTRACT.md), so any `dotshop` command run in this folder
finds the stack. Secrets are generated once per folder and kept in `.dotshop/secrets.json`
(mode 0600); they are never printed.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from core import embedded_pg
from core.errors import DotshopError
from core.settings import STACK_FILE, Settings, home_dir
from core.shopify_gateway import API_VERSION as SHOPIFY_API_VERSION

API_PORTS = {"us": 8000, "eu": 8001}
STRIPE_PORT, SHOPIFY_PORT, CONSOLE_PORT = 12111, 12112, 8501
# Cold start of every part (PostgreSQL, imports, catalog load) fits well inside this.
HEALTH_TIMEOUT_SECONDS = 90
# Children get this long to stop after SIGTERM before they are killed.
STOP_TIMEOUT_SECONDS = 10
PIDS_FILE = "pids.json"


@dataclass(frozen=True)
class Child:
    name: str
    args: list[str]
    env: dict[str, str]
    health_url: str | None


def _secrets(home: Path) -> dict[str, str]:
    path = home / "secrets.json"
    if path.exists():
        return json.loads(path.read_text())
    values = {
        "stripe_api_key": f"sk_test_{secrets.token_hex(16)}",
        "stripe_webhook_secret": f"whsec_{secrets.token_hex(16)}",
        "shopify_access_token": f"shpat_{secrets.token_hex(16)}",
        "shopify_api_secret": f"shpss_{secrets.token_hex(16)}",
        "admin_token": secrets.token_urlsafe(24),
        "console_user": "operator",
        "console_password": secrets.token_urlsafe(12),
    }
    path.write_text(json.dumps(values))
    path.chmod(0o600)
    return values


def stack_description(database_url: str, s: dict[str, str]) -> dict[str, Any]:
    return {
        "api": {region: f"http://127.0.0.1:{port}" for region, port in API_PORTS.items()},
        "stripe": {
            "api_base": f"http://127.0.0.1:{STRIPE_PORT}",
            "api_key": s["stripe_api_key"],
            "webhook_secret": s["stripe_webhook_secret"],
        },
        "shopify": {
            "site": f"http://127.0.0.1:{SHOPIFY_PORT}/admin/api/{SHOPIFY_API_VERSION}",
            "access_token": s["shopify_access_token"],
            "api_secret": s["shopify_api_secret"],
            "location_id": 1,
        },
        "console": {
            "url": f"http://127.0.0.1:{CONSOLE_PORT}",
            "user": s["console_user"],
            "password": s["console_password"],
        },
        "database_url": database_url,
        "admin_token": s["admin_token"],
    }


def _children(stack: dict[str, Any]) -> list[Child]:
    base_env = {
        "DATABASE_URL": stack["database_url"],
        "STRIPE_API_KEY": stack["stripe"]["api_key"],
        "STRIPE_API_BASE": stack["stripe"]["api_base"],
        "STRIPE_WEBHOOK_SECRET": stack["stripe"]["webhook_secret"],
        "SHOPIFY_SITE": stack["shopify"]["site"],
        "SHOPIFY_ACCESS_TOKEN": stack["shopify"]["access_token"],
        "SHOPIFY_API_SECRET": stack["shopify"]["api_secret"],
        "DOTSHOP_ADMIN_TOKEN": stack["admin_token"],
    }
    us = stack["api"]["us"]
    children = [
        Child(
            "sandbox",
            [
                "sandbox",
                "--stripe-webhook-url",
                f"{us}/webhooks/stripe",
                "--shopify-webhook-url",
                f"{us}/webhooks/shopify",
            ],
            base_env,
            f"{stack['stripe']['api_base']}/_sandbox/health",
        ),
        Child("sync", ["sync"], base_env, None),
    ]
    for region, url in stack["api"].items():
        children.append(
            Child(
                f"api-{region}",
                ["api", "--port", url.rsplit(":", 1)[1]],
                {**base_env, "DOTSHOP_REGION": region},
                f"{url}/readyz",
            )
        )
    children.append(Child("relay", ["relay"], base_env, None))
    return children


def _spawn(child: Child, logs: Path) -> subprocess.Popen:
    log = open(logs / f"{child.name}.log", "ab")  # noqa: SIM115 - the child owns it
    env = {**os.environ, **child.env, "DOTSHOP_HOME": str(home_dir())}
    return subprocess.Popen(
        [sys.executable, "-m", "dotshop", *child.args],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=env,
        start_new_session=True,  # Ctrl-C reaches us; we stop children in order
    )


def _wait_healthy(url: str, proc: subprocess.Popen, name: str, logs: Path) -> None:
    deadline = time.monotonic() + HEALTH_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = (logs / f"{name}.log").read_text(errors="replace")[-2000:]
            raise StackError(f"{name} exited with {proc.returncode}:\n{tail}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2).status_code == 200:
                return
        time.sleep(0.2)
    raise StackError(f"{name} did not become healthy at {url}")


def _stop(procs: dict[str, int]) -> None:
    for pid in reversed(list(procs.values())):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
    for pid in procs.values():
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            with contextlib.suppress(ChildProcessError):
                if os.waitpid(pid, os.WNOHANG)[0] == pid:
                    break
            time.sleep(0.1)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)


def _load_catalog(stack: dict[str, Any]) -> None:
    """Fill the projection from the (sandbox) shop before the storefront opens."""
    from core import shopify_sync
    from core.db import engine_for
    from core.shopify_gateway import ShopifyGateway

    gateway = ShopifyGateway(
        shop=Settings.model_fields["shopify_shop"].default,
        site=stack["shopify"]["site"],
        access_token=stack["shopify"]["access_token"],
    )
    shopify_sync.load_catalog(
        engine_for(stack["database_url"]), gateway, stack["shopify"]["location_id"]
    )


class StackError(DotshopError):
    """The stack could not start."""

    code = "stack_error"


def _port_in_use(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def up(*, detach: bool = False) -> None:
    from core.migrate import upgrade

    home = home_dir()
    if not (home / PIDS_FILE).exists():
        busy = [p for p in (*API_PORTS.values(), STRIPE_PORT, SHOPIFY_PORT) if _port_in_use(p)]
        if busy:
            raise StackError(
                f"port(s) {', '.join(map(str, busy))} on 127.0.0.1 are in use: is a stack from "
                "another folder running? Stop it with `dotshop down` there."
            )
    logs = home / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    if (home / PIDS_FILE).exists():
        down(quiet=True)
    database_url = embedded_pg.ensure_running(home / "pg")
    upgrade(database_url)
    stack = stack_description(database_url, _secrets(home))
    procs: dict[str, int] = {}
    popens: dict[str, subprocess.Popen] = {}
    try:
        for child in _children(stack):
            proc = _spawn(child, logs)
            procs[child.name], popens[child.name] = proc.pid, proc
            (home / PIDS_FILE).write_text(json.dumps(procs))
            if child.health_url:
                _wait_healthy(child.health_url, proc, child.name, logs)
            if child.name == "sandbox":
                _load_catalog(stack)
    except BaseException:
        _stop(procs)
        (home / PIDS_FILE).unlink(missing_ok=True)
        raise
    (home / STACK_FILE).write_text(json.dumps(stack, indent=2))
    (home / STACK_FILE).chmod(0o600)
    print(
        f"dotshop is up: storefront {stack['api']['us']} (eu {stack['api']['eu']}), logs in {logs}"
    )
    print(f"stack description: {home / STACK_FILE}")
    if detach:
        return
    print("Ctrl-C stops everything.")
    stopping = False

    def _on_signal(signum: int, frame: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, _on_signal)
    try:
        while not stopping:
            for name, proc in popens.items():
                if proc.poll() is not None and name != "sync":
                    print(
                        f"{name} exited with {proc.returncode}; stopping the stack", file=sys.stderr
                    )
                    stopping = True
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        down()


def down(*, quiet: bool = False) -> None:
    home = home_dir()
    pids_path = home / PIDS_FILE
    procs = json.loads(pids_path.read_text()) if pids_path.exists() else {}
    _stop(procs)
    pids_path.unlink(missing_ok=True)
    (home / STACK_FILE).unlink(missing_ok=True)
    stopped_pg = embedded_pg.stop(home / "pg")
    if not quiet:
        pg = ", PostgreSQL stopped" if stopped_pg else ""
        print(f"dotshop is down ({len(procs)} processes stopped{pg})")
