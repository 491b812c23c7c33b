"""The completer (core.completer, rocket-rides-atomic's `completer`) against a real PostgreSQL and
a real sandbox Stripe process: a checkout key stranded between its phases, by a killed process
or a client that never retried, is finished once its lock times out; its PaymentIntent is then
recorded on the order, so the sweeper cancels it with the hold and none outlives the reservation
TTL; a client coming back gets the stored answer; several completers complete each key once."""

from __future__ import annotations

import json
import multiprocessing
import os
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import stripe
from sqlalchemy import Engine, func, select, text
from sqlalchemy.orm import Session

from core import completer, idempotency, inventory, orders, relay, sweeper
from core.checkout import CHECKOUT_PATH, CHECKOUT_SCOPE, ORDER_CREATED
from core.db import make_engine
from core.errors import ProviderUnavailable
from core.models import Order, OrderEvent, Reservation
from core.outbox import Handlers, RetryPolicy
from core.payment_effects import StripeEffects
from core.settings import Settings
from core.stripe_gateway import PaymentIntentRef, StripeGateway
from sandbox.options import DEFAULT_STRIPE_API_KEY
from tests.core.test_checkout import (
    CrashAfterStripe,
    Crashed,
    checkout,
    key_row,
    seed_sku,
    stock,
    stripe_intents,
)
from tests.processes import start_dotshop

# The exit status of the API process we kill between its phases.
KILLED = 137


@pytest.fixture
def stripe_down(stripe_base: str) -> Any:
    """Stripe answering 503 to everything until the test ends (or calls `stripe_down(False)`)."""
    import httpx

    def switch(down: bool = True) -> None:
        config = {"error_rate": 1.0 if down else 0.0, "error_status": 503, "error_phase": "before"}
        httpx.post(f"{stripe_base}/_sandbox/faults", json=config, timeout=10).raise_for_status()

    try:
        yield switch
    finally:
        switch(False)


def stripe_client(stripe_base: str) -> stripe.StripeClient:
    return stripe.StripeClient(DEFAULT_STRIPE_API_KEY, base_addresses={"api": stripe_base})


def past_lock_timeout(settings: Settings, after: datetime | None = None) -> datetime:
    return (
        (after or datetime.now(UTC)) + idempotency.lock_timeout_for(settings) + timedelta(seconds=1)
    )


def drain(engine: Engine, gateway: StripeGateway) -> None:
    """Deliver the outbox (the PaymentIntent cancels) as the relay process would."""
    handlers = Handlers()
    StripeEffects(engine, gateway).register(handlers)
    policy = RetryPolicy(max_attempts=3, base_seconds=0.0, cap_seconds=0.0)
    while relay.run_once(engine, handlers, policy=policy):
        pass


def intent_events(engine: Engine, order_id: str) -> int:
    with Session(engine) as s:
        return s.scalar(
            select(func.count()).where(
                OrderEvent.order_id == order_id, OrderEvent.kind == "payment_intent_created"
            )
        )


class KilledAfterStripe(StripeGateway):
    """The API process dies (SIGKILL-like: no cleanup, its key stays locked) right after
    Stripe created the PaymentIntent, before the phase that records it."""

    def create_payment_intent(self, **params: Any) -> PaymentIntentRef:
        super().create_payment_intent(**params)
        os._exit(KILLED)


def _killed_api(db_url: str, settings: Settings, key: str, sku: str) -> None:
    engine = make_engine(db_url)
    gateway = KilledAfterStripe(DEFAULT_STRIPE_API_KEY, settings.stripe_api_base)
    checkout(engine, gateway, settings, key, {sku: 2})


# ---------------------------------------------------------------------------------- tests


