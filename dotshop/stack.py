"""`dotshop up` / `dotshop down`: the whole stack on one machine with embedded defaults.

Every part is a child process running one `dotshop` subcommand, logging to `.dotshop/logs/`
(files 0600), watched by a supervisor (dotshop/supervisor.py) that restarts a part that exits.
`up` writes `.dotshop/stack.json` (CONTRACT.md) once every part is healthy, so any `dotshop`
command run in this folder finds the stack. Secrets are generated once per folder and kept in
`.dotshop/secrets.json` (mode 0600); they are never printed.

`up --monitoring` adds a local Prometheus and Alertmanager (dotshop/monitoring.py): every part
serves /metrics, the checks send their business alerts to that Alertmanager, and stack.json
gets their URLs under `monitoring`.

`up --regions us,eu` runs the two-region setup of infra/local instead of one database: the
first region's primary and the second's synchronous streaming replica (under
`.dotshop/regions/`), a delay proxy in front of each (`--rtt-ms`, the round trip between the
regions), and each region's API writing to the primary (across the proxy for the other
region) and reading its catalog from its own database. stack.json gets them under `regions`.

`up` supervises in the foreground (Ctrl-C stops everything, PostgreSQL included); `up --detach`
starts the same supervisor as a detached process and returns once the stack is healthy; `down`
stops the supervisor (which stops its parts), then PostgreSQL.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from core import embedded_pg
from core.settings import STACK_FILE, Settings, home_dir
from core.shopify_gateway import API_VERSION as SHOPIFY_API_VERSION
from dotshop.supervisor import (
    HEALTH_TIMEOUT_SECONDS,
    STOP_TIMEOUT_SECONDS,
    Child,
    StackError,
    Supervisor,
    alive,
    open_private_log,
    stderr_and_file,
    stop_pids,
)

API_PORTS = {"us": 8000, "eu": 8001}
STRIPE_PORT, SHOPIFY_PORT, CONSOLE_PORT = 12111, 12112, 8501
# {"supervisor": pid, "children": {name: pid}}: what `down` stops.
PIDS_FILE = "pids.json"
SUPERVISOR_LOG = "supervisor.log"
# `up --regions`: each region's database, the delay proxy in front of it and the proxy's control
# port (next to PostgreSQL's usual 5432, away from the embedded server's Unix socket).
REGION_DATABASE_PORTS = {"us": 15432, "eu": 15433}
REGION_PROXY_PORTS = {"us": 15442, "eu": 15443}
REGION_CONTROL_PORTS = {"us": 15452, "eu": 15453}
REGIONS_DIR = "regions"
# A transatlantic round trip, about: what `--rtt-ms` defaults to.
DEFAULT_RTT_MS = 80.0
# A detached start waits this long for the whole stack: every part's cold start, in order.
DETACHED_START_TIMEOUT_SECONDS = 4 * HEALTH_TIMEOUT_SECONDS


def stripe_webhook_flags(url: str) -> list[str]:
    """The sandbox flags that point Stripe's webhooks at `url`, subscribed to the events we
    apply (core.payments.WEBHOOK_EVENTS), as a deployment's endpoint is."""
    from core.payments import WEBHOOK_EVENTS

    flags = ["--stripe-webhook-url", url]
    for event_type in WEBHOOK_EVENTS:
        flags += ["--stripe-webhook-event", event_type]
    return flags


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
    _private_file(path, json.dumps(values))
    return values


def region_ports(regions: tuple[str, ...]) -> Any:
    """The fixed ports of `up --regions` (infra.local.regions.Ports)."""
    from infra.local.regions import Ports

    def each(ports: dict[str, int]) -> dict[str, int]:
        return {r: ports[r] for r in regions}

    return Ports(
        each(REGION_DATABASE_PORTS),
        each(REGION_PROXY_PORTS),
        each(REGION_CONTROL_PORTS),
        each(API_PORTS),
        STRIPE_PORT,
        SHOPIFY_PORT,
    )


