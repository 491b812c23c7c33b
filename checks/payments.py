"""Payment reconciliation as a check: Stripe's money against our orders, ledger and refunds.

Each run pulls what changed in Stripe since the last run (core.reconcile, from Stripe's event
log, never from webhooks) and matches it in SQL (core.reconcile_match). A payment or order that
does not reconcile past the grace period is a finding about that PaymentIntent or order.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from checks.registry import CheckContext, check
from core import metrics, reconcile
from core.reconcile_match import Unreconciled, unreconciled
from core.violations import Finding

CHECK = "unreconciled_payment"
# Money is what on-call is paged for, but each run reads Stripe's event log: every five minutes
# keeps the API cost small and is well inside the default grace period (10 minutes).
RECONCILE_INTERVAL_SECONDS = 300.0

# -- matched_payments --
# Succeeded PaymentIntents this run judged (created before the cutoff) that did not come out
# unreconciled, per currency: how many, and the money they took.
MATCHED_SQL = text(
    """
SELECT currency, count(*) AS payments, coalesce(sum(amount_received), 0) AS amount_minor
  FROM stripe_payment
 WHERE status = 'succeeded'
   AND created <= :cutoff
   AND id <> ALL(CAST(:unreconciled AS text[]))
 GROUP BY currency
"""
)

# (currency, status) pairs reported before in this process: back to 0 when they empty.
_seen: set[tuple[str, str]] = set()


def findings(ctx: CheckContext, covered_since: datetime) -> list[Finding]:
    """Match the staging tables with ours as of `ctx.now` minus the grace period."""
    cutoff = ctx.now - timedelta(seconds=ctx.settings.grace_seconds)
    with Session(ctx.engine) as session:
        rows = unreconciled(session, cutoff=cutoff, covered_since=covered_since)
        matched = session.execute(
            MATCHED_SQL, {"cutoff": cutoff, "unreconciled": [r.subject for r in rows]}
        ).all()
    _export_metrics(matched, rows)
    return [Finding(CHECK, r.subject, r.amount_minor, r.currency, r.evidence) for r in rows]


def _export_metrics(matched: list[Any], rows: list[Unreconciled]) -> None:
    """The reconciliation gauges: matched and unreconciled payments per currency."""
    counts: dict[tuple[str, str], int] = dict.fromkeys(_seen, 0)
    amounts: dict[tuple[str, str], int] = dict.fromkeys(_seen, 0)
    for m in matched:
        counts[(m.currency, "matched")] = int(m.payments)
        amounts[(m.currency, "matched")] = int(m.amount_minor)
    for r in rows:
        key = (r.currency, "unreconciled")
        counts[key] = counts.get(key, 0) + 1
        amounts[key] = amounts.get(key, 0) + r.amount_minor
    for (currency, status), count in counts.items():
        metrics.RECONCILIATION_PAYMENTS.labels(currency=currency, status=status).set(count)
        metrics.RECONCILIATION_AMOUNT.labels(currency=currency, status=status).set(
            amounts[(currency, status)]
        )
    _seen.update(counts)


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
