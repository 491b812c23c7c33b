"""Business alerts: on-call hears about every broken invariant (what broke, about which SKU,
order or payment, how much money, since when, which runbook) and hears when it clears.

Everything due is read from the `violation` table at each dispatch, so a restart loses nothing:
- an open violation never sent, or last sent `alert_renotify_seconds` ago (Alertmanager
  resolves an alert that is not re-sent; a webhook consumer learns it still holds);
- a resolved violation whose resolution was not sent yet (once, with `endsAt`).
A batch goes to the log (always) and to each configured sink: Alertmanager's v2 API
(`alertmanager_url`) and a JSON webhook (`alert_webhook_url`). A violation is marked sent
(`notified_at` / `resolve_notified_at`) only when every configured sink accepted it; otherwise
the next dispatch sends it again. Delivery is at-least-once: Alertmanager dedupes by label set,
a webhook consumer by `fingerprint`.

Alertmanager identifies an alert by its labels, so they are fixed per violation: `alertname`
is always `DotshopInvariantViolated`, and `check` + `subject` (what our fingerprint hashes)
tell violations apart. Money, evidence and times change, so they are annotations.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
from sqlalchemy import Engine, or_, select, update
from sqlalchemy.orm import Session

from checks.registry import CHECKS
from core.db import transaction
from core.errors import AlertSinkUnavailable
from core.logs import REDACTED, SECRET_KEY_NAMES, get_logger
from core.metrics import ALERT_NOTIFICATIONS
from core.models import Violation
from core.settings import Settings

log = get_logger(__name__)

ALERTNAME = "DotshopInvariantViolated"
SERVICE = "dotshop"
# Every invariant is money or stock at risk: each one pages. A label, so it must not vary
# within one violation (Alertmanager would see a new alert).
SEVERITY = "critical"
# A firing alert stays active in Alertmanager this many re-notify periods after it was sent:
# one late or failed dispatch does not resolve it, a dotshop that stopped checking lets it expire.
LIFETIME_PERIODS = 3
# At most this many alerts per dispatch (one HTTP request per sink); the rest go next time.
BATCH_LIMIT = 500
# Currencies without minor units, as Stripe lists them (amounts are whole units).
ZERO_DECIMAL = frozenset(
    {"bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga"}
    | {"pyg", "rwf", "ugx", "vnd", "vuv", "xaf", "xof", "xpf"}
)
FIRING = "firing"
RESOLVED = "resolved"


@dataclass(frozen=True)
class Alert:
    """One violation as on-call reads it."""

    violation_id: str
    fingerprint: str
    check: str
    summary: str
    subject: str
    amount_minor: int | None
    currency: str | None
    evidence: dict[str, Any]
    first_seen: datetime
    last_seen: datetime
    resolved_at: datetime | None
    runbook_url: str

    @property
    def status(self) -> str:
        return RESOLVED if self.resolved_at else FIRING

    @property
    def amount(self) -> str | None:
        return format_amount(self.amount_minor, self.currency)

    @property
    def description(self) -> str:
        money = f"{self.amount} at stake" if self.amount else "no money amount"
        return f"{self.summary}: {self.subject}; {money}; since {_iso(self.first_seen)}"


def format_amount(amount_minor: int | None, currency: str | None) -> str | None:
    """`2500, "usd"` -> "25.00 USD" (None without an amount)."""
    if amount_minor is None:
        return None
    code = (currency or "").upper() or "?"
    if (currency or "").lower() in ZERO_DECIMAL:
        return f"{amount_minor} {code}"
    sign = "-" if amount_minor < 0 else ""
    units, cents = divmod(abs(amount_minor), 100)
    return f"{sign}{units}.{cents:02d} {code}"


def runbook_url(settings: Settings, check: str) -> str:
    """The check's runbook under `runbook_base_url` (relative to the repository when unset)."""
    registered = CHECKS.get(check)
    path = registered.runbook if registered else f"dashboards/runbooks/{check}.md"
    base = settings.runbook_base_url
    return f"{base.rstrip('/')}/{path}" if base else path


def redact(value: Any) -> Any:
    """Evidence with the values of secret-looking keys (as the log redacts them) replaced."""
    if isinstance(value, dict):
        return {
            k: REDACTED if SECRET_KEY_NAMES.search(str(k)) else redact(v) for k, v in value.items()
        }
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value


def due(session: Session, now: datetime, renotify_seconds: int) -> list[Violation]:
    """The violations to send now: resolutions first, so that a violation that cleared and came
    back (same labels) ends up firing in Alertmanager, then open ones due a (re-)notification."""
    stale = now - timedelta(seconds=renotify_seconds)
    query = (
        select(Violation)
        .where(
            or_(
                Violation.resolved_at.is_(None)
                & (Violation.notified_at.is_(None) | (Violation.notified_at <= stale)),
                Violation.resolved_at.is_not(None) & Violation.resolve_notified_at.is_(None),
            )
        )
        .order_by(Violation.resolved_at.is_(None), Violation.first_seen, Violation.id)
        .limit(BATCH_LIMIT)
    )
    return list(session.scalars(query))


def to_alert(v: Violation, settings: Settings) -> Alert:
    registered = CHECKS.get(v.check_name)
    return Alert(
        violation_id=v.id,
        fingerprint=v.fingerprint,
        check=v.check_name,
        summary=registered.summary if registered else v.check_name.replace("_", " "),
        subject=v.subject,
        amount_minor=v.amount_minor,
        currency=v.currency,
        evidence=redact(v.evidence or {}),
        first_seen=v.first_seen,
        last_seen=v.last_seen,
        resolved_at=v.resolved_at,
        runbook_url=runbook_url(settings, v.check_name),
    )


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat()


