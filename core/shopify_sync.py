"""Shopify <-> our projection, over the GraphQL Admin API (core.shopify_gateway).

Inbound: the catalog (products, variants, per-currency prices) and stock levels. Webhooks are
the fast path (`accept_webhook`: HMAC-checked by the API, deduplicated by event id, stale-safe).
The periodic `repair` reads what changed since its cursor (`updated_at:>=`, kept in
`sync_cursor`); on first start, or when asked (`dotshop sync --full`), `load_catalog` runs a
bulk operation and applies its JSONL in SKU order, a few SKUs per transaction. Every level is
recorded per item and location, stale-checked on Shopify's updatedAt (`inventory.stale_level`);
a SKU's Shopify stock is the sum over the locations that sell online
(`settings.selling_locations`), and only those are read, summed and acknowledged.
Outbound: the outbox handler `OrderPusher` makes Shopify reflect our order: a paid order is
created there with the prices charged (Shopify commits its units and our committed units
become acknowledged), our refunds are recorded on it, and a pushed order that we refund in
full or cancel is cancelled there with a restock. `HoldMirror` makes our holds visible to
Shopify's other channels: a checkout's units move from `available` to `reserved` there, and
back when the hold ends or the order reaches Shopify.

Because Shopify's `available` leaves out the units of our holds it has in `reserved`, our
projection of a SKU's Shopify stock (stock.shopify_available) adds them back
(`mirrored_holds`), so sellable = shopify_available - reserved - committed keeps counting every
live hold once, whether or not it has reached Shopify yet.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    ARRAY,
    BigInteger,
    Connection,
    DateTime,
    Engine,
    Integer,
    and_,
    bindparam,
    exists,
    func,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, insert
from sqlalchemy.orm import Session

from core import catalog, cursors, inbox, inventory, orders, refunds, revalidate, sync_lag
from core.db import transaction
from core.errors import ShopifyRejected
from core.logs import get_logger
from core.models import InventoryLevel, OrderEvent, OrderLine, Product, Refund, Reservation, Variant
from core.outbox import Handlers, Message
from core.payments import PUSH_ORDER_TO_SHOPIFY
from core.settings import get_settings
from core.shopify_gateway import (
    BULK_CATALOG,
    PRICE_COUNTRIES,
    ShopifyGateway,
    legacy_id,
    level_of,
    money_to_minor,
)

log = get_logger("core.shopify_sync")

# Levels applied per transaction by a repair: short transactions, so it never holds hot stock
# rows for long against checkouts.
SYNC_BATCH_SKUS = 10
# A level read this long after its updated_at second ended (by our clock) is the last value of
# that second: far more than two NTP-kept clocks drift apart, well under the sync interval.
SETTLE_AFTER_SECONDS = 30
# The sync_cursor row every finished repair (full or incremental) stamps: `since` is where the
# next pull starts (`_settled_horizon`), the row's time is when we last heard Shopify in full
# (the sync_lag check reads it).
FULL_SYNC_CURSOR = "shopify_full_sync"
# Product ids per `product_id:` search of an incremental repair.
PRODUCTS_PER_QUERY = 50
# Products upserted per transaction by a repair (their rows only; no stock row is locked).
PRODUCTS_PER_TRANSACTION = 10

Progress = Callable[[str, int, int], None]  # phase, done, total


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _now() -> datetime:
    return datetime.now(UTC)


def settled(level: dict[str, Any], read_started: datetime) -> dict[str, Any]:
    """The level as read by a repair, stamped at the last instant of its updated_at second
    once that second is long over. Ties of one second keep the lower level (a restock can lose
    to a late webhook of the same second); a level that has not changed since is that second's
    final value, so it now beats every webhook of that second and still loses to any later
    change. This is how the periodic repair fixes a restock that lost a tie."""
    at = parse_time(level["updated_at"])
    if at.microsecond or at + timedelta(seconds=1 + SETTLE_AFTER_SECONDS) > read_started:
        return level
    return {**level, "updated_at": (at + timedelta(seconds=1, microseconds=-1)).isoformat()}


def product_data(p: dict[str, Any]) -> catalog.ProductData:
    """Shopify's product JSON as webhooks deliver it, as our projection's input."""
    variants = []
    for v in p.get("variants") or []:
        if not v.get("sku"):
            continue  # we sell by SKU; a variant without one is not for us
        prices = {
            pp["price"]["currency_code"].lower(): money_to_minor(pp["price"]["amount"])
            for pp in v.get("presentment_prices") or []
        }
        prices.setdefault("usd", money_to_minor(v["price"]))
        variants.append(
            catalog.VariantData(
                sku=v["sku"],
                title=v.get("title") or v["sku"],
                shopify_variant_id=int(v["id"]),
                shopify_inventory_item_id=int(v["inventory_item_id"]),
                prices=prices,
                position=int(v.get("position") or 1),
            )
        )
    image = p.get("image") or {}
    return catalog.ProductData(
        shopify_product_id=int(p["id"]),
        handle=p["handle"],
        title=p["title"],
        updated_at=parse_time(p["updated_at"]),
        variants=variants,
        category=p.get("product_type") or None,
        description=p.get("body_html") or None,
        image_url=image.get("src"),
        status=p.get("status") or "active",
    )


def graphql_product_data(
    product: dict[str, Any], variants: Sequence[dict[str, Any]]
) -> catalog.ProductData:
    """A GraphQL Product and its ProductVariant nodes (gateway.VARIANT_FIELDS) as our input."""
    out = []
    for v in sorted(variants, key=lambda v: int(v["position"])):
        if not v.get("sku"):
            continue
        prices = {}
        for currency in PRICE_COUNTRIES:
            price = (v.get(currency) or {}).get("price") or {}
            if str(price.get("currencyCode", "")).lower() == currency:
                prices[currency] = money_to_minor(price["amount"])
        prices.setdefault("usd", money_to_minor(v["price"]))
        out.append(
            catalog.VariantData(
                sku=v["sku"],
                title=v["title"] or v["sku"],
                shopify_variant_id=int(v["legacyResourceId"]),
                shopify_inventory_item_id=int(v["inventoryItem"]["legacyResourceId"]),
                prices=prices,
                position=int(v["position"]),
            )
        )
    image = product.get("featuredImage") or {}
    return catalog.ProductData(
        shopify_product_id=int(product["legacyResourceId"]),
        handle=product["handle"],
        title=product["title"],
        updated_at=parse_time(product["updatedAt"]),
        variants=out,
        category=product.get("productType") or None,
        description=product.get("descriptionHtml") or None,
        image_url=image.get("url"),
        status=product["status"].lower(),
    )


def _selling(locations: int | Sequence[int] | None) -> list[int]:
    """The locations that sell online: as given, else from the settings."""
    if locations is None:
        return get_settings().selling_locations
    if isinstance(locations, int):
        return [locations]
    return sorted(set(locations))


def _record_levels_statement() -> Any:
    """Upsert levels given as parallel arrays (:items, :locations, :availables, :updated_ats),
    except over a stored level that the incoming one loses to (`inventory.stale_level`),
    unless (:read_after) the incoming was read after the stored one was recorded in its
    second; returns the pairs written. Built once: levels come with every hold and webhook."""
    incoming_rows = select(
        func.unnest(bindparam("items", type_=ARRAY(BigInteger))),
        func.unnest(bindparam("locations", type_=ARRAY(BigInteger))),
        func.unnest(bindparam("availables", type_=ARRAY(Integer))),
        func.unnest(bindparam("updated_ats", type_=ARRAY(DateTime(timezone=True)))),
    )
    level = InventoryLevel
    statement = insert(level).from_select(
        [
            level.shopify_inventory_item_id,
            level.shopify_location_id,
            level.available,
            level.shopify_updated_at,
        ],
        incoming_rows,
    )
    incoming = statement.excluded
    read_after = bindparam("read_after", type_=DateTime(timezone=True))
    return (
        statement.on_conflict_do_update(
            index_elements=[level.shopify_inventory_item_id, level.shopify_location_id],
            set_={
                "available": incoming.available,
                "shopify_updated_at": incoming.shopify_updated_at,
                "synced_at": func.now(),
            },
            # A NULL :read_after makes the second clause NULL, i.e. not taken.
            where=~inventory.stale_level(
                level.shopify_updated_at,
                level.available,
                incoming.shopify_updated_at,
                incoming.available,
            )
            | (
                (level.shopify_updated_at == incoming.shopify_updated_at)
                & (level.synced_at < read_after)
            ),
        )
        .returning(level.shopify_inventory_item_id, level.shopify_location_id)
        # Executed with parameters: as one statement, not as the ORM's bulk insert.
        .execution_options(dml_strategy="raw")
    )


_RECORD_LEVELS = _record_levels_statement()


def record_levels(
    session: Session, levels: Sequence[dict[str, Any]], read_after: datetime | None = None
) -> set[tuple[int, int]]:
    """Store Shopify inventory levels (per item and location) in one statement; returns the
    (item, location) pairs that were new, i.e. not stale against what we hold. Two levels of
    one pair in one call are decided first by the same rule (`inventory.stale_level`).

    `read_after`: the levels were read from Shopify after this moment (our database's clock).
    A stored level of the same second that we recorded before it describes Shopify before
    that read, so the read wins the tie even when it is higher: that is how units we moved
    back into `available` ourselves count at once instead of after a settling repair. A level
    recorded since then may be newer than the read, so it keeps the tie rule."""
    winners: dict[tuple[int, int], tuple[datetime, int]] = {}
    for level in levels:
        pair = (int(level["inventory_item_id"]), int(level["location_id"]))
        candidate = (parse_time(level["updated_at"]), int(level.get("available") or 0))
        held = winners.get(pair)
        if (
            held is None
            or candidate[0] > held[0]
            or (candidate[0] == held[0] and candidate[1] < held[1])
        ):
            winners[pair] = candidate
    if not winners:
        return set()
    pairs = sorted(winners.items())
    params = {
        "items": [item for (item, _), _ in pairs],
        "locations": [location for (_, location), _ in pairs],
        "availables": [available for _, (_, available) in pairs],
        "updated_ats": [updated_at for _, (updated_at, _) in pairs],
        "read_after": read_after,
    }
    rows = session.execute(_RECORD_LEVELS, params).all()
    return {(int(item), int(location)) for item, location in rows}


_TOTALS = (
    select(
        Variant.sku,
        func.sum(InventoryLevel.available),
        func.max(InventoryLevel.shopify_updated_at),
    )
    .join(
        InventoryLevel,
        InventoryLevel.shopify_inventory_item_id == Variant.shopify_inventory_item_id,
    )
    .where(
        Variant.sku.in_(bindparam("skus", expanding=True)),
        InventoryLevel.shopify_location_id.in_(bindparam("locations", expanding=True)),
    )
    .group_by(Variant.sku)
)
_SKU_OF_ITEMS = select(Variant.shopify_inventory_item_id, Variant.sku).where(
    Variant.shopify_inventory_item_id.in_(bindparam("items", expanding=True))
)


def totals_by_sku(
    session: Session, skus: Sequence[str], locations: Sequence[int]
) -> dict[str, tuple[int, datetime]]:
    """Shopify's stock per SKU over the selling locations as our projection counts it (its
    available units plus our live holds it has in `reserved`, see `mirrored_holds`), with the
    newest updated_at (SKUs with no level at those locations are left out)."""
    rows = session.execute(_TOTALS, {"skus": list(skus), "locations": list(locations)}).all()
    held = mirrored_holds(session, [sku for sku, _, _ in rows])
    return {sku: (int(total) + held.get(sku, 0), at) for sku, total, at in rows}


def apply_levels(
    session: Session,
    levels: Sequence[dict[str, Any]],
    locations: Sequence[int],
    read_after: datetime | None = None,
) -> dict[str, datetime]:
    """Record Shopify levels (any location) and bring the stock of their SKUs up to date with
    the sum over the selling locations. Returns the SKUs that got a new (not stale) level,
    each with the newest such level's updated_at.

    The SKUs' stock rows are locked first, in SKU order like every stock write, so that two
    transactions recording levels of one SKU at different locations cannot sum without each
    other's level."""
    items = sorted({int(level["inventory_item_id"]) for level in levels})
    sku_of = dict(session.execute(_SKU_OF_ITEMS, {"items": items}).all())
    inventory.lock_stock(session, sku_of.values())

    new: dict[str, datetime] = {}
    recorded = record_levels(session, levels, read_after)
    for level in levels:
        pair = (int(level["inventory_item_id"]), int(level["location_id"]))
        sku = sku_of.get(pair[0])
        if pair in recorded and sku is not None:
            at = parse_time(level["updated_at"])
            new[sku] = max(at, new.get(sku, at))
    # Summed again even when no level was new: a level recorded while its location did not
    # sell online counts once it does.
    selling = {
        sku_of[int(level["inventory_item_id"])]
        for level in levels
        if int(level["location_id"]) in locations and int(level["inventory_item_id"]) in sku_of
    }
    was_in_stock = revalidate.in_stock(session, sorted(selling))
    for sku, (available, updated_at) in sorted(totals_by_sku(session, selling, locations).items()):
        inventory.apply_shopify_total(session, sku, available, updated_at)
    revalidate.stock_changed(session, was_in_stock)
    return new


