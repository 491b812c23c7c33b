"""A real Alertmanager (Debian's prometheus-alertmanager, on loopback) receives our alerts through
its v2 API, groups them by check, shows them firing with our labels and annotations, and once
we send the resolution (`endsAt` = resolution time, per Alertmanager's "Sending alerts") no
longer lists them as active and tells its webhook receiver they are resolved."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine

from checks import alerts
from core import violations
from core.db import transaction
from core.settings import Settings
from core.violations import Finding
from tests.checks.conftest import Receiver

# Debian's package name for the binary; CI installs the package (.ci/run).
BINARY = "prometheus-alertmanager"
REPO = "https://git.example/dotshop/blob/main/"

CONFIG = """\
global:
  resolve_timeout: 5s
route:
  receiver: test
  group_by: [check]
  group_wait: 100ms
  group_interval: 500ms
  repeat_interval: 1h
receivers:
  - name: test
    webhook_configs:
      - url: {url}
        send_resolved: true
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def alertmanager(tmp_path: Path, receiver: Receiver) -> Iterator[str]:
    """Alertmanager's base URL; its only route sends every group to `receiver`."""
    binary = shutil.which(BINARY)
    assert binary, f"{BINARY} is not installed (apt-get install prometheus-alertmanager)"
    config = tmp_path / "alertmanager.yml"
    config.write_text(CONFIG.format(url=receiver.url))
    url = f"http://127.0.0.1:{free_port()}"
    log = (tmp_path / "alertmanager.log").open("wb")
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.path={tmp_path / 'data'}",
            f"--web.listen-address={url.removeprefix('http://')}",
            "--cluster.listen-address=",  # no gossip: a single instance
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, (tmp_path / "alertmanager.log").read_text()
            try:
                if httpx.get(f"{url}/-/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "alertmanager did not become ready"
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()


def record(engine: Engine, check: str, findings: list[Finding], at: datetime) -> None:
    with transaction(engine) as s:
        violations.record_findings(s, violations.start_run(s), check, findings, at)


def active(url: str) -> dict[str, dict]:
    """Alertmanager's active alerts, by subject."""
    got = httpx.get(f"{url}/api/v2/alerts", params={"active": "true"}, timeout=5).json()
    return {a["labels"]["subject"]: a for a in got}


def notified(bodies: list[dict], subject: str, status: str) -> bool:
    """Whether Alertmanager's webhook told the receiver that `subject` is `status`."""
    return any(
        a["labels"]["subject"] == subject and a["status"] == status
        for body in bodies
        for a in body["alerts"]
    )


def test_alertmanager_receives_groups_and_resolves_our_alerts(
    clean_engine: Engine, receiver: Receiver, alertmanager: str
) -> None:
    settings = Settings(alertmanager_url=alertmanager, runbook_base_url=REPO)
    t0 = datetime.now(UTC).replace(microsecond=0)
    sku1 = Finding("oversell", "SKU-1", 2500, "usd", {"short_by": 1})
    sku2 = Finding("oversell", "SKU-2", 100, "usd")
    record(clean_engine, "oversell", [sku1, sku2], t0)
    record(clean_engine, "stuck_outbox", [Finding("stuck_outbox", "msg_1")], t0)
    assert alerts.dispatch(clean_engine, settings, t0) == 3

    firing = active(alertmanager)
    assert set(firing) == {"SKU-1", "SKU-2", "msg_1"}
    one = firing["SKU-1"]
    assert one["status"]["state"] == "active"
    assert one["labels"] == {
        "alertname": "DotshopInvariantViolated",
        "service": "dotshop",
        "severity": "critical",
        "check": "oversell",
        "subject": "SKU-1",
    }
    assert one["annotations"]["amount"] == "25.00 USD"
    assert one["annotations"]["runbook_url"] == REPO + "dashboards/runbooks/oversell.md"
    assert one["annotations"]["fingerprint"] == sku1.fingerprint
    assert one["generatorURL"] == REPO + "dashboards/runbooks/oversell.md"
    assert datetime.fromisoformat(one["startsAt"]) == t0

    groups = httpx.get(f"{alertmanager}/api/v2/alerts/groups", timeout=5).json()
    assert sorted(
        (g["labels"]["check"], sorted(a["labels"]["subject"] for a in g["alerts"])) for g in groups
    ) == [("oversell", ["SKU-1", "SKU-2"]), ("stuck_outbox", ["msg_1"])]
    bodies = receiver.wait_for(lambda b: notified(b, "SKU-2", "firing"))
    assert all(
        body["groupLabels"] in ({"check": "oversell"}, {"check": "stuck_outbox"}) for body in bodies
    )

    # Re-sent within the cadence: Alertmanager keeps one alert per label set.
    later = t0 + timedelta(seconds=settings.alert_renotify_seconds)
    record(clean_engine, "oversell", [sku1, sku2], later)
    assert alerts.dispatch(clean_engine, settings, later) == 3
    assert set(active(alertmanager)) == {"SKU-1", "SKU-2", "msg_1"}

    # SKU-1 clears: its resolution ends it in Alertmanager, which tells the receiver.
    cleared = datetime.now(UTC)
    record(clean_engine, "oversell", [sku2], cleared)
    assert alerts.dispatch(clean_engine, settings, cleared) == 1
    assert set(active(alertmanager)) == {"SKU-2", "msg_1"}
    bodies = receiver.wait_for(lambda b: notified(b, "SKU-1", "resolved"))
    (resolution,) = [
        a
        for body in bodies
        for a in body["alerts"]
        if a["labels"]["subject"] == "SKU-1" and a["status"] == "resolved"
    ]
    assert datetime.fromisoformat(resolution["endsAt"]) == cleared

    # Everything clears: nothing active any more.
    record(clean_engine, "oversell", [], datetime.now(UTC))
    record(clean_engine, "stuck_outbox", [], datetime.now(UTC))
    assert alerts.dispatch(clean_engine, settings, datetime.now(UTC)) == 2
    assert active(alertmanager) == {}
    receiver.wait_for(lambda b: notified(b, "msg_1", "resolved"))
