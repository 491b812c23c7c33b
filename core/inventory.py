"""Stock reservations: never oversell.

Per SKU, `stock` holds what Shopify says is available, what live checkouts hold (`reserved`) and
what is paid but not yet acknowledged by Shopify (`committed`);
sellable = shopify_available - reserved - committed. Each `reservation` row is one order's hold on
one SKU and moves held -> committed -> fulfilled, or ends released/expired.

Every function runs in the caller's transaction (never commits). Taking stock is always ONE
conditional UPDATE per SKU, so concurrent checkouts cannot both get the last unit: PostgreSQL
re-checks the WHERE clause on the newest row version after waiting for the row lock. Stock rows
are touched in SKU order, so two multi-SKU operations cannot deadlock on each other.

A reservation changes status in the same statement that claims it (`... WHERE status = 'held'`),
so release/commit/expire are idempotent and happen exactly once even when called concurrently.

Shopify's other channels see our holds: every hold is queued as a `shopify.hold` message when it
is taken (by the checkout's SQL function, migration 0007), and every reservation that stops
being live (released, expired, refunded before the push, or acknowledged once Shopify has the
order) queues one `shopify.unhold` with the claim that changes its status, so once per
reservation. Both are ordered per SKU (`sku:<SKU>`); core.shopify_sync moves the units.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    DateTime,
    Insert,
    Integer,
    Text,
    bindparam,
    case,
    func,
    null,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from core import outbox
from core.errors import InsufficientStock, InvalidRequest, UnknownSku
from core.ids import new_id
from core.models import Order, Reservation, Stock

HELD = "held"
COMMITTED = "committed"
RELEASED = "released"
EXPIRED = "expired"
FULFILLED = "fulfilled"
# Statuses a hold can end in without being sold (release's `to_status`).
ENDED = frozenset({RELEASED, EXPIRED})
# Outbox topics that mirror a hold in Shopify: units to `reserved`, and back out of it.
SHOPIFY_HOLD = "shopify.hold"
SHOPIFY_UNHOLD = "shopify.unhold"


@dataclass(frozen=True)
class Line:
    """A quantity of one SKU, as a checkout asks for it."""

    sku: str
    quantity: int


@dataclass(frozen=True)
class StockLevel:
    """One SKU's stock row as read, with its sellable count."""

    sku: str
    shopify_available: int
    reserved: int
    committed: int
    sellable: int
    shopify_updated_at: datetime | None
    shortfall_since: datetime | None


@dataclass(frozen=True)
class Hold:
    """One reservation row as read."""

    id: str
    order_id: str
    sku: str
    quantity: int
    status: str
    expires_at: datetime


def _sellable() -> ColumnElement[int]:
    return Stock.shopify_available - Stock.reserved - Stock.committed


def merge_lines(lines: Iterable[Line]) -> list[Line]:
    """One line per SKU (quantities summed), in SKU order; every quantity must be > 0."""
    totals: dict[str, int] = defaultdict(int)
    for line in lines:
        if line.quantity <= 0:
            raise InvalidRequest("quantity must be greater than 0", sku=line.sku)
        totals[line.sku] += line.quantity
    if not totals:
        raise InvalidRequest("at least one line is needed")
    return [Line(sku, qty) for sku, qty in sorted(totals.items())]


# ------------------------------------------------------------------------------- taking stock


def _take(session: Session, sku: str, quantity: int, *, into_committed: bool) -> bool:
    """The one conditional statement that takes stock: True when it was there."""
    values = (
        {Stock.committed: Stock.committed + quantity}
        if into_committed
        else {Stock.reserved: Stock.reserved + quantity}
    )
    taken = session.execute(
        update(Stock)
        .where(Stock.sku == sku, _sellable() >= quantity)
        .values({**values, Stock.updated_at: func.now()})
        .returning(Stock.sku)
    ).first()
    return taken is not None


