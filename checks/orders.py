"""Order invariants a human must settle: every unresolved `order_flag` (core.payments raises
them: `payment_mismatch`, `stock_lost_after_failed_refund`) is a violation until resolved."""

from __future__ import annotations

from sqlalchemy import text

from checks.registry import CheckContext, check
from core.violations import Finding

# Flags are raised as they happen; a minute is as fast as on-call can act on them.
FLAG_INTERVAL_SECONDS = 60.0

OPEN_FLAGS_SQL = text(
    """
-- open_order_flags --
-- Unresolved flags with the money at stake: what Stripe actually took for a payment mismatch
-- (it sits in suspense), otherwise the order's amount.
SELECT f.order_id, f.kind, f.data, f.created_at,
       COALESCE((f.data->>'received_amount')::bigint, o.amount_minor) AS amount,
       COALESCE(f.data->>'received_currency', o.currency) AS currency,
       o.status
  FROM order_flag f
  JOIN orders o ON o.id = f.order_id
 WHERE f.resolved_at IS NULL
 ORDER BY f.created_at, f.order_id, f.kind
"""
)


@check(
    "order_flag",
    interval_seconds=FLAG_INTERVAL_SECONDS,
    runbook="dashboards/runbooks/order_flag.md",
    summary="An order is flagged for a human (payment mismatch, stock lost after a refund)",
)
def order_flag(ctx: CheckContext) -> list[Finding]:
    with ctx.engine.connect() as conn:
        rows = conn.execute(OPEN_FLAGS_SQL).all()
    return [
        Finding(
            "order_flag",
            f"{r.order_id}:{r.kind}",
            r.amount,
            r.currency.lower(),
            {
                "order_id": r.order_id,
                "kind": r.kind,
                "order_status": r.status,
                "data": r.data,
                "flagged_at": r.created_at.isoformat(),
            },
        )
        for r in rows
    ]
