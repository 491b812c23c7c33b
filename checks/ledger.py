"""Ledger invariant, re-verified from outside the database's own guard: every transaction
balances per currency and has at least two legs (the deferred trigger refuses both; this check
proves nothing slipped past it, e.g. a restore or a hand-made fix with triggers off)."""

from __future__ import annotations

from sqlalchemy import text

from checks.registry import CheckContext, check
from core.violations import Finding

# A full pass over the ledger is cheap at our volume and finance reads it daily.
LEDGER_INTERVAL_SECONDS = 15 * 60.0

IMBALANCE_SQL = text(
    """
-- ledger_imbalance --
-- Transactions whose legs do not sum to 0 in some currency, or that have fewer than two legs.
-- `net` per currency says by how much; the largest one is the money at stake.
WITH per_currency AS (
    SELECT t.id, t.source, t.kind, t.order_id, t.created_at, e.currency,
           COALESCE(sum(e.amount_minor), 0) AS net,
           count(e.id) AS legs
      FROM ledger_txn t
      LEFT JOIN ledger_entry e ON e.txn_id = t.id
     GROUP BY t.id, e.currency
)
SELECT id, source, kind, order_id, created_at,
       jsonb_object_agg(COALESCE(currency, 'none'), net) AS net,
       sum(legs) AS legs,
       (array_agg(currency ORDER BY abs(net) DESC, currency))[1] AS worst_currency,
       max(abs(net)) AS worst_net
  FROM per_currency
 GROUP BY id, source, kind, order_id, created_at
HAVING bool_or(net <> 0) OR sum(legs) < 2
 ORDER BY created_at, id
"""
)


@check(
    "ledger_imbalance",
    interval_seconds=LEDGER_INTERVAL_SECONDS,
    runbook="dashboards/runbooks/ledger_imbalance.md",
    summary="A ledger transaction does not balance or has fewer than two legs",
)
def ledger_imbalance(ctx: CheckContext) -> list[Finding]:
    with ctx.engine.connect() as conn:
        rows = conn.execute(IMBALANCE_SQL).all()
    return [
        Finding(
            "ledger_imbalance",
            r.id,
            r.worst_net or None,
            r.worst_currency if r.worst_net else None,
            {
                "source": r.source,
                "kind": r.kind,
                "order_id": r.order_id,
                "net": r.net,
                "legs": int(r.legs),
                "created_at": r.created_at.isoformat(),
            },
        )
        for r in rows
    ]
