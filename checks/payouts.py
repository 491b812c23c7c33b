"""Payout verification as a check: each reconciled automatic payout against the transactions
Stripe says it covers and against our ledger for those same transactions (core.payouts)."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.orm import Session

from checks.registry import CheckContext, check
from core import payouts
from core.db import transaction
from core.violations import Finding

CHECK = "payout_mismatch"
# Stripe pays out at most daily: hourly is timely and costs one list call per new payout.
PAYOUT_INTERVAL_SECONDS = 3600.0


def _fetch_missing(ctx: CheckContext) -> None:
    """Fetch, once per payout, the transactions Stripe lists for it (final once reconciled)."""
    with Session(ctx.engine) as session:
        missing = [p for p, record, _ in payouts.to_verify(session) if record["stripe"] is None]
    if not missing:
        return
    gateway = ctx.stripe  # the runner's, built on first use
    for payout_id in missing:
        txns = gateway.payout_balance_transactions(payout_id)
        with transaction(ctx.engine) as session:
            payouts.keep_stripe_side(session, payout_id, txns)


@check(
    CHECK,
    interval_seconds=PAYOUT_INTERVAL_SECONDS,
    runbook="dashboards/runbooks/payout_mismatch.md",
    summary="A Stripe payout does not add up to what our books hold for what it covers",
)
def payout_mismatch(ctx: CheckContext) -> list[Finding]:
    _fetch_missing(ctx)
    cutoff = ctx.now - timedelta(seconds=ctx.settings.grace_seconds)
    found = []
    with Session(ctx.engine) as session:
        for payout_id, record, queued_at in payouts.to_verify(session):
            if record["stripe"] is None or queued_at > cutoff:
                continue
            v = payouts.verify(session, payout_id, record)
            if v.matches:
                continue
            evidence = {
                "payout_amount": v.amount,
                "stripe_by_category": v.stripe,
                "ledger_by_category": v.ledger,
            }
            found.append(Finding(CHECK, payout_id, abs(v.difference), v.currency, evidence))
    return found