def apply_level(
    session: Session, level: dict[str, Any], locations: int | Sequence[int] | None = None
) -> bool:
    """One Shopify inventory level into the projection; False when it is stale."""
    return bool(apply_levels(session, [level], _selling(locations)))


# ----------------------------------------------------------------------------- inbound repair


@dataclass(frozen=True)
class RepairResult:
    mode: str  # "full" (bulk operation) or "incremental" (since the cursor)
    products: int
    levels: int
    since: str | None


@contextlib.contextmanager
def _repair_transaction(engine: Engine) -> Iterator[Session]:
    """A repair's short transaction, committed without waiting for the WAL flush: a crash can
    lose only the last few batches, which the next repair reads again (nothing else depends on
    them), and a 100,000-variant repair stops paying one disk flush per batch."""
    with transaction(engine) as session:
        session.execute(text("SET LOCAL synchronous_commit TO off"))
        yield session


def _upsert_products(
    engine: Engine,
    grouped: dict[int, tuple[dict[str, Any], list[dict[str, Any]]]],
    progress: Progress | None,
) -> None:
    """Products in id order, PRODUCTS_PER_TRANSACTION at a time; a product newer than ours
    gives its SKUs an inbound lag sample (an unchanged one re-read by a repair does not)."""
    with transaction(engine) as session:
        known = dict(
            session.execute(
                select(Product.shopify_product_id, Product.shopify_updated_at).where(
                    Product.shopify_product_id.in_(list(grouped))
                )
            ).all()
        )
    ids = sorted(grouped)
    for start in range(0, len(ids), PRODUCTS_PER_TRANSACTION):
        batch = ids[start : start + PRODUCTS_PER_TRANSACTION]
        with _repair_transaction(engine) as session:
            for product_id in batch:
                data = graphql_product_data(*grouped[product_id])
                before = revalidate.product_state(session, product_id)
                applied = catalog.upsert_product(session, data)
                revalidate.product_changed(session, product_id, before)
                if applied and (product_id not in known or known[product_id] < data.updated_at):
                    sync_lag.record(
                        session,
                        sync_lag.INBOUND,
                        {v.sku: data.updated_at for v in data.variants},
                        _now(),
                    )
        if progress:
            progress("products", start + len(batch), len(ids))