def alertmanager_payload(alerts: Sequence[Alert], now: datetime, lifetime: timedelta) -> Any:
    """Postable alerts for `POST /api/v2/alerts`: a firing one ends in the future (re-sent
    before then), a resolved one at its resolution."""
    return [
        {
            "labels": {
                "alertname": ALERTNAME,
                "service": SERVICE,
                "severity": SEVERITY,
                "check": a.check,
                "subject": a.subject,
            },
            "annotations": {
                "summary": a.summary,
                "description": a.description,
                "amount": a.amount or "",
                "first_seen": _iso(a.first_seen),
                "runbook_url": a.runbook_url,
                "fingerprint": a.fingerprint,
                "violation_id": a.violation_id,
                "evidence": json.dumps(a.evidence, sort_keys=True, default=str),
            },
            "startsAt": _iso(a.first_seen),
            "endsAt": _iso(a.resolved_at or now + lifetime),
            # Alertmanager refuses a relative generatorURL (it must be a URI).
            **({"generatorURL": a.runbook_url} if urlsplit(a.runbook_url).scheme else {}),
        }
        for a in alerts
    ]


def webhook_payload(alerts: Sequence[Alert], now: datetime, lifetime: timedelta) -> Any:
    """Our webhook's JSON (documented in README.md, "Alerts")."""
    return {
        "service": SERVICE,
        "sent_at": _iso(now),
        "alerts": [
            {
                "status": a.status,
                "fingerprint": a.fingerprint,
                "violation_id": a.violation_id,
                "check": a.check,
                "summary": a.summary,
                "subject": a.subject,
                "amount_minor": a.amount_minor,
                "currency": a.currency,
                "amount": a.amount,
                "first_seen": _iso(a.first_seen),
                "last_seen": _iso(a.last_seen),
                "resolved_at": _iso(a.resolved_at) if a.resolved_at else None,
                "runbook_url": a.runbook_url,
                "evidence": a.evidence,
            }
            for a in alerts
        ],
    }


Payload = Callable[[Sequence[Alert], datetime, timedelta], Any]


@dataclass(frozen=True)
class HttpSink:
    """A sink that takes one JSON POST per batch; any 2xx answer means accepted."""

    name: str
    url: str
    payload: Payload

    def send(self, alerts: Sequence[Alert], now: datetime, settings: Settings) -> None:
        lifetime = timedelta(seconds=settings.alert_renotify_seconds * LIFETIME_PERIODS)
        body = self.payload(alerts, now, lifetime)
        try:
            response = httpx.post(self.url, json=body, timeout=settings.alert_timeout)
        except httpx.HTTPError as exc:
            # Not str(exc): it may carry the URL, and a webhook URL can hold a token.
            raise AlertSinkUnavailable(sink=self.name, error=type(exc).__name__) from None
        if not response.is_success:
            raise AlertSinkUnavailable(sink=self.name, status=response.status_code)


def sinks(settings: Settings) -> list[HttpSink]:
    """The configured HTTP sinks (the log is always on besides these)."""
    out = []
    if settings.alertmanager_url:
        url = f"{settings.alertmanager_url.rstrip('/')}/api/v2/alerts"
        out.append(HttpSink("alertmanager", url, alertmanager_payload))
    if settings.alert_webhook_url:
        url = settings.alert_webhook_url.get_secret_value()
        out.append(HttpSink("webhook", url, webhook_payload))
    return out


def _log(alerts: Sequence[Alert]) -> None:
    for a in alerts:
        emit = log.warning if a.status == FIRING else log.info
        emit(
            "business alert",
            alert=True,
            status=a.status,
            check=a.check,
            subject=a.subject,
            summary=a.summary,
            amount=a.amount,
            first_seen=_iso(a.first_seen),
            resolved_at=_iso(a.resolved_at) if a.resolved_at else None,
            runbook_url=a.runbook_url,
            fingerprint=a.fingerprint,
            violation_id=a.violation_id,
            evidence=a.evidence,
        )
    ALERT_NOTIFICATIONS.labels("log", "sent").inc(len(alerts))


def _deliver(sink: HttpSink, alerts: Sequence[Alert], now: datetime, settings: Settings) -> bool:
    try:
        sink.send(alerts, now, settings)
    except AlertSinkUnavailable as exc:
        ALERT_NOTIFICATIONS.labels(sink.name, "failed").inc(len(alerts))
        log.warning("alert sink failed; retried next dispatch", count=len(alerts), **exc.details)
        return False
    ALERT_NOTIFICATIONS.labels(sink.name, "sent").inc(len(alerts))
    return True


def _mark(engine: Engine, alerts: Sequence[Alert], now: datetime) -> None:
    firing = [a.violation_id for a in alerts if a.status == FIRING]
    resolved = [a.violation_id for a in alerts if a.status == RESOLVED]
    with transaction(engine) as s:
        if firing:
            s.execute(update(Violation).where(Violation.id.in_(firing)).values(notified_at=now))
        if resolved:
            s.execute(
                update(Violation).where(Violation.id.in_(resolved)).values(resolve_notified_at=now)
            )


def dispatch(engine: Engine, settings: Settings, now: datetime | None = None) -> int:
    """Send what is due (see the module doc); returns how many alerts every sink accepted.

    No lock is held while sinks are called: a slow sink must not stall the check runs that
    update the same violations. Two dispatchers at once may send an alert twice, never lose it.
    """
    now = now or datetime.now(UTC)
    with Session(engine) as s:
        alerts = [to_alert(v, settings) for v in due(s, now, settings.alert_renotify_seconds)]
    if not alerts:
        return 0
    _log(alerts)
    accepted = [_deliver(sink, alerts, now, settings) for sink in sinks(settings)]
    if not all(accepted):
        return 0
    _mark(engine, alerts, now)
    return len(alerts)
