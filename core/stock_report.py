"""Read side of the console's Inventory & sync page: per-SKU stock and drift, sync lag over time,
and the health of the Shopify sync. Plain reads returning frozen dataclasses (the console caches
them); nothing here calls Shopify.

Drift is the inventory_drift check's difference (checks/inventory.py), computed the same way:
our projection of Shopify's stock, less the units of our holds Shopify keeps in `reserved`
(core.shopify_sync.mirrored_holds), less Shopify's count over the selling locations. The check
reads that count live from Shopify; this page uses the levels as we last read them
(inventory_level), so it sees what our projection has not caught up with (a hold that ended
here and is not yet back in Shopify's `available`), but not a change Shopify made that we never
heard of: that is what the check finds, and its open violation is shown next to the row.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from core import sync_lag
from core.errors import InvalidRequest
from core.models import SyncCursor
from core.settings import get_settings
from core.shopify_sync import FULL_SYNC_CURSOR, mirrored_holds

MAX_PAGE = 1000
# Candidate SKUs read per statement while looking for drifting ones: a page of drift_only reads
# the SKUs that can drift in SKU order, a batch at a time, until it has found its rows (a
# candidate with live holds in step with Shopify, or within tolerance, is left out).
DRIFT_SCAN_BATCH = 500
# A lag chart wider than this many points is unreadable and a slow query: ask for wider buckets.
MAX_BUCKETS = 2000
# The check whose open violations are shown per SKU.
DRIFT_CHECK = "inventory_drift"


@dataclass(frozen=True)
class StockRow:
    """One SKU on the Inventory page. Units throughout; times UTC.

    shopify_available is our projection of Shopify's stock (it counts the units of our holds
    Shopify keeps in `reserved`); sellable = shopify_available - reserved - committed (negative
    only in a shortfall: Shopify sold what we promised). shopify_level is Shopify's count over
    the selling locations as last read (0 when never read), shopify_level_at Shopify's time of
    the newest of those levels and shopify_level_read_at when we recorded it. drift =
    shopify_available - held_in_shopify_reserved - shopify_level (0 when in step);
    drift_exceeds: |drift| > the tolerance asked for. drift_violation_*: the open
    inventory_drift violation of the SKU, if the check (which reads Shopify live) found one:
    since when, Shopify's live count it read, and the difference it saw. last_inbound_at /
    last_outbound_at: the last change applied in each direction (sync_lag_sample, kept for
    core.sync_lag.RETENTION; None when older)."""

    sku: str
    product_title: str
    variant_title: str
    product_status: str
    sellable: int
    shopify_available: int
    reserved: int
    committed: int
    shopify_updated_at: datetime | None
    shopify_level: int
    shopify_level_at: datetime | None
    shopify_level_read_at: datetime | None
    held_in_shopify_reserved: int
    drift: int
    drift_exceeds: bool
    drift_violation_since: datetime | None
    drift_violation_shopify: int | None
    drift_violation_difference: int | None
    shortfall_since: datetime | None
    last_inbound_at: datetime | None
    last_outbound_at: datetime | None

    @property
    def drifting(self) -> bool:
        """Out of step by our last read beyond tolerance, or by the check's live read."""
        return self.drift_exceeds or self.drift_violation_since is not None


@dataclass(frozen=True)
class LagPoint:
    """Sync lag of one direction (`inbound` or `outbound`) in one time bucket starting at
    `bucket_start`: percentiles in seconds over `samples` measurements."""

    bucket_start: datetime
    direction: str
    samples: int
    p50_seconds: float
    p95_seconds: float
    p99_seconds: float


@dataclass(frozen=True)
class DirectionLag:
    """Recent (core.sync_lag.RECENT) lag of one direction."""

    direction: str
    samples: int
    p50_seconds: float
    p99_seconds: float


@dataclass(frozen=True)
class SyncHealth:
    """The Shopify sync at a glance. oldest_unacknowledged_seconds: how long the oldest paid
    order has waited for Shopify to acknowledge it (0 when none waits). last_repair_*: the last
    finished repair, from the FULL_SYNC_CURSOR cursor: when it finished, `full` (bulk read of
    everything) or `incremental` (changes since the cursor), and where the next one starts
    (None before the first repair). recent: lag per direction over the last
    core.sync_lag.RECENT (a direction without samples is left out)."""

    oldest_unacknowledged_seconds: float
    last_repair_at: datetime | None
    last_repair_mode: str | None
    next_repair_since: str | None
    recent: tuple[DirectionLag, ...]