def _apply_levels_in_batches(
    engine: Engine,
    by_sku: dict[str, list[dict[str, Any]]],
    selling: Sequence[int],
    progress: Progress | None,
) -> None:
    """SKU order, SYNC_BATCH_SKUS per transaction: the lock order of checkouts, so the two
    cannot deadlock, and no lock is held for the whole repair."""
    skus = sorted(by_sku)
    for start in range(0, len(skus), SYNC_BATCH_SKUS):
        batch = skus[start : start + SYNC_BATCH_SKUS]
        with _repair_transaction(engine) as session:
            new = apply_levels(session, [lv for sku in batch for lv in by_sku[sku]], selling)
            sync_lag.record(session, sync_lag.INBOUND, new, _now())
        if progress:
            progress("levels", start + len(batch), len(skus))


def _settled_horizon(read_started: datetime, since: str | None) -> str:
    """Where the next incremental repair starts: the first second that may not have been final
    when this read began (see `settled`). Every earlier second was read in its final form, so it
    need not be read again; the cursor never moves back."""
    horizon = (read_started - timedelta(seconds=SETTLE_AFTER_SECONDS)).replace(microsecond=0)
    if since is not None and parse_time(since) > horizon:
        return since
    return horizon.isoformat().replace("+00:00", "Z")


