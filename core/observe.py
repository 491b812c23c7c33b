"""Business gauges read from the database when /metrics is scraped."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from core import inventory, metrics, outbox_report, payments, refunds, revalidate, sync_lag
from core.models import Product, Reservation, Stock, Variant, Violation

# Label sets reported before in this process: set back to 0 when their last violation
# resolves, so a graph drops to 0 instead of ending.
_seen_checks: set[str] = set()
_seen_amounts: set[tuple[str, str]] = set()
# Every topic our code writes reads 0 from the first scrape, so an empty outbox shows as 0, not
# as no data (one the list misses still appears once it has undelivered messages).
KNOWN_TOPICS = (
    inventory.SHOPIFY_HOLD,
    inventory.SHOPIFY_UNHOLD,
    payments.CANCEL_PAYMENT_INTENT,
    payments.BOOK_BALANCE,
    payments.PUSH_ORDER_TO_SHOPIFY,
    refunds.REFUND,
    revalidate.TOPIC,
)
_seen_topics: set[str] = set(KNOWN_TOPICS)
UNCATEGORIZED = "uncategorized"


def refresh_business_gauges(engine: Engine) -> None:
    with Session(engine) as session:
        # A SKU in shortfall (Shopify sold what we promised) has nothing to sell, not less.
        sellable = func.greatest(Stock.shopify_available - Stock.reserved - Stock.committed, 0)
        category = func.coalesce(Product.category, UNCATEGORIZED)
        per_class = session.execute(
            select(
                category,
                func.sum(sellable),
                func.sum(Stock.reserved),
                func.sum(Stock.committed),
                func.count().filter(sellable == 0),
            )
            .join(Variant, Variant.sku == Stock.sku)
            .join(Product, Product.id == Variant.product_id)
            .group_by(category)
        ).all()
        holds = session.scalar(
            select(func.count()).select_from(Reservation).where(Reservation.status == "held")
        )
        outbox = outbox_report.summary(session)
        open_violations = session.execute(
            select(
                Violation.check_name,
                Violation.currency,
                func.count(),
                func.coalesce(func.sum(Violation.amount_minor), 0),
            )
            .where(Violation.resolved_at.is_(None))
            .group_by(Violation.check_name, Violation.currency)
        ).all()
    _stock_gauges(per_class)
    metrics.ACTIVE_RESERVATIONS.set(holds or 0)
    _outbox_gauges(outbox)
    _violation_gauges(open_violations)
    sync_lag.export_metrics(engine)


def _stock_gauges(per_class: list[Any]) -> None:
    """Units per SKU class and state, and their sums over every SKU."""
    totals = [0, 0, 0, 0]
    for category, *counts in per_class:
        for state, units in zip(("sellable", "reserved", "committed"), counts, strict=False):
            metrics.STOCK_UNITS.labels(category=category, state=state).set(units)
        totals = [t + int(c) for t, c in zip(totals, counts, strict=True)]
    sellable, reserved, committed, sold_out = totals
    metrics.SELLABLE_UNITS.set(sellable)
    metrics.RESERVED_UNITS.set(reserved)
    metrics.COMMITTED_UNITS.set(committed)
    metrics.SOLD_OUT_SKUS.set(sold_out)


def _outbox_gauges(topics: list[outbox_report.TopicSummary]) -> None:
    """Per topic; a topic whose messages all went out reads 0."""
    for topic in _seen_topics - {t.topic for t in topics}:
        metrics.OUTBOX_PENDING.labels(topic=topic).set(0)
        metrics.OUTBOX_OLDEST_AGE.labels(topic=topic).set(0)
        metrics.OUTBOX_DEAD.labels(topic=topic).set(0)
    for t in topics:
        metrics.OUTBOX_PENDING.labels(topic=t.topic).set(t.pending)
        metrics.OUTBOX_OLDEST_AGE.labels(topic=t.topic).set(t.oldest_pending_age_seconds)
        metrics.OUTBOX_DEAD.labels(topic=t.topic).set(t.dead)
    _seen_topics.update(t.topic for t in topics)


def _violation_gauges(rows: list[Any]) -> None:
    """Open violations per check, money at stake per check and currency (a violation the check
    cannot price counts in the first and not the second)."""
    counts: dict[str, int] = dict.fromkeys(_seen_checks, 0)
    amounts: dict[tuple[str, str], int] = dict.fromkeys(_seen_amounts, 0)
    for check, currency, count, amount in rows:
        counts[check] = counts.get(check, 0) + count
        if currency is not None:
            amounts[(check, currency)] = int(amount)
    for check, count in counts.items():
        metrics.VIOLATIONS_OPEN.labels(check=check).set(count)
    for (check, currency), amount in amounts.items():
        metrics.VIOLATION_AMOUNT.labels(check=check, currency=currency).set(amount)
    _seen_checks.update(counts)
    _seen_amounts.update(amounts)
