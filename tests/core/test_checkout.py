"""Checkout's atomic phases against a real sandbox Stripe process and a real PostgreSQL: a crash
or an outage between phases resumes at `order_created` with the same order, the same hold and
the same PaymentIntent; final answers are stored and replayed byte for byte."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from core import catalog, inventory, orders, payments, sweeper
from core.catalog import ProductData, VariantData
from core.checkout import (
    CHECKOUT_PATH,
    CHECKOUT_SCOPE,
    ORDER_CREATED,
    CheckoutRequest,
    _begin_and_reserve,
    create_checkout,
)
from core.db import transaction
from core.errors import ProviderUnavailable
from core.idempotency import Answer, KeyRecord, begin, new_key, unlock
from core.models import IdempotencyKey, Order, OutboxMessage
from core.settings import Settings
from core.stripe_gateway import PaymentIntentRef, StripeGateway

T0 = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
UNIT_PRICE = 2500
# The sandbox, like Stripe, refuses amounts above 99,999,999 minor units (amount_too_large).
TOO_DEAR = 60_000_000
EMAIL = "buyer@example.com"
ADDRESS = {"line1": "1 Main St", "city": "Springfield", "country": "US"}
_numbers = itertools.count(1)


class Crashed(Exception):
    """The process died (here: raised) after Stripe answered, before we recorded the answer."""


class CrashAfterStripe:
    """Fault injection around the real gateway: Stripe really creates the PaymentIntent, then
    the "process" dies before the phase that records it."""

    def __init__(self, real: StripeGateway) -> None:
        self.real = real
        self.created: list[PaymentIntentRef] = []

    def create_payment_intent(self, **params: Any) -> PaymentIntentRef:
        self.created.append(self.real.create_payment_intent(**params))
        raise Crashed("crashed between Stripe's answer and recording it")


# ------------------------------------------------------------------------------- fixtures


@pytest.fixture
def outage(stripe_base: str) -> Iterator[Any]:
    """Turn Stripe faults on (`outage(error_rate=1.0, ...)`); always off again afterwards."""

    def configure(**config: Any) -> None:
        response = httpx.post(f"{stripe_base}/_sandbox/faults", json=config, timeout=10)
        assert response.status_code == 200, response.text

    try:
        yield configure
    finally:
        configure(error_rate=0.0, error_phase="before")


# -------------------------------------------------------------------------------- helpers


def seed_sku(
    engine: Engine, available: int, price: int = UNIT_PRICE, eur_price: int | None = None
) -> str:
    n = next(_numbers)
    prices = {"usd": price} | ({"eur": eur_price} if eur_price is not None else {})
    sku = f"CHK-{n:04d}"
    with transaction(engine) as s:
        catalog.upsert_product(
            s,
            ProductData(
                shopify_product_id=10_000 + n,
                handle=f"checkout-{n}",
                title=f"Checkout product {n}",
                updated_at=T0,
                variants=[VariantData(sku, sku, 10_000 + n, 10_000 + n, prices)],
            ),
        )
        inventory.apply_shopify_level(s, sku, available, T0)
    return sku


def checkout(
    engine: Engine, gateway: Any, settings: Settings, key: str, lines: dict[str, int]
) -> Answer:
    body = json.dumps(
        {
            "email": EMAIL,
            "lines": [{"sku": sku, "quantity": qty} for sku, qty in lines.items()],
            "shipping_address": ADDRESS,
        }
    ).encode()
    request = CheckoutRequest(
        EMAIL, [inventory.Line(sku, qty) for sku, qty in lines.items()], ADDRESS
    )
    return create_checkout(
        engine, gateway, settings, idempotency_key=key, body=body, request=request
    )


def key_row(engine: Engine, key: str) -> IdempotencyKey:
    with Session(engine) as s:
        row = s.scalar(select(IdempotencyKey).where(IdempotencyKey.key == key))
    assert row is not None
    return row


def stock(engine: Engine, sku: str) -> tuple[int, int, int]:
    with Session(engine) as s:
        level = inventory.stock_snapshot(s, sku)
    assert level is not None
    return level.reserved, level.committed, level.sellable


def order_count(engine: Engine) -> int:
    with Session(engine) as s:
        return s.scalar(select(func.count()).select_from(Order))


def stripe_intents(stripe_base: str, order_id: str) -> list[dict[str, Any]]:
    """The sandbox's PaymentIntents made for one of our orders."""
    state = httpx.get(f"{stripe_base}/_sandbox/state", timeout=10).json()
    return [
        pi
        for pi in state["payment_intents"]
        if (pi.get("metadata") or {}).get("order_id") == order_id
    ]