def load_catalog(
    engine: Engine,
    gateway: ShopifyGateway,
    locations: int | Sequence[int] | None = None,
    progress: Progress | None = None,
) -> int:
    """Full repair: a bulk operation reads every variant (its product inline) with its levels;
    products are upserted (ours that Shopify no longer has are archived), then the levels at the
    selling locations (`locations`: one id, several, or None for `settings.selling_locations`)
    applied in SKU order. Returns products."""
    selling = _selling(locations)
    variants: dict[str, dict[str, Any]] = {}
    levels_of: dict[str, list[dict[str, Any]]] = {}
    # A bulk operation reads objects while it runs: its start bounds when each was read.
    read_started = _now()
    for line in gateway.bulk_query(BULK_CATALOG):
        parent = line.get("__parentId")
        if parent is None:
            variants[line["id"]] = line
            continue
        location = int(line["location"]["legacyResourceId"])
        if location in selling:
            item = int(variants[parent]["inventoryItem"]["legacyResourceId"])
            levels_of.setdefault(parent, []).append(level_of(line, item, location))
    grouped: dict[int, tuple[dict[str, Any], list[dict[str, Any]]]] = {}
    for variant in variants.values():
        product = variant["product"]
        grouped.setdefault(legacy_id(product["id"]), (product, []))[1].append(variant)
    _upsert_products(engine, grouped, progress)
    with transaction(engine) as session:
        # A products/delete webhook may have been lost: what Shopify no longer has is archived.
        for gone in session.scalars(
            select(Product.shopify_product_id).where(
                Product.status != "archived", Product.shopify_product_id.not_in(list(grouped))
            )
        ).all():
            before = revalidate.product_state(session, gone)
            catalog.delete_product(session, gone)
            revalidate.product_changed(session, gone, before)
    by_sku: dict[str, list[dict[str, Any]]] = {}
    for variant_id, levels in levels_of.items():
        sku = variants[variant_id].get("sku")
        if sku:
            by_sku.setdefault(sku, []).extend(settled(lv, read_started) for lv in levels)
    _apply_levels_in_batches(engine, by_sku, selling, progress)
    since = _settled_horizon(read_started, None)
    count = sum(len(levels) for levels in by_sku.values())
    with transaction(engine) as session:
        cursors.save(
            session,
            FULL_SYNC_CURSOR,
            {"since": since, "mode": "full", "products": len(grouped), "levels": count},
        )
    log.info("catalog_loaded", products=len(grouped), levels=count, since=since)
    return len(grouped)


def repair(
    engine: Engine,
    gateway: ShopifyGateway,
    locations: int | Sequence[int] | None = None,
    *,
    full: bool = False,
    progress: Progress | None = None,
) -> RepairResult:
    """Bring the projection up to Shopify: what changed since the cursor (products and levels
    whose updatedAt is at or after it; seconds that were not yet final at the last read are read
    again, harmlessly since levels are stale-checked, and so settle), or everything through
    `load_catalog` when asked or when there is no cursor yet."""
    with transaction(engine) as session:
        since = cursors.load(session, FULL_SYNC_CURSOR).get("since")
    if full or not since:
        products = load_catalog(engine, gateway, locations, progress)
        with transaction(engine) as session:
            value = cursors.load(session, FULL_SYNC_CURSOR)
        return RepairResult("full", products, value.get("levels", 0), value.get("since"))
    selling = _selling(locations)
    read_started = _now()
    product_ids = gateway.changed_product_ids(since)
    grouped: dict[int, tuple[dict[str, Any], list[dict[str, Any]]]] = {}
    for start in range(0, len(product_ids), PRODUCTS_PER_QUERY):
        chunk = product_ids[start : start + PRODUCTS_PER_QUERY]
        for variant in gateway.variants(" OR ".join(f"product_id:{p}" for p in chunk)):
            product = variant["product"]
            grouped.setdefault(legacy_id(product["id"]), (product, []))[1].append(variant)
    _upsert_products(engine, grouped, progress)
    levels = gateway.levels_changed_since(since, selling)
    with transaction(engine) as session:
        sku_of = dict(
            session.execute(
                select(Variant.shopify_inventory_item_id, Variant.sku).where(
                    Variant.shopify_inventory_item_id.in_(
                        {lv["inventory_item_id"] for lv in levels}
                    )
                )
            ).all()
        )
    by_sku: dict[str, list[dict[str, Any]]] = {}
    for level in levels:
        if level["inventory_item_id"] in sku_of:
            by_sku.setdefault(sku_of[level["inventory_item_id"]], []).append(
                settled(level, read_started)
            )
    _apply_levels_in_batches(engine, by_sku, selling, progress)
    newest = _settled_horizon(read_started, since)
    with transaction(engine) as session:
        value = cursors.load(session, FULL_SYNC_CURSOR)
        cursors.save(session, FULL_SYNC_CURSOR, {**value, "since": newest, "mode": "incremental"})
        sync_lag.prune(session, _now())
    log.info("shopify_repaired", products=len(grouped), levels=len(levels), since=newest)
    return RepairResult("incremental", len(grouped), len(levels), newest)


