"""Shopify sync lag, measured per direction and per SKU (`sync_lag_sample`).

Inbound: our apply time - when Shopify made the change (X-Shopify-Triggered-At of a webhook, or
the resource's updatedAt when a repair read it). Outbound: Shopify's acknowledgement of a push -
the event that caused it (the order's payment). Samples are written in the transaction that
applies the change, by whichever process applies it; /metrics (any API process) drains the ones
no process exported yet into the `dotshop_sync_lag_seconds` histogram, and the console reads
per-SKU last sync times and recent percentiles from the same rows."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, delete, func, insert, select, text
from sqlalchemy.orm import Session

from core import cursors, metrics
from core.db import transaction
from core.models import SyncLagSample

INBOUND = "inbound"
OUTBOUND = "outbound"
# Samples older than this are pruned by the sync loop: a day is enough to look back on an
# incident, and keeps the table small at one sample per SKU change.
RETENTION = timedelta(days=1)
# The console's "recent" percentiles cover this window.
RECENT = timedelta(hours=1)


@dataclass(frozen=True)
class SkuSync:
    sku: str
    direction: str
    last_synced_at: datetime
    samples: int
    p50_seconds: float
    p99_seconds: float


def record(
    session: Session, direction: str, happened_at: Mapping[str, datetime], now: datetime
) -> None:
    """One sample per SKU: `now` - when its change happened (clock skew clamped to 0)."""
    rows = [
        {
            "direction": direction,
            "sku": sku,
            "lag_ms": max(0, int((now - at).total_seconds() * 1000)),
            "observed_at": now,
        }
        for sku, at in sorted(happened_at.items())
    ]
    if rows:
        session.execute(insert(SyncLagSample), rows)


def status(session: Session, now: datetime | None = None) -> list[SkuSync]:
    """Per SKU and direction: the last sync, and lag percentiles over the RECENT window."""
    since = (now or datetime.now(UTC)) - RECENT
    lag = SyncLagSample.lag_ms / 1000.0
    rows = session.execute(
        select(
            SyncLagSample.sku,
            SyncLagSample.direction,
            func.max(SyncLagSample.observed_at),
            func.count(),
            func.percentile_cont(0.5).within_group(lag),
            func.percentile_cont(0.99).within_group(lag),
        )
        .where(SyncLagSample.observed_at >= since)
        .group_by(SyncLagSample.sku, SyncLagSample.direction)
        .order_by(SyncLagSample.sku, SyncLagSample.direction)
    ).all()
    return [SkuSync(s, d, at, n, float(p50), float(p99)) for s, d, at, n, p50, p99 in rows]


def prune(session: Session, now: datetime) -> int:
    return session.execute(
        delete(SyncLagSample).where(SyncLagSample.observed_at < now - RETENTION)
    ).rowcount


OLDEST_UNACKNOWLEDGED_SQL = text(
    """
-- oldest_unacknowledged --
-- The oldest paid order whose committed units Shopify has not acknowledged yet: how long our
-- oldest outbound message has waited (0 when none waits).
SELECT coalesce(extract(epoch FROM now() - min(o.paid_at)), 0)
  FROM orders o
 WHERE o.shopify_order_id IS NULL
   AND o.paid_at IS NOT NULL
   AND EXISTS (SELECT 1 FROM reservation r
                WHERE r.order_id = o.id AND r.status = 'committed')
"""
)

# Which samples some /metrics already exported (several API processes scrape; each sample is
# observed by exactly one, so the histograms sum correctly across them).
METRICS_CURSOR = "sync_lag_metrics"
# Samples observed per scrape at most; the rest wait for the next scrape.
EXPORT_BATCH = 10_000


def export_metrics(engine: Engine) -> None:
    """Feed this process's /metrics: samples no process exported yet into the histogram, and
    the oldest unacknowledged push's age into the gauge."""
    with transaction(engine) as session:
        after = int(cursors.claim(session, METRICS_CURSOR).get("id", 0))
        rows = session.execute(
            select(SyncLagSample.id, SyncLagSample.direction, SyncLagSample.lag_ms)
            .where(SyncLagSample.id > after)
            .order_by(SyncLagSample.id)
            .limit(EXPORT_BATCH)
        ).all()
        if rows:
            cursors.save(session, METRICS_CURSOR, {"id": rows[-1].id})
        oldest = session.execute(OLDEST_UNACKNOWLEDGED_SQL).scalar_one()
    for _, direction, lag_ms in rows:
        metrics.SYNC_LAG.labels(direction=direction).observe(lag_ms / 1000.0)
    metrics.SYNC_OUTBOUND_OLDEST_AGE.set(float(oldest))
