"""Correctness, checked against the database once the load has stopped: whatever the speed,
no SKU is oversold and every order a client was told about exists exactly once."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, text

from dotshop.bench import flow
from dotshop.bench.openloop import CONNECTIONS
from dotshop.bench.results import ArmResult

NEGATIVE_SELLABLE = text(
    "SELECT count(*) FROM stock "
    "WHERE shopify_available - reserved - committed < 0 OR shortfall_since IS NOT NULL"
)
SELLOUT = text(
    "SELECT s.shopify_available - s.reserved - s.committed AS sellable, s.reserved, "
    "  (SELECT coalesce(sum(r.quantity), 0) FROM reservation r "
    "   WHERE r.sku = s.sku AND r.status = 'held') AS held "
    "FROM stock s WHERE s.sku = :sku"
)
ORDERS_BY_EMAIL = text("SELECT email, count(*) AS n FROM orders GROUP BY email")


def created(arm: ArmResult) -> int:
    return arm.statuses.get("201", 0)


def check(
    engine: Engine,
    arms: list[ArmResult],
    emails: dict[int, str],
    *,
    sellout_sku: str,
    sellout_stock: int,
) -> dict[str, dict[str, Any]]:
    """Named checks, each {"ok": bool, ...details}. `emails` maps id(arm) to the email its
    orders carry."""
    with engine.connect() as conn:
        negative = conn.execute(NEGATIVE_SELLABLE).scalar_one()
        sellout = conn.execute(SELLOUT, {"sku": sellout_sku}).one()
        orders = {r.email: r.n for r in conn.execute(ORDERS_BY_EMAIL)}
    oversell_arm = next((a for a in arms if a.arm == "oversell"), None)
    e2e = [a for a in arms if a.arm == "e2e"]
    paid, pushed = flow.wait_pushed(engine)
    # A load generator stops counting at its deadline; requests then in flight (at most one
    # per connection) still commit. More orders than that, or fewer than answered, is a bug.
    mismatched = {
        f"{a.arm}/{a.target}/{a.clients}": {"answered_201": created(a), "in_db": orders.get(e, 0)}
        for a in arms
        if (e := emails.get(id(a))) is not None
        and not created(a) <= orders.get(e, 0) <= created(a) + (a.clients or CONNECTIONS)
    }
    return {
        "no_oversell": {
            "ok": negative == 0
            and sellout.sellable == 0
            and sellout.reserved == sellout.held == sellout_stock
            and oversell_arm is not None
            and created(oversell_arm) <= sellout_stock,
            "rows_below_zero": negative,
            "sellout_stock": sellout_stock,
            "sellout_reserved": sellout.reserved,
            "sellout_held": int(sellout.held),
            "sellout_sold": created(oversell_arm) if oversell_arm else None,
        },
        "orders_match_answers": {"ok": not mismatched, "mismatched": mismatched},
        # By the end of the run the relay has pushed every paid order to Shopify (at Shopify's
        # rate limit: the end-to-end arm runs first, so the others give it time).
        "paid_orders_pushed": {
            "ok": bool(e2e) and paid == pushed == sum(a.extra["paid"] for a in e2e),
            "paid": paid,
            "pushed_to_shopify": pushed,
        },
        "no_errors": {
            "ok": all(a.errors == 0 for a in arms),
            "arms_with_errors": {
                f"{a.arm}/{a.target}/{a.clients}": a.errors for a in arms if a.errors
            },
        },
        "every_arm_ran": {
            "ok": all(a.requests > 0 for a in arms),
            "empty": [f"{a.arm}/{a.target}/{a.clients}" for a in arms if a.requests == 0],
        },
    }
