"""Checkout as idempotent atomic phases (DESIGN.md "Idempotency").

    started --(reserve stock + create order: one statement)--> order_created
    order_created --(Stripe PaymentIntent, keyed dotshop-pi-<order id>)--> finished (201)

A crash or Stripe outage between phases leaves the key at `order_created` with the stock still
held; the client's retry with the same Idempotency-Key resumes there and can only ever get the
same order and the same PaymentIntent, whichever region it lands in. A client that never
comes back is covered by core.completer, which runs the same `resume_steps`. Final business
answers (409 insufficient stock, 404 unknown SKU) are stored responses too, replayed byte for
byte.

A checkout with a new key costs two round trips to PostgreSQL (issue 10; tests/checkout_api/
test_round_trips.py): one server-side function runs phase 1 and inserts the key already at
its next recovery point (`dotshop_checkout_phase1`, migration 0011), holding the hot stock row
only while it runs, and the PaymentIntent is recorded by one statement; a replay is one round
trip. A key that exists unfinished takes the general path (`idempotency.begin`, then
the steps from its recovery point). The key's state carries what the later steps need (email,
region, lines), so none of them reads the order back.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

from psycopg.types.json import Jsonb
from sqlalchemy import Connection, Engine, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from core import idempotency, inventory, orders
from core.errors import (
    CheckoutExpired,
    Conflict,
    InsufficientStock,
    NotFound,
    PaymentProviderError,
    UnknownSku,
)
from core.idempotency import (
    Answer,
    External,
    KeyRecord,
    NewKey,
    OneStatement,
    Outcome,
    RecoveryPoint,
    Response,
    Step,
    encode,
    error_response,
    lock_timeout_for,
)
from core.ids import new_id
from core.models import Order
from core.payments import enqueue_cancel_payment_intent
from core.settings import REGIONS, Settings
from core.stripe_gateway import PaymentIntentRef, StripeGateway

ORDER_CREATED = "order_created"
# Idempotency keys are the storefront's, not a region's (CONTRACT.md): a retry that fails over
# to another region finds the key, replays its stored answer (in the first region's currency),
# answers 409 while it is in flight there, or resumes its checkout where it stopped.
STOREFRONT = "storefront"
CHECKOUT_PATH = "/v1/checkouts"
CHECKOUT_SCOPE = f"{STOREFRONT}:POST {CHECKOUT_PATH}"
# What dotshop_checkout_phase1 raises when a line's stock is not there (migrations 0005, 0011).
INSUFFICIENT_STOCK_SQLSTATE = "DS409"


@dataclass(frozen=True)
class CheckoutRequest:
    email: str
    lines: Sequence[inventory.Line]
    shipping_address: dict[str, Any]


def checkout_body(
    order: dict[str, Any], pi: PaymentIntentRef | None, lines: list[dict[str, Any]]
) -> dict[str, Any]:
    """The checkout as the API answers it, from the key's state (or `order_facts`)."""
    return {
        "id": order["checkout_id"],
        "order_id": order["order_id"],
        "status": order["status"],
        "amount": order["amount"],
        "currency": order["currency"],
        "expires_at": order["expires_at"],
        "payment": {
            "provider": "stripe",
            "payment_intent_id": pi.id if pi else order.get("payment_intent_id"),
            "client_secret": pi.client_secret if pi else None,
        },
        "lines": lines,
    }


def order_facts(order: Order) -> dict[str, Any]:
    """What a checkout's key state says about its order, read from the order row."""
    return {
        "checkout_id": order.checkout_id,
        "order_id": order.id,
        "status": order.status,
        "amount": order.amount_minor,
        "currency": order.currency,
        "expires_at": order.expires_at.isoformat(),
        "payment_intent_id": order.payment_intent_id,
        "region": order.region,
        "email": order.email,
    }


def _line_dicts(session: Session, order_id: str) -> list[dict[str, Any]]:
    return [{"sku": ln.sku, "quantity": ln.quantity} for ln in orders.lines(session, order_id)]