def stack_description(
    database_url: str,
    s: dict[str, str],
    *,
    monitoring: bool = False,
    topology: Any = None,
    rtt_ms: float = DEFAULT_RTT_MS,
) -> dict[str, Any]:
    extra: dict[str, Any] = {}
    if monitoring:
        from dotshop import monitoring as local_monitoring

        extra["monitoring"] = local_monitoring.description()
    if topology is not None:  # infra.local.regions.Topology
        extra["regions"] = {
            "primary": topology.primary,
            "rtt_ms": rtt_ms,
            "database_urls": {r: db.url() for r, db in topology.databases.items()},
            "proxies": {r: f"http://127.0.0.1:{REGION_CONTROL_PORTS[r]}" for r in topology.regions},
        }
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
        **extra,
    }


def _children(stack: dict[str, Any], home: Path, topology: Any = None) -> list[Child]:
    """The parts, in start order. With a two-region `topology` (infra.local.regions), the
    delay proxies come first and each API gets its region's database URLs from it."""
    from dotshop import monitoring

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
    # With monitoring: each part's /metrics port, and the checks' business alerts to Alertmanager.
    part_env: dict[str, dict[str, str]] = {part: {} for part in monitoring.METRICS_PORTS}
    if "monitoring" in stack:
        for part, port in monitoring.METRICS_PORTS.items():
            part_env[part]["DOTSHOP_METRICS_PORT"] = str(port)
        part_env["checks"]["DOTSHOP_ALERTMANAGER_URL"] = stack["monitoring"]["alertmanager"]
    us = stack["api"]["us"]
    children = [
        Child(
            "sandbox",
            [
                "sandbox",
                *stripe_webhook_flags(f"{us}/webhooks/stripe"),
                "--shopify-webhook-url",
                f"{us}/webhooks/shopify",
            ],
            base_env,
            f"{stack['stripe']['api_base']}/_sandbox/health",
        ),
        Child("sync", ["sync"], base_env | part_env["sync"], None),
    ]
    for region, url in stack["api"].items():
        region_env = topology.api_env(region) if topology is not None else {}
        children.append(
            Child(
                f"api-{region}",
                ["api", "--port", url.rsplit(":", 1)[1]],
                {**base_env, "DOTSHOP_REGION": region, **region_env},
                f"{url}/readyz",
            )
        )
    children.append(Child("relay", ["relay"], base_env | part_env["relay"], None))
    children.append(Child("checks", ["checks", "run"], base_env | part_env["checks"], None))
    console = stack["console"]
    children.append(
        Child(
            "console",
            ["console", "--port", console["url"].rsplit(":", 1)[1]],
            {
                **base_env,
                **part_env["console"],
                "DOTSHOP_CONSOLE_USERS": _console_users(console),
            },
            f"{console['url']}/_stcore/health",
        )
    )
    if topology is not None:
        from infra.local.regions import proxy_child

        ports = region_ports(topology.regions)
        rtt_ms = stack["regions"]["rtt_ms"]
        children[:0] = [proxy_child(r, ports, rtt_ms) for r in topology.regions]
    if "monitoring" in stack:
        # First: Prometheus scrapes each part from its start, the checks find Alertmanager.
        targets = monitoring.stack_targets(stack["api"])
        children[:0] = monitoring.children(home / "monitoring", targets)
    return children


def _console_users(console: dict[str, str]) -> str:
    """The demo's one operator account, an admin, as DOTSHOP_CONSOLE_USERS (hashed: the
    plain password is only in stack.json, for the person who started the stack)."""
    from core.operators import ADMIN, hash_password

    account = {"role": ADMIN, "password_hash": hash_password(console["password"])}
    return json.dumps({console["user"]: account})


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


def _demo_day(stack: dict[str, Any], say: Callable[[str], None]) -> None:
    """Give a new stack's console something to show; a stack with orders is left alone."""
    from sqlalchemy import text

    from core.db import engine_for
    from sandbox import traffic

    engine = engine_for(stack["database_url"])
    with engine.connect() as conn:
        if conn.execute(text("SELECT EXISTS (SELECT 1 FROM orders)")).scalar():
            return
    demo = traffic.DemoStack(
        stack["api"], stack["stripe"]["api_base"], stack["stripe"]["api_key"], stack["admin_token"]
    )
    try:
        traffic.run(demo, say)
    except Exception as exc:  # a demo, not a part of the stack: say so and carry on
        say(f"demo day stopped: {type(exc).__name__}: {exc}")