def assert_replayed(
    engine: Engine, gateway: Any, settings: Settings, key: str, first: Answer, lines: dict
) -> None:
    again = checkout(engine, gateway, settings, key, lines)
    assert (again.status, again.body, again.replayed) == (first.status, first.body, True)


# ---------------------------------------------------------------------------------- tests


def test_crash_after_stripe_created_the_intent_resumes_with_the_same_intent(
    clean_engine: Engine, gateway: StripeGateway, settings: Settings, stripe_base: str
) -> None:
    sku = seed_sku(clean_engine, available=5)
    crashing = CrashAfterStripe(gateway)

    with pytest.raises(Crashed):
        checkout(clean_engine, crashing, settings, "checkout-key-crash-0001", {sku: 2})

    row = key_row(clean_engine, "checkout-key-crash-0001")
    assert (row.recovery_point, row.locked_at) == (ORDER_CREATED, None)
    order_id = row.state["order_id"]
    (created,) = crashing.created
    with Session(clean_engine) as s:
        order = s.get(Order, order_id)
        assert (order.status, order.payment_intent_id) == (orders.AWAITING_PAYMENT, None)
    assert stock(clean_engine, sku) == (2, 0, 3)
    assert [pi["id"] for pi in stripe_intents(stripe_base, order_id)] == [created.id]

    done = checkout(clean_engine, gateway, settings, "checkout-key-crash-0001", {sku: 2})

    assert (done.status, done.replayed) == (201, False)
    body = json.loads(done.body)
    assert body["order_id"] == order_id
    assert body["payment"]["payment_intent_id"] == created.id
    assert body["payment"]["client_secret"] == created.client_secret
    assert (body["status"], body["amount"], body["currency"]) == ("awaiting_payment", 5000, "usd")
    assert body["lines"] == [{"sku": sku, "quantity": 2}]
    (pi,) = stripe_intents(stripe_base, order_id)
    assert (pi["id"], pi["amount"], pi["currency"]) == (created.id, 5000, "usd")
    assert order_count(clean_engine) == 1
    assert stock(clean_engine, sku) == (2, 0, 3)  # held once
    with Session(clean_engine) as s:
        assert s.get(Order, order_id).payment_intent_id == created.id
        assert [h.status for h in inventory.holds(s, order_id)] == [inventory.HELD]
    row = key_row(clean_engine, "checkout-key-crash-0001")
    assert (row.recovery_point, row.locked_at, row.response_status) == ("finished", None, 201)
    assert_replayed(clean_engine, gateway, settings, "checkout-key-crash-0001", done, {sku: 2})