# The hot path's statements go to psycopg as written (`exec_driver_sql`, psycopg's %(name)s
# placeholders, jsonb values wrapped in `Jsonb`): SQLAlchemy still pools the connection, fires
# its events and wraps errors, but does not compile the statement or run per-type bind
# processors, which cost ~0.2 ms of CPU per call of these 19-parameter statements.
# -- checkout_phase1 --
# Phase 1 in one round trip: see dotshop_checkout_phase1 in migration 0011. A new key
# (p_new_key) is inserted with it; a key already at 'started' (a resumed checkout) is locked.
_PHASE1 = """
    SELECT outcome, amount, unknown_skus, request_fingerprint, request_method, request_path,
           recovery_point, response_status, response_body, expires_at
      FROM dotshop_checkout_phase1(
             %(new_key)s, %(key_id)s, %(scope)s, %(key)s, %(method)s, %(path)s,
             %(fingerprint)s, %(now)s, %(key_expires_at)s, %(state)s, %(order_id)s,
             %(checkout_id)s, %(region)s, %(currency)s, %(email)s, %(shipping_address)s,
             %(expires_at)s, %(skus)s, %(quantities)s, %(reservation_ids)s)
"""
# What a resumed key passes for the columns only a new key has.
_NO_NEW_KEY = dict.fromkeys(("scope", "key", "method", "path", "fingerprint", "key_expires_at"))


def _reserve_and_create(
    settings: Settings,
    request: CheckoutRequest,
    now: Callable[[], datetime],
    conn: Connection,
    key: KeyRecord,
) -> Outcome | None:
    """started -> order_created: price the lines in this region's currency, create the order
    and hold its stock, in one statement. The only phase that needs the request itself."""
    return _phase_one(settings, request, now, conn, key, None)


def _begin_and_reserve(
    settings: Settings,
    request: CheckoutRequest,
    now: Callable[[], datetime],
    conn: Connection,
    new: NewKey,
) -> Outcome | Answer | None:
    """The key, when new, and phase 1 in one statement (`idempotency.run_new`). A key that
    exists already gets what `idempotency.known_answer` makes of it, nothing written."""
    return _phase_one(settings, request, now, conn, new.record(), new)


def _phase_one(
    settings: Settings,
    request: CheckoutRequest,
    now: Callable[[], datetime],
    conn: Connection,
    key: KeyRecord,
    new: NewKey | None,
) -> Outcome | Answer | None:
    lines = inventory.merge_lines(request.lines)
    expires_at = now() + timedelta(seconds=settings.reservation_ttl)
    state = {
        "order_id": new_id("ord"),
        "checkout_id": new_id("chk"),
        "status": orders.AWAITING_PAYMENT,
        "currency": settings.currency,
        "expires_at": expires_at.isoformat(),
        "region": settings.region,
        "email": request.email,
        "lines": [{"sku": ln.sku, "quantity": ln.quantity} for ln in lines],
    }
    params = {
        "key_id": key.id,
        "state": Jsonb(state),
        "shipping_address": Jsonb(request.shipping_address),
        "expires_at": expires_at,
        "skus": [ln.sku for ln in lines],
        "quantities": [ln.quantity for ln in lines],
        "reservation_ids": [new_id("rsv") for _ in lines],
    }
    params |= {k: state[k] for k in ("order_id", "checkout_id", "region", "currency", "email")}
    if new is None:
        params |= _NO_NEW_KEY | {"new_key": False, "now": key.locked_at}
    else:
        params |= new.params() | {"new_key": True}
    try:
        row = conn.exec_driver_sql(_PHASE1, params).one()
    except DBAPIError as exc:
        if getattr(exc.orig, "sqlstate", None) != INSUFFICIENT_STOCK_SQLSTATE:
            raise
        conn.rollback()
        detail = json.loads(exc.orig.diag.message_detail)  # type: ignore[union-attr]
        # jsonb orders keys its own way; the answer keeps ours.
        short = [{k: line[k] for k in ("sku", "requested", "available")} for line in detail]
        refused = error_response(InsufficientStock(skus=short))
        if new is not None:
            # The error rolled the new key back with everything else: store it finished.
            return idempotency.insert_finished(conn, new, refused)
        return idempotency.finish_in_one(conn, key, refused)
    if row.outcome == "key_exists":
        assert new is not None  # only a new key can find one there already
        return idempotency.known_answer(row, new)
    if row.outcome == "key_lost":
        return None
    if row.outcome == "unknown_sku":
        unknown = UnknownSku(skus=list(row.unknown_skus))
        return idempotency.finish_in_one(conn, key, error_response(unknown))
    return RecoveryPoint(ORDER_CREATED, {**state, "amount": row.amount})