def _port_in_use(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _private_file(path: Path, text: str) -> None:
    """Write a file only its owner can read, atomically: a reader (`down`, another command)
    sees the old content or the new, never an empty file being written."""
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(partial, path)


def _write_pids(home: Path, children: dict[str, int]) -> None:
    _private_file(home / PIDS_FILE, json.dumps({"supervisor": os.getpid(), "children": children}))


def _read_pids(home: Path) -> tuple[int | None, dict[str, int]]:
    try:
        state = json.loads((home / PIDS_FILE).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None, {}
    return state.get("supervisor"), state.get("children", {})


def _prepare(home: Path, monitoring: bool, regions: tuple[str, ...] = ()) -> Path:
    """Refuse ports taken by someone else, stop what a previous stack here left; the logs."""
    if (home / PIDS_FILE).exists():
        down(quiet=True)
    ports: tuple[int, ...] = (*API_PORTS.values(), STRIPE_PORT, SHOPIFY_PORT, CONSOLE_PORT)
    if regions:
        from infra.local.regions import stop_databases

        stop_databases(home / REGIONS_DIR)  # left by a stack that was not stopped
        p = region_ports(regions)
        ports += (*p.databases.values(), *p.proxies.values(), *p.controls.values())
    if monitoring:
        from dotshop import monitoring as local_monitoring

        local_monitoring.require_binaries()
        ports += (
            local_monitoring.PROMETHEUS_PORT,
            local_monitoring.ALERTMANAGER_PORT,
            *local_monitoring.METRICS_PORTS.values(),
        )
    busy = [p for p in ports if _port_in_use(p)]
    if busy:
        raise StackError(
            f"port(s) {', '.join(map(str, busy))} on 127.0.0.1 are in use: is a stack from "
            "another folder running? Stop it with `dotshop down` there."
        )
    logs = home / "logs"
    logs.mkdir(parents=True, exist_ok=True, mode=0o700)
    return logs


def up(
    *,
    detach: bool = False,
    supervised: bool = False,
    demo_orders: bool = True,
    monitoring: bool = False,
    regions: tuple[str, ...] = (),
    rtt_ms: float = DEFAULT_RTT_MS,
) -> None:
    """Start the stack and supervise it here (`supervised`: as the detached supervisor), or
    with `detach`, start the detached supervisor and return once the stack is healthy.
    `demo_orders`: a first start (no orders yet) plays sandbox.traffic's demo day.
    `monitoring`: with a local Prometheus and Alertmanager (dotshop/monitoring.py).
    `regions`: two regions, the primary first: a primary and its synchronous replica, a delay
    proxy of `rtt_ms` between the regions (infra/local), instead of one embedded database."""
    home = home_dir()
    logs = _prepare(home, monitoring, regions) if not supervised else home / "logs"
    if detach:
        _up_detached(home, logs, demo_orders, monitoring, regions, rtt_ms)
        return
    from core.migrate import upgrade

    topology = None
    if regions:
        from infra.local.regions import start_databases

        topology = start_databases(home / REGIONS_DIR, regions, region_ports(regions))
        database_url = topology.databases[topology.primary].url()
    else:
        database_url = embedded_pg.ensure_running(home / "pg")
        upgrade(database_url)
    stack = stack_description(
        database_url, _secrets(home), monitoring=monitoring, topology=topology, rtt_ms=rtt_ms
    )
    say = stderr_and_file(logs / SUPERVISOR_LOG, to_stderr=not supervised)
    supervisor = Supervisor(
        _children(stack, home, topology),
        logs,
        say=say,
        on_change=lambda pids: _write_pids(home, pids),
        env={"DOTSHOP_HOME": str(home)},
    )
    previous = {
        signum: signal.signal(signum, lambda *_: supervisor.stopping.set())
        for signum in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        supervisor.start(lambda child: _load_catalog(stack) if child.name == "sandbox" else None)
        if supervisor.stopping.is_set():
            return
        _private_file(home / STACK_FILE, json.dumps(stack, indent=2))
        say(f"up: {', '.join(f'{n} (pid {p})' for n, p in supervisor.pids().items())}")
        if demo_orders:
            threading.Thread(target=_demo_day, args=(stack, say), daemon=True).start()
        if not supervised:
            print(
                f"dotshop is up: storefront {stack['api']['us']} (eu {stack['api']['eu']}), "
                f"logs in {logs}"
            )
            print(f"stack description: {home / STACK_FILE}")
            if monitoring:
                urls = stack["monitoring"]
                print(f"Prometheus {urls['prometheus']}, Alertmanager {urls['alertmanager']}")
            print("Ctrl-C stops everything.", flush=True)
        supervisor.watch()
        say("stopping")
    finally:
        supervisor.stop()
        (home / PIDS_FILE).unlink(missing_ok=True)
        (home / STACK_FILE).unlink(missing_ok=True)
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if not supervised:
            embedded_pg.stop(home / "pg")
            if regions:
                from infra.local.regions import stop_databases

                stop_databases(home / REGIONS_DIR)


def _up_detached(
    home: Path,
    logs: Path,
    demo_orders: bool,
    monitoring: bool,
    regions: tuple[str, ...],
    rtt_ms: float,
) -> None:
    (home / STACK_FILE).unlink(missing_ok=True)
    demo = "--demo-orders" if demo_orders else "--no-demo-orders"
    extra = ["--monitoring"] if monitoring else []
    if regions:
        extra += ["--regions", ",".join(regions), "--rtt-ms", f"{rtt_ms:g}"]
    with open_private_log(logs / SUPERVISOR_LOG) as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "dotshop", "up", "--supervised", demo, *extra],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "DOTSHOP_HOME": str(home)},
            start_new_session=True,  # outlives this command and the terminal
        )
    deadline = time.monotonic() + DETACHED_START_TIMEOUT_SECONDS
    while not (home / STACK_FILE).exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            if proc.poll() is None:
                stop_pids([proc.pid])
            tail = (logs / SUPERVISOR_LOG).read_text(errors="replace")[-2000:]
            raise StackError(
                f"the stack did not start; the end of {logs / SUPERVISOR_LOG}:\n{tail}"
            )
        time.sleep(0.2)
    stack = json.loads((home / STACK_FILE).read_text())
    print(
        f"dotshop is up: storefront {stack['api']['us']} (eu {stack['api']['eu']}), logs in {logs}"
    )
    print(f"stack description: {home / STACK_FILE}; `dotshop down` stops it")


def down(*, quiet: bool = False) -> None:
    home = home_dir()
    supervisor, children = _read_pids(home)
    if supervisor and alive(supervisor):
        os.kill(supervisor, signal.SIGTERM)  # it stops its parts, last started first
        deadline = time.monotonic() + 2 * STOP_TIMEOUT_SECONDS
        while alive(supervisor) and time.monotonic() < deadline:
            time.sleep(0.1)
        if alive(supervisor):
            os.kill(supervisor, signal.SIGKILL)
    # Parts a dead supervisor could not stop.
    stop_pids([pid for pid in children.values() if alive(pid)])
    (home / PIDS_FILE).unlink(missing_ok=True)
    (home / STACK_FILE).unlink(missing_ok=True)
    stopped_pg = embedded_pg.stop(home / "pg")
    if (home / REGIONS_DIR).exists():
        from infra.local.regions import stop_databases

        stopped_pg = stop_databases(home / REGIONS_DIR) or stopped_pg
    if not quiet:
        pg = ", PostgreSQL stopped" if stopped_pg else ""
        count = len(children) + (1 if supervisor else 0)
        print(f"dotshop is down ({count} processes stopped{pg})")
