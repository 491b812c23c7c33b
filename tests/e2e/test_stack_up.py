"""The README's promise: `dotshop up` runs the whole stack with no configuration, a newcomer
gets a paid order with curl-like calls plus the stripe SDK, and `dotshop down` (or Ctrl-C)
stops every part. Uses the default ports from CONTRACT.md, so it runs alone in its module."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import stripe

from tests.console.browser import chromium, no_exception, open_page, sign_in
from tests.e2e.conftest import wait_for
from tests.e2e.helpers import ADDRESS

pytestmark = pytest.mark.slow

# The stack's parts; with --monitoring also Prometheus, Alertmanager and the workers' /metrics.
STACK_PORTS = (8000, 8001, 12111, 12112, 8501)
PORTS = (*STACK_PORTS, 9090, 9093, 9101, 9102, 9103, 9104)


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def dotshop(folder: Path, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "DOTSHOP_HOME")}
    return subprocess.run(
        [sys.executable, "-m", "dotshop", *args],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


@pytest.fixture
def folder() -> Iterator[Path]:
    if any(port_open(p) for p in PORTS):
        pytest.fail(f"a default port {PORTS} is taken: stop the running stack first")
    # Not under tmp_path: pytest keeps /tmp/pytest-of-<user> at 0700 (and re-applies it when
    # another session starts), which the embedded server's own user cannot traverse.
    path = Path(tempfile.mkdtemp(prefix="dsup"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_up_detach_newcomer_flow_and_down(folder: Path) -> None:
    started = dotshop(folder, "up", "--detach", "--monitoring")
    assert started.returncode == 0, started.stdout + started.stderr
    up_at = time.monotonic()
    try:
        stack = json.loads((folder / ".dotshop" / "stack.json").read_text())
        assert set(stack) >= {"api", "stripe", "shopify", "console", "database_url", "admin_token"}
        assert stack["api"]["us"] == "http://127.0.0.1:8000"
        assert stack["stripe"]["webhook_secret"].startswith("whsec_")
        assert stack["stripe"]["api_key"] not in started.stdout + started.stderr  # never printed
        api = stack["api"]["us"]
        assert httpx.get(f"{api}/healthz").status_code == 200
        assert httpx.get(f"{stack['api']['eu']}/readyz").json()["region"] == "eu"

        products = httpx.get(f"{api}/v1/products?limit=50").json()["data"]
        sku = next(v["sku"] for p in products for v in p["variants"] if v["available"] > 2)
        created = httpx.post(
            f"{api}/v1/checkouts",
            json={
                "email": "new@example.com",
                "lines": [{"sku": sku, "quantity": 1}],
                "shipping_address": ADDRESS,
            },
            headers={"Idempotency-Key": "readme-demo-key-0001"},
            timeout=30,
        ).json()
        client = stripe.StripeClient(
            stack["stripe"]["api_key"], base_addresses={"api": stack["stripe"]["api_base"]}
        )
        pi = client.v1.payment_intents.confirm(
            created["payment"]["payment_intent_id"], {"payment_method": "pm_card_visa"}
        )
        assert pi.status == "succeeded"
        order_url = f"{api}/v1/orders/{created['order_id']}"
        wait_for(lambda: httpx.get(order_url).json()["status"] == "paid", timeout=30)
        # The relay process pushes the paid order to Shopify on its own.
        wait_for(
            lambda: (
                "pushed_to_shopify" in [e["kind"] for e in httpx.get(order_url).json()["timeline"]]
            ),
            timeout=30,
        )
        seen_after = _newcomer_sees_the_demo_reconciliation(stack["console"], up_at)
        print(f"console showed the demo day's reconciliation {seen_after:.1f} s after up")
        _prometheus_scrapes_every_part(stack["monitoring"])
        # Any dotshop command in this folder finds the running stack.
        once = dotshop(folder, "relay", "--once", timeout=60)
        assert once.returncode == 0, once.stderr
        supervised = _crashed_parts_come_back(folder, api)
    finally:
        stopped = dotshop(folder, "down")
    assert stopped.returncode == 0, stopped.stderr
    assert "stopped" in stopped.stdout
    wait_for(lambda: not any(port_open(p) for p in PORTS), timeout=20)
    assert not (folder / ".dotshop" / "stack.json").exists()
    # `down` leaves no process behind: not the supervisor, not any part, old or restarted.
    wait_for(lambda: not any(_alive(pid) for pid in supervised), timeout=20)


def _newcomer_sees_the_demo_reconciliation(console: dict, since: float) -> float:
    """The console of `dotshop up` (CONTRACT: 8501, its sign-in in stack.json) shows the demo
    day's payments on the Reconciliation page: the EU orders, settled, make an EUR column. The
    seconds from `up` returning until it did."""
    assert console["url"] == "http://127.0.0.1:8501"
    with chromium() as browser:
        page = browser.new_page()
        page.set_default_timeout(30_000)
        sign_in(page, console["url"], console["user"], console["password"])
        open_page(page, "Reconciliation")

        def shown() -> bool:
            # Away and back: a reload would start a new session, signed out.
            open_page(page, "Overview")
            open_page(page, "Reconciliation")
            return page.get_by_text("EUR", exact=True).count() > 0

        wait_for(shown, timeout=60, interval=1)
        no_exception(page, "Reconciliation")
        return time.monotonic() - since


def _prometheus_scrapes_every_part(monitoring: dict) -> None:
    """`up --monitoring`: Prometheus (with our rules) scrapes every part and Alertmanager is
    ready. The console's target is up too: a browser has connected by now."""
    assert monitoring == {
        "prometheus": "http://127.0.0.1:9090",
        "alertmanager": "http://127.0.0.1:9093",
    }
    assert httpx.get(f"{monitoring['alertmanager']}/-/ready", timeout=5).status_code == 200
    prometheus = monitoring["prometheus"]

    def every_target_up() -> dict | None:
        targets = httpx.get(f"{prometheus}/api/v1/targets", timeout=5).json()["data"]
        health = {t["labels"]["job"]: t["health"] for t in targets["activeTargets"]}
        return health if set(health.values()) == {"up"} else None

    jobs = wait_for(every_target_up, timeout=60, interval=1)
    assert set(jobs) >= {"api", "relay", "sync", "checks", "console"}
    groups = httpx.get(f"{prometheus}/api/v1/rules", timeout=5).json()["data"]["groups"]
    alerts = {r["name"] for g in groups for r in g["rules"] if r["type"] == "alerting"}
    assert "DotshopCheckoutAvailabilityFastBurn" in alerts