def test_a_checkout_killed_after_stripe_answered_is_finished_then_expires_with_its_intent(
    clean_engine: Engine, db_url: str, gateway: StripeGateway, settings: Settings, stripe_base: str
) -> None:
    """rocket-rides-atomic's completer: a key abandoned between phases is driven to its end
    after the lock timeout; DESIGN.md: no PaymentIntent outlives the hold it pays for."""
    sku = seed_sku(clean_engine, available=5)
    key = "completer-killed-0001"
    api = multiprocessing.get_context("spawn").Process(
        target=_killed_api, args=(db_url, settings, key, sku)
    )
    api.start()
    api.join(60)
    assert api.exitcode == KILLED
    row = key_row(clean_engine, key)
    assert row.recovery_point == ORDER_CREATED and row.locked_at is not None  # died holding it
    order_id = row.state["order_id"]
    (made,) = stripe_intents(stripe_base, order_id)
    assert stock(clean_engine, sku) == (2, 0, 3)

    # A lock younger than the lock timeout may belong to a live request: left alone.
    assert completer.run_once(clean_engine, gateway, settings) == 0
    assert completer.run_once(clean_engine, gateway, settings, now=past_lock_timeout(settings)) == 1

    row = key_row(clean_engine, key)
    assert (row.recovery_point, row.locked_at, row.response_status) == ("finished", None, 201)
    stored = json.loads(row.response_body)
    assert (stored["order_id"], stored["status"]) == (order_id, orders.AWAITING_PAYMENT)
    assert stored["payment"]["payment_intent_id"] == made["id"]
    intent = stripe_client(stripe_base).v1.payment_intents.retrieve(made["id"])
    assert (intent.status, intent.amount, intent.metadata["order_id"]) == (
        "requires_payment_method",
        5000,
        order_id,
    )
    assert stored["payment"]["client_secret"] == intent.client_secret
    with Session(clean_engine) as s:
        order = s.get_one(Order, order_id)
        assert (order.status, order.payment_intent_id) == (orders.AWAITING_PAYMENT, made["id"])
    assert [pi["id"] for pi in stripe_intents(stripe_base, order_id)] == [made["id"]]

    # The client comes back: the stored answer, byte for byte, and a checkout it can pay.
    again = checkout(clean_engine, gateway, settings, key, {sku: 2})
    assert (again.status, again.body, again.replayed) == (201, bytes(row.response_body), True)

    # Nobody pays: the hold expires, and the PaymentIntent is cancelled with it.
    later = datetime.now(UTC) + timedelta(seconds=settings.reservation_ttl + 60)
    assert sweeper.expire_holds(clean_engine, later) == 1
    drain(clean_engine, gateway)
    assert stripe_client(stripe_base).v1.payment_intents.retrieve(made["id"]).status == "canceled"
    with Session(clean_engine) as s:
        order = s.get_one(Order, order_id)
        assert (order.status, order.cancel_reason) == (orders.CANCELLED, "expired")
    assert stock(clean_engine, sku) == (0, 0, 5)
    assert completer.run_once(clean_engine, gateway, settings, now=past_lock_timeout(settings)) == 0