# ----------------------------------------------------------------------------- webhooks


# -- level_known_or_older --
# Whether we hold a level of this item and location that the incoming one loses to
# (`inventory.stale_level`).
_KNOWN_OR_OLDER = select(
    exists().where(
        InventoryLevel.shopify_inventory_item_id == bindparam("item", type_=BigInteger),
        InventoryLevel.shopify_location_id == bindparam("location", type_=BigInteger),
        inventory.stale_level(
            InventoryLevel.shopify_updated_at,
            InventoryLevel.available,
            bindparam("updated_at", type_=DateTime(timezone=True)),
            bindparam("available", type_=Integer),
        ),
    )
)


def _known_or_older(session: Session, level: dict[str, Any]) -> bool:
    """A level webhook that brings nothing new, found in one read without a lock. Most level
    webhooks are these: each hold the relay places makes Shopify send one, and the relay has
    usually recorded the level read after its move by then (a stored level only ever gets
    newer, so the answer cannot go stale). Such a webhook leaves the stock as it is: unlike
    `apply_levels`, it does not sum the SKU's levels again."""
    params = {
        "item": int(level["inventory_item_id"]),
        "location": int(level["location_id"]),
        "updated_at": parse_time(level["updated_at"]),
        "available": int(level.get("available") or 0),
    }
    return bool(session.execute(_KNOWN_OR_OLDER, params).scalar())


def apply_webhook(
    session: Session, topic: str, payload: dict[str, Any], locations: Sequence[int]
) -> tuple[str, list[str]]:
    """Apply one Shopify webhook inside the caller's transaction; returns what happened and
    the SKUs it changed."""
    if topic in ("products/create", "products/update", "products/delete"):
        product_id = int(payload["id"])
        before = revalidate.product_state(session, product_id)
        if topic == "products/delete":
            catalog.delete_product(session, product_id)
            skus: list[str] = []
        else:
            data = product_data(payload)
            if not catalog.upsert_product(session, data):
                return "stale", []
            skus = [v.sku for v in data.variants]
        revalidate.product_changed(session, product_id, before)
        return "applied", skus
    if topic == "inventory_levels/update":
        if _known_or_older(session, payload):
            return "stale", []
        new = apply_levels(session, [payload], locations)
        if not new:
            return "stale", []
        # Recorded either way; only a selling location's level moves our stock.
        if int(payload["location_id"]) not in locations:
            return "not_selling", []
        return "applied", sorted(new)
    return "ignored", []


def accept_webhook(
    session: Session,
    *,
    event_id: str,
    topic: str,
    payload: dict[str, Any],
    locations: int | Sequence[int] | None = None,
    triggered_at: str | None = None,
) -> str:
    """Deduplicate by event id, apply, and measure the inbound lag of what changed: from
    X-Shopify-Triggered-At when the caller has it, else from the resource's updated_at."""
    event = inbox.accept(
        session, provider="shopify", event_id=event_id, event_type=topic, payload=payload
    )
    if event is None:
        return "duplicate"
    result, skus = apply_webhook(session, topic, payload, _selling(locations))
    inbox.mark(session, event.id, inbox.PROCESSED, None if result == "applied" else result)
    happened = triggered_at or payload.get("updated_at")
    if skus and happened:
        at = parse_time(happened)
        sync_lag.record(session, sync_lag.INBOUND, dict.fromkeys(skus, at), _now())
    return result


# ----------------------------------------------------------------------------- outbound

# Orders Shopify should have: paid ones (a partial refund still ships the rest).
PUSHABLE = (orders.PAID, orders.PARTIALLY_REFUNDED)
# Timeline events that record what Shopify was told.
PUSH_STARTED = "shopify_push_started"
REFUND_RECORDED = "shopify_refund_recorded"
CANCELLED_IN_SHOPIFY = "shopify_order_cancelled"
# Shopify's cancel reason for each of our statuses that undo a pushed order.
CANCEL_REASONS = {orders.REFUNDED: "customer", orders.CANCELLED: "other"}


