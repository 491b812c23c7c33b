"""Business alerts (checks.alerts, DESIGN.md "Checks"): a violation alerts once, is deduplicated
by fingerprint, is re-sent on a cadence (Alertmanager's "Sending alerts": clients re-send active
alerts), resolves once with its end time, and a sink that failed gets it again next dispatch.
Real PostgreSQL, a real HTTP receiver for the webhook sink."""

from __future__ import annotations

import socket
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session
from structlog.testing import capture_logs

from checks import alerts
from core import violations
from core.db import transaction
from core.models import Violation
from core.settings import Settings
from core.violations import Finding
from tests.checks.conftest import Receiver

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
REPO = "https://git.example/dotshop/blob/main/"


def record(engine: Engine, check: str, findings: list[Finding], at: datetime) -> None:
    with transaction(engine) as s:
        run_id = violations.start_run(s)
        violations.record_findings(s, run_id, check, findings, at)


def webhook_settings(receiver: Receiver, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "alert_webhook_url": receiver.url,
        "alert_renotify_seconds": 3600,
        "runbook_base_url": REPO,
    }
    values.update(overrides)
    return Settings(**values)


def stored(engine: Engine, subject: str) -> Violation:
    with Session(engine) as s:
        return s.scalars(
            select(Violation).where(Violation.subject == subject).order_by(Violation.first_seen)
        ).all()[-1]


def sent_alerts(receiver: Receiver) -> list[dict]:
    return [a for body in receiver.bodies for a in body["alerts"]]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


SHORT = Finding("oversell", "SKU-1", 2500, "usd", {"short_by": 1})


def test_a_new_violation_alerts_once_with_what_broke_money_since_when_and_runbook(
    clean_engine: Engine, receiver: Receiver
) -> None:
    record(clean_engine, "oversell", [SHORT], T0)
    assert alerts.dispatch(clean_engine, webhook_settings(receiver), T0) == 1
    (body,) = receiver.bodies
    assert body["service"] == "dotshop"
    (alert,) = body["alerts"]
    assert alert == {
        "status": "firing",
        "fingerprint": violations.fingerprint("oversell", "SKU-1"),
        "violation_id": stored(clean_engine, "SKU-1").id,
        "check": "oversell",
        "summary": alert["summary"],
        "subject": "SKU-1",
        "amount_minor": 2500,
        "currency": "usd",
        "amount": "25.00 USD",
        "first_seen": T0.isoformat(),
        "last_seen": T0.isoformat(),
        "resolved_at": None,
        "runbook_url": REPO + "dashboards/runbooks/oversell.md",
        "evidence": {"short_by": 1},
    }
    assert stored(clean_engine, "SKU-1").notified_at == T0


def test_an_open_violation_is_deduplicated_until_the_renotify_cadence(
    clean_engine: Engine, receiver: Receiver
) -> None:
    settings = webhook_settings(receiver)
    record(clean_engine, "oversell", [SHORT], T0)
    assert alerts.dispatch(clean_engine, settings, T0) == 1
    # Seen again by later runs: the same violation, not a new alert.
    record(clean_engine, "oversell", [SHORT], T0 + timedelta(minutes=30))
    assert alerts.dispatch(clean_engine, settings, T0 + timedelta(minutes=30)) == 0
    assert alerts.dispatch(clean_engine, settings, T0 + HOUR - timedelta(seconds=1)) == 0
    assert len(receiver.bodies) == 1
    assert alerts.dispatch(clean_engine, settings, T0 + HOUR) == 1
    assert [a["status"] for a in sent_alerts(receiver)] == ["firing", "firing"]
    assert stored(clean_engine, "SKU-1").notified_at == T0 + HOUR


def test_a_resolved_violation_sends_one_resolution_with_its_end_time(
    clean_engine: Engine, receiver: Receiver
) -> None:
    settings = webhook_settings(receiver)
    record(clean_engine, "oversell", [SHORT], T0)
    alerts.dispatch(clean_engine, settings, T0)
    cleared = T0 + timedelta(minutes=5)
    record(clean_engine, "oversell", [], cleared)
    assert alerts.dispatch(clean_engine, settings, cleared) == 1
    resolution = sent_alerts(receiver)[-1]
    assert (resolution["status"], resolution["resolved_at"]) == ("resolved", cleared.isoformat())
    assert stored(clean_engine, "SKU-1").resolve_notified_at == cleared
    # Once: neither the cadence nor later dispatches send it again.
    assert alerts.dispatch(clean_engine, settings, cleared + 3 * HOUR) == 0
    assert len(receiver.bodies) == 2


