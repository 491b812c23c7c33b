"""Payment reconciliation as a check: Stripe's money against our orders, ledger and refunds.

Each run pulls what changed in Stripe since the last run (core.reconcile, from Stripe's event
log, never from webhooks) and matches it in SQL (core.reconcile_match). A payment or order that
does not reconcile past the grace period is a finding about that PaymentIntent or order.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from checks.registry import CheckContext, check
from core import reconcile
from core.reconcile_match import unreconciled
from core.violations import Finding

CHECK = "unreconciled_payment"
# Money is what on-call is paged for, but each run reads Stripe's event log: every five minutes
# keeps the API cost small and is well inside the default grace period (10 minutes).
RECONCILE_INTERVAL_SECONDS = 300.0


def findings(ctx: CheckContext, covered_since: datetime) -> list[Finding]:
    """Match the staging tables with ours as of `ctx.now` minus the grace period."""
    cutoff = ctx.now - timedelta(seconds=ctx.settings.grace_seconds)
    with Session(ctx.engine) as session:
        rows = unreconciled(session, cutoff=cutoff, covered_since=covered_since)
    return [Finding(CHECK, r.subject, r.amount_minor, r.currency, r.evidence) for r in rows]


@check(
    CHECK,
    interval_seconds=RECONCILE_INTERVAL_SECONDS,
    runbook="dashboards/runbooks/unreconciled_payment.md",
    summary="Stripe and our books disagree about a payment (money taken, refunded or disputed)",
)
def unreconciled_payment(ctx: CheckContext) -> list[Finding]:
    gateway = ctx.stripe  # the runner's, built on first use
    pulled = reconcile.pull(
        ctx.engine, gateway, ctx.now, backfill_days=ctx.settings.reconcile_backfill_days
    )
    return findings(ctx, pulled.covered_since)
