"""Checkout as idempotent atomic phases (DESIGN.md "Idempotency").

    started --(reserve stock + create order: one transaction)--> order_created
    order_created --(Stripe PaymentIntent, keyed dotshop-pi-<order id>)--> finished (201)

A crash or Stripe outage between phases leaves the key at `order_created` with the stock still
held; the client's retry with the same Idempotency-Key resumes there and can only ever get the
same order and the same PaymentIntent. Final business answers (409 insufficient stock, 404
unknown SKU) are stored responses too, replayed byte for byte.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from core import audit, catalog, idempotency, inventory, orders
from core.errors import (
    CheckoutExpired,
    Conflict,
    DotshopError,
    InsufficientStock,
    NotFound,
    PaymentProviderError,
    RefundExceedsRemaining,
    UnknownSku,
)
from core.idempotency import External, KeyRecord, RecoveryPoint, Response, StoredResponse
from core.ids import new_id
from core.logs import get_logger
from core.models import Order
from core.payments import enqueue_cancel_payment_intent, enqueue_refund
from core.settings import Settings
from core.stripe_gateway import STRIPE_NETWORK_RETRIES, PaymentIntentRef, StripeGateway

ORDER_CREATED = "order_created"
log = get_logger("core.checkout")


@dataclass(frozen=True)
class CheckoutRequest:
    email: str
    lines: Sequence[inventory.Line]
    shipping_address: dict[str, Any]


@dataclass(frozen=True)
class Outcome:
    """What the HTTP layer sends: the stored response, and whether it is a replay."""

    status: int
    body: bytes
    replayed: bool


def encode(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


def error_response(error: DotshopError) -> Response:
    return Response(error.http_status, encode({"error": error.to_dict()}))


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


# Time for the phases themselves and the SDK's backoff between its retries.
LOCK_MARGIN_SECONDS = 10


def lock_timeout(settings: Settings) -> timedelta:
    """The longest a live request can hold its key: every Stripe attempt timing out, plus a
    margin. An older lock belongs to a process that died, and a retry may take the key over."""
    attempts = STRIPE_NETWORK_RETRIES + 1
    return timedelta(seconds=settings.stripe_timeout * attempts + LOCK_MARGIN_SECONDS)


def _begin(
    engine: Engine, settings: Settings, scope: str, key: str, path: str, body: bytes
) -> KeyRecord | Outcome:
    begun = idempotency.begin(
        engine,
        scope=scope,
        key=key,
        method="POST",
        path=path,
        fingerprint=idempotency.fingerprint("POST", path, body),
        lock_timeout=lock_timeout(settings),
    )
    if isinstance(begun, StoredResponse):
        return Outcome(begun.status, begun.body, replayed=True)
    return begun


def create_checkout(
    engine: Engine,
    gateway: StripeGateway,
    settings: Settings,
    *,
    idempotency_key: str,
    body: bytes,
    request: CheckoutRequest,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> Outcome:
    path = "/v1/checkouts"
    begun = _begin(engine, settings, f"{settings.region}:POST {path}", idempotency_key, path, body)
    if isinstance(begun, Outcome):
        return begun
    lines = inventory.merge_lines(request.lines)

    def reserve_and_create(session: Session, key: KeyRecord) -> RecoveryPoint | Response:
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

    def create_payment_intent(key: KeyRecord) -> PaymentIntentRef | PaymentProviderError:
        rules = settings.region_rules
        try:
            return gateway.create_payment_intent(
                order_id=key.state["order_id"],
                amount=key.state["amount"],
                currency=key.state["currency"],
                email=request.email,
                payment_method_types=rules["payment_method_types"],
                require_sca=rules["require_sca"],
            )
        except PaymentProviderError as exc:
            return exc  # Stripe refused for good: recorded below as the final answer

    def record_payment_intent(
        session: Session, key: KeyRecord, result: PaymentIntentRef | PaymentProviderError
    ) -> Response:
        order = orders.lock(session, key.state["order_id"])
        if isinstance(result, PaymentProviderError):
            inventory.release(session, order.id)
            orders.cancel(session, order, "payment_provider_error", **result.to_dict())
            return error_response(result)
        order.payment_intent_id = result.id
        orders.add_event(
            session, order.id, "payment_intent_created", {"payment_intent_id": result.id}
        )
        if order.status != orders.AWAITING_PAYMENT:
            # The hold expired while Stripe was unreachable and the client kept retrying.
            enqueue_cancel_payment_intent(session, order)
            return error_response(CheckoutExpired())
        log.info("checkout_created", order_id=order.id, payment_intent_id=result.id)
        return Response(
            201, encode(checkout_body(key.state, result, orders.lines(session, order.id)))
        )

    stored = idempotency.run(
        engine,
        begun,
        {
            idempotency.STARTED: reserve_and_create,
            ORDER_CREATED: External(call=create_payment_intent, record=record_payment_intent),
        },
    )
    return Outcome(stored.status, stored.body, replayed=False)


def _final_errors(
    step: Callable[[Session, KeyRecord], Response],
) -> Callable[[Session, KeyRecord], Response]:
    """Business errors a step raises (no such order) are final answers: store them."""

    def guarded(session: Session, key: KeyRecord) -> Response:
        try:
            with session.begin_nested():
                return step(session, key)
        except (NotFound, Conflict) as exc:
            return error_response(exc)

    return guarded


def _order_by_checkout(session: Session, checkout_id: str) -> Order:
    order_id = session.scalar(select(Order.id).where(Order.checkout_id == checkout_id))
    if order_id is None:
        raise NotFound(f"no checkout {checkout_id}", param="id")
    return orders.lock(session, order_id)


def cancel_checkout(
    engine: Engine, settings: Settings, *, checkout_id: str, idempotency_key: str, body: bytes
) -> Outcome:
    """Release the hold and cancel the PaymentIntent (through the outbox, so it survives a
    Stripe outage). Cancelling a cancelled checkout answers its current state."""
    path = f"/v1/checkouts/{checkout_id}/cancel"
    begun = _begin(engine, settings, f"{settings.region}:POST {path}", idempotency_key, path, body)
    if isinstance(begun, Outcome):
        return begun

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

    stored = idempotency.run(engine, begun, {idempotency.STARTED: _final_errors(cancel)})
    return Outcome(stored.status, stored.body, replayed=False)


def request_refund(
    engine: Engine,
    settings: Settings,
    *,
    order_id: str,
    amount: int | None,
    reason: str | None,
    idempotency_key: str,
    body: bytes,
    actor: str,
) -> Outcome:
    """Admin refund: checked against what remains (minus refunds already requested), sent to
    Stripe through the outbox with a Stripe idempotency key derived from this request's key."""
    path = f"/admin/v1/orders/{order_id}/refunds"
    begun = _begin(engine, settings, f"admin:POST {path}", idempotency_key, path, body)
    if isinstance(begun, Outcome):
        return begun

    def refund(session: Session, key: KeyRecord) -> Response:
        order = orders.lock(session, order_id)
        if (
            order.status not in (orders.PAID, orders.PARTIALLY_REFUNDED)
            or not order.payment_intent_id
        ):
            raise Conflict(
                f"order is {order.status}; only paid orders can be refunded", status=order.status
            )
        requested = orders.requested_refunds(session, order.id)
        remaining = order.amount_minor - max(requested, order.refunded_minor)
        value = remaining if amount is None else amount
        if value <= 0 or value > remaining:
            raise RefundExceedsRemaining(remaining=remaining)
        orders.add_event(
            session, order.id, "refund_requested", {"amount": value, "reason": reason, "by": actor}
        )
        enqueue_refund(session, order, amount=value, refund_key=key.id, reason=reason)
        audit.record(
            session,
            actor=actor,
            action="refund.requested",
            subject=order.id,
            data={"amount": value, "reason": reason},
        )
        return Response(
            202,
            encode(
                {
                    "order_id": order.id,
                    "refund": {"amount": value, "currency": order.currency, "status": "pending"},
                }
            ),
        )

    stored = idempotency.run(engine, begun, {idempotency.STARTED: _final_errors(refund)})
    return Outcome(stored.status, stored.body, replayed=False)