def _shortages(session: Session, wanted: dict[str, int]) -> tuple[list[str], list[dict]]:
    """For SKUs a take failed on: which are unknown, and for the rest what is really sellable."""
    rows = dict(session.execute(select(Stock.sku, _sellable()).where(Stock.sku.in_(wanted))).all())
    unknown = sorted(sku for sku in wanted if sku not in rows)
    short = [
        {"sku": sku, "requested": qty, "available": max(int(rows[sku]), 0)}
        for sku, qty in sorted(wanted.items())
        if sku in rows
    ]
    return unknown, short


def _give_back(session: Session, taken: Sequence[Line], *, from_committed: bool) -> None:
    """Undo takes of a call that fails as a whole, so it is all-or-nothing even for a caller that
    catches the error and goes on in the same transaction."""
    column = Stock.committed if from_committed else Stock.reserved
    for line in taken:
        session.execute(
            update(Stock)
            .where(Stock.sku == line.sku)
            .values({column: column - line.quantity, Stock.updated_at: func.now()})
        )


def _take_all(session: Session, lines: Sequence[Line], *, into_committed: bool) -> None:
    """Take every line or none; raise UnknownSku / InsufficientStock naming every failed SKU."""
    taken: list[Line] = []
    failed: dict[str, int] = {}
    for line in lines:  # sorted by SKU: the lock order
        if _take(session, line.sku, line.quantity, into_committed=into_committed):
            taken.append(line)
        else:
            failed[line.sku] = line.quantity
    if not failed:
        return
    _give_back(session, taken, from_committed=into_committed)
    unknown, short = _shortages(session, failed)
    if unknown:
        raise UnknownSku(skus=unknown)
    raise InsufficientStock(skus=short)


def reserve(
    session: Session, order_id: str, lines: Sequence[Line], expires_at: datetime
) -> list[str]:
    """Hold stock for an order until `expires_at`; returns the new reservation ids (`rsv_...`).

    All or nothing: raises UnknownSku (SKUs with no stock row) or InsufficientStock (every short
    SKU with `requested` and `available`) and leaves stock as it was.
    """
    merged = merge_lines(lines)
    _take_all(session, merged, into_committed=False)
    ids = [new_id("rsv") for _ in merged]
    session.execute(
        insert(Reservation),
        [
            {
                "id": rid,
                "order_id": order_id,
                "sku": line.sku,
                "quantity": line.quantity,
                "status": HELD,
                "expires_at": expires_at,
            }
            for rid, line in zip(ids, merged, strict=True)
        ],
    )
    return ids


# ----------------------------------------------------------------- moving reservations along


def sku_key(sku: str) -> str:
    """The outbox ordering key of everything that changes one SKU's stock in Shopify."""
    return f"sku:{sku}"


def _queue_unholds(session: Session, ended: Sequence[tuple[str, str, str, int]]) -> None:
    """(reservation id, order id, sku, quantity) that stopped being live: Shopify's `reserved`
    gives their units back. Called once per reservation, by the claim that ended it. The hold's
    own message committed with the hold, before anything could claim the reservation, so its
    unhold always comes after it in the SKU's order."""
    for rid, order_id, sku, quantity in sorted(ended, key=lambda r: (r[2], r[0])):
        outbox.enqueue(
            session,
            topic=SHOPIFY_UNHOLD,
            ordering_key=sku_key(sku),
            payload={"reservation_id": rid, "order_id": order_id, "sku": sku, "quantity": quantity},
        )


def _claim(session: Session, order_id: str, from_status: str, to_status: str) -> list[Line]:
    """Move an order's reservations from one status to another; return what moved, per SKU.
    Reservations that stop being live (anything but `committed`) queue their Shopify unhold.

    The rows are locked in SKU order first (the same order everywhere), and the status test in
    the UPDATE makes a second or concurrent call move nothing."""
    locked = (
        select(Reservation.id)
        .where(Reservation.order_id == order_id, Reservation.status == from_status)
        .order_by(Reservation.sku)
        .with_for_update()
    )
    rows = session.execute(
        update(Reservation)
        .where(Reservation.id.in_(locked.scalar_subquery()), Reservation.status == from_status)
        .values(status=to_status, updated_at=func.now())
        .returning(Reservation.id, Reservation.sku, Reservation.quantity)
    ).all()
    if to_status != COMMITTED:
        _queue_unholds(session, [(rid, order_id, sku, qty) for rid, sku, qty in rows])
    return [Line(sku, qty) for _, sku, qty in sorted(rows, key=lambda r: r[1])]