@dataclass(frozen=True)
class _Line:
    sku: str
    inventory_item_id: int
    variant_id: int
    quantity: int
    unit_price_minor: int


def refund_key(refund_id: str) -> str:
    """The @idempotent key of a refund's refundCreate: derived from our refund id, so every
    retry (any relay, any process) sends the same one and Shopify records the refund once."""
    return f"dotshop-refund-{refund_id}"


class OrderPusher:
    """The outbox handler for `shopify.push_order`: make Shopify reflect our order.

    Every delivery looks at the order as it is now (under its lock), so the same message serves
    the payment, a refund and a cancellation, and any retry converges:
    - not in Shopify yet: a paid order with committed units is created there with the prices
      charged (or found by its sourceIdentifier, if an earlier attempt created it and died) and
      acknowledged; anything else is `push_skipped`;
    - in Shopify: each of our succeeded refunds is recorded there (refundCreate, @idempotent on
      a key derived from the refund id), once;
    - in Shopify and refunded in full or cancelled here: cancelled there, restocking, once.
    Shopify is never called while the order row is locked; the lock is taken again to record
    what Shopify did, and that record is what later deliveries decide on."""

    def __init__(
        self, engine: Engine, gateway: ShopifyGateway, locations: int | Sequence[int]
    ) -> None:
        self.engine, self.gateway, self.locations = engine, gateway, _selling(locations)

    def __call__(self, message: Message) -> None:
        order_id = message.payload["order_id"]
        self._reach_shopify(order_id)
        self._mirror_refunds(order_id)
        self._mirror_undo(order_id)

    # ------------------------------------------------------------------ creating the order

    def _reach_shopify(self, order_id: str) -> None:
        with transaction(self.engine) as session:
            order = orders.lock(session, order_id)
            if order.shopify_order_id is not None:
                return
            committed = any(
                h.status == inventory.COMMITTED for h in inventory.holds(session, order_id)
            )
            pushable = order.status in PUSHABLE and committed
            # Only an attempt that began before this one can have created the order.
            may_exist = orders.has_event(session, order_id, (PUSH_STARTED,))
            if not may_exist:
                if not pushable:
                    self._skip(session, order_id, order.status)
                    return
                orders.add_event(session, order_id, PUSH_STARTED, {})
            lines = self._lines(session, order_id)
            email, currency, status = order.email, order.currency, order.status
            paid_at = order.paid_at
        shopify_id = self.gateway.find_order(order_id) if may_exist else None
        if shopify_id is None:
            if not pushable:  # refunded or cancelled since an attempt that never got through
                with transaction(self.engine) as session:
                    orders.lock(session, order_id)
                    self._skip(session, order_id, status)
                return
            shopify_id = self.gateway.create_order(
                reference=order_id,
                email=email,
                currency=currency,
                lines=[(line.variant_id, line.quantity, line.unit_price_minor) for line in lines],
            )
        # Shopify's levels now include this order; they land with the acknowledgement.
        levels = self.gateway.inventory_levels(
            sorted({line.inventory_item_id for line in lines}), self.locations
        )
        with transaction(self.engine) as session:
            order = orders.lock(session, order_id)
            if order.shopify_order_id is not None:
                return
            order.shopify_order_id = shopify_id
            skus = sorted({line.sku for line in lines})
            apply_levels(session, levels, self.locations)
            inventory.acknowledge(session, order_id, totals_by_sku(session, skus, self.locations))
            orders.add_event(
                session, order_id, "pushed_to_shopify", {"shopify_order_id": shopify_id}
            )
            if paid_at is not None:
                sync_lag.record(session, sync_lag.OUTBOUND, dict.fromkeys(skus, paid_at), _now())

    @staticmethod
    def _skip(session: Session, order_id: str, status: str) -> None:
        """Shopify gets only orders that are still paid with committed units."""
        reason = "nothing_committed" if status in PUSHABLE else "not_paid"
        orders.add_event(session, order_id, "push_skipped", {"reason": reason, "status": status})

    @staticmethod
    def _lines(session: Session, order_id: str) -> list[_Line]:
        rows = session.execute(
            select(
                Variant.sku,
                Variant.shopify_inventory_item_id,
                Variant.shopify_variant_id,
                OrderLine.quantity,
                OrderLine.unit_price_minor,
            )
            .join(Variant, Variant.sku == OrderLine.sku)
            .where(OrderLine.order_id == order_id)
            .order_by(Variant.sku)
        ).all()
        return [_Line(*row) for row in rows]

    # ------------------------------------------------------------------- refunds

    def _mirror_refunds(self, order_id: str) -> None:
        with transaction(self.engine) as session:
            order = orders.lock(session, order_id)
            shopify_id, currency = order.shopify_order_id, order.currency
            if shopify_id is None:
                return
            pending = [
                (r.id, r.amount_minor)
                for r in session.scalars(
                    select(Refund)
                    .where(Refund.order_id == order_id, Refund.status == refunds.SUCCEEDED)
                    .order_by(Refund.created_at, Refund.id)
                )
                if not orders.has_event(session, order_id, (REFUND_RECORDED,), refund_id=r.id)
            ]
        for refund_id, amount in pending:
            self.gateway.refund(
                shopify_id, key=refund_key(refund_id), amount_minor=amount, currency=currency
            )
            with transaction(self.engine) as session:
                orders.lock(session, order_id)
                if not orders.has_event(session, order_id, (REFUND_RECORDED,), refund_id=refund_id):
                    orders.add_event(
                        session,
                        order_id,
                        REFUND_RECORDED,
                        {"refund_id": refund_id, "amount": amount, "shopify_order_id": shopify_id},
                    )

    # ------------------------------------------------------------------- undoing the order

    def _mirror_undo(self, order_id: str) -> None:
        with transaction(self.engine) as session:
            order = orders.lock(session, order_id)
            shopify_id = order.shopify_order_id
            if shopify_id is None or orders.has_event(session, order_id, (CANCELLED_IN_SHOPIFY,)):
                return
            reason = CANCEL_REASONS.get(order.status)
            if reason is None:
                return
            items = sorted({line.inventory_item_id for line in self._lines(session, order_id)})
        self.gateway.cancel_order(shopify_id, reason=reason)
        # The restock raised Shopify's levels: read them fresh rather than wait for webhooks.
        levels = self.gateway.inventory_levels(items, self.locations)
        with transaction(self.engine) as session:
            orders.lock(session, order_id)
            if orders.has_event(session, order_id, (CANCELLED_IN_SHOPIFY,)):
                return
            apply_levels(session, levels, self.locations)
            orders.add_event(
                session,
                order_id,
                CANCELLED_IN_SHOPIFY,
                {"shopify_order_id": shopify_id, "reason": reason, "restock": True},
            )