def test_a_violation_that_comes_back_sends_its_old_resolution_before_the_new_alert(
    clean_engine: Engine, receiver: Receiver
) -> None:
    """Same labels in Alertmanager: the resolution must come first, or it would end the new one."""
    settings = webhook_settings(receiver)
    record(clean_engine, "oversell", [SHORT], T0)
    alerts.dispatch(clean_engine, settings, T0)
    record(clean_engine, "oversell", [], T0 + timedelta(minutes=1))
    record(clean_engine, "oversell", [SHORT], T0 + timedelta(minutes=2))
    assert alerts.dispatch(clean_engine, settings, T0 + timedelta(minutes=2)) == 2
    assert [a["status"] for a in receiver.bodies[-1]["alerts"]] == ["resolved", "firing"]


def test_a_sink_that_fails_is_retried_next_dispatch(
    clean_engine: Engine, receiver: Receiver
) -> None:
    settings = webhook_settings(receiver)
    record(clean_engine, "oversell", [SHORT], T0)
    receiver.fail_next = 1
    assert alerts.dispatch(clean_engine, settings, T0) == 0
    assert receiver.refused == 1
    assert stored(clean_engine, "SKU-1").notified_at is None
    assert alerts.dispatch(clean_engine, settings, T0 + timedelta(minutes=1)) == 1
    assert [a["subject"] for a in sent_alerts(receiver)] == ["SKU-1"]


def test_a_dead_sink_does_not_stop_the_others_and_keeps_the_violation_unsent(
    clean_engine: Engine, receiver: Receiver
) -> None:
    settings = webhook_settings(receiver, alertmanager_url=f"http://127.0.0.1:{closed_port()}")
    record(clean_engine, "oversell", [SHORT], T0)
    assert alerts.dispatch(clean_engine, settings, T0) == 0
    assert len(receiver.bodies) == 1  # the webhook still got it
    assert stored(clean_engine, "SKU-1").notified_at is None
    # Alertmanager still down: every sink gets it again until all have accepted it.
    assert alerts.dispatch(clean_engine, settings, T0 + timedelta(minutes=1)) == 0
    assert len(receiver.bodies) == 2


def test_secrets_never_reach_an_alert_payload(clean_engine: Engine, receiver: Receiver) -> None:
    token = "hook-token-5f1e2d"
    settings = webhook_settings(
        receiver,
        alert_webhook_url=f"{receiver.url}?token={token}",
        stripe_api_key="sk_test_alerts_secret_0001",
        admin_token="admin-secret-0002",
    )
    evidence = {
        "payment_intent": "pi_123",
        "client_secret": "pi_123_secret_0003",
        "charges": [{"id": "ch_1", "api_key": "sk_live_0004"}],
    }
    record(
        clean_engine,
        "unreconciled_payment",
        [Finding("unreconciled_payment", "pi_123", 500, "usd", evidence)],
        T0,
    )
    with capture_logs() as logs:
        assert alerts.dispatch(clean_engine, settings, T0) == 1
    raw = b"".join(receiver.raw).decode()
    for secret in (
        token,
        "sk_test_alerts_secret_0001",
        "admin-secret-0002",
        "_secret_0003",
        "sk_live_0004",
    ):
        assert secret not in raw
        assert secret not in repr(logs)
    (alert,) = sent_alerts(receiver)
    assert alert["evidence"] == {
        "payment_intent": "pi_123",
        "client_secret": "[redacted]",
        "charges": [{"id": "ch_1", "api_key": "[redacted]"}],
    }


def test_the_log_always_gets_the_alert(clean_engine: Engine) -> None:
    """No sink configured: the log is the sink, and it deduplicates like the others."""
    record(clean_engine, "oversell", [SHORT], T0)
    with capture_logs() as logs:
        assert alerts.dispatch(clean_engine, Settings(), T0) == 1
        assert alerts.dispatch(clean_engine, Settings(), T0 + timedelta(minutes=1)) == 0
    (entry,) = [e for e in logs if e.get("alert")]
    assert (entry["status"], entry["subject"], entry["amount"]) == ("firing", "SKU-1", "25.00 USD")
    assert entry["runbook_url"] == "dashboards/runbooks/oversell.md"


@pytest.mark.parametrize(
    ("minor", "currency", "text"),
    [
        (2500, "usd", "25.00 USD"),
        (-5, "eur", "-0.05 EUR"),
        (500, "jpy", "500 JPY"),
        (None, "usd", None),
    ],
)
def test_money_is_formatted_from_minor_units(
    minor: int | None, currency: str, text: str | None
) -> None:
    """Stripe's zero-decimal currencies (JPY...) have no minor unit."""
    assert alerts.format_amount(minor, currency) == text