def _clear_shortfall_after(reserved_delta: int, committed_delta: int) -> ColumnElement:
    """shortfall_since once sellable goes back to >= 0 (SET expressions see the old row)."""
    after = Stock.shopify_available - (Stock.reserved + reserved_delta)
    after = after - (Stock.committed + committed_delta)
    return case((after >= 0, None), else_=Stock.shortfall_since)


def _adjust(session: Session, lines: Sequence[Line], *, reserved: int, committed: int) -> None:
    """Apply per-unit deltas (-1, 0, +1) times each line's quantity to the stock rows."""
    for line in lines:
        dr, dc = reserved * line.quantity, committed * line.quantity
        session.execute(
            update(Stock)
            .where(Stock.sku == line.sku)
            .values(
                {
                    Stock.reserved: Stock.reserved + dr,
                    Stock.committed: Stock.committed + dc,
                    Stock.shortfall_since: _clear_shortfall_after(dr, dc),
                    Stock.updated_at: func.now(),
                }
            )
        )


def release(session: Session, order_id: str, *, to_status: str = RELEASED) -> int:
    """The order's held reservations end (`released` or `expired`) and give their stock back.
    Returns how many reservations were released; a second call releases 0."""
    if to_status not in ENDED:
        raise ValueError(f"a hold ends as one of {sorted(ENDED)}, not {to_status!r}")
    moved = _claim(session, order_id, HELD, to_status)
    _adjust(session, moved, reserved=-1, committed=0)
    return len(moved)


def commit(session: Session, order_id: str) -> int:
    """Payment arrived while the hold was live: held -> committed. Returns how many moved (0 when
    already done, or when the hold had expired: then see `rereserve_and_commit`)."""
    moved = commit_holds(session, order_id)
    settle_committed(session, moved)
    return len(moved)


def commit_holds(session: Session, order_id: str) -> list[Line]:
    """`commit` in two steps, for a caller with more to write in the same transaction: the
    reservations move now (their rows are the order's alone), and what moved goes to
    `settle_committed` as late as possible, because the stock rows it then locks are the hot
    ones that every checkout of those SKUs takes."""
    return _claim(session, order_id, HELD, COMMITTED)


def settle_committed(session: Session, moved: Sequence[Line]) -> None:
    """The stock rows' side of `commit_holds`: reserved -> committed, per line."""
    _adjust(session, moved, reserved=-1, committed=+1)


def rereserve_and_commit(session: Session, order_id: str) -> bool:
    """Payment arrived after the hold was released or expired: take the stock again straight
    into committed if ALL of it is there (True), else change nothing (False; refund instead).

    Held reservations (if any) are committed too; already committed or fulfilled ones count as
    done. The order's reservations are locked (SKU order) before any stock is taken."""
    rows = session.execute(
        select(Reservation.id, Reservation.sku, Reservation.quantity, Reservation.status)
        .where(Reservation.order_id == order_id)
        .order_by(Reservation.sku)
        .with_for_update()
    ).all()
    ended = [r for r in rows if r.status in ENDED]
    if ended:
        try:
            _take_all(session, [Line(r.sku, r.quantity) for r in ended], into_committed=True)
        except InsufficientStock:
            return False
        session.execute(
            update(Reservation)
            .where(Reservation.id.in_([r.id for r in ended]))
            .values(status=COMMITTED, updated_at=func.now())
        )
    commit(session, order_id)
    return True