# ----------------------------------------------------------------------------- holds

# Timeline events of a reservation's units in Shopify's `reserved` (data: reservation_id): moved
# there, moved back out, or a move Shopify refused (data: direction, codes).
HOLD_PLACED = "shopify_hold_placed"
HOLD_LIFTED = "shopify_hold_lifted"
HOLD_REFUSED = "shopify_hold_refused"
# Refusals that mean Shopify's quantities are not what the move expected: a channel sold the
# units first, or someone emptied `reserved` in the admin. A retry gets the same answer (same
# key), so the move is given up, logged and recorded, and the periodic repair brings our
# projection to whatever Shopify now has; the oversell check reports a real shortfall.
MOVED_UNDER_US = frozenset({"CHANGE_FROM_QUANTITY_STALE", "INVALID_QUANTITY_NEGATIVE"})
# Our live reservations: their units count against our stock, so also against Shopify's.
LIVE = (inventory.HELD, inventory.COMMITTED)


def hold_key(reservation_id: str, direction: str) -> str:
    """The @idempotent key of a reservation's move (`place` or `lift`): every retry of it, from
    any relay, sends the same key, so Shopify moves the units once."""
    return f"dotshop-hold-{reservation_id}-{direction}"


def _hold_event(*kinds: str) -> Any:
    return exists().where(
        OrderEvent.order_id == Reservation.order_id,
        OrderEvent.kind.in_(kinds),
        OrderEvent.data["reservation_id"].astext == Reservation.id,
    )


# Built once (see mirrored_holds): every hold and every level webhook sums these.
_MIRRORED_HOLDS = (
    select(Reservation.sku, func.sum(Reservation.quantity))
    .where(
        and_(
            Reservation.sku.in_(bindparam("skus", expanding=True)),
            Reservation.status.in_(LIVE),
            _hold_event(HOLD_PLACED),
            ~_hold_event(HOLD_LIFTED, HOLD_REFUSED),
        )
    )
    .group_by(Reservation.sku)
)


def mirrored_holds(conn: Session | Connection, skus: Sequence[str]) -> dict[str, int]:
    """Units per SKU of our live reservations that sit in Shopify's `reserved`: placed there and
    not lifted. A hold counts from when its move is recorded and stops counting as soon as it
    ends here, before its units are back in `available`: in between, Shopify's available is
    the lower of the two, so our projection errs towards selling less, never more."""
    rows = conn.execute(_MIRRORED_HOLDS, {"skus": list(skus)}).all()
    return {sku: int(units) for sku, units in rows}


# -- hold_state --
# What a move needs to know, in one round trip: the reservation's placed event (its data) and
# whether it has one of the :ended kinds, the reservation's status, the SKU's inventory item,
# and our database's clock before the move (it stamps the levels read after it, `synced_at`).
_HOLD_STATE = text(
    """
    SELECT (SELECT data FROM order_event
             WHERE order_id = :order_id AND kind = :placed
               AND data ->> 'reservation_id' = :reservation_id
             LIMIT 1) AS placed,
           EXISTS (SELECT FROM order_event
                    WHERE order_id = :order_id AND kind = ANY(:ended)
                      AND data ->> 'reservation_id' = :reservation_id) AS ended,
           (SELECT status FROM reservation WHERE id = :reservation_id) AS status,
           (SELECT shopify_inventory_item_id FROM variant WHERE sku = :sku) AS item,
           clock_timestamp() AS started
    """
)
# -- record_hold_event --
# The move on the order's timeline, once (a retry that finds it recorded adds nothing).
_RECORD_HOLD_EVENT = text(
    """
    INSERT INTO order_event (order_id, kind, data)
    SELECT :order_id, :kind, :data
     WHERE NOT EXISTS (SELECT FROM order_event
                        WHERE order_id = :order_id AND kind = :kind
                          AND data ->> 'reservation_id' = :reservation_id)
    """
).bindparams(bindparam("data", type_=JSONB))