def _pids(folder: Path) -> dict:
    return json.loads((folder / ".dotshop" / "pids.json").read_text())


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"


def _ready(url: str) -> bool:
    """200 from a readiness probe; a part still starting refuses connections meanwhile."""
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _crashed_parts_come_back(folder: Path, api: str) -> set[int]:
    """A detached stack is supervised: a part killed from outside is restarted, healthy, and
    the restart is logged. Returns every pid seen (for the `down` check)."""
    before = _pids(folder)
    seen = {before["supervisor"], *before["children"].values()}
    assert _alive(before["supervisor"])
    for name in ("api-us", "relay"):
        old = _pids(folder)["children"][name]
        os.killpg(old, signal.SIGKILL)
        wait_for(lambda n=name, o=old: _pids(folder)["children"][n] != o, timeout=30)
        new = _pids(folder)["children"][name]
        seen.add(new)
        assert _alive(new)
    wait_for(lambda: _ready(f"{api}/readyz"), timeout=60)
    logs = folder / ".dotshop" / "logs"
    said = (logs / "supervisor.log").read_text()
    assert "api-us exited with -9" in said and "relay restarted" in said, said
    # Logs are private like stack.json.
    modes = {p.name: p.stat().st_mode & 0o777 for p in logs.iterdir()}
    assert set(modes.values()) == {0o600}, modes
    assert (folder / ".dotshop" / "stack.json").stat().st_mode & 0o777 == 0o600
    return seen


def test_up_in_foreground_stops_everything_on_ctrl_c(folder: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "DOTSHOP_HOME")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "dotshop", "up"],
        cwd=folder,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    try:
        wait_for(
            lambda: (folder / ".dotshop" / "stack.json").exists() or proc.poll() is not None,
            timeout=180,
        )
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        assert all(port_open(p) for p in STACK_PORTS)
        assert not any(port_open(p) for p in PORTS if p not in STACK_PORTS)  # no monitoring
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    wait_for(lambda: not any(port_open(p) for p in PORTS), timeout=20)
    time.sleep(0.2)
    assert not (folder / ".dotshop" / "pids.json").exists()


def test_up_refuses_busy_ports_with_a_clear_message(folder: Path) -> None:
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # ignore TIME_WAIT
        squatter.bind(("127.0.0.1", 12112))
        squatter.listen()
        refused = dotshop(folder, "up", "--detach", timeout=60)
    assert refused.returncode == 2
    assert "12112" in refused.stderr and "in use" in refused.stderr
    assert not (folder / ".dotshop" / "stack.json").exists()
    assert not any(port_open(p) for p in PORTS)
