"""Checkout as idempotent atomic phases (DESIGN.md "Idempotency").

    started --(reserve stock + create order: one transaction)--> order_created
    order_created --(Stripe PaymentIntent, keyed dotshop-pi-<order id>)--> finished (201)

A crash or Stripe outage between phases leaves the key at `order_created` with the stock still
held; the client's retry with the same Idempotency-Key resumes there and can only ever get the
same order and the same PaymentIntent, whichever region it lands in. A client that never
comes back is covered by core.completer, which runs the same `resume_steps`. Final business
answers (409 insufficient stock, 404 unknown SKU) are stored responses too, replayed byte for
byte.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from core import catalog, idempotency, inventory, orders
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
    RecoveryPoint,
    Response,
    Step,
    encode,
    error_response,
    lock_timeout_for,
)
from core.ids import new_id
from core.logs import get_logger
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
log = get_logger("core.checkout")


@dataclass(frozen=True)
class CheckoutRequest:
    email: str
    lines: Sequence[inventory.Line]
    shipping_address: dict[str, Any]


def checkout_body(
    order: Order | dict[str, Any], pi: PaymentIntentRef | None, lines: Sequence[orders.PricedLine]
) -> dict[str, Any]:
    o = (
        order
        if isinstance(order, dict)
        else {
            "checkout_id": order.checkout_id,
            "order_id": order.id,
            "status": order.status,
            "amount": order.amount_minor,
            "currency": order.currency,
            "expires_at": order.expires_at.isoformat(),
            "payment_intent_id": order.payment_intent_id,
        }
    )
    return {
        "id": o["checkout_id"],
        "order_id": o["order_id"],
        "status": o["status"],
        "amount": o["amount"],
        "currency": o["currency"],
        "expires_at": o["expires_at"],
        "payment": {
            "provider": "stripe",
            "payment_intent_id": pi.id if pi else o.get("payment_intent_id"),
            "client_secret": pi.client_secret if pi else None,
        },
        "lines": [{"sku": ln.sku, "quantity": ln.quantity} for ln in lines],
    }


def _reserve_and_create(
    settings: Settings,
    request: CheckoutRequest,
    now: Callable[[], datetime],
    session: Session,
    key: KeyRecord,
) -> RecoveryPoint | Response:
    """started -> order_created: price the lines in this region's currency, create the order
    and hold its stock, in one transaction. The only phase that needs the request itself."""
    lines = inventory.merge_lines(request.lines)
    currency = settings.currency
    prices = catalog.prices(session, [ln.sku for ln in lines], currency)
    unknown = [ln.sku for ln in lines if ln.sku not in prices]
    if unknown:
        return error_response(UnknownSku(skus=unknown))
    order_id, checkout_id = new_id("ord"), new_id("chk")
    expires_at = now() + timedelta(seconds=settings.reservation_ttl)
    priced = [orders.PricedLine(ln.sku, ln.quantity, prices[ln.sku]) for ln in lines]
    try:
        with session.begin_nested():
            order = orders.create(
                session,
                order_id=order_id,
                checkout_id=checkout_id,
                region=settings.region,
                currency=currency,
                email=request.email,
                shipping_address=request.shipping_address,
                lines=priced,
                expires_at=expires_at,
            )
            inventory.reserve(session, order_id, lines, expires_at)
    except InsufficientStock as exc:
        return error_response(exc)
    return RecoveryPoint(
        ORDER_CREATED,
        {
            "order_id": order_id,
            "checkout_id": checkout_id,
            "amount": order.amount_minor,
            "currency": currency,
            "expires_at": expires_at.isoformat(),
            "status": orders.AWAITING_PAYMENT,
        },
    )


def _create_payment_intent(
    engine: Engine, gateway: StripeGateway, key: KeyRecord
) -> PaymentIntentRef | PaymentProviderError:
    """The PaymentIntent of the committed order, made from the order row alone (amount,
    currency, email, and the payment rules of the region that created it), so that any API
    process of any region, or the completer, makes the very same one."""
    with Session(engine) as session:
        order = session.get_one(Order, key.state["order_id"])
    rules = REGIONS[order.region]
    try:
        return gateway.create_payment_intent(
            order_id=order.id,
            amount=order.amount_minor,
            currency=order.currency,
            email=order.email,
            payment_method_types=rules["payment_method_types"],
            require_sca=rules["require_sca"],
        )
    except PaymentProviderError as exc:
        return exc  # Stripe refused for good: recorded below as the final answer


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
    log.info("checkout_created", order_id=order.id, payment_intent_id=result.id)
    return Response(201, encode(checkout_body(key.state, result, orders.lines(session, order.id))))


def resume_steps(engine: Engine, gateway: StripeGateway) -> dict[str, Step]:
    """The steps after `started`: they read only the key's state and the database, so the
    request's own process, a retry in any region and the completer all run the same ones."""
    return {
        ORDER_CREATED: External(
            call=partial(_create_payment_intent, engine, gateway), record=_record_payment_intent
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
            idempotency.STARTED: partial(_reserve_and_create, settings, request, now),
            **resume_steps(engine, gateway),
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
        return Response(200, encode(checkout_body(order, None, orders.lines(session, order.id))))

    return idempotency.answer_once(
        engine,
        settings,
        scope=f"{STOREFRONT}:POST {path}",
        key=idempotency_key,
        path=path,
        body=body,
        step=cancel,
    )