def test_a_retry_in_the_other_region_resumes_the_same_checkout(
    clean_engine: Engine, gateway: StripeGateway, settings: Settings, stripe_base: str
) -> None:
    """CONTRACT.md: a key is the storefront's, not a region's. A shopper whose `us` request
    died after Stripe made the PaymentIntent fails over to `eu` with the same key and body: the
    `eu` process resumes that checkout (its usd amount, its PaymentIntent), it makes no second
    order in eur."""
    sku = seed_sku(clean_engine, available=5, eur_price=2300)
    crashing = CrashAfterStripe(gateway)
    with pytest.raises(Crashed):
        checkout(clean_engine, crashing, settings, "checkout-key-failover-0001", {sku: 1})
    order_id = key_row(clean_engine, "checkout-key-failover-0001").state["order_id"]
    eu = settings.model_copy(update={"region": "eu"})

    done = checkout(clean_engine, gateway, eu, "checkout-key-failover-0001", {sku: 1})

    assert (done.status, done.replayed) == (201, False)
    body = json.loads(done.body)
    assert (body["order_id"], body["amount"], body["currency"]) == (order_id, 2500, "usd")
    (created,) = crashing.created
    assert body["payment"]["payment_intent_id"] == created.id
    assert [pi["id"] for pi in stripe_intents(stripe_base, order_id)] == [created.id]
    assert order_count(clean_engine) == 1
    assert stock(clean_engine, sku) == (1, 0, 4)
    # Back in `us`, the same key replays what `eu` stored.
    assert_replayed(clean_engine, gateway, settings, "checkout-key-failover-0001", done, {sku: 1})


@pytest.mark.parametrize("phase", ["before", "after"])
def test_stripe_outage_leaves_the_hold_and_the_retry_succeeds(
    clean_engine: Engine,
    gateway: StripeGateway,
    settings: Settings,
    stripe_base: str,
    outage: Any,
    phase: str,
) -> None:
    # "after": Stripe created the PaymentIntent but its answer was lost on the way back.
    sku = seed_sku(clean_engine, available=3)
    outage(error_rate=1.0, error_status=503, error_phase=phase)

    with pytest.raises(ProviderUnavailable):
        checkout(clean_engine, gateway, settings, f"checkout-key-outage-{phase}", {sku: 1})

    row = key_row(clean_engine, f"checkout-key-outage-{phase}")
    assert (row.recovery_point, row.locked_at, row.response_status) == (ORDER_CREATED, None, None)
    order_id = row.state["order_id"]
    with Session(clean_engine) as s:
        assert s.get(Order, order_id).status == orders.AWAITING_PAYMENT
    assert stock(clean_engine, sku) == (1, 0, 2)
    made_during_outage = [pi["id"] for pi in stripe_intents(stripe_base, order_id)]
    assert len(made_during_outage) == (1 if phase == "after" else 0)

    outage(error_rate=0.0)
    done = checkout(clean_engine, gateway, settings, f"checkout-key-outage-{phase}", {sku: 1})

    assert (done.status, done.replayed) == (201, False)
    body = json.loads(done.body)
    assert body["order_id"] == order_id
    intents = [pi["id"] for pi in stripe_intents(stripe_base, order_id)]
    assert intents == [body["payment"]["payment_intent_id"]]
    if made_during_outage:
        assert intents == made_during_outage
    assert order_count(clean_engine) == 1
    assert stock(clean_engine, sku) == (1, 0, 2)
    assert_replayed(clean_engine, gateway, settings, f"checkout-key-outage-{phase}", done, {sku: 1})


def test_an_outage_outlasting_the_hold_ends_as_checkout_expired(
    clean_engine: Engine,
    gateway: StripeGateway,
    settings: Settings,
    stripe_base: str,
    outage: Any,
) -> None:
    sku = seed_sku(clean_engine, available=2)
    outage(error_rate=1.0, error_status=503)
    with pytest.raises(ProviderUnavailable):
        checkout(clean_engine, gateway, settings, "checkout-key-late-0001", {sku: 2})
    outage(error_rate=0.0)
    order_id = key_row(clean_engine, "checkout-key-late-0001").state["order_id"]
    later = datetime.now(UTC) + timedelta(seconds=settings.reservation_ttl + 60)
    assert sweeper.expire_holds(clean_engine, later) == 1
    assert stock(clean_engine, sku) == (0, 0, 2)

    late = checkout(clean_engine, gateway, settings, "checkout-key-late-0001", {sku: 2})

    assert late.status == 409
    assert json.loads(late.body)["error"]["code"] == "checkout_expired"
    (pi,) = stripe_intents(stripe_base, order_id)
    with Session(clean_engine) as s:
        order = s.get(Order, order_id)
        assert (order.status, order.cancel_reason) == (orders.CANCELLED, "expired")
        assert order.payment_intent_id == pi["id"]  # a late webhook still finds the order
        cancel = s.scalars(
            select(OutboxMessage.payload).where(
                OutboxMessage.topic == payments.CANCEL_PAYMENT_INTENT
            )
        ).all()
    assert cancel == [{"order_id": order_id, "payment_intent_id": pi["id"]}]
    assert stock(clean_engine, sku) == (0, 0, 2)
    assert_replayed(clean_engine, gateway, settings, "checkout-key-late-0001", late, {sku: 2})


