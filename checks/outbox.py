"""Sync invariants: side effects leave (`stuck_outbox`) and both directions between us and
Shopify keep up (`sync_lag`)."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import text

from checks.registry import CheckContext, check
from core.shopify_sync import FULL_SYNC_CURSOR
from core.violations import Finding

# How long a message may wait, per topic family (the part before the dot). Stripe calls
# (cancel, refund, fees) retry within seconds; five minutes means Stripe or our relay is down.
# Shopify pushes wait out its rate limit and per-order ordering, so they get longer.
OUTBOX_SLO_SECONDS = {"stripe": 5 * 60, "shopify": 15 * 60}
# A family we do not list yet: the most patient of the known ones.
DEFAULT_OUTBOX_SLO_SECONDS = max(OUTBOX_SLO_SECONDS.values())
# A paid order should reach Shopify as fast as a shopify.* message is delivered.
OUTBOUND_SLO_SECONDS = OUTBOX_SLO_SECONDS["shopify"]
# The full sync runs every minute (core.worker.SYNC_INTERVAL_SECONDS); ten missed in a row
# means the sync process is down or Shopify refuses us.
INBOUND_SLO_SECONDS = 10 * 60
SYNC_INTERVAL_SECONDS = 60.0

OLDEST_PENDING_SQL = text(
    """
-- oldest_pending_per_family --
-- Per topic family: undelivered messages and the oldest of them (ix_outbox_pending covers it).
SELECT DISTINCT ON (family)
       split_part(topic, '.', 1) AS family,
       public_id, topic, ordering_key, attempts, last_error, created_at,
       count(*) OVER (PARTITION BY split_part(topic, '.', 1)) AS pending
  FROM outbox
 WHERE status = 'pending'
 ORDER BY family, created_at, id
"""
)

DEAD_LETTERS_SQL = text(
    """
-- dead_letters --
-- Every message the relay gave up on; each blocks its ordering key until retried or discarded.
SELECT public_id, topic, ordering_key, attempts, last_error, dead_at
  FROM outbox
 WHERE status = 'dead'
 ORDER BY id
"""
)

OUTBOUND_LAG_SQL = text(
    """
-- outbound_lag --
-- Paid orders Shopify has not acknowledged (no shopify_order_id) past the SLO, per currency:
-- the customers' money for goods the warehouse does not know about yet. An order paid without a
-- recorded payment time counts from its last change.
SELECT currency,
       count(*) AS orders,
       sum(amount_minor - refunded_minor) AS amount,
       min(COALESCE(paid_at, updated_at)) AS oldest_paid_at,
       (array_agg(id ORDER BY COALESCE(paid_at, updated_at), id))[1] AS oldest_order
  FROM orders
 WHERE status IN ('paid', 'partially_refunded')
   AND shopify_order_id IS NULL
   AND COALESCE(paid_at, updated_at) <= :cutoff
 GROUP BY currency
 ORDER BY currency
"""
)

INBOUND_LAG_SQL = text(
    """
-- inbound_lag --
-- When we last heard Shopify's stock: the last finished full sync, or the newest level a webhook
-- brought. NULL when there is no catalog at all (nothing to be behind on).
SELECT greatest(
         (SELECT updated_at FROM sync_cursor WHERE name = :cursor),
         (SELECT max(synced_at) FROM inventory_level)
       ) AS last_heard,
       EXISTS (SELECT 1 FROM variant) AS has_catalog
"""
)


@check(
    "stuck_outbox",
    interval_seconds=SYNC_INTERVAL_SECONDS,
    runbook="dashboards/runbooks/stuck_outbox.md",
    summary="A side effect (Stripe or Shopify call) is dead-lettered or waits past its SLO",
)
def stuck_outbox(ctx: CheckContext) -> list[Finding]:
    findings = []
    with ctx.engine.connect() as conn:
        for r in conn.execute(OLDEST_PENDING_SQL):
            slo = OUTBOX_SLO_SECONDS.get(r.family, DEFAULT_OUTBOX_SLO_SECONDS)
            age = (ctx.now - r.created_at).total_seconds()
            if age <= slo:
                continue
            evidence = {
                "pending": r.pending,
                "oldest": r.public_id,
                "topic": r.topic,
                "key": r.ordering_key,
                "attempts": r.attempts,
                "last_error": r.last_error,
                "age_seconds": int(age),
                "slo_seconds": slo,
            }
            findings.append(Finding("stuck_outbox", f"pending:{r.family}", evidence=evidence))
        for r in conn.execute(DEAD_LETTERS_SQL):
            evidence = {
                "topic": r.topic,
                "key": r.ordering_key,
                "attempts": r.attempts,
                "last_error": r.last_error,
                "dead_at": r.dead_at.isoformat() if r.dead_at else None,
            }
            findings.append(Finding("stuck_outbox", r.public_id, evidence=evidence))
    return findings


@check(
    "sync_lag",
    interval_seconds=SYNC_INTERVAL_SECONDS,
    runbook="dashboards/runbooks/sync_lag.md",
    summary="Shopify is behind on our paid orders, or we are behind on Shopify's stock",
)
def sync_lag(ctx: CheckContext) -> list[Finding]:
    findings = []
    with ctx.engine.connect() as conn:
        outbound_cutoff = ctx.now - timedelta(seconds=OUTBOUND_SLO_SECONDS)
        for r in conn.execute(OUTBOUND_LAG_SQL, {"cutoff": outbound_cutoff}):
            evidence = {
                "orders": r.orders,
                "oldest_order": r.oldest_order,
                "oldest_paid_at": r.oldest_paid_at.isoformat(),
                "lag_seconds": int((ctx.now - r.oldest_paid_at).total_seconds()),
                "slo_seconds": OUTBOUND_SLO_SECONDS,
            }
            findings.append(
                Finding("sync_lag", f"outbound:{r.currency}", r.amount, r.currency, evidence)
            )
        inbound = conn.execute(INBOUND_LAG_SQL, {"cursor": FULL_SYNC_CURSOR}).one()
    if inbound.has_catalog:
        lag = (ctx.now - inbound.last_heard).total_seconds() if inbound.last_heard else None
        if lag is None or lag > INBOUND_SLO_SECONDS:
            evidence = {
                "last_heard": inbound.last_heard.isoformat() if inbound.last_heard else None,
                "lag_seconds": int(lag) if lag is not None else None,
                "slo_seconds": INBOUND_SLO_SECONDS,
            }
            findings.append(Finding("sync_lag", "inbound", evidence=evidence))
    return findings
