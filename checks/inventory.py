"""Stock invariants: we never promise units Shopify does not have (`oversell`), and our
projection of Shopify's stock follows Shopify (`inventory_drift`)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import text

from checks.registry import CheckContext, check
from core.shopify_sync import mirrored_holds
from core.violations import Finding

# Money at stake is priced in usd: every SKU has a usd price (core.shopify_sync.product_data
# falls back to the variant's base price), while the orders short of a SKU may mix currencies.
PRICE_CURRENCY = "usd"
# Stock moves with every checkout and webhook; a minute keeps on-call's view close to live.
OVERSELL_INTERVAL_SECONDS = 60.0
# Each drift run reads every level from Shopify (rate-limited); the full sync repairs drift every
# minute anyway, so drift that outlives a few of those is what this check is for.
DRIFT_INTERVAL_SECONDS = 300.0

OVERSELL_SQL = text(
    """
-- oversell --
-- SKUs where Shopify has fewer units than we hold for checkouts and sold (another channel sold
-- them), or Shopify's count is negative, for longer than the grace period. A shortfall is dated
-- by stock.shortfall_since (kept by core.inventory); a counter mismatch without it (the schema
-- refuses one) falls back to the row's last change. Short units x the SKU's usd price.
SELECT s.sku,
       s.shopify_available,
       s.reserved,
       s.committed,
       GREATEST(s.reserved + s.committed - s.shopify_available, 0) AS short_units,
       COALESCE(s.shortfall_since, s.updated_at) AS since,
       p.amount_minor AS unit_price
  FROM stock s
  LEFT JOIN variant_price p ON p.sku = s.sku AND p.currency = :currency
 WHERE s.shortfall_since <= :cutoff
    OR (s.reserved + s.committed > s.shopify_available
        AND COALESCE(s.shortfall_since, s.updated_at) <= :cutoff)
    OR (s.shopify_available < 0 AND s.updated_at <= :cutoff)
 ORDER BY s.sku
"""
)

PROJECTION_SQL = text(
    """
-- stock_projection --
-- Every SKU we sell with Shopify's inventory item, our projected Shopify count (0 without a
-- stock row), the Shopify time of the level that projection came from, and the usd price.
SELECT v.sku,
       v.shopify_inventory_item_id AS item_id,
       COALESCE(s.shopify_available, 0) AS projected,
       s.shopify_updated_at AS projected_at,
       p.amount_minor AS unit_price
  FROM variant v
  LEFT JOIN stock s ON s.sku = v.sku
  LEFT JOIN variant_price p ON p.sku = v.sku AND p.currency = :currency
 ORDER BY v.sku
"""
)


def _cutoff(ctx: CheckContext) -> datetime:
    return ctx.now - timedelta(seconds=ctx.settings.grace_seconds)


@check(
    "oversell",
    interval_seconds=OVERSELL_INTERVAL_SECONDS,
    runbook="dashboards/runbooks/oversell.md",
    summary="Shopify has fewer units of a SKU than we sold or hold for checkouts",
)
def oversell(ctx: CheckContext) -> list[Finding]:
    with ctx.engine.connect() as conn:
        rows = conn.execute(OVERSELL_SQL, {"cutoff": _cutoff(ctx), "currency": PRICE_CURRENCY})
        return [
            Finding(
                "oversell",
                r.sku,
                r.short_units * r.unit_price if r.unit_price is not None else None,
                PRICE_CURRENCY if r.unit_price is not None else None,
                {
                    "shopify_available": r.shopify_available,
                    "reserved": r.reserved,
                    "committed": r.committed,
                    "short_units": r.short_units,
                    "unit_price": r.unit_price,
                    "since": r.since.isoformat(),
                },
            )
            for r in rows
        ]


def _live_totals(ctx: CheckContext, items: list[int]) -> dict[int, tuple[int, datetime | None]]:
    """Shopify's live count per inventory item over the selling locations, with the newest
    updated_at of its levels (an item not stocked there counts 0, undated)."""
    totals: dict[int, tuple[int, datetime | None]] = {}
    for level in ctx.shopify.inventory_levels(items, ctx.settings.selling_locations):
        item = int(level["inventory_item_id"])
        count, newest = totals.get(item, (0, None))
        at = datetime.fromisoformat(str(level["updated_at"]).replace("Z", "+00:00"))
        totals[item] = (count + int(level.get("available") or 0), max(filter(None, (newest, at))))
    return totals


@check(
    "inventory_drift",
    interval_seconds=DRIFT_INTERVAL_SECONDS,
    runbook="dashboards/runbooks/inventory_drift.md",
    summary="Our copy of a SKU's Shopify stock differs from Shopify's live count",
)
def inventory_drift(ctx: CheckContext) -> list[Finding]:
    """A difference counts once it is older than the grace period. It began when the later of
    the two sides last changed: Shopify's live level (a change we never heard of) or the level
    our projection was written from (both Shopify times, so no violation row is needed to
    remember it). A difference younger than that is a webhook still on its way."""
    with ctx.engine.connect() as conn:
        projection = conn.execute(PROJECTION_SQL, {"currency": PRICE_CURRENCY}).all()
        # Our projection counts the units of our holds that Shopify keeps in `reserved`
        # (core.shopify_sync); Shopify's live `available`, read below, leaves them out.
        held = mirrored_holds(conn, [r.sku for r in projection])
    if not projection:
        return []
    live = _live_totals(ctx, sorted(r.item_id for r in projection))
    cutoff = _cutoff(ctx)
    findings = []
    for r in projection:
        shopify, live_at = live.get(r.item_id, (0, None))
        difference = r.projected - held.get(r.sku, 0) - shopify
        if abs(difference) <= ctx.settings.drift_tolerance:
            continue
        since = max(
            (at for at in (live_at, r.projected_at) if at is not None),
            default=datetime.min.replace(tzinfo=UTC),
        )
        if since > cutoff:
            continue
        evidence: dict[str, Any] = {
            "projected": r.projected,
            "held_in_shopify_reserved": held.get(r.sku, 0),
            "shopify": shopify,
            "difference": difference,
            "tolerance": ctx.settings.drift_tolerance,
            "locations": ctx.settings.selling_locations,
            "shopify_updated_at": live_at.isoformat() if live_at else None,
            "projected_updated_at": r.projected_at.isoformat() if r.projected_at else None,
        }
        # At stake: the units we could sell that Shopify does not have (or fail to sell).
        amount = abs(difference) * r.unit_price if r.unit_price is not None else None
        currency = PRICE_CURRENCY if amount is not None else None
        findings.append(Finding("inventory_drift", r.sku, amount, currency, evidence))
    return findings