def test_stripe_refusal_is_a_stored_502_and_releases_the_hold(
    clean_engine: Engine, gateway: StripeGateway, settings: Settings, stripe_base: str
) -> None:
    sku = seed_sku(clean_engine, available=4, price=TOO_DEAR)

    refused = checkout(clean_engine, gateway, settings, "checkout-key-refused-0001", {sku: 2})

    assert (refused.status, refused.replayed) == (502, False)
    error = json.loads(refused.body)["error"]
    assert (error["code"], error["stripe_code"]) == ("payment_provider_error", "amount_too_large")
    row = key_row(clean_engine, "checkout-key-refused-0001")
    assert (row.recovery_point, row.locked_at) == ("finished", None)
    order_id = row.state["order_id"]
    with Session(clean_engine) as s:
        order = s.get(Order, order_id)
        assert (order.status, order.cancel_reason) == (orders.CANCELLED, "payment_provider_error")
        assert [h.status for h in inventory.holds(s, order_id)] == [inventory.RELEASED]
    assert stock(clean_engine, sku) == (0, 0, 4)
    assert stripe_intents(stripe_base, order_id) == []
    assert_replayed(clean_engine, gateway, settings, "checkout-key-refused-0001", refused, {sku: 2})
    assert stock(clean_engine, sku) == (0, 0, 4)


def test_insufficient_stock_is_a_stored_409_replayed_byte_for_byte(
    clean_engine: Engine, gateway: StripeGateway, settings: Settings
) -> None:
    sku = seed_sku(clean_engine, available=1)

    short = checkout(clean_engine, gateway, settings, "checkout-key-short-0001", {sku: 2})

    assert (short.status, short.replayed) == (409, False)
    error = json.loads(short.body)["error"]
    assert error["code"] == "insufficient_stock"
    assert error["skus"] == [{"sku": sku, "requested": 2, "available": 1}]
    assert order_count(clean_engine) == 0
    assert stock(clean_engine, sku) == (0, 0, 1)
    # Stock arriving later does not change a stored answer.
    with transaction(clean_engine) as s:
        inventory.apply_shopify_level(s, sku, 10, T0.replace(hour=13))
    assert_replayed(clean_engine, gateway, settings, "checkout-key-short-0001", short, {sku: 2})
    assert order_count(clean_engine) == 0


def test_unknown_sku_is_a_stored_404_replayed_byte_for_byte(
    clean_engine: Engine, gateway: StripeGateway, settings: Settings
) -> None:
    known = seed_sku(clean_engine, available=5)

    unknown = checkout(
        clean_engine, gateway, settings, "checkout-key-unknown-0001", {known: 1, "NOPE-1": 1}
    )

    assert (unknown.status, unknown.replayed) == (404, False)
    error = json.loads(unknown.body)["error"]
    assert (error["code"], error["skus"]) == ("unknown_sku", ["NOPE-1"])
    assert order_count(clean_engine) == 0
    assert stock(clean_engine, known) == (0, 0, 5)
    assert_replayed(
        clean_engine,
        gateway,
        settings,
        "checkout-key-unknown-0001",
        unknown,
        {known: 1, "NOPE-1": 1},
    )