def acknowledge(session: Session, order_id: str, levels: Mapping[str, tuple[int, datetime]]) -> int:
    """Shopify accepted the order: committed -> fulfilled. Returns how many moved (0 when done).

    `levels` are Shopify's totals per SKU read *after* it accepted the order (so they include
    its decrement), with their updated_at. They are applied whether or not anything moved (a
    retried acknowledgement still brings what it read), in the same transaction as the move, so
    sellable stays exact whichever comes first: this acknowledgement or Shopify's own inventory
    webhook (subtracting the quantity here instead would count it twice when the webhook won
    the race)."""
    moved = _claim(session, order_id, COMMITTED, FULFILLED)
    _adjust(session, moved, reserved=0, committed=-1)
    for sku, (available, updated_at) in sorted(levels.items()):
        apply_shopify_total(session, sku, available, updated_at)
    return len(moved)


def release_committed(session: Session, order_id: str) -> int:
    """Refunded before the order reached Shopify: committed -> released, stock sellable again."""
    moved = _claim(session, order_id, COMMITTED, RELEASED)
    _adjust(session, moved, reserved=0, committed=-1)
    return len(moved)


def expire_due(session: Session, now: datetime, limit: int = 100) -> list[str]:
    """Release up to `limit` held reservations whose `expires_at` <= now, as `expired`; return
    the affected order ids (sorted, distinct).

    Rows are claimed with SKIP LOCKED so several sweepers share the work. The order row is
    locked with them (also SKIP LOCKED): the payment path locks the order before its
    reservations, so a sweeper that skips orders being paid cannot deadlock with it, and the
    caller may then lock the order again for free."""
    claimed = session.execute(
        select(Reservation.id, Reservation.order_id, Reservation.sku, Reservation.quantity)
        .join(Order, Order.id == Reservation.order_id)
        .where(Reservation.status == HELD, Reservation.expires_at <= now)
        .order_by(Reservation.expires_at, Reservation.id)
        .limit(limit)
        .with_for_update(of=(Reservation, Order), skip_locked=True)
    ).all()
    if not claimed:
        return []
    session.execute(
        update(Reservation)
        .where(Reservation.id.in_([r.id for r in claimed]))
        .values(status=EXPIRED, updated_at=func.now())
    )
    _queue_unholds(session, [(r.id, r.order_id, r.sku, r.quantity) for r in claimed])
    per_sku: dict[str, int] = defaultdict(int)
    for r in claimed:
        per_sku[r.sku] += r.quantity
    _adjust(session, [Line(s, q) for s, q in sorted(per_sku.items())], reserved=-1, committed=0)
    return sorted({r.order_id for r in claimed})


# --------------------------------------------------------------------------- Shopify's levels


def _write_shopify_level(
    session: Session, statement: Insert, sku: str, available: int, updated_at: datetime
) -> bool:
    """Store Shopify's available count for a SKU with `_WRITE_LEVEL` or `_WRITE_TOTAL`
    (creating the stock row if needed); True when written."""
    params = {"new_sku": sku, "new_available": available, "new_updated_at": updated_at}
    return session.execute(statement, params).first() is not None


def stale_level(
    stored_at: ColumnElement[datetime],
    stored: ColumnElement[int],
    updated_at: datetime,
    available: int,
) -> ColumnElement[bool]:
    """Whether an incoming Shopify level loses to the stored one: it is older, or it has the
    same updated_at and is not lower. Shopify's updated_at has one-second resolution and its
    webhooks arrive in any order, so two levels of one second cannot be ordered; keeping the
    lower one never sells stock that may be gone (the next change, a second later, corrects
    a restock that lost the tie)."""
    return (stored_at > updated_at) | ((stored_at == updated_at) & (stored <= available))