STOCK_ROWS_SQL = text(
    r"""
-- stock_rows --
-- Every SKU we sell (like the drift check's projection: 0 without a stock row), in SKU order
-- after :after, along variant's unique sku index so a page stops after :limit rows: our
-- counters, Shopify's count over the selling locations as last read (inventory_level, by its
-- primary key), the open inventory_drift violation (ix_violation_check_open), and the newest
-- lag sample per direction (ix_sync_lag_sample_sku_direction_observed_at, read backwards).
SELECT v.sku,
       p.title AS product_title,
       v.title AS variant_title,
       p.status AS product_status,
       COALESCE(s.shopify_available, 0) AS shopify_available,
       COALESCE(s.reserved, 0) AS reserved,
       COALESCE(s.committed, 0) AS committed,
       s.shopify_updated_at,
       s.shortfall_since,
       COALESCE(lvl.available, 0) AS shopify_level,
       lvl.updated_at AS shopify_level_at,
       lvl.read_at AS shopify_level_read_at,
       vio.first_seen AS drift_violation_since,
       (vio.evidence ->> 'shopify')::bigint AS drift_violation_shopify,
       (vio.evidence ->> 'difference')::bigint AS drift_violation_difference,
       (SELECT max(l.observed_at) FROM sync_lag_sample l
         WHERE l.sku = v.sku AND l.direction = 'inbound') AS last_inbound_at,
       (SELECT max(l.observed_at) FROM sync_lag_sample l
         WHERE l.sku = v.sku AND l.direction = 'outbound') AS last_outbound_at
  FROM variant v
  JOIN product p ON p.id = v.product_id
  LEFT JOIN stock s ON s.sku = v.sku
  LEFT JOIN LATERAL (
        SELECT sum(il.available) AS available,
               max(il.shopify_updated_at) AS updated_at,
               max(il.synced_at) AS read_at
          FROM inventory_level il
         WHERE il.shopify_inventory_item_id = v.shopify_inventory_item_id
           AND il.shopify_location_id = ANY(:locations)) lvl ON true
  LEFT JOIN violation vio
         ON vio.check_name = :drift_check AND vio.resolved_at IS NULL AND vio.subject = v.sku
 WHERE v.sku > :after
   AND v.sku LIKE :pattern ESCAPE '\'
   -- drift_only: the SKUs that can drift (the exact drift is computed on the rows read): the
   -- projection differs from the last read, the check found a difference, or live holds may
   -- sit in Shopify's `reserved`.
   AND (NOT :drift_only
        OR COALESCE(s.shopify_available, 0) <> COALESCE(lvl.available, 0)
        OR vio.id IS NOT NULL
        OR EXISTS (SELECT 1 FROM reservation r
                    WHERE r.sku = v.sku AND r.status IN ('held', 'committed')))
 ORDER BY v.sku
 LIMIT :limit
"""
)


def _like_prefix(prefix: str) -> str:
    escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"{escaped}%"


def _stock_batch(
    session: Session,
    *,
    after: str,
    pattern: str,
    limit: int,
    locations: Sequence[int],
    tolerance: int,
    drift_only: bool,
) -> list[StockRow]:
    rows = session.execute(
        STOCK_ROWS_SQL,
        {
            "after": after,
            "pattern": pattern,
            "drift_only": drift_only,
            "limit": limit,
            "locations": list(locations),
            "drift_check": DRIFT_CHECK,
        },
    ).all()
    held = mirrored_holds(session, [r.sku for r in rows])
    out = []
    for r in rows:
        in_reserved = held.get(r.sku, 0)
        drift = r.shopify_available - in_reserved - r.shopify_level
        out.append(
            StockRow(
                sku=r.sku,
                product_title=r.product_title,
                variant_title=r.variant_title,
                product_status=r.product_status,
                sellable=r.shopify_available - r.reserved - r.committed,
                shopify_available=r.shopify_available,
                reserved=r.reserved,
                committed=r.committed,
                shopify_updated_at=r.shopify_updated_at,
                shopify_level=int(r.shopify_level),
                shopify_level_at=r.shopify_level_at,
                shopify_level_read_at=r.shopify_level_read_at,
                held_in_shopify_reserved=in_reserved,
                drift=int(drift),
                drift_exceeds=abs(drift) > tolerance,
                drift_violation_since=r.drift_violation_since,
                drift_violation_shopify=r.drift_violation_shopify,
                drift_violation_difference=r.drift_violation_difference,
                shortfall_since=r.shortfall_since,
                last_inbound_at=r.last_inbound_at,
                last_outbound_at=r.last_outbound_at,
            )
        )
    return out