def test_a_refused_stripe_key_keeps_the_hold_and_answers_retry_later(
    clean_engine: Engine, gateway: StripeGateway, settings: Settings, stripe_base: str
) -> None:
    sku = seed_sku(clean_engine, available=2)
    wrong_key = StripeGateway("sk_test_revoked", stripe_base, timeout=5, max_network_retries=0)
    with pytest.raises(ProviderUnavailable):
        checkout(clean_engine, wrong_key, settings, "checkout-key-bad-credentials-0001", {sku: 1})
    row = key_row(clean_engine, "checkout-key-bad-credentials-0001")
    assert (row.recovery_point, row.locked_at) == (ORDER_CREATED, None)
    assert stock(clean_engine, sku) == (1, 0, 1)
    # The operator fixes the key; the client's retry completes the same checkout.
    done = checkout(clean_engine, gateway, settings, "checkout-key-bad-credentials-0001", {sku: 1})
    assert done.status == 201 and json.loads(done.body)["order_id"] == row.state["order_id"]


def _key_writes(conn: Any) -> tuple[int, int]:
    """Rows inserted and updated in idempotency_key by this backend and not yet reported to
    the statistics collector (this transaction's, and maybe earlier ones': compare two)."""
    return conn.exec_driver_sql(
        "SELECT n_tup_ins, n_tup_upd FROM pg_stat_xact_user_tables"
        " WHERE relname = 'idempotency_key'"
    ).one()


def test_phase_one_inserts_a_new_key_at_order_created_without_rewriting_it(
    engine: Engine, settings: Settings
) -> None:
    """Migration 0011: a new key is inserted already at `order_created` with the order's facts
    (every key update is a new row version in four indexes); a key whose SKU is unknown is
    inserted at `started` and then finished with its 404, as before."""
    sku = seed_sku(engine, 5)
    unknown = [inventory.Line("NO-SUCH-SKU", 1)]
    for lines, writes, point in (
        ([inventory.Line(sku, 2)], (1, 0), ORDER_CREATED),
        (unknown, (1, 1), "finished"),
    ):
        key = f"phase-one-{next(_numbers)}-0123456789"
        new = new_key(scope=CHECKOUT_SCOPE, key=key, path=CHECKOUT_PATH, body=key.encode())
        request = CheckoutRequest(EMAIL, lines, ADDRESS)
        with engine.begin() as conn:
            before = _key_writes(conn)
            _begin_and_reserve(settings, request, lambda: T0, conn, new)
            after = _key_writes(conn)
        assert (after[0] - before[0], after[1] - before[1]) == writes
        row = key_row(engine, key)
        assert row.recovery_point == point
        if point == ORDER_CREATED:
            assert row.locked_at is not None
            assert (row.state["amount"], row.state["lines"]) == (
                2 * UNIT_PRICE,
                [{"sku": sku, "quantity": 2}],
            )
            assert stock(engine, sku)[0] == 2
        else:
            assert row.response_status == 404


def test_a_key_left_at_started_resumes_through_the_same_phase_one(
    engine: Engine, gateway: StripeGateway, settings: Settings
) -> None:
    """A checkout key that exists at `started`, unlocked (its request died before phase 1, or
    an older release inserted it), is resumed by the next request with it: phase 1 runs on
    the existing key (p_new_key false: locked, then moved on) and the checkout completes."""
    sku = seed_sku(engine, 5)
    key = f"left-at-started-{next(_numbers)}-0123456789"
    lines = {sku: 1}
    body = json.dumps(
        {
            "email": EMAIL,
            "lines": [{"sku": s, "quantity": q} for s, q in lines.items()],
            "shipping_address": ADDRESS,
        }
    ).encode()
    begun = begin(engine, scope=CHECKOUT_SCOPE, key=key, path=CHECKOUT_PATH, body=body)
    assert isinstance(begun, KeyRecord) and begun.recovery_point == "started"
    unlock(engine, begun.id)

    answer = checkout(engine, gateway, settings, key, lines)

    assert answer.status == 201 and not answer.replayed
    row = key_row(engine, key)
    assert (row.id, row.recovery_point, row.locked_at) == (begun.id, "finished", None)
    assert stock(engine, sku)[0] == 1
    assert_replayed(engine, gateway, settings, key, answer, lines)