def test_a_key_stranded_by_a_stripe_outage_is_finished_with_the_orders_region_rules(
    clean_engine: Engine,
    gateway: StripeGateway,
    settings: Settings,
    stripe_base: str,
    stripe_down: Any,
) -> None:
    """An `eu` checkout answered 503 (Stripe down before any PaymentIntent) and its client never
    retried. The completer (running beside a `us` API) makes the PaymentIntent from the order
    row: eur, 3-D Secure requested (PSD2 strong customer authentication), as `eu` would have."""
    sku = seed_sku(clean_engine, available=3, eur_price=2300)
    eu = settings.model_copy(update={"region": "eu"})
    key = "completer-outage-0001"
    stripe_down()
    with pytest.raises(ProviderUnavailable):
        checkout(clean_engine, gateway, eu, key, {sku: 1})
    row = key_row(clean_engine, key)
    assert (row.recovery_point, row.locked_at) == (ORDER_CREATED, None)
    order_id = row.state["order_id"]
    first_pass = past_lock_timeout(settings)

    # Stripe still down: the key is unlocked again and left for a pass one lock timeout later.
    assert completer.run_once(clean_engine, gateway, settings, now=first_pass) == 0
    assert key_row(clean_engine, key).locked_at is None
    stripe_down(False)
    assert completer.run_once(clean_engine, gateway, settings, now=first_pass) == 0
    assert stripe_intents(stripe_base, order_id) == []
    assert (
        completer.run_once(
            clean_engine, gateway, settings, now=past_lock_timeout(settings, first_pass)
        )
        == 1
    )

    row = key_row(clean_engine, key)
    assert (row.recovery_point, row.response_status) == ("finished", 201)
    body = json.loads(row.response_body)
    (made,) = stripe_intents(stripe_base, order_id)
    intent = stripe_client(stripe_base).v1.payment_intents.retrieve(made["id"])
    assert (intent.id, intent.amount, intent.currency) == (
        body["payment"]["payment_intent_id"],
        2300,
        "eur",
    )
    assert intent.payment_method_options["card"]["request_three_d_secure"] == "any"
    assert (body["amount"], body["currency"]) == (2300, "eur")
    again = checkout(clean_engine, gateway, settings, key, {sku: 1})  # back, via `us`
    assert (again.status, again.body, again.replayed) == (201, bytes(row.response_body), True)


def test_a_hold_expired_before_the_completer_ran_cancels_the_unrecorded_intent(
    clean_engine: Engine, gateway: StripeGateway, settings: Settings, stripe_base: str
) -> None:
    """The sweeper expired the hold first; the PaymentIntent the dead request made was never
    recorded, so only the completer can find it (Stripe answers the same object for the same
    idempotency key) and have it cancelled. The key's stored answer: 409 checkout_expired."""
    sku = seed_sku(clean_engine, available=2)
    crashing = CrashAfterStripe(gateway)
    with pytest.raises(Crashed):
        checkout(clean_engine, crashing, settings, "completer-late-0001", {sku: 1})
    (made,) = crashing.created
    later = datetime.now(UTC) + timedelta(seconds=settings.reservation_ttl + 60)
    assert sweeper.expire_holds(clean_engine, later) == 1
    drain(clean_engine, gateway)  # nothing to cancel yet: the order does not know its intent
    assert stripe_client(stripe_base).v1.payment_intents.retrieve(made.id).status == (
        "requires_payment_method"
    )

    assert completer.run_once(clean_engine, gateway, settings, now=later) == 1
    drain(clean_engine, gateway)

    assert stripe_client(stripe_base).v1.payment_intents.retrieve(made.id).status == "canceled"
    row = key_row(clean_engine, "completer-late-0001")
    assert (row.recovery_point, row.response_status) == ("finished", 409)
    assert json.loads(row.response_body)["error"]["code"] == "checkout_expired"
    with Session(clean_engine) as s:
        order = s.get_one(Order, row.state["order_id"])
        assert (order.status, order.payment_intent_id) == (orders.CANCELLED, made.id)
    assert stock(clean_engine, sku) == (0, 0, 2)


def test_a_key_stranded_at_started_is_only_unlocked(
    clean_engine: Engine, gateway: StripeGateway, settings: Settings
) -> None:
    """Nothing is committed before the first phase: the completer unlocks the key and makes
    nothing; the client's retry then runs the checkout from the start."""
    sku = seed_sku(clean_engine, available=2)
    key = "completer-started-0001"
    body = json.dumps(
        {"email": "buyer@example.com", "lines": [{"sku": sku, "quantity": 1}]}
    ).encode()
    # The request died inside its first phase: the key is locked at `started`, nothing else.
    begun = idempotency.begin(
        clean_engine,
        scope=CHECKOUT_SCOPE,
        key=key,
        path=CHECKOUT_PATH,
        body=body,
    )
    assert isinstance(begun, idempotency.KeyRecord)

    assert completer.run_once(clean_engine, gateway, settings, now=past_lock_timeout(settings)) == 1

    row = key_row(clean_engine, key)
    assert (row.recovery_point, row.locked_at, row.state) == ("started", None, {})
    assert completer.run_once(clean_engine, gateway, settings, now=past_lock_timeout(settings)) == 0
    with Session(clean_engine) as s:
        assert s.scalar(select(func.count()).select_from(Order)) == 0
    assert stock(clean_engine, sku) == (0, 0, 2)


