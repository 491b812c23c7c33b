"""Stock reservations on a real PostgreSQL: never oversell, under concurrency too."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core import inventory
from core.errors import InsufficientStock, InvalidRequest, UnknownSku
from core.ids import new_id
from core.inventory import Line
from core.models import Order, Product, Stock, Variant

T0 = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
LATER = T0 + timedelta(minutes=15)
_counter = iter(range(1, 1_000_000))


# --------------------------------------------------------------------------------- seeding


def seed_skus(engine: Engine, levels: dict[str, int], at: datetime = T0) -> None:
    """A product with one variant and a stock row per SKU, at the given Shopify levels."""
    with Session(engine) as s, s.begin():
        n = next(_counter)
        product = Product(
            id=new_id("prd"),
            shopify_product_id=n,
            handle=f"product-{n}",
            title=f"Product {n}",
            shopify_updated_at=at,
        )
        s.add(product)
        s.flush()
        for sku, available in levels.items():
            m = next(_counter)
            s.add(
                Variant(
                    id=new_id("var"),
                    product_id=product.id,
                    sku=sku,
                    title=sku,
                    shopify_variant_id=m,
                    shopify_inventory_item_id=m,
                    shopify_updated_at=at,
                )
            )
            s.flush()
            s.add(Stock(sku=sku, shopify_available=available, shopify_updated_at=at))


def seed_orders(engine: Engine, count: int = 1) -> list[str]:
    """Minimal order rows (reservations reference them)."""
    ids = [new_id("ord") for _ in range(count)]
    with Session(engine) as s, s.begin():
        s.add_all(
            Order(
                id=oid,
                checkout_id=new_id("chk"),
                region="us",
                status="awaiting_payment",
                email="buyer@example.com",
                shipping_address={},
                currency="usd",
                amount_minor=1000,
                refunded_minor=0,
                expires_at=LATER,
            )
            for oid in ids
        )
    return ids


def in_txn(engine: Engine, fn: Callable[[Session], Any]) -> Any:
    with Session(engine) as s, s.begin():
        return fn(s)


def level(engine: Engine, sku: str) -> inventory.StockLevel:
    snap = in_txn(engine, lambda s: inventory.stock_snapshot(s, sku))
    assert snap is not None
    return snap


def counts(engine: Engine, sku: str) -> tuple[int, int, int]:
    snap = level(engine, sku)
    return snap.shopify_available, snap.reserved, snap.committed


def statuses(engine: Engine, order_id: str) -> list[tuple[str, str, int]]:
    return [
        (h.sku, h.status, h.quantity)
        for h in in_txn(engine, lambda s: inventory.holds(s, order_id))
    ]


def reserve(
    engine: Engine, order_id: str, lines: Sequence[Line], expires: datetime = LATER
) -> list[str]:
    return in_txn(engine, lambda s: inventory.reserve(s, order_id, lines, expires))


def violations(engine: Engine) -> int:
    """Rows breaking what the CHECKs promise (they cannot exist; counted to prove it)."""
    with engine.connect() as conn:
        return conn.execute(
            text(
                "SELECT count(*) FROM stock WHERE reserved < 0 OR committed < 0 OR "
                "(shopify_available - reserved - committed < 0 AND shortfall_since IS NULL)"
            )
        ).scalar_one()


# ------------------------------------------------------------------------------- reserve


def test_reserve_merges_duplicate_skus_and_holds_stock(clean_engine: Engine) -> None:
    seed_skus(clean_engine, {"A": 10, "B": 3})
    (order,) = seed_orders(clean_engine)

    ids = reserve(clean_engine, order, [Line("B", 1), Line("A", 2), Line("B", 2)])

    assert len(ids) == 2 and all(i.startswith("rsv_") for i in ids)
    assert statuses(clean_engine, order) == [("A", "held", 2), ("B", "held", 3)]
    assert counts(clean_engine, "A") == (10, 2, 0)
    assert counts(clean_engine, "B") == (3, 3, 0)
    assert in_txn(clean_engine, lambda s: inventory.sellable(s, ["A", "B", "nope"])) == {
        "A": 8,
        "B": 0,
    }


def test_multi_sku_reserve_is_all_or_nothing_and_names_every_short_sku(
    clean_engine: Engine,
) -> None:
    seed_skus(clean_engine, {"A": 5, "B": 1, "C": 0})
    (order,) = seed_orders(clean_engine)

    # The caller catches the error and commits anyway: still nothing may have changed.
    with Session(clean_engine) as s, s.begin(), pytest.raises(InsufficientStock) as caught:
        inventory.reserve(s, order, [Line("A", 2), Line("B", 2), Line("C", 1)], LATER)

    assert caught.value.details["skus"] == [
        {"sku": "B", "requested": 2, "available": 1},
        {"sku": "C", "requested": 1, "available": 0},
    ]
    assert caught.value.to_dict()["code"] == "insufficient_stock"
    assert [counts(clean_engine, sku) for sku in "ABC"] == [(5, 0, 0), (1, 0, 0), (0, 0, 0)]
    assert statuses(clean_engine, order) == []


def test_unknown_skus_and_bad_quantities_are_refused(clean_engine: Engine) -> None:
    seed_skus(clean_engine, {"A": 5})
    (order,) = seed_orders(clean_engine)

    with pytest.raises(UnknownSku) as caught:
        reserve(clean_engine, order, [Line("A", 1), Line("ghost", 1), Line("zombie", 2)])
    assert caught.value.details["skus"] == ["ghost", "zombie"]
    for bad in (0, -1):
        with pytest.raises(InvalidRequest):
            reserve(clean_engine, order, [Line("A", bad)])
    with pytest.raises(InvalidRequest):
        reserve(clean_engine, order, [])
    assert counts(clean_engine, "A") == (5, 0, 0)


def test_the_database_refuses_negative_sellable_without_a_shortfall(clean_engine: Engine) -> None:
    """The CHECK the concurrency test relies on is real: a write that oversells fails."""
    seed_skus(clean_engine, {"A": 2})
    with pytest.raises(IntegrityError), clean_engine.begin() as conn:
        conn.execute(text("UPDATE stock SET reserved = 3 WHERE sku = 'A'"))


@pytest.mark.parametrize("round_", range(3))
def test_64_concurrent_reservations_against_10_in_stock_sell_exactly_10(
    clean_engine: Engine, round_: int
) -> None:
    seed_skus(clean_engine, {"HOT": 10})
    orders = seed_orders(clean_engine, 64)
    barrier = threading.Barrier(len(orders))
    outcomes: list[str] = []
    lock = threading.Lock()

    def buy(order_id: str) -> None:
        try:
            with Session(clean_engine) as s, s.begin():
                s.connection()  # connect before the barrier so all start together
                barrier.wait(timeout=30)
                inventory.reserve(s, order_id, [Line("HOT", 1)], LATER)
                time.sleep(0.005)  # hold the row lock a moment: the others queue behind it
            result = "ok"
        except InsufficientStock:
            result = "short"
        except Exception as exc:  # anything else fails the test below, with its name
            result = repr(exc)
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=buy, args=(o,)) for o in orders]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)

    assert sorted(set(outcomes)) == ["ok", "short"]
    assert outcomes.count("ok") == 10 and outcomes.count("short") == 54
    assert counts(clean_engine, "HOT") == (10, 10, 0)
    assert level(clean_engine, "HOT").sellable == 0
    with clean_engine.connect() as conn:
        held = conn.execute(
            text("SELECT count(*), sum(quantity) FROM reservation WHERE status = 'held'")
        ).one()
    assert tuple(held) == (10, 10)
    assert violations(clean_engine) == 0


# ------------------------------------------------------------------ release / commit / ack


def test_release_is_idempotent(clean_engine: Engine) -> None:
    seed_skus(clean_engine, {"A": 4, "B": 4})
    (order,) = seed_orders(clean_engine)
    reserve(clean_engine, order, [Line("A", 1), Line("B", 3)])

    assert in_txn(clean_engine, lambda s: inventory.release(s, order)) == 2
    assert in_txn(clean_engine, lambda s: inventory.release(s, order)) == 0
    assert statuses(clean_engine, order) == [("A", "released", 1), ("B", "released", 3)]
    assert counts(clean_engine, "A") == (4, 0, 0) and counts(clean_engine, "B") == (4, 0, 0)
    with pytest.raises(ValueError):
        in_txn(clean_engine, lambda s: inventory.release(s, order, to_status="fulfilled"))


def test_commit_acknowledge_and_release_committed_move_stock_once(clean_engine: Engine) -> None:
    seed_skus(clean_engine, {"A": 5})
    paid, refunded = seed_orders(clean_engine, 2)
    reserve(clean_engine, paid, [Line("A", 2)])
    reserve(clean_engine, refunded, [Line("A", 1)])

    assert in_txn(clean_engine, lambda s: inventory.commit(s, paid)) == 1
    assert in_txn(clean_engine, lambda s: inventory.commit(s, paid)) == 0
    assert counts(clean_engine, "A") == (5, 1, 2)
    # A committed order is no longer held: release does nothing to it.
    assert in_txn(clean_engine, lambda s: inventory.release(s, paid)) == 0

    # Shopify accepted it and now says 3: committed drops and that level lands together, so
    # sellable stays 2.
    after = {"A": (3, LATER)}
    assert in_txn(clean_engine, lambda s: inventory.acknowledge(s, paid, after)) == 1
    assert in_txn(clean_engine, lambda s: inventory.acknowledge(s, paid, after)) == 0
    assert counts(clean_engine, "A") == (3, 1, 0) and level(clean_engine, "A").sellable == 2
    assert statuses(clean_engine, paid) == [("A", "fulfilled", 2)]

    # Refunded before the Shopify push: the committed unit is sellable again.
    in_txn(clean_engine, lambda s: inventory.commit(s, refunded))
    assert counts(clean_engine, "A") == (3, 0, 1)
    assert in_txn(clean_engine, lambda s: inventory.release_committed(s, refunded)) == 1
    assert in_txn(clean_engine, lambda s: inventory.release_committed(s, refunded)) == 0
    assert counts(clean_engine, "A") == (3, 0, 0)
    assert statuses(clean_engine, refunded) == [("A", "released", 1)]


def test_acknowledge_after_shopify_webhook_does_not_count_the_order_twice(
    clean_engine: Engine,
) -> None:
    seed_skus(clean_engine, {"A": 5})
    (paid,) = seed_orders(clean_engine, 1)
    reserve(clean_engine, paid, [Line("A", 2)])
    in_txn(clean_engine, lambda s: inventory.commit(s, paid))
    # Shopify's inventory webhook (5 - 2 = 3) wins the race against our acknowledgement.
    in_txn(clean_engine, lambda s: inventory.apply_shopify_level(s, "A", 3, LATER))
    assert counts(clean_engine, "A") == (3, 0, 2)
    # The level read after the push is the same (or older): it changes nothing more.
    older = {"A": (3, LATER - timedelta(seconds=1))}
    assert in_txn(clean_engine, lambda s: inventory.acknowledge(s, paid, older)) == 1
    assert counts(clean_engine, "A") == (3, 0, 0) and level(clean_engine, "A").sellable == 3


# ---------------------------------------------------------------------------------- expiry


def test_expire_due_releases_only_due_holds_once(clean_engine: Engine) -> None:
    seed_skus(clean_engine, {"A": 10})
    due, fresh = seed_orders(clean_engine, 2)
    reserve(clean_engine, due, [Line("A", 3)], expires=T0)
    reserve(clean_engine, fresh, [Line("A", 2)], expires=LATER)

    assert in_txn(clean_engine, lambda s: inventory.expire_due(s, T0)) == [due]
    assert in_txn(clean_engine, lambda s: inventory.expire_due(s, T0)) == []
    assert statuses(clean_engine, due) == [("A", "expired", 3)]
    assert statuses(clean_engine, fresh) == [("A", "held", 2)]
    assert counts(clean_engine, "A") == (10, 2, 0)


def test_two_concurrent_sweepers_release_each_hold_exactly_once(clean_engine: Engine) -> None:
    seed_skus(clean_engine, {"A": 100, "B": 100})
    orders = seed_orders(clean_engine, 40)
    for i, order in enumerate(orders):
        lines = [Line("A", 1)] + ([Line("B", 2)] if i % 2 else [])
        reserve(clean_engine, order, lines, expires=T0 - timedelta(seconds=i))
    barrier = threading.Barrier(2)
    swept: list[list[str]] = [[], []]

    def sweeper(k: int) -> None:
        barrier.wait(timeout=30)
        while True:
            with Session(clean_engine) as s, s.begin():
                batch = inventory.expire_due(s, T0, limit=3)
                time.sleep(0.002)  # keep the claim open so the other sweeper must skip it
            if not batch:
                return
            swept[k].extend(batch)

    threads = [threading.Thread(target=sweeper, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)

    # Each order's holds were claimed by exactly one sweeper (an order with two SKUs may come
    # back in two batches of the same or the other sweeper, but never releases twice).
    assert set(swept[0]) | set(swept[1]) == set(orders)
    assert swept[0] and swept[1], "both sweepers did some of the work"
    assert counts(clean_engine, "A") == (100, 0, 0) and counts(clean_engine, "B") == (100, 0, 0)
    with clean_engine.connect() as conn:
        left = conn.execute(text("SELECT count(*) FROM reservation WHERE status <> 'expired'"))
        assert left.scalar_one() == 0
    assert violations(clean_engine) == 0


def test_expire_due_skips_an_order_being_paid(clean_engine: Engine) -> None:
    """The payment path locks the order first; a sweeper must not wait on it (or deadlock)."""
    seed_skus(clean_engine, {"A": 5})
    busy, idle = seed_orders(clean_engine, 2)
    reserve(clean_engine, busy, [Line("A", 1)], expires=T0)
    reserve(clean_engine, idle, [Line("A", 1)], expires=T0)

    with Session(clean_engine) as payer, payer.begin():
        payer.execute(text("SELECT 1 FROM orders WHERE id = :id FOR UPDATE"), {"id": busy})
        started = time.monotonic()
        assert in_txn(clean_engine, lambda s: inventory.expire_due(s, T0)) == [idle]
        assert time.monotonic() - started < 5
        assert inventory.commit(payer, busy) == 1  # the hold was still there to commit
    assert counts(clean_engine, "A") == (5, 0, 1)


# ------------------------------------------------------------------- payment after expiry


def test_payment_after_expiry_rereserves_when_stock_allows(clean_engine: Engine) -> None:
    seed_skus(clean_engine, {"A": 5, "B": 5})
    (order,) = seed_orders(clean_engine)
    reserve(clean_engine, order, [Line("A", 2), Line("B", 1)], expires=T0)
    in_txn(clean_engine, lambda s: inventory.expire_due(s, T0))

    assert in_txn(clean_engine, lambda s: inventory.commit(s, order)) == 0
    assert in_txn(clean_engine, lambda s: inventory.rereserve_and_commit(s, order)) is True
    assert statuses(clean_engine, order) == [("A", "committed", 2), ("B", "committed", 1)]
    assert counts(clean_engine, "A") == (5, 0, 2) and counts(clean_engine, "B") == (5, 0, 1)
    # A replay finds nothing left to take and takes nothing.
    assert in_txn(clean_engine, lambda s: inventory.rereserve_and_commit(s, order)) is True
    assert counts(clean_engine, "A") == (5, 0, 2)


def test_payment_after_expiry_refuses_without_changing_anything(clean_engine: Engine) -> None:
    seed_skus(clean_engine, {"A": 5, "B": 5})
    late, other = seed_orders(clean_engine, 2)
    reserve(clean_engine, late, [Line("A", 2), Line("B", 2)], expires=T0)
    in_txn(clean_engine, lambda s: inventory.release(s, late))
    reserve(clean_engine, other, [Line("B", 4)])  # B sold to someone else meanwhile

    assert in_txn(clean_engine, lambda s: inventory.rereserve_and_commit(s, late)) is False
    assert statuses(clean_engine, late) == [("A", "released", 2), ("B", "released", 2)]
    assert counts(clean_engine, "A") == (5, 0, 0)  # A was takeable, but all or nothing
    assert counts(clean_engine, "B") == (5, 4, 0)


# --------------------------------------------------------------------------- Shopify levels


def test_a_stale_shopify_level_is_ignored(clean_engine: Engine) -> None:
    seed_skus(clean_engine, {"A": 5})
    newer, older = T0 + timedelta(minutes=2), T0 + timedelta(minutes=1)

    assert in_txn(clean_engine, lambda s: inventory.apply_shopify_level(s, "A", 7, newer))
    assert not in_txn(clean_engine, lambda s: inventory.apply_shopify_level(s, "A", 1, older))
    snap = level(clean_engine, "A")
    assert (snap.shopify_available, snap.shopify_updated_at) == (7, newer)


def test_a_level_with_the_same_second_never_raises_stock(clean_engine: Engine) -> None:
    """Shopify's updated_at has whole seconds and its webhooks arrive in any order: of two
    levels stamped with the same second, the lower one is kept, whichever came last."""
    seed_skus(clean_engine, {"A": 5, "B": 5})
    t1 = T0 + timedelta(minutes=1)
    assert in_txn(clean_engine, lambda s: inventory.apply_shopify_level(s, "A", 9, t1))
    assert not in_txn(clean_engine, lambda s: inventory.apply_shopify_level(s, "A", 10, t1))
    assert counts(clean_engine, "A") == (9, 0, 0)
    assert in_txn(clean_engine, lambda s: inventory.apply_shopify_level(s, "B", 10, t1))
    assert in_txn(clean_engine, lambda s: inventory.apply_shopify_level(s, "B", 9, t1))
    assert counts(clean_engine, "B") == (9, 0, 0)


def test_acknowledge_applies_the_levels_it_read_even_when_nothing_moves(
    clean_engine: Engine,
) -> None:
    """A retried acknowledgement (the first one committed) still lands Shopify's fresh level."""
    seed_skus(clean_engine, {"A": 5})
    (paid,) = seed_orders(clean_engine, 1)
    reserve(clean_engine, paid, [Line("A", 2)])
    in_txn(clean_engine, lambda s: inventory.commit(s, paid))
    assert in_txn(clean_engine, lambda s: inventory.acknowledge(s, paid, {"A": (3, LATER)})) == 1
    newer = {"A": (2, LATER + timedelta(seconds=1))}
    assert in_txn(clean_engine, lambda s: inventory.acknowledge(s, paid, newer)) == 0
    assert counts(clean_engine, "A") == (2, 0, 0)