def _level_write(unless: Callable[[Any, Any, Any, Any], ColumnElement[bool]]) -> Insert:
    """Upsert a SKU's Shopify level (:new_sku, :new_available, :new_updated_at), except over a
    stored row for which `unless(stored_at, stored, updated_at, available)` holds.

    When Shopify is below what we hold and committed (another channel sold it),
    `shortfall_since` records since when (the oldest time is kept); it clears once the level
    covers us again. Built once per rule: a statement object keeps its compiled form, so a
    call pays for execution only (levels arrive with every hold and webhook)."""
    # Named apart from the columns: insert() reserves the column names for its own parameters.
    sku = bindparam("new_sku", type_=Text)
    available = bindparam("new_available", type_=Integer)
    updated_at = bindparam("new_updated_at", type_=DateTime(timezone=True))
    short_now = available - Stock.reserved - Stock.committed < 0
    stmt = insert(Stock).values(
        sku=sku,
        shopify_available=available,
        shopify_updated_at=updated_at,
        shortfall_since=case((available < 0, updated_at), else_=null()),
    )
    return (
        stmt.on_conflict_do_update(
            index_elements=[Stock.sku],
            set_={
                Stock.shopify_available: available,
                Stock.shopify_updated_at: updated_at,
                Stock.shortfall_since: case(
                    (short_now, func.coalesce(Stock.shortfall_since, updated_at)), else_=None
                ),
                Stock.updated_at: func.now(),
            },
            where=Stock.shopify_updated_at.is_(None)
            | ~unless(Stock.shopify_updated_at, Stock.shopify_available, updated_at, available),
        )
        .returning(Stock.sku)
        # Executed with parameters: as one statement, not as the ORM's bulk insert.
        .execution_options(dml_strategy="raw")
    )


# A level Shopify reported for one SKU: refused when stale (see `stale_level`).
_WRITE_LEVEL = _level_write(stale_level)
# A total summed over the selling locations: refused only when older (see apply_shopify_total).
_WRITE_TOTAL = _level_write(lambda stored_at, stored, updated_at, available: stored_at > updated_at)
_LOCK_STOCK = (
    select(Stock.sku)
    .where(Stock.sku.in_(bindparam("skus", expanding=True)))
    .order_by(Stock.sku)
    .with_for_update()
)


def apply_shopify_level(session: Session, sku: str, available: int, updated_at: datetime) -> bool:
    """Record one level Shopify reported for a SKU; False when it is stale (see `stale_level`)."""
    return _write_shopify_level(session, _WRITE_LEVEL, sku, available, updated_at)


def apply_shopify_total(session: Session, sku: str, available: int, updated_at: datetime) -> bool:
    """Record a SKU's total over the selling locations, summed by the caller from per-location
    levels it has already stale-checked (core.shopify_sync), with the newest of their
    updated_at. Only an older total is refused: at an equal time the total still moves,
    because a late level of another location can change the sum without raising its newest
    time. The caller holds the stock row lock from before it summed (`lock_stock`), so
    concurrent totals cannot miss each other's levels."""
    return _write_shopify_level(session, _WRITE_TOTAL, sku, available, updated_at)


def lock_stock(session: Session, skus: Iterable[str]) -> None:
    """Lock the SKUs' stock rows, in SKU order like every other stock write (missing rows are
    skipped: the write that follows creates them)."""
    session.execute(_LOCK_STOCK, {"skus": sorted(set(skus))})


# ------------------------------------------------------------------------------------- reads


def sellable(session: Session, skus: Iterable[str]) -> dict[str, int]:
    """Sellable units per known SKU (never below 0; unknown SKUs are left out)."""
    rows = session.execute(
        select(Stock.sku, func.greatest(_sellable(), 0)).where(Stock.sku.in_(list(skus)))
    ).all()
    return {sku: int(n) for sku, n in rows}


def stock_snapshot(session: Session, sku: str) -> StockLevel | None:
    row = session.execute(
        select(
            Stock.sku,
            Stock.shopify_available,
            Stock.reserved,
            Stock.committed,
            _sellable(),
            Stock.shopify_updated_at,
            Stock.shortfall_since,
        ).where(Stock.sku == sku)
    ).first()
    return StockLevel(*row) if row is not None else None


def holds(session: Session, order_id: str) -> list[Hold]:
    """The order's reservations (any status), in SKU order."""
    rows = session.execute(
        select(
            Reservation.id,
            Reservation.order_id,
            Reservation.sku,
            Reservation.quantity,
            Reservation.status,
            Reservation.expires_at,
        )
        .where(Reservation.order_id == order_id)
        .order_by(Reservation.sku)
    ).all()
    return [Hold(*r) for r in rows]