def test_two_completers_complete_each_stranded_key_once(
    clean_engine: Engine, gateway: StripeGateway, settings: Settings, stripe_base: str
) -> None:
    """Several completers may run at once (SKIP LOCKED claims, the key's lock as the fence):
    each stranded key is finished by exactly one of them, with one PaymentIntent."""
    sku = seed_sku(clean_engine, available=20)
    keys = [f"completer-pair-{i:04d}" for i in range(6)]
    crashing = CrashAfterStripe(gateway)
    for key in keys:
        with pytest.raises(Crashed):
            checkout(clean_engine, crashing, settings, key, {sku: 1})
    now = past_lock_timeout(settings)
    barrier = threading.Barrier(2)
    counts: list[int] = []

    def one() -> None:
        barrier.wait()
        counts.append(completer.run_once(clean_engine, gateway, settings, now=now))

    threads = [threading.Thread(target=one) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)

    assert len(counts) == 2 and sum(counts) == len(keys)
    for key, made in zip(keys, crashing.created, strict=True):
        row = key_row(clean_engine, key)
        assert (row.recovery_point, row.locked_at, row.response_status) == ("finished", None, 201)
        order_id = row.state["order_id"]
        assert json.loads(row.response_body)["payment"]["payment_intent_id"] == made.id
        assert [pi["id"] for pi in stripe_intents(stripe_base, order_id)] == [made.id]
        assert intent_events(clean_engine, order_id) == 1
    with Session(clean_engine) as s:
        held = s.scalar(select(func.count()).where(Reservation.status == inventory.HELD))
    assert held == len(keys)
    assert stock(clean_engine, sku) == (6, 0, 14)


def test_the_relay_process_runs_the_completer(
    clean_engine: Engine, db_url: str, gateway: StripeGateway, settings: Settings, stripe_base: str
) -> None:
    """`dotshop relay` runs the completer beside the sweeper: a stranded key is finished by the
    process itself, with nobody calling `run_once`."""
    sku = seed_sku(clean_engine, available=2)
    key = "completer-relay-process-0001"
    with pytest.raises(Crashed):
        checkout(clean_engine, CrashAfterStripe(gateway), settings, key, {sku: 1})
    # Age the key past the lock timeout (the clock, not the code, is what we move).
    with clean_engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE idempotency_key SET last_run_at = last_run_at - interval '1 hour' "
                "WHERE key = :key"
            ),
            {"key": key},
        )
    env = {
        "DATABASE_URL": db_url,
        "STRIPE_API_KEY": DEFAULT_STRIPE_API_KEY,
        "STRIPE_API_BASE": stripe_base,
        "DOTSHOP_STRIPE_TIMEOUT": "5",
        # The relay's Shopify handler needs credentials to start; nothing here calls Shopify.
        "SHOPIFY_ACCESS_TOKEN": "shpat_unused",
    }
    log_path = tempfile.mktemp(suffix="-relay.log")
    relay_process = start_dotshop(["relay"], [], log_path, env=env)
    try:
        wait_until = datetime.now(UTC) + timedelta(seconds=60)
        while key_row(clean_engine, key).recovery_point != idempotency.FINISHED:
            assert relay_process.popen.poll() is None, relay_process.output()
            assert datetime.now(UTC) < wait_until, relay_process.output()
            time.sleep(0.2)
    finally:
        relay_process.stop()
    row = key_row(clean_engine, key)
    assert row.response_status == 201
    assert "stranded_key_completed" in relay_process.output()