def test_the_catalog_loader_creates_stock_rows(clean_engine: Engine) -> None:
    seed_skus(clean_engine, {"A": 0})
    with clean_engine.begin() as conn:
        conn.execute(text("DELETE FROM stock"))
    assert in_txn(clean_engine, lambda s: inventory.apply_shopify_level(s, "A", 9, T0))
    assert counts(clean_engine, "A") == (9, 0, 0)
    assert in_txn(clean_engine, lambda s: inventory.stock_snapshot(s, "nope")) is None


def test_shopify_below_what_we_promised_sets_a_shortfall_and_blocks_reserves(
    clean_engine: Engine,
) -> None:
    seed_skus(clean_engine, {"A": 5})
    paid, held, late = seed_orders(clean_engine, 3)
    reserve(clean_engine, paid, [Line("A", 3)])
    in_txn(clean_engine, lambda s: inventory.commit(s, paid))
    reserve(clean_engine, held, [Line("A", 1)])
    t1, t2, t3 = (T0 + timedelta(minutes=m) for m in (1, 2, 3))

    # Another channel sold 3: Shopify says 2, we promised 4.
    assert in_txn(clean_engine, lambda s: inventory.apply_shopify_level(s, "A", 2, t1))
    snap = level(clean_engine, "A")
    assert (snap.sellable, snap.shortfall_since) == (-2, t1)
    assert in_txn(clean_engine, lambda s: inventory.sellable(s, ["A"])) == {"A": 0}
    with pytest.raises(InsufficientStock) as caught:
        reserve(clean_engine, late, [Line("A", 1)])
    assert caught.value.details["skus"] == [{"sku": "A", "requested": 1, "available": 0}]

    # Still short later: the oldest time is kept.
    in_txn(clean_engine, lambda s: inventory.apply_shopify_level(s, "A", 3, t2))
    assert level(clean_engine, "A").shortfall_since == t1
    # Releasing the hold covers it again (3 available, 3 committed): the shortfall clears.
    in_txn(clean_engine, lambda s: inventory.release(s, held))
    assert level(clean_engine, "A").shortfall_since is None
    # Restocked: sellable again.
    in_txn(clean_engine, lambda s: inventory.apply_shopify_level(s, "A", 6, t3))
    assert (level(clean_engine, "A").sellable, level(clean_engine, "A").shortfall_since) == (
        3,
        None,
    )
    assert reserve(clean_engine, late, [Line("A", 1)])
    assert violations(clean_engine) == 0