def stock_rows(
    session: Session,
    *,
    drift_only: bool = False,
    sku_prefix: str | None = None,
    limit: int = 200,
    starting_after: str | None = None,
    tolerance: int = 0,
    locations: Sequence[int] | None = None,
) -> tuple[list[StockRow], bool]:
    """One page of SKUs in SKU order, and whether more follow (pass the last row's sku as
    `starting_after`). `drift_only`: only drifting rows (see StockRow.drifting); `sku_prefix`:
    SKUs starting with it (case-sensitive); `tolerance`: units of drift that do not count
    (settings.drift_tolerance is the check's); `locations`: the selling locations (default
    settings.selling_locations)."""
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidRequest(f"limit is between 1 and {MAX_PAGE}", param="limit")
    if tolerance < 0:
        raise InvalidRequest("tolerance is 0 or more units", param="tolerance")
    if sku_prefix is not None and len(sku_prefix) > 64:
        raise InvalidRequest("a SKU is at most 64 characters", param="sku_prefix")
    selling = list(locations) if locations is not None else get_settings().selling_locations
    pattern = _like_prefix(sku_prefix or "")
    after = starting_after or ""
    if not drift_only:
        rows = _stock_batch(
            session,
            after=after,
            pattern=pattern,
            limit=limit + 1,
            locations=selling,
            tolerance=tolerance,
            drift_only=False,
        )
        return rows[:limit], len(rows) > limit
    found: list[StockRow] = []
    while len(found) <= limit:
        batch = _stock_batch(
            session,
            after=after,
            pattern=pattern,
            limit=DRIFT_SCAN_BATCH,
            locations=selling,
            tolerance=tolerance,
            drift_only=True,
        )
        found.extend(r for r in batch if r.drifting)
        if len(batch) < DRIFT_SCAN_BATCH:
            break
        after = batch[-1].sku
    return found[:limit], len(found) > limit


LAG_SERIES_SQL = text(
    """
-- lag_series --
-- Lag percentiles per time bucket and direction since :since (ix_sync_lag_sample_observed_at);
-- buckets are aligned on :since, so consecutive calls with the same start line up.
SELECT date_bin(:bucket, observed_at, :since) AS bucket_start,
       direction,
       count(*) AS samples,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY lag_ms) / 1000.0 AS p50,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY lag_ms) / 1000.0 AS p95,
       percentile_cont(0.99) WITHIN GROUP (ORDER BY lag_ms) / 1000.0 AS p99
  FROM sync_lag_sample
 WHERE observed_at >= :since
 GROUP BY 1, 2
 ORDER BY 1, 2
"""
)


def lag_series(session: Session, *, since: datetime, bucket: timedelta) -> list[LagPoint]:
    """Sync lag per `bucket` since `since` (timezone-aware) and direction, oldest bucket first;
    buckets without samples are absent. Samples are kept for core.sync_lag.RETENTION."""
    if since.tzinfo is None:
        raise InvalidRequest("since must be timezone-aware (UTC)", param="since")
    if bucket <= timedelta(0):
        raise InvalidRequest("bucket must be longer than 0", param="bucket")
    if (datetime.now(UTC) - since) / bucket > MAX_BUCKETS:
        raise InvalidRequest(f"at most {MAX_BUCKETS} buckets: widen the bucket", param="bucket")
    rows = session.execute(LAG_SERIES_SQL, {"since": since, "bucket": bucket}).all()
    return [
        LagPoint(r.bucket_start, r.direction, int(r.samples), r.p50, r.p95, r.p99) for r in rows
    ]


RECENT_LAG_SQL = text(
    """
-- recent_lag --
-- Lag percentiles per direction over the recent window (ix_sync_lag_sample_observed_at).
SELECT direction,
       count(*) AS samples,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY lag_ms) / 1000.0 AS p50,
       percentile_cont(0.99) WITHIN GROUP (ORDER BY lag_ms) / 1000.0 AS p99
  FROM sync_lag_sample
 WHERE observed_at >= now() - :window
 GROUP BY direction
 ORDER BY direction
"""
)


def sync_health(session: Session) -> SyncHealth:
    """The oldest unacknowledged push (core.sync_lag.OLDEST_UNACKNOWLEDGED_SQL), the last
    repair (the FULL_SYNC_CURSOR cursor) and the recent lag per direction."""
    oldest = session.execute(sync_lag.OLDEST_UNACKNOWLEDGED_SQL).scalar_one()
    repair = session.get(SyncCursor, FULL_SYNC_CURSOR, populate_existing=True)
    value: dict[str, Any] = dict(repair.value) if repair is not None else {}
    recent = session.execute(RECENT_LAG_SQL, {"window": sync_lag.RECENT}).all()
    return SyncHealth(
        oldest_unacknowledged_seconds=max(0.0, float(oldest)),
        last_repair_at=repair.updated_at if repair is not None else None,
        last_repair_mode=value.get("mode"),
        next_repair_since=value.get("since"),
        recent=tuple(DirectionLag(r.direction, int(r.samples), r.p50, r.p99) for r in recent),
    )
