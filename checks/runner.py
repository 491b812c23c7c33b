"""One run of the invariant checks: every registered check (or the named ones), each reading in
its own short transactions and recording its findings in one more, so a slow or failing check
neither blocks nor loses the others. A check that raises is stored as `{"error": ...}` in the
run's results and logged; the run goes on. Then the alert sinks get their turn."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from checks.registry import CHECKS, Check, CheckContext
from core import violations
from core.db import transaction
from core.errors import InvalidRequest
from core.logs import get_logger
from core.models import Violation
from core.settings import Settings

log = get_logger("checks.runner")

# Every module that registers checks. "checks.payments" lands with payment reconciliation;
# until then (or without its dependencies) it is skipped, not fatal.
CHECK_MODULES = (
    "checks.inventory",
    "checks.outbox",
    "checks.ledger",
    "checks.orders",
    "checks.expectations",
    "checks.payments",
    "checks.payouts",
)
OPTIONAL_MODULES = frozenset({"checks.payments"})
# An error kept in a run's results is for a human to read, not a traceback (that goes to the log).
ERROR_MAX_CHARS = 500


@dataclass(frozen=True)
class RunResult:
    """A finished run: its id and status (`ok`, `violations` or `error`), per check
    `{"open", "opened", "resolved"}` or `{"error"}`, and the open violations of the checks it ran
    (detached rows, newest first)."""

    run_id: str
    status: str
    results: dict[str, dict[str, Any]]
    violations: list[Violation]


def load_checks() -> dict[str, Check]:
    """Import every check module (registering its checks); returns the registry."""
    for name in CHECK_MODULES:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if name not in OPTIONAL_MODULES or exc.name != name:
                raise
    return CHECKS


def select_checks(names: Iterable[str] | None) -> list[Check]:
    """The checks to run, in name order; an unknown name is the caller's mistake."""
    known = load_checks()
    wanted = sorted(set(names)) if names is not None else sorted(known)
    unknown = [n for n in wanted if n not in known]
    if unknown:
        raise InvalidRequest(
            f"unknown check(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}",
            param="names",
        )
    return [known[n] for n in wanted]


class _Lazy:
    """A provider gateway built on first use: checks that only read the database run without
    credentials, and a check that needs a missing one fails alone with a clear error."""

    def __init__(self, build: Callable[[], Any]) -> None:
        self._build = build
        self._gateway: Any = None

    def __getattr__(self, name: str) -> Any:
        if self._gateway is None:
            self._gateway = self._build()
        return getattr(self._gateway, name)


def context(engine: Engine, settings: Settings, now: datetime) -> CheckContext:
    from core.shopify_gateway import ShopifyGateway
    from core.stripe_gateway import StripeGateway

    return CheckContext(
        engine,
        settings,
        now,
        stripe=_Lazy(lambda: StripeGateway.from_settings(settings)),
        shopify=_Lazy(lambda: ShopifyGateway.from_settings(settings)),
    )


def _run_one(ctx: CheckContext, run_id: str, check: Check) -> dict[str, Any]:
    try:
        findings = check.run(ctx)
        with transaction(ctx.engine) as session:
            recorded = violations.record_findings(session, run_id, check.name, findings, ctx.now)
    except Exception as exc:
        log.exception("check.failed", check=check.name, run_id=run_id)
        return {"error": f"{type(exc).__name__}: {exc}"[:ERROR_MAX_CHARS]}
    return {"open": recorded.open, "opened": recorded.opened, "resolved": recorded.resolved}


def _dispatch_alerts(engine: Engine, settings: Settings, now: datetime) -> None:
    """Hand what is due to the alert sinks; a sink failing never fails the run (the violations
    are stored, and the next run dispatches again)."""
    try:
        from checks import alerts
    except ImportError:
        return
    try:
        alerts.dispatch(engine, settings, now)
    except Exception:
        log.exception("alerts.dispatch_failed")


def run_checks(
    engine: Engine,
    settings: Settings,
    *,
    now: datetime | None = None,
    names: Iterable[str] | None = None,
) -> RunResult:
    """Run the checks once (all, or `names`), store the run and its violations, alert."""
    selected = select_checks(names)
    now = now or datetime.now(UTC)
    ctx = context(engine, settings, now)
    with transaction(engine) as session:
        run_id = violations.start_run(session)
    results = {check.name: _run_one(ctx, run_id, check) for check in selected}
    with transaction(engine) as session:
        status = violations.finish_run(session, run_id, results)
    log.info("checks.run", run_id=run_id, status=status, results=results)
    _dispatch_alerts(engine, settings, now)
    with Session(engine, expire_on_commit=False) as session:
        open_now = violations.listing(
            session, status=violations.OPEN, checks=[c.name for c in selected]
        )
        session.expunge_all()
    return RunResult(run_id, status, results, open_now)
