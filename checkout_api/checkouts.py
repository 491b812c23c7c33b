"""Storefront writes: create and cancel checkouts; read orders."""

from __future__ import annotations

import re
from typing import Annotated

import anyio
import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.openapi import ResponseSpec
from litestar.params import FromPath, HeaderParameter, JSONBody
from sqlalchemy.orm import Session

from checkout_api.deps import Ctx
from checkout_api.idempotent import (
    IDEMPOTENCY_KEY,
    AnswerSummary,
    require_key,
    summarize,
    to_response,
)
from checkout_api.observability import CHECKOUT_OUTCOME
from checkout_api.schemas import (
    CheckoutCreate,
    CheckoutLine,
    CheckoutOut,
    ErrorBody,
    OrderOut,
    TimelineEntry,
)
from core import checkout, inventory, orders
from core.errors import NotFound
from core.idempotency import KEY_MIN_LENGTH, Answer
from core.logs import get_logger

log = get_logger("checkout_api.checkouts")

# The idempotency_key.key column's CHECK (core.idempotency.validate_key enforces the same).
KEY_MAX_LENGTH = 255

# Documented as what it is: required, 16-255 printable ASCII. The app's key_before_body hook
# enforces it (400, before the body is read); the handler's own check binds the log context.
KeyHeader = Annotated[
    str,
    HeaderParameter(
        name=IDEMPOTENCY_KEY,
        required=True,
        min_length=KEY_MIN_LENGTH,
        max_length=KEY_MAX_LENGTH,
        pattern=r"^[\x20-\x7e]+$",
        description="16-255 printable ASCII characters (a UUID v4); retries reuse it.",
    ),
]

ERRORS = {
    400: ResponseSpec(ErrorBody, description="idempotency_key_missing / invalid_json"),
    404: ResponseSpec(ErrorBody, description="unknown_sku / not_found"),
    409: ResponseSpec(
        ErrorBody, description="insufficient_stock / idempotency_key_in_use / checkout_expired"
    ),
    422: ResponseSpec(ErrorBody, description="invalid_request / idempotency_key_reused"),
    502: ResponseSpec(ErrorBody, description="payment_provider_error"),
    503: ResponseSpec(ErrorBody, description="provider_unavailable (retry with the same key)"),
}


# What a checkout id can look like (ours are `chk_` + 24 hex characters). Checked before the id
# reaches the idempotency scope, whose column holds 100 characters.
CHECKOUT_ID = re.compile(r"chk_[A-Za-z0-9]{1,60}")


def require_checkout_id(checkout_id: str) -> str:
    if not CHECKOUT_ID.fullmatch(checkout_id):
        raise NotFound(f"no checkout {checkout_id[:64]!r}", param="checkout_id")
    return checkout_id


def _outcome_label(outcome: Answer, summary: AnswerSummary) -> str:
    if outcome.replayed:
        return "replayed"
    if outcome.status < 300:
        return "created"
    return summary.error.code if summary.error else str(outcome.status)


class CheckoutController(Controller):
    path = "/v1/checkouts"
    tags = ["storefront"]

    @post(
        "/",
        summary="Create a checkout: hold stock, create the order and its PaymentIntent",
        responses={201: ResponseSpec(CheckoutOut, description="created"), **ERRORS},
        status_code=201,
    )
    async def create(
        self, request: Request, data: JSONBody[CheckoutCreate], ctx: Ctx, idempotency_key: KeyHeader
    ) -> Response[bytes]:
        key = require_key(idempotency_key)
        body = await request.body()
        req = checkout.CheckoutRequest(
            email=data.email,
            lines=[inventory.Line(line.sku, line.quantity) for line in data.lines],
            shipping_address=msgspec.to_builtins(data.shipping_address),
        )
        outcome = await anyio.to_thread.run_sync(
            lambda: checkout.create_checkout(
                ctx.engine, ctx.gateway, ctx.settings, idempotency_key=key, body=body, request=req
            )
        )
        summary = summarize(outcome)
        request.state[CHECKOUT_OUTCOME] = _outcome_label(outcome, summary)
        return to_response(outcome, summary)

    @post(
        "/{checkout_id:str}/cancel",
        summary="Cancel a checkout: release the hold and cancel its PaymentIntent",
        responses={200: ResponseSpec(CheckoutOut, description="cancelled"), **ERRORS},
        status_code=200,
    )
    async def cancel(
        self,
        request: Request,
        checkout_id: FromPath[str],
        ctx: Ctx,
        idempotency_key: KeyHeader,
    ) -> Response[bytes]:
        require_checkout_id(checkout_id)
        key = require_key(idempotency_key)
        body = await request.body()
        outcome = await anyio.to_thread.run_sync(
            lambda: checkout.cancel_checkout(
                ctx.engine, ctx.settings, checkout_id=checkout_id, idempotency_key=key, body=body
            )
        )
        return to_response(outcome)


def order_out(view: orders.OrderView) -> OrderOut:
    return OrderOut(
        id=view.id,
        checkout_id=view.checkout_id,
        status=view.status,
        cancel_reason=view.cancel_reason,
        amount=view.amount,
        refunded=view.refunded,
        currency=view.currency,
        region=view.region,
        payment_intent_id=view.payment_intent_id,
        lines=[CheckoutLine(ln.sku, ln.quantity) for ln in view.lines],
        timeline=[TimelineEntry(at.isoformat(), kind, data) for at, kind, data in view.timeline],
        created_at=view.created_at.isoformat(),
    )


class OrderController(Controller):
    path = "/v1/orders"
    tags = ["storefront"]

    @get(
        "/{order_id:str}",
        sync_to_thread=True,
        summary="An order's status and timeline",
        responses={404: ResponseSpec(ErrorBody, description="not_found")},
    )
    def get_order(self, order_id: FromPath[str], ctx: Ctx) -> OrderOut:
        with Session(ctx.engine) as session:
            return order_out(orders.view(session, order_id))