class HoldMirror:
    """The outbox handlers of `shopify.hold` and `shopify.unhold` (core.inventory queues them,
    ordered per SKU): a reservation's units move from `available` to `reserved` in Shopify, so
    no other channel (POS, marketplaces) can sell a unit a web shopper is paying for, and back
    when the hold ends here. Both moves are @idempotent on a key per reservation and
    direction, so a retry after Shopify moved and before we recorded it changes nothing.

    A paid order's units leave `reserved` only after Shopify has the order: orderCreate claims
    its units from `available` (`committed` is not a state one can move units into), and the
    acknowledgement of the push ends the reservation, queueing the unhold. Between the two,
    Shopify's available is short by the order's units rather than long, so a POS sale can never
    take them; moving them back first would leave them sellable until the order is created.

    Holds are placed at the first selling location (a web checkout does not choose one)."""

    def __init__(
        self, engine: Engine, gateway: ShopifyGateway, locations: int | Sequence[int]
    ) -> None:
        self.engine, self.gateway, self.locations = engine, gateway, _selling(locations)

    def register(self, handlers: Handlers) -> None:
        handlers.register(inventory.SHOPIFY_HOLD, self.hold)
        handlers.register(inventory.SHOPIFY_UNHOLD, self.unhold)

    def hold(self, message: Message) -> None:
        payload = message.payload
        state = self._state(payload, ended=[HOLD_REFUSED])
        if state.placed is not None or state.ended:
            return
        # A first attempt can skip a hold that already ended: no earlier attempt can have moved
        # it (the relay counts an attempt before running it), and its unhold finds nothing.
        if state.item is None or (message.attempts == 0 and state.status not in LIVE):
            rid = payload["reservation_id"]
            log.info("shopify.hold_skipped", reservation_id=rid, status=state.status)
            return
        self._move(payload, state.item, self.locations[0], "place", state.started)

    def unhold(self, message: Message) -> None:
        state = self._state(message.payload, ended=[HOLD_LIFTED, HOLD_REFUSED])
        if state.placed is None or state.ended or state.item is None:
            return
        location = int(state.placed["location_id"])
        self._move(message.payload, state.item, location, "lift", state.started)

    def _state(self, payload: dict[str, Any], ended: list[str]) -> Any:
        with self.engine.connect() as conn:
            return conn.execute(
                _HOLD_STATE,
                {
                    "order_id": payload["order_id"],
                    "reservation_id": payload["reservation_id"],
                    "sku": payload["sku"],
                    "placed": HOLD_PLACED,
                    "ended": ended,
                },
            ).one()

    def _move(
        self, payload: dict[str, Any], item: int, location: int, direction: str, started: datetime
    ) -> None:
        """Move the reservation's units in Shopify, then record it with the levels read after
        it (`started` is before the move), in one transaction under the stock row lock, so our
        projection never counts the move twice or not at all, whichever of this and Shopify's
        webhook lands first."""
        order_id, rid = payload["order_id"], payload["reservation_id"]
        sku, quantity = payload["sku"], int(payload["quantity"])
        source, target = ("available", "reserved")
        if direction == "lift":
            source, target = target, source
        try:
            self.gateway.move_quantities(
                item_id=item,
                location_id=location,
                quantity=quantity,
                source=source,
                target=target,
                key=hold_key(rid, direction),
                document=f"dotshop://reservation/{rid}",
            )
        except ShopifyRejected as exc:
            codes = sorted(exc.details.get("codes") or [])
            if not MOVED_UNDER_US & set(codes):
                raise
            log.warning(
                "shopify.hold_refused", reservation_id=rid, sku=sku, direction=direction,
                codes=codes,
            )  # fmt: skip
            with transaction(self.engine) as session:
                if not orders.has_event(session, order_id, (HOLD_REFUSED,), reservation_id=rid):
                    orders.add_event(
                        session, order_id, HOLD_REFUSED,
                        {"reservation_id": rid, "sku": sku, "direction": direction,
                         "codes": codes},
                    )  # fmt: skip
            return
        levels = self.gateway.inventory_levels([item], self.locations)
        done = HOLD_PLACED if direction == "place" else HOLD_LIFTED
        event = {"reservation_id": rid, "sku": sku, "quantity": quantity, "location_id": location}
        with transaction(self.engine) as session:
            inventory.lock_stock(session, [sku])
            session.execute(
                _RECORD_HOLD_EVENT,
                {"order_id": order_id, "kind": done, "reservation_id": rid, "data": event},
            )
            apply_levels(session, levels, self.locations, started)


def register_handlers(handlers: Handlers) -> None:
    from core.db import database_url, engine_for

    settings = get_settings()
    engine = engine_for(database_url(settings))
    gateway = ShopifyGateway.from_settings(settings)
    pusher = OrderPusher(engine, gateway, settings.selling_locations)
    handlers.register(PUSH_ORDER_TO_SHOPIFY, pusher)
    HoldMirror(engine, gateway, settings.selling_locations).register(handlers)
    handlers.register(revalidate.TOPIC, revalidate.Revalidator(settings))