def _facts(engine: Engine, key: KeyRecord) -> dict[str, Any]:
    """The order as the key's state has it. Keys written before the state carried email and
    region (migration 0005) read them from the order row."""
    if "email" in key.state:
        return key.state
    with Session(engine) as session:
        return {**key.state, **order_facts(session.get_one(Order, key.state["order_id"]))}


def _create_payment_intent(
    engine: Engine, gateway: StripeGateway, key: KeyRecord
) -> PaymentIntentRef | PaymentProviderError:
    """The PaymentIntent of the committed order, made from the order's facts alone (amount,
    currency, email, and the payment rules of the region that created it), so that any API
    process of any region, or the completer, makes the very same one."""
    order = _facts(engine, key)
    rules = REGIONS[order["region"]]
    try:
        return gateway.create_payment_intent(
            order_id=order["order_id"],
            amount=order["amount"],
            currency=order["currency"],
            email=order["email"],
            payment_method_types=rules["payment_method_types"],
            require_sca=rules["require_sca"],
        )
    except PaymentProviderError as exc:
        return exc  # Stripe refused for good: recorded below as the final answer


# -- record_payment_intent --
# order_created -> finished when all went well, in one statement: while the key is still this
# request's, put the PaymentIntent on the order (still awaiting payment), log it on the
# timeline and store the 201. Writes nothing when any of that does not hold.
_RECORD_PAYMENT_INTENT = """
    WITH held_key AS (
             SELECT id
               FROM idempotency_key
              WHERE id = %(key_id)s AND locked_at = %(locked_at)s AND recovery_point = %(point)s
                FOR UPDATE),
         awaiting AS (
             UPDATE orders
                SET payment_intent_id = %(payment_intent_id)s
              WHERE id = %(order_id)s AND status = 'awaiting_payment'
                AND EXISTS (SELECT FROM held_key)
             RETURNING id),
         logged AS (
             INSERT INTO order_event (order_id, kind, data)
             SELECT id, 'payment_intent_created', %(event)s FROM awaiting)
    UPDATE idempotency_key
       SET recovery_point = 'finished', response_status = 201, response_body = %(body)s,
           locked_at = NULL, last_run_at = now()
     WHERE id IN (SELECT id FROM held_key) AND EXISTS (SELECT FROM awaiting)
    RETURNING id
"""


def _record_created(
    conn: Connection, key: KeyRecord, result: PaymentIntentRef | PaymentProviderError
) -> Response | None:
    """The common ending in one round trip; None (nothing written) for every other ending,
    which `_record_payment_intent` then handles."""
    if isinstance(result, PaymentProviderError) or "lines" not in key.state:
        return None
    body = encode(checkout_body(key.state, result, key.state["lines"]))
    recorded = conn.exec_driver_sql(
        _RECORD_PAYMENT_INTENT,
        {
            "key_id": key.id,
            "locked_at": key.locked_at,
            "point": ORDER_CREATED,
            "order_id": key.state["order_id"],
            "payment_intent_id": result.id,
            "event": Jsonb({"payment_intent_id": result.id}),
            "body": body,
        },
    ).one_or_none()
    if recorded is None:
        return None
    return Response(201, body)


