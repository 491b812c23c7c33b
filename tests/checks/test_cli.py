"""`dotshop checks run --once` (CONTRACT.md): a short summary of the open violations (check,
subject, money, since); exit 0 when none is open, 1 when one is, 2 on bad usage."""

from __future__ import annotations

from sqlalchemy import Engine

from core import orders, payments
from core.db import transaction
from tests.checks.support import shop_fixture  # noqa: F401
from tests.core.shopify_support import Shop, paid_order
from tests.dotshop.test_cli import dotshop
from tests.processes import Process


def env(db_url: str, sandbox: Process) -> dict[str, str]:
    return {
        "DATABASE_URL": db_url,
        "DOTSHOP_GRACE_SECONDS": "0",
        "STRIPE_API_BASE": sandbox.urls["stripe"],
        "STRIPE_API_KEY": "sk_test_dotshop_sandbox",
        "SHOPIFY_SITE": f"{sandbox.urls['shopify']}/admin/api/2025-01",
        "SHOPIFY_ACCESS_TOKEN": "shpat_dotshop_sandbox",
    }


def test_once_exits_0_when_clean_and_1_with_the_violation_listed(
    shop: Shop, clean_engine: Engine, db_url: str, sandbox: Process
) -> None:
    clean = dotshop("checks", "run", "--once", **env(db_url, sandbox))
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert clean.stdout == ""
    assert ": ok, 0 open violation(s)" in clean.stderr

    order_id = paid_order(clean_engine, {"BTY-SERUM-30ML": 1})
    with transaction(clean_engine) as session:
        orders.flag(
            session,
            order_id,
            payments.PAYMENT_MISMATCH,
            {"received_amount": 1500, "received_currency": "eur"},
        )
    flagged = dotshop("checks", "run", "--once", "--check", "order_flag", **env(db_url, sandbox))
    assert flagged.returncode == 1, flagged.stderr
    (line,) = flagged.stdout.splitlines()
    assert line.startswith(f"order_flag  {order_id}:payment_mismatch  1500 eur  since 20")


def test_bad_usage_exits_2(db_url: str, sandbox: Process) -> None:
    unknown = dotshop("checks", "run", "--once", "--check", "nope", **env(db_url, sandbox))
    assert unknown.returncode == 2 and "unknown check(s): nope" in unknown.stderr
    scheduled = dotshop("checks", "run", "--check", "oversell", **env(db_url, sandbox))
    assert scheduled.returncode == 2 and "--check needs --once" in scheduled.stderr