def _record_payment_intent(
    session: Session, key: KeyRecord, result: PaymentIntentRef | PaymentProviderError
) -> Response:
    """order_created -> finished: the 201, or a final error that releases the hold."""
    order = orders.lock(session, key.state["order_id"])
    if isinstance(result, PaymentProviderError):
        inventory.release(session, order.id)
        orders.cancel(session, order, "payment_provider_error", **result.to_dict())
        return error_response(result)
    order.payment_intent_id = result.id
    orders.add_event(session, order.id, "payment_intent_created", {"payment_intent_id": result.id})
    if order.status != orders.AWAITING_PAYMENT:
        # The hold expired while Stripe was unreachable and nobody finished the checkout.
        enqueue_cancel_payment_intent(session, order)
        return error_response(CheckoutExpired())
    facts = {**order_facts(order), **key.state}
    return Response(201, encode(checkout_body(facts, result, _line_dicts(session, order.id))))


def resume_steps(engine: Engine, gateway: StripeGateway) -> dict[str, Step]:
    """The steps after `started`: they read only the key's state and the database, so the
    request's own process, a retry in any region and the completer all run the same ones."""
    return {
        ORDER_CREATED: External(
            call=partial(_create_payment_intent, engine, gateway),
            record=_record_payment_intent,
            record_in_one=_record_created,
        )
    }


def create_checkout(
    engine: Engine,
    gateway: StripeGateway,
    settings: Settings,
    *,
    idempotency_key: str,
    body: bytes,
    request: CheckoutRequest,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> Answer:
    new = idempotency.new_key(
        scope=CHECKOUT_SCOPE, key=idempotency_key, path=CHECKOUT_PATH, body=body
    )
    steps = resume_steps(engine, gateway)
    first = partial(_begin_and_reserve, settings, request, now)
    answer = idempotency.run_new(engine, new, first, steps)
    if answer is not None:
        return answer
    # The key exists: its stored answer, 409 while another request holds it, or a resumption.
    begun = idempotency.begin(
        engine,
        scope=CHECKOUT_SCOPE,
        key=idempotency_key,
        path=CHECKOUT_PATH,
        body=body,
        lock_timeout=lock_timeout_for(settings),
    )
    if isinstance(begun, Answer):
        return begun
    return idempotency.run(
        engine,
        begun,
        {
            idempotency.STARTED: OneStatement(partial(_reserve_and_create, settings, request, now)),
            **steps,
        },
    )


def _order_by_checkout(session: Session, checkout_id: str) -> Order:
    order_id = session.scalar(select(Order.id).where(Order.checkout_id == checkout_id))
    if order_id is None:
        raise NotFound(f"no checkout {checkout_id}", param="id")
    return orders.lock(session, order_id)


def cancel_checkout(
    engine: Engine, settings: Settings, *, checkout_id: str, idempotency_key: str, body: bytes
) -> Answer:
    """Release the hold and cancel the PaymentIntent (through the outbox, so it survives a
    Stripe outage). Cancelling a cancelled checkout answers its current state."""
    path = f"{CHECKOUT_PATH}/{checkout_id}/cancel"

    def cancel(session: Session, key: KeyRecord) -> Response:
        order = _order_by_checkout(session, checkout_id)
        if order.status == orders.AWAITING_PAYMENT:
            inventory.release(session, order.id)
            orders.cancel(session, order, "customer_cancelled")
            enqueue_cancel_payment_intent(session, order)
        elif order.status != orders.CANCELLED:
            raise Conflict(
                f"checkout is {order.status}; it cannot be cancelled", status=order.status
            )
        body = checkout_body(order_facts(order), None, _line_dicts(session, order.id))
        return Response(200, encode(body))

    return idempotency.answer_once(
        engine,
        settings,
        scope=f"{STOREFRONT}:POST {path}",
        key=idempotency_key,
        path=path,
        body=body,
        step=cancel,
    )
